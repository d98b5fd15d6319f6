"""Where the audio is: split tables (CSV) and the paths of the files their rows name.

Rows are addressed in one of two ways:
- a ``uid`` column (the table's index) under ``PREFIX[/STUDY]/UID/`` holding ``waveform.EXT`` and
  ``metadata.json`` (``encoding`` picks EXT, ``sample_rate_hz`` is the rate the file must have);
- a ``path`` column, relative to the CSV's folder or absolute.

Either way a row may name a segment of its file: ``offset`` and ``duration`` in seconds and ``channels``
(e.g. ``0,1,2,3``); see :mod:`audiotune.data.audio`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.data.audio import EXPECTED_RATE
from audiotune.data.errors import DataError, listing
from audiotune.data.manifest import AUDIO_EXTENSIONS, file_uids, find_audio
from audiotune.outputs import ONE_TABLE, SPLITS

# a metadata.json ``encoding`` -> the extension of its waveform file; any other encoding (LINEAR16, PCM_16, ...) is
# read as waveform.wav, as the NAIP seeds read every encoding but MP3
ENCODING_EXTENSIONS = {"MP3": "mp3", "WAV": "wav", "FLAC": "flac", "OGG": "ogg", "VORBIS": "ogg", "OPUS": "opus"}
OTHER_ENCODINGS = "wav"
METADATA_FILE = "metadata.json"  # in a uid folder, beside its waveform file
WAVEFORM_STEM = "waveform"  # a uid folder's audio: waveform.EXT


SUBJECT = "subject"  # the column of the speaker or subject a row belongs to: the groups splits and folds keep apart
# identifiers, read as written: "007" stays "007" (not the number 7), so ids survive a write and read back
TEXT_COLUMNS = ("uid", "path", SUBJECT)


def split_file(name: str) -> str:
    """The file name of split ``name`` in a split directory (``train.csv``)."""
    return f"{name}.csv"


OTHER_SEPARATORS = (";", "\t", "|")  # what a table exported with other settings separates its columns with


def separator_hint(columns: Sequence[object]) -> str:
    """For a CSV read as one column whose name holds another separator (a spreadsheet's ``;`` export): how to
    fix it; else ``""``."""
    found = [sep for sep in OTHER_SEPARATORS if len(columns) == 1 and sep in str(columns[0])]
    return (f"; its header {str(columns[0])!r} is one column: columns are separated by commas here, and this file "
            f"separates them by {found[0]!r} (save it as comma-separated)") if found else ""


class FileLines:
    """The line of a CSV file on which each of its rows begins (after its header line, or from the first line
    with ``header=False``), read when first asked: pandas skips blank lines and a quoted cell may span lines, so a
    row's position plus two need not be its line. A position the file does not account for (it changed, or
    cannot be read) is given as if the file had no blank line."""

    def __init__(self, path: str | Path | None, header: bool = True) -> None:
        self.path, self.header = path, header
        self._starts: list[int] | None = None

    def __call__(self, position: int) -> int:
        if self._starts is None:
            self._starts = _row_starts(self.path)[int(self.header):] if self.path is not None else []
        return self._starts[position] if position < len(self._starts) else position + 1 + int(self.header)

    def of(self, positions: Iterable[int]) -> list[int]:
        return [self(int(position)) for position in positions]


def _row_starts(path: str | Path) -> list[int]:
    """The line on which each row (the header too) begins, as pandas reads the rows: a line of spaces at most is
    blank, skipped (``,,`` and ``""`` are rows)."""
    try:
        with storage.open_input(path) as stream:
            text = stream.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    raw = io.StringIO(text, newline="").readlines()
    starts, end = [], 0
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        for _ in reader:
            if reader.line_num > end + 1 or raw[end].strip():  # a record over several lines, or a written one
                starts.append(end + 1)
            end = reader.line_num
    except csv.Error:
        return []
    return starts


EVERY_COLUMN = ("*",)  # read_table's text_columns for a table whose every cell is read as text (passed on as written)


def read_table(path: str | Path, text_columns: tuple[str, ...] = (), na_values: Sequence[str] = ()) -> pd.DataFrame:
    """Read one split CSV, indexed by ``uid`` (made from ``path`` when the CSV has no uid column).

    ``uid``, ``path``, ``subject`` and ``text_columns`` (:data:`EVERY_COLUMN`: all) are read as text, so that a
    table written again keeps its cells (``007`` stays ``007``). Cells are read as written: only an empty
    cell (and the values in ``na_values``) is missing, so ``NA``, ``None``, ``null`` or ``nan`` are values (class
    names, speakers). A table without rows, or with two columns of one name, is an error.
    """
    path = str(path) if storage.is_remote(path) else Path(path)
    if not storage.isfile(path):
        raise DataError(f"{path}: split file not found")
    try:
        with storage.open_input(path) as stream:
            table = pd.read_csv(stream, dtype=str if text_columns == EVERY_COLUMN else
                                {c: str for c in (*TEXT_COLUMNS, *text_columns)},
                                keep_default_na=False, na_values=["", *na_values])
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: empty file (no header, no rows)") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV table ({str(err).strip()})") from err
    if table.empty:
        raise DataError(f"{path}: no rows (only a header: {list(table.columns)})")
    _check_unique_columns(path, table)
    if "uid" not in table.columns:
        if "path" not in table.columns:
            raise DataError(f"{path}: needs a 'uid' column (uid layout) or a 'path' column (manifest)"
                            f"{separator_hint(table.columns)}")
        blank = table["path"].isna() | (table["path"].astype(str).str.strip() == "")
        if blank.any():
            lines = FileLines(path).of(np.flatnonzero(blank.to_numpy())[:10])
            raise DataError(f"{path}: empty 'path' cell on line(s) {lines}; without a 'uid' column such a row "
                            "cannot be named (fill the path, remove the row, or add a uid column)")
        table["uid"] = segment_uids(table)
    blank = table["uid"].isna() | (table["uid"].astype(str).str.strip() == "")
    if blank.any():
        lines = FileLines(path).of(np.flatnonzero(blank.to_numpy())[:10])
        raise DataError(f"{path}: empty 'uid' cell on line(s) {lines}; every row needs its uid (fill it, or remove "
                        "the row)")
    table["uid"] = table["uid"].astype(str)
    if table["uid"].duplicated().any():
        dupes = table.loc[table["uid"].duplicated(), "uid"].head(5).tolist()
        hint = " (segments of one file need distinct offsets, or a uid column)" if "offset" in table.columns else ""
        raise DataError(f"{path}: duplicate uid values, e.g. {dupes}{hint}")
    table = table.set_index("uid")
    if "path" in table.columns:
        # an empty cell stays empty: the row is then reported as bad input (attach_paths), not resolved; a table
        # written in a staging folder (a cv's folds on their way to a bucket) is relative to the bucket's place
        folder = storage.parent(path) if storage.is_remote(path) else storage.final_place(storage.parent(path))
        table["path"] = ["" if pd.isna(p) or not str(p).strip() else storage.resolve(str(p), folder)
                         for p in table["path"]]
    table.attrs["source"] = str(path)
    return table


def _check_unique_columns(path: str | Path, table: pd.DataFrame) -> None:
    """pandas renames a repeated column ``name`` to ``name.1``: such a pair is read back from the header line."""
    suspects = [c for c in table.columns if re.fullmatch(r".+\.\d+", str(c)) and str(c).rsplit(".", 1)[0] in table]
    if not suspects:
        return
    with storage.open_input(path) as stream, io.TextIOWrapper(stream, encoding="utf-8", newline="") as text:
        header = next(csv.reader(text), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: column name(s) {repeated} appear more than once in the header; rename or remove "
                        "the copies (which one holds the labels cannot be guessed)")


def format_seconds(value: float) -> str:
    """Seconds as short as they stay exact to the microsecond: 12.5, 3, 0.000125."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def segment_uids(table: pd.DataFrame) -> list[str]:
    """uids of rows without a uid column: ``PATH``, or ``PATH@OFFSET`` for rows that name an offset."""
    paths = table["path"].astype(str).tolist()
    if "offset" not in table.columns:
        return paths
    offsets = pd.to_numeric(table["offset"], errors="coerce")
    return [p if pd.isna(o) else f"{p}@{format_seconds(float(o))}" for p, o in zip(paths, offsets)]


