"""Taps and keystrokes: detection in long multichannel recordings, alignment with a touch log."""
from __future__ import annotations

from pathlib import Path

from audiotune import storage
from audiotune.data.errors import DataError, refuse
from audiotune.outputs import (
    SKIPPED_SUFFIX,
    TAPS_REPORT_SUFFIX,
    TAPS_SUMMARY_SUFFIX,
    UNMATCHED_SUFFIX,
    check_output_path,
    sidecar,
)

TAP_WINDOW = (2192 / 96000, 6000 / 96000)  # seconds before / after a tap: tap2key's 2192 and 6000 samples at 96 kHz

# what each step writes beside its --out OUT.csv (OUT{suffix}), and what that file holds; the report page only with
# --report (see written_files)
REPORT_PAGE = {TAPS_REPORT_SUFFIX: "its report page"}
DETECT_WRITES = {TAPS_SUMMARY_SUFFIX: "its summary", **REPORT_PAGE}
ALIGN_WRITES = {UNMATCHED_SUFFIX: "its unmatched taps and touches", TAPS_SUMMARY_SUFFIX: "its summary",
                SKIPPED_SUFFIX: "its list of segments skipped", **REPORT_PAGE}


def file_key(path: str | Path) -> str:
    """What names the file at ``path``: a URL as it is, a local path resolved (``./a.wav`` and ``a.wav`` are one)."""
    return str(path) if storage.is_remote(path) else str(Path(path).resolve())


def written_files(out: str | Path, beside: dict[str, str], report: bool = True) -> dict[Path, str]:
    """``{path: what}`` of every file a step writes: ``out`` and the files ``beside`` it (``{suffix: what}``; the
    report page only with ``report``)."""
    files = {Path(out): ""}
    for suffix, what in beside.items():
        if report or suffix not in REPORT_PAGE:
            files[sidecar(out, suffix)] = what
    return files


def check_written(out: str | Path, beside: dict[str, str], inputs: dict[str, str], report: bool = True) -> None:
    """None of the files a step writes (:func:`written_files`) is one of its ``inputs`` (``{file_key: what}``), and
    each can be written: an error naming the file, before anything is read or written."""
    for written, what in written_files(out, beside, report).items():
        path = storage.final_path(written)
        taken = inputs.get(file_key(path))
        if taken:
            also = f" writes {what} to {path}, which" if what else ""
            raise DataError(f"--out {out}:{also} is {taken} {path}; give another --out")
        check_output_path(written)


def refuse_repeated(paths: list[str], what: str, why: str) -> None:
    """Every one of ``paths`` given once (two spellings of one file count as one): one error naming each repeat,
    the ``what`` (``recording(s)``) and ``why`` it must be given once."""
    first: dict[str, str] = {}
    again = []
    for path in map(str, paths):
        key = file_key(path)
        if key in first:
            again.append(f"{path}: given twice" if path == first[key] else f"{path}: the file {first[key]} again")
        first.setdefault(key, path)
    refuse(again, f"{what} given more than once", f"({why}: give it once)")
