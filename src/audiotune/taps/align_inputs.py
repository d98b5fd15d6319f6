"""The inputs of ``taps align``, read and checked: touch logs, key maps, the taps table, and each recording's
start time (from its file name, by ``--time_pattern``, or from a column of the taps table)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.data.errors import DataError, refuse
from audiotune.data.layout import FileLines
from audiotune.taps import refuse_repeated

SEED_PATTERN = "last7"  # the tap2key rule: the last 7 integer groups are hour, minute, second, fraction, month,
# day, year
STRPTIME_DIGITS = {"Y": r"\d{4}", "m": r"\d{1,2}", "d": r"\d{1,2}", "H": r"\d{1,2}", "M": r"\d{1,2}",
                   "S": r"\d{1,2}", "f": r"\d{1,6}", "y": r"\d{2}", "j": r"\d{1,3}"}
TOUCH_COLUMNS = ["timestamp", "touch_id", "event", "x", "y"]
TOUCH_EVENTS = ("Down", "Move", "Up")  # what the neonode sensor logs: a finger lands, slides, lifts


def touch_times(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Each timestamp as written (its wall-clock time, any time zone left off; NaT where it is not a time) and
    the time zone it was written in (``no time zone``, ``time zone UTC+02:00``)."""
    try:
        stamps = pd.to_datetime(text, errors="coerce", format="mixed")
    except ValueError:  # the zone changes from line to line: each line on its own
        each = [_time(value) for value in text]
        wall = [stamp if pd.isna(stamp) or stamp.tzinfo is None else stamp.tz_localize(None) for stamp in each]
        return pd.to_datetime(pd.Series(wall, index=text.index)), pd.Series([_zone(s) for s in each], text.index)
    written = stamps.dropna()
    zone = _zone(written.iloc[0] if len(written) else pd.NaT)
    return stamps.dt.tz_localize(None) if stamps.dt.tz else stamps, pd.Series(zone, index=text.index)