def read_splits(data_split_root: str | Path, audio_dir: str = "", na_values: Sequence[str] = ()
                ) -> dict[str, pd.DataFrame]:
    """Tables of a split directory (train.csv, test.csv, optional val.csv), of one CSV (key 'data'), of a JSON
    split file (``{"Train": ..., "Val": ..., "Test": ...}``, utterance names relative to ``audio_dir`` or
    else its own folder; see :mod:`audiotune.data.json_splits`), or of a folder of audio files without tables
    (key 'data': unlabelled audio for pretraining, extraction, stats)."""
    if not str(data_split_root):
        raise DataError("--data_split_root is required: a split directory or one CSV")
    root = str(data_split_root)
    if root.lower().endswith(".csv"):
        return {ONE_TABLE: read_table(root, na_values=na_values)}
    if root.lower().endswith(".json"):
        from audiotune.data.json_splits import read_json_split

        if not storage.isfile(root):
            raise DataError(f"{root}: JSON split file not found")
        return read_json_split(root, audio_dir or None, require=(), na_values=na_values)
    if not storage.isdir(root):
        raise DataError(f"{root}: --data_split_root is neither a CSV file nor a directory")
    names = set(storage.listdir(root))
    tables = {name: read_table(storage.join(root, split_file(name)), na_values=na_values)
              for name in SPLITS if split_file(name) in names}
    if not tables:
        audio = audio_folder_table(root)
        if audio is None:
            raise DataError(f"{root}: no train.csv, val.csv or test.csv in this directory, and no audio files")
        return {ONE_TABLE: audio}
    return tables


