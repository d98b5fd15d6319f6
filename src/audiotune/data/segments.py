"""Turn event tables and long recordings into segment tables (``uid, path, offset, duration, ...``).

Two inputs, one output format that :func:`audiotune.data.layout.read_table` reads back:

- an event table (``path, time, ...``): one segment per event, ``[time - before, time + after]``;
- a recording table (``path, ...``): sliding windows of ``window`` seconds every ``hop`` seconds, grouped by a
  ``recording`` column so that window predictions can be aggregated back to their recording.

File lengths come from the audio header only; nothing is decoded.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from audiotune import storage
from audiotune.config.sections import ON_ERROR
from audiotune.data.audio import DURATION, OFFSET, SEGMENT_COLUMNS, AudioError, open_audio
from audiotune.data.errors import DataError, refuse
from audiotune.data.layout import FileLines, format_seconds, separator_hint
from audiotune.outputs import check_output_path, skip_list, write_csv, write_with_skip_list

DECIMALS = 6
# half of the last written decimal: spans that match the file's length up to rounding still fit
TOLERANCE = 0.5 * 10.0 ** -DECIMALS
RECORDING_COLUMN = "recording"  # of a segment table: the recording (uid) each row is a window or segment of


@dataclass
class SegmentResult:
    """What :func:`segment_csv` wrote: the segment table, the skipped rows and counts for the summary."""

    out: Path
    segments: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped_path: Path | None = None
    recordings: int = 0  # the recordings the table names (windows: its rows; events: the files they are in)
    segmented: int = 0  # those of them that gave at least one segment
    short_recordings: int = 0

    def summary(self, show: Callable[[Path], str] = str) -> str:
        """One line: ``FILE.csv: N segments from M recordings`` (``from K of M recordings`` when only K of the
        table's recordings gave a segment) plus what was skipped or kept whole; ``show`` writes a path as the user
        should see it (its remote place when written in a staging folder)."""
        read = f"{self.segmented} of {self.recordings}" if self.segmented != self.recordings else self.recordings
        text = f"{show(self.out)}: {len(self.segments)} segments from {read} recordings"
        if self.short_recordings:
            text += (f", {self.short_recordings} recording(s) shorter than one window kept whole "
                     "(one segment each)")
        if len(self.skipped):
            text += f", {len(self.skipped)} skipped (listed in {show(self.skipped_path or self.out)})"
        return text


def segment_uid(name: str, offset: float) -> str:
    """``NAME@OFFSET``: the uid of the segment of ``name`` starting at ``offset`` seconds (for a file's path, the
    uid read_table derives for a row without one)."""
    return f"{name}@{format_seconds(offset)}"


def window_spans(length: float, window: float, hop: float) -> list[tuple[float, float]]:
    """(offset, duration) of every window that fits in ``length`` seconds; one span covering the whole file
    when it is shorter than one window. Offsets are 0, hop, 2·hop, ...; a partial last window is left out."""
    if length + TOLERANCE < window:
        return [(0.0, round(length, DECIMALS))]
    count = int(math.floor((length - window) / hop + 1e-9)) + 1
    spans = [(round(k * hop, DECIMALS), round(window, DECIMALS)) for k in range(count)]
    # float error in k * hop must not push the last window past the end
    while spans and spans[-1][0] + spans[-1][1] > length + TOLERANCE:
        spans.pop()
    return spans


def event_span(time: float, before: float, after: float, length: float) -> tuple[float, float, str]:
    """(offset, duration, reason) of the segment around an event at ``time``; ``reason`` is empty when the
    segment lies inside the file and says by how much it does not otherwise (such events are never clamped)."""
    offset = round(time - before, DECIMALS)
    duration = round(before + after, DECIMALS)
    if offset < 0:
        return offset, duration, f"starts {format_seconds(-offset)} s before the start of the file"
    end = offset + duration
    if end > length + TOLERANCE:
        return offset, duration, (f"ends {format_seconds(end - length)} s after the end of the file "
                                  f"({format_seconds(length)} s long)")
    return offset, duration, ""


def audio_seconds(path: str | Path) -> float:
    """Length of an audio file (local, or remote read by range) in seconds from its header (frames / sample
    rate), without decoding it."""
    path = str(path)
    if not storage.isfile(path):
        raise DataError(f"{path}: audio file not found")
    try:
        with open_audio(path) as handle:
            frames, rate = handle.frames, handle.samplerate
    except AudioError as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise DataError(f"{path}: cannot read the audio header ({reason})") from err
    if rate <= 0 or frames <= 0:
        raise DataError(f"{path}: no audio in the file ({frames} frames at {rate} Hz)")
    return frames / rate


def source_path(path: str | Path) -> str:
    """A table's path or URL as written in messages: a local one made absolute."""
    return str(path) if storage.is_remote(path) else str(Path(path).resolve())


def read_source(path: str | Path) -> pd.DataFrame:
    """An event or recording table (local or remote) with every cell as text, so carried columns are written
    back unchanged."""
    path = source_path(path)
    if not storage.isfile(path):
        raise DataError(f"{path}: table not found")
    try:
        with storage.open_input(path) as stream:
            table = pd.read_csv(stream, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV table ({err})") from err
    if "path" not in table.columns:
        raise DataError(f"{path}: needs a 'path' column naming each audio file (columns: {list(table.columns)})"
                        f"{separator_hint(table.columns)}")
    if table.empty:
        raise DataError(f"{path}: no rows")
    taken = [c for c in SEGMENT_COLUMNS if c in table.columns]
    if taken:
        raise DataError(f"{path}: already has {taken} column(s); segment a table of whole recordings or events")
    return table


def _positive_seconds(name: str, value: float, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise DataError(f"--{name} must be a finite number of seconds, {bound} (got {value})")




class _Lengths:
    """Audio lengths by file, each header read once; a failure is remembered as the error text."""

    def __init__(self, base: str | Path) -> None:
        self.base = str(base)
        self.seen: dict[str, float | str] = {}

    def get(self, value: str) -> tuple[str, float | str]:
        """The file a ``path`` cell names (relative to the table's folder, or absolute, or a URL) and its length."""
        if not value.strip():
            return self.base, "empty 'path' cell"
        path = storage.resolve(value, self.base)
        if path not in self.seen:
            try:
                self.seen[path] = audio_seconds(path)
            except DataError as err:
                self.seen[path] = str(err)
        return path, self.seen[path]


def _output_table(rows: list[dict], carried: list[str], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    columns = ["uid", "path", *SEGMENT_COLUMNS, *extra, *carried]
    return pd.DataFrame(rows, columns=columns)


def _check_unique(table: pd.DataFrame, source: str | Path) -> None:
    dupes = table.loc[table["uid"].duplicated(), "uid"].head(5).tolist()
    if dupes:
        raise DataError(f"{source}: these rows give the same segment uid twice, e.g. {dupes} "
                        "(the same recording or file and offset listed more than once)")


def event_segments(events: pd.DataFrame, before: float, after: float, source: str | Path, out_dir: Path,
                   line: Callable[[int], int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segments ``[time - before, time + after]`` of an event table, and the events that cannot be cut from their
    file (missing or unreadable, the event past its end, or the segment leaving it), with the reason.

    ``path`` is resolved from ``source``'s folder and written relative to ``out_dir`` (as a full path or URL
    when the two are not in one place: see :func:`audiotune.storage.relative`). Every other column is
    carried unchanged (a non-unique ``uid`` column as ``source_uid``). Malformed rows raise one error listing
    them. Rows are named by ``line`` of their position (default: their lines in ``source``).
    """
    line = line or FileLines(source)
    if "time" not in events.columns:
        raise DataError(f"{source}: --before/--after need a 'time' column (event time in seconds); "
                        f"columns are {list(events.columns)}")
    uids = events["uid"] if "uid" in events.columns else None
    keep_uid = uids is not None and not uids.duplicated().any() and bool((uids != "").all())
    table = events.copy()
    if uids is not None and not keep_uid:
        table = table.rename(columns={"uid": "source_uid"})  # kept: it is data, just not a unique key
    carried = [c for c in table.columns if c not in ("uid", "path")]
    lengths, rows, skipped, problems = _Lengths(storage.parent(source)), [], [], []
    written = storage.relative_to(out_dir)
    for index, row in enumerate(table.to_dict("records")):
        try:
            time = float(row["time"])
        except ValueError:
            problems.append(f"{source} line {line(index)}: time {row['time']!r} is not a number")
            continue
        if not math.isfinite(time) or time < 0:
            problems.append(f"{source} line {line(index)}: time {row['time']!r} must be a finite number >= 0")
            continue
        audio, length = lengths.get(row["path"])
        if isinstance(length, str) or time > length + TOLERANCE:  # the file, not the row, is at fault: skippable
            why = length if isinstance(length, str) else \
                f"the event is past the end of the file ({format_seconds(length)} s long)"
            skipped.append({"line": line(index), **row, "path": str(audio), OFFSET: math.nan,
                            DURATION: math.nan, "reason": why.removeprefix(f"{audio}: ")})
            continue
        offset, duration, reason = event_span(time, before, after, length)
        relative = written(audio)
        if reason:
            skipped.append({"line": line(index), **row, "path": str(audio), OFFSET: offset, DURATION: duration,
                            "reason": f"segment {reason}"})
            continue
        uid = row["uid"] if keep_uid else segment_uid(relative, offset)
        rows.append({**row, "uid": uid, "path": relative, OFFSET: offset, DURATION: duration})
    refuse(problems, f"row(s) of {source} cannot be segmented",
                  "(fix these cells: --on_error skip leaves out events whose file is missing, unreadable or too "
                  "short, not malformed rows)")
    segments = _output_table(rows, carried)
    _check_unique(segments, source)
    skip_columns = ["line", *table.columns, *SEGMENT_COLUMNS, "reason"]
    return segments, pd.DataFrame(skipped, columns=list(dict.fromkeys(skip_columns)))


def window_segments(recordings: pd.DataFrame, window: float, hop: float, source: str | Path,
                    out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Sliding windows over every recording of a table, the recordings whose file is missing or unreadable (with
    the reason), and how many recordings were shorter than one window.

    Each row's windows carry its columns and a ``recording`` column (its ``uid``, else its path as written);
    window uids are ``RECORDING@OFFSET``. A recording shorter than one window gives one segment covering it.
    """
    if "time" in recordings.columns:
        raise DataError(f"{source}: has a 'time' column, as an event table does: use --before/--after for events, "
                        "or rename the column to window whole recordings")
    if RECORDING_COLUMN in recordings.columns:
        raise DataError(f"{source}: already has a 'recording' column; --window writes its own "
                        "(the recording's uid, else its path)")
    carried, line = [c for c in recordings.columns if c not in ("uid", "path")], FileLines(source)
    lengths, rows, skipped, short = _Lengths(storage.parent(source)), [], [], 0
    written = storage.relative_to(out_dir)
    for index, row in enumerate(recordings.to_dict("records")):
        audio, length = lengths.get(row["path"])
        if isinstance(length, str):  # the file is at fault: skippable
            skipped.append({**row, "line": line(index), "path": str(audio),
                            "reason": length.removeprefix(f"{audio}: ")})
            continue
        relative = written(audio)
        recording = row.get("uid") or relative
        spans = window_spans(length, window, hop)
        short += int(length + TOLERANCE < window)
        for offset, duration in spans:
            rows.append({**row, "uid": segment_uid(recording, offset), "path": relative, OFFSET: offset,
                         DURATION: duration, RECORDING_COLUMN: recording})
    segments = _output_table(rows, carried, (RECORDING_COLUMN,))
    _check_unique(segments, source)
    skip_columns = list(dict.fromkeys(["line", *recordings.columns, "reason"]))
    return segments, pd.DataFrame(skipped, columns=skip_columns), short


def segment_csv(source: str | Path, out: str | Path, before: float | None = None, after: float | None = None,
                window: float | None = None, hop: float | None = None, on_error: str = "raise") -> SegmentResult:
    """``audiotune segment``: write the segment table of an event table (``before``/``after``) or of a
    recording table (``window``/``hop``, hop defaulting to the window).

    Everything is checked before anything is written. Events whose segment leaves its file, and events or
    recordings whose file is missing or unreadable, raise an error with ``on_error='raise'``; with ``'skip'`` they
    are listed, with a reason, in ``FILE.skipped.csv``.
    """
    source, out = source_path(source), Path(out).resolve()
    events_mode = before is not None or after is not None
    if events_mode == (window is not None):
        raise DataError("give either --before and --after (an event table with a 'time' column) "
                        "or --window (a table of recordings), not both or neither")
    if on_error not in ON_ERROR:
        raise DataError(f"--on_error {on_error!r}: choose one of {', '.join(ON_ERROR)}")
    if storage.final_path(out) == source:
        raise DataError(f"{out}: --out would overwrite the input table; choose another file")
    if out.suffix.lower() != ".csv":
        raise DataError(f"{out}: --out must be a .csv file")
    check_output_path(out)
    table = read_source(source)
    result = SegmentResult(out=out, segments=pd.DataFrame())
    if events_mode:
        if before is None or after is None:
            raise DataError("events need both --before and --after (seconds; either may be 0)")
        if hop is not None:
            raise DataError("--hop belongs to --window; events take --before and --after")
        _positive_seconds("before", before, allow_zero=True)
        _positive_seconds("after", after, allow_zero=True)
        if before + after <= 0:
            raise DataError("--before plus --after must be more than zero seconds")
        result.segments, result.skipped = event_segments(table, before, after, source, out.parent)
        if len(result.skipped) and on_error != "skip":
            refuse([f"{source} line {r.line}: the event at {r.time} s in {r.path}: {r.reason}"
                           for r in result.skipped.itertuples()],
                          "event(s) that cannot be cut from their file",
                          "(use --on_error skip to leave them out; they are then listed in "
                          f"{skip_list(out).name})")
        if result.segments.empty:
            raise DataError(f"{source}: no event's segment fits in its file ({len(result.skipped)} skipped); "
                            "nothing written")
        base = storage.parent(source)
        result.recordings = len({storage.resolve(cell, base) for cell in table["path"] if cell.strip()})
        result.segmented = int(result.segments["path"].nunique())
    else:
        assert window is not None  # not events_mode: checked above that exactly one mode is given
        hop = window if hop is None else hop
        _positive_seconds("window", window)
        _positive_seconds("hop", hop)
        result.segments, result.skipped, result.short_recordings = window_segments(table, window, hop, source,
                                                                                   out.parent)
        if len(result.skipped) and on_error != "skip":
            refuse([f"{source} line {r.line}: {r.path}: {r.reason}" for r in result.skipped.itertuples()],
                   f"recording(s) of {source} cannot be windowed",
                   f"(use --on_error skip to leave them out; they are then listed in {skip_list(out).name})")
        if result.segments.empty:
            raise DataError(f"{source}: no recording can be windowed ({len(result.skipped)} skipped); "
                            "nothing written")
        result.recordings, result.segmented = len(table), int(result.segments[RECORDING_COLUMN].nunique())
    result.skipped_path = write_with_skip_list(out, result.skipped,
                                               lambda path: write_csv(result.segments, path, index=False))
    return result