def _time(text: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT


def _zone(stamp: pd.Timestamp) -> str:
    offset = None if pd.isna(stamp) else stamp.utcoffset()
    if offset is None:
        return "no time zone"
    minutes = int(offset.total_seconds() // 60)
    return f"time zone UTC{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def read_touch_logs(paths: list[str], event: str = "Down") -> pd.DataFrame:
    """The ``event`` rows of one or more touch logs, time ordered: timestamp, touch_id, x, y, source, line.

    A first line whose timestamp is not a time and whose x and y are not numbers is taken as a header; any
    other bad line (fewer than 5 fields, an event other than :data:`TOUCH_EVENTS` and ``event``, a timestamp
    that is not a time, an x or y that is not a finite number) is an error that names the file, the line and
    the value. Timestamps may carry a time zone if every line of every log has the same one: they are read as
    written, in that zone's wall-clock time, like the recordings' start times (which carry none); a line in
    another zone than the first is an error."""
    events = [*TOUCH_EVENTS, *([event] if event.lower() not in {e.lower() for e in TOUCH_EVENTS} else [])]
    known = {name.lower() for name in events}
    refuse_repeated(paths, "touch log(s)", "each touch is paired once")
    frames, problems, first = [], [], ("", "")  # the first timestamp's time zone, and where it is
    for path in paths:
        try:
            with storage.open_input(path) as stream:  # a remote log is read in place: its URL names it
                reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
                lines = [(reader.line_num, row) for row in reader if row]
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot be read as a touch log ({err})") from err
        width = max((len(row) for _, row in lines), default=0)
        if width < 5:
            raise DataError(f"{path}: a touch log needs at least 5 columns (timestamp, touch id, event, x, y); "
                            f"found {width}")
        raw = pd.DataFrame([row[:5] + [""] * (5 - len(row)) for _, row in lines], columns=TOUCH_COLUMNS)
        raw = raw.assign(line=[number for number, _ in lines], short=[len(row) < 5 for _, row in lines],
                         **{c: raw[c].str.strip() for c in ("timestamp", "event", "x", "y")})
        stamps, zones = touch_times(raw["timestamp"])
        xy = {c: pd.to_numeric(raw[c], errors="coerce") for c in ("x", "y")}
        if pd.isna(stamps.iloc[0]) and pd.isna(xy["x"].iloc[0]) and pd.isna(xy["y"].iloc[0]):  # a header line
            raw, stamps, zones = raw.iloc[1:], stamps.iloc[1:], zones.iloc[1:]
            xy = {c: v.iloc[1:] for c, v in xy.items()}
        if not first[0] and stamps.notna().any():
            line = stamps.notna().idxmax()
            first = (zones[line], f"line {raw['line'][line]} of {path}")
        elsewhere = stamps.notna() & (zones != first[0])
        finite = {c: pd.Series(np.isfinite(v.to_numpy(float)), index=v.index) for c, v in xy.items()}
        unknown = ~raw["event"].str.lower().isin(known)
        bad = raw["short"] | unknown | stamps.isna() | ~finite["x"] | ~finite["y"] | elsewhere
        for row in raw[bad].itertuples():
            problems.append(f"{path} line {row.line}: " + (
                "fewer than 5 fields (timestamp, touch id, event, x, y)" if row.short
                else f"event {row.event!r} is none of {', '.join(events)}" if unknown[row.Index]
                else f"timestamp {row.timestamp!r} is not a time" if pd.isna(stamps[row.Index])
                else f"timestamp {row.timestamp!r} has {zones[row.Index]}, unlike {first[1]} ({first[0]})"
                if elsewhere[row.Index]
                else next(f"{c} {getattr(row, c)!r} is not a finite number" for c in ("x", "y")
                          if not finite[c][row.Index])))
        rows = raw.assign(timestamp=stamps, **xy)
        rows = rows[rows["event"].str.lower() == event.lower()].drop(columns="short")
        rows["source"] = str(path)
        frames.append(rows)
    refuse(problems, "touch log line(s) cannot be read")
    touches = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TOUCH_COLUMNS)
    return touches.sort_values("timestamp", kind="stable").reset_index(drop=True)


def read_keys(path: str) -> pd.DataFrame:
    """Key centres ``x, y, label`` (a header line optional; the tap2key file had none)."""
    try:
        with storage.open_input(path) as stream:
            keys = pd.read_csv(stream, header=None, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot be read as a key table ({err})") from err
    if keys.shape[1] != 3:
        raise DataError(f"{path}: a key table has 3 columns (x, y, label); found {keys.shape[1]}")
    keys = keys.set_axis(["x", "y", "label"], axis=1)
    xy = keys[["x", "y"]].apply(pd.to_numeric, errors="coerce")
    if len(keys) and xy.iloc[0].isna().all():  # a header line: neither x nor y is a number
        keys, xy = keys.iloc[1:], xy.iloc[1:]
    bad = xy.index[xy.isna().any(axis=1)]  # the row's index is its position in the file (a header's too)
    line = FileLines(path, header=False)
    if len(bad) or not len(keys):
        raise DataError(f"{path}: " + (f"x or y not a number on line(s) {line.of(bad[:5])}" if len(bad)
                                       else "no keys"))
    table = pd.DataFrame({"x": xy["x"].to_numpy(float), "y": xy["y"].to_numpy(float),
                          "label": keys["label"].str.strip().to_numpy()}, index=keys.index)
    unlabelled = table.index[table["label"] == ""]
    if len(unlabelled):
        raise DataError(f"{path}: no label on line(s) {line.of(unlabelled[:5])}")
    shared = table[table.duplicated(["x", "y"], keep=False)]
    if len(shared):  # the nearest key of a tap there would always be the first: the others never assigned
        place = shared.iloc[0]
        lines = line.of(shared.index[(shared["x"] == place["x"]) & (shared["y"] == place["y"])])
        raise DataError(f"{path}: lines {lines} put keys at one place ({place['x']:g}, {place['y']:g}); give each "
                        "key its own centre")
    return table.reset_index(drop=True)


def key_labels(x: np.ndarray, y: np.ndarray, keys: pd.DataFrame, max_distance: float | None = None) -> np.ndarray:
    """The label of each touch's nearest key centre; ``none`` beyond ``max_distance`` of every centre."""
    if not len(x):
        return np.zeros(0, dtype=object)
    distance = np.hypot(x[:, None] - keys["x"].to_numpy()[None], y[:, None] - keys["y"].to_numpy()[None])
    nearest = distance.argmin(axis=1)
    labels = keys["label"].to_numpy()[nearest].astype(object)
    if max_distance is not None:
        labels[distance[np.arange(len(x)), nearest] > max_distance] = "none"
    return labels


def pattern_regex(pattern: str) -> re.Pattern:
    """A regex that finds a strptime ``pattern`` (digit directives only) inside a file name."""
    parts, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern):
            code = pattern[i + 1]
            if code == "%":
                parts.append("%")
            elif code in STRPTIME_DIGITS:
                parts.append(STRPTIME_DIGITS[code])
            else:
                raise ValueError(f"--time_pattern {pattern!r}: %{code} is not supported (use %Y %y %m %d %j %H %M %S "
                                 "%f: a start time written in digits)")
            i += 2
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts))