def audio_folder_table(root: str | Path) -> pd.DataFrame | None:
    """Every audio file under the folder ``root`` (a local path or a URL) as a table (uid: the path relative to
    ``root`` without its extension, :func:`~audiotune.data.manifest.file_uids`), or None."""
    base = str(root).rstrip("/") if storage.is_remote(root) else str(Path(root).resolve())
    files = find_audio(base)
    if not files:
        return None
    relatives = [posixpath.relpath(file.split("://", 1)[-1], base.split("://", 1)[-1]) if storage.is_remote(base)
                 else Path(file).relative_to(base).as_posix() for file in files]
    table = pd.DataFrame({"path": files}, index=pd.Index(file_uids(relatives, root), name="uid"))
    table.attrs["source"] = str(root)
    return table


def _metadata(folder: Path | str) -> dict:
    meta_path = storage.join(folder, METADATA_FILE)
    if not storage.isfile(meta_path):
        raise DataError(f"{meta_path}: {METADATA_FILE} not found")
    try:
        with storage.open_input(meta_path) as handle:
            return json.loads(handle.read())
    except json.JSONDecodeError as err:
        raise DataError(f"{meta_path}: not valid JSON ({err})") from err


def metadata_rate(meta: dict, where: str) -> float:
    """The sample rate a uid folder's ``metadata.json`` (at ``where``) gives its audio (``sample_rate_hz``, or
    ``sample_rate``): a number, or text that is one (``"16000"``); NaN without one. Anything else (``"16 kHz"``)
    is an error naming the file: a rate that cannot be checked would let audio of another rate through."""
    rate = meta.get("sample_rate_hz", meta.get("sample_rate"))
    if rate is None:
        return float("nan")
    try:
        value = float(rate) if not isinstance(rate, bool) else float("nan")
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"{where}: sample_rate_hz {rate!r} is not a number of samples per second (e.g. 16000)")
    return value


def waveform_name(meta: dict, listing: Callable[[], Iterable[str]], where: str) -> str:
    """The name of a uid folder's audio file: ``waveform.EXT``, EXT from the ``encoding`` of its metadata
    (:data:`ENCODING_EXTENSIONS`); without one, the first audio file (:data:`AUDIO_EXTENSIONS`) named ``waveform.*``
    among the folder's file names (``listing``, called only then). ``where``: the metadata file, named in the error
    when there is none."""
    encoding = str(meta.get("encoding", "")).upper()
    if encoding:
        return f"{WAVEFORM_STEM}.{ENCODING_EXTENSIONS.get(encoding, OTHER_ENCODINGS)}"
    found = sorted(name for name in listing() if name.startswith(f"{WAVEFORM_STEM}.")
                   and posixpath.splitext(name)[1].lower() in AUDIO_EXTENSIONS)
    if not found:
        raise DataError(f"{where}: no 'encoding' and no {WAVEFORM_STEM}.* audio file ({', '.join(AUDIO_EXTENSIONS)}) "
                        "beside it")
    return found[0]


