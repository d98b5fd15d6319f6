"""Build a manifest CSV (``uid``, ``path`` and label columns) from a folder of audio files."""
from __future__ import annotations

import logging
import posixpath
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from audiotune import storage
from audiotune.config.sections import RAISE
from audiotune.data.errors import DataError, refuse_unless_skipped
from audiotune.outputs import check_output_path, skip_list, write_csv, write_with_skip_list

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
OWN_COLUMNS = ("uid", "path")  # the columns every manifest row gets from its file, before the pattern's groups

log = logging.getLogger(__name__)


def find_audio(root: str | Path) -> list[str]:
    """Audio files under the folder ``root`` (a local path or a URL), sorted, found recursively."""
    if not storage.isdir(root):
        raise DataError(f"{root}: audio folder not found")
    return [p for p in storage.find(root) if posixpath.splitext(p)[1].lower() in AUDIO_EXTENSIONS]


def file_uids(relatives: Sequence[str], root: str | Path) -> list[str]:
    """The uids of audio files from their paths relative to the folder ``root`` they were found under: the path
    without its extension, or with it where files of one name in other formats would share it (``a.wav`` and
    ``a.flac``), which is said."""
    stems = [posixpath.splitext(relative)[0] for relative in relatives]
    counts = Counter(stems)
    shared = sorted(relative for stem, relative in zip(stems, relatives) if counts[stem] > 1)
    if shared:
        log.warning("%s: %d audio file(s) share their name with a file of another format, so their uids keep the "
                    "extension: %s%s", root, len(shared), ", ".join(shared[:6]), " ..." if len(shared) > 6 else "")
    return [stem if counts[stem] == 1 else relative for stem, relative in zip(stems, relatives)]


def build_manifest(root: str | Path, out_csv: str | Path, pattern: str | None = None,
                   folder_label: str | None = None, on_error: str = RAISE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Manifest of every audio file under ``root``.

    Labels come from ``pattern``, a regex with named groups matched against the file name, or from
    the parent folder's name into column ``folder_label`` (folder-per-class). Files the pattern does
    not match raise an error, or with ``on_error='skip'`` are returned in the skip table.
    """
    root = str(root).rstrip("/") if storage.is_remote(root) else str(Path(root).resolve())
    out_csv = check_output_path(Path(out_csv).resolve())
    files = find_audio(root)
    if not files:
        raise DataError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as err:
        raise DataError(f"--pattern {pattern!r} is not a valid regular expression ({err})") from err
    if regex is not None and not regex.groupindex:
        raise DataError(f"--pattern {pattern!r} has no named group such as (?P<label>...)")
    taken = [name for name in OWN_COLUMNS if regex is not None and name in regex.groupindex]
    if taken:
        raise DataError(f"--pattern {pattern!r}: group (?P<{taken[0]}>...) would replace the manifest's own "
                        f"{taken[0]!r} column ({', '.join(OWN_COLUMNS)}); name it otherwise")
    if folder_label in OWN_COLUMNS:
        raise DataError(f"--folder_label {folder_label}: would replace the manifest's own {folder_label!r} column "
                        f"({', '.join(OWN_COLUMNS)}); name the label column otherwise")
    if regex is not None and folder_label in regex.groupindex:
        raise DataError(f"--folder_label {folder_label} and --pattern {pattern!r} would both fill column "
                        f"{folder_label!r}; name one of them otherwise")
    rows, skipped = [], []
    relatives = [Path(name).as_posix() for name in map(storage.relative_to(root), files)]
    written = storage.relative_to(out_csv.parent)
    for file, relative_name, uid in zip(files, relatives, file_uids(relatives, root)):
        relative = Path(relative_name)
        row: dict[str, str] = {"uid": uid, "path": written(file)}
        if regex is not None:
            match = regex.fullmatch(relative.name)
            if match is None:
                skipped.append({"path": str(file), "reason": f"file name does not match {pattern!r}"})
                continue
            row.update(match.groupdict())
        if folder_label:
            if relative.parent == Path("."):
                skipped.append({"path": str(file), "reason": "not inside a class folder"})
                continue
            row[folder_label] = relative.parent.name
        rows.append(row)
    skip_table = pd.DataFrame(skipped, columns=["path", "reason"])
    if not rows:  # skipping would leave nothing: the pattern or the layout is wrong, not a few files
        first = skipped[0]
        raise DataError(f"{root}: none of its {len(files)} audio file(s) can be labelled, e.g. "
                        f"{storage.name(first['path'])}: {first['reason']}")
    refuse_unless_skipped([f"{s['path']}: {s['reason']}" for s in skipped],
                          f"file(s) under {root} cannot be labelled", on_error, skip_list(out_csv).name)
    manifest = pd.DataFrame(rows)
    write_with_skip_list(out_csv, skip_table, lambda path: write_csv(manifest, path, index=False))
    return manifest, skip_table