def recording_start(path: str, pattern: str = SEED_PATTERN) -> dt.datetime:
    """The start time written in a recording's file name: the last 7 integer groups (``last7``: hour, minute,
    second, fraction, month, day, year) or the last match of a strptime ``pattern``."""
    name = Path(storage.name(path)).stem
    if pattern == SEED_PATTERN:
        groups = re.findall(r"\d+", name)
        if len(groups) < 7:
            raise DataError(f"{path}: the file name holds {len(groups)} integer groups; --time_pattern last7 reads "
                            "the last 7 as hour, minute, second, fraction, month, day, year (give --time_pattern "
                            "or --start_column)")
        hour, minute, second, fraction, month, day, year = groups[-7:]
        text = f"{int(year):04d}-{int(month):02d}-{int(day):02d} {hour}:{minute}:{second}.{fraction[:6]}"
        try:
            return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f")
        except ValueError as err:
            raise DataError(f"{path}: its last 7 integer groups are not a time ({err})") from err
    found = list(pattern_regex(pattern).finditer(name))
    if not found:
        raise DataError(f"{path}: the file name does not contain --time_pattern {pattern!r}")
    try:
        return dt.datetime.strptime(found[-1].group(0), pattern)
    except ValueError as err:
        raise DataError(f"{path}: {found[-1].group(0)!r} is not a time of --time_pattern {pattern!r} ({err})") from err


def read_taps(path: str | Path) -> pd.DataFrame:
    """A ``taps detect`` table (``path, time, ...``), every cell as text except ``time`` (seconds)."""
    from audiotune.data.segments import read_source, source_path

    taps = read_source(path)
    if "time" not in taps.columns:
        raise DataError(f"{path}: needs a 'time' column (tap times in seconds, as `audiotune taps detect` writes)")
    times = pd.to_numeric(taps["time"], errors="coerce")
    bad = np.flatnonzero(times.isna().to_numpy() | (times < 0).to_numpy())
    if len(bad):
        raise DataError(f"{path}: 'time' is not a number >= 0 on line(s) {FileLines(source_path(path)).of(bad[:5])}")
    return taps.assign(time=times.astype(float))


def recording_starts(taps: pd.DataFrame, source: str | Path, pattern: str,
                     column: str | None) -> dict[str, dt.datetime]:
    """Each recording's start: from ``column`` of the taps table (one value per recording) or its file name."""
    starts = {}
    for path, rows in taps.groupby("path", sort=False):
        if column is None:
            starts[str(path)] = recording_start(str(path), pattern)
            continue
        if column not in taps.columns:
            raise DataError(f"{source}: --start_column {column!r} is not a column ({list(taps.columns)})")
        values = rows[column].unique()
        stamp = pd.to_datetime(values[0], errors="coerce") if len(values) == 1 else pd.NaT
        if pd.isna(stamp):
            raise DataError(f"{source}: {path}: --start_column {column!r} must hold one readable time per "
                            f"recording (found {list(values[:3])})")
        starts[str(path)] = stamp.to_pydatetime()
    return starts