def resolve_uid(uid: str, prefix: str, study: str = "") -> tuple[str, float]:
    """Path of ``waveform.EXT`` for a uid and the rate its metadata declares (NaN if it declares none)."""
    if not prefix:
        raise DataError(f"uid '{uid}': rows without a 'path' column need --prefix (the audio root)")
    if storage.is_remote(prefix):  # a bucket (the seeds' -b BUCKET -i PREFIX): the same layout, read remotely
        root = storage.join(prefix, study) if study else str(prefix).rstrip("/")
        if posixpath.normpath(f"/{uid}") != f"/{uid}" or uid in ("", "."):
            raise DataError(f"uid '{uid}': escapes the audio root {root}")
        folder: Path | str = storage.join(root, uid)
    else:
        local_root = (Path(prefix) / study).resolve()
        folder = (local_root / uid).resolve()
        if folder == local_root or local_root not in folder.parents:
            raise DataError(f"uid '{uid}': escapes the audio root {local_root}")
    meta = _metadata(folder)
    audio = storage.join(folder, waveform_name(meta, lambda: storage.listdir(folder),
                                                     storage.join(folder, METADATA_FILE)))
    return str(audio), metadata_rate(meta, storage.join(folder, METADATA_FILE))


def attach_paths(table: pd.DataFrame, prefix: str, study: str = "", split: str = "",
                 none_found: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add ``path`` (and ``expected_rate`` from metadata) to every row; rows that cannot be resolved are returned
    separately with the reason (a missing metadata.json, a uid escaping the prefix, ...). Uid rows none of which
    is found under the root are an error naming the root (``none_found``: returned as failures too)."""
    table = table.copy()
    failures: list[dict[str, str]] = []
    if "path" in table.columns:
        if EXPECTED_RATE not in table.columns:
            table[EXPECTED_RATE] = np.nan
        empty = table["path"].isna() | (table["path"].astype(str).str.strip() == "")
        source = table.attrs.get("source", split)
        failures = [{"uid": uid, "split": split, "path": "", "reason": f"{source}: row '{uid}' has an empty path cell"}
                    for uid in table.index[empty.to_numpy()]]
        return table[~empty.to_numpy()], pd.DataFrame(failures, columns=["uid", "split", "path", "reason"])
    if not prefix and len(table):
        raise DataError(f"{table.attrs.get('source', split)}: no 'path' column, so its rows are uids of the seed "
                        "layout (PREFIX[/STUDY]/UID/waveform.EXT): give their audio root with -i/--prefix, or add a "
                        "'path' column")
    paths, rates = [], []
    for uid in table.index:
        try:
            path, rate = resolve_uid(uid, prefix, study)
        except DataError as err:
            path, rate = "", float("nan")
            failures.append({"uid": uid, "split": split, "path": "", "reason": str(err)})
        paths.append(path)
        rates.append(rate)
    if len(table) and len(failures) == len(table) and not none_found:  # the root, not the rows, is likely wrong
        root = storage.join(prefix, study) if study else prefix
        shown = root if storage.is_remote(root) else f"{root} (from {Path.cwd()}: {Path(root).resolve()})"
        raise DataError(f"{table.attrs.get('source', split)}: none of its {len(table)} uid(s) can be read under the "
                        f"audio root {shown}: give the folder holding the uid folders with -i/--prefix"
                        f"{' and its study folder with -s/--study' if study else ''}:"
                        f"{listing([row['reason'] for row in failures])}")
    table["path"] = paths
    table[EXPECTED_RATE] = rates
    return table[table["path"] != ""], pd.DataFrame(failures, columns=["uid", "split", "path", "reason"])
