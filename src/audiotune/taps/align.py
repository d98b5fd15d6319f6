"""Pair detected taps with the touches of a touch-sensor log, explicitly and one to one.

A touch log (the tap2key system's neonode CSV: no header; timestamp, touch id, event, x, y, ...) holds
absolute timestamps; a recording's taps are seconds from its start, which comes from its file name
(``--time_pattern``) or a column of the taps table. ``latency`` is the time from a logged touch to its sound:
a touch at ``t`` seconds into a recording (by the log's clock) is expected to sound at ``t + latency``, and a
tap matches it when it lies within ``selectivity`` seconds of that (the tap2key system's ``--latency`` and
``--selectivity``, with the same sign).

Matching is a maximum one-to-one assignment of the candidate pairs (as many pairs as possible, then the
smallest total time error), solved per connected group of candidates; each touch is labelled by its nearest
key centre (``keys.csv``: x, y, label), with ``none`` for off-key touches. Without a given latency it is
estimated: the offset that lines up the most (tap, touch) pairs within ``selectivity``, refined to the median
time difference of the pairs it matches.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from audiotune.data.errors import DataError

SEED_PATTERN = "last7"  # the tap2key rule: the last 7 integer groups are hour, minute, second, fraction, month,
# day, year
STRPTIME_DIGITS = {"Y": r"\d{4}", "m": r"\d{1,2}", "d": r"\d{1,2}", "H": r"\d{1,2}", "M": r"\d{1,2}",
                   "S": r"\d{1,2}", "f": r"\d{1,6}", "y": r"\d{2}", "j": r"\d{1,3}"}
TOUCH_COLUMNS = ["timestamp", "touch_id", "event", "x", "y"]


@dataclass
class AlignOptions:
    latency: float | None = None  # seconds from a logged touch to its sound; None: estimated
    selectivity: float = 0.1  # seconds a tap may lie from its touch's expected time
    max_latency: float = 1.0  # |latency| searched when it is estimated
    keep_none: bool = False  # keep taps matched to off-key touches, labelled 'none'
    max_key_distance: float | None = None  # a touch farther than this from every key centre is 'none'
    event: str = "Down"  # the touch-log event that marks a touch

    def validate(self) -> None:
        if self.selectivity <= 0 or self.max_latency < 0:
            raise ValueError(f"--selectivity {self.selectivity} must be > 0 and --max_latency {self.max_latency} "
                             ">= 0")
        if self.max_key_distance is not None and self.max_key_distance <= 0:
            raise ValueError(f"--max_key_distance {self.max_key_distance} must be > 0")


def read_touch_logs(paths: list[str], event: str = "Down") -> pd.DataFrame:
    """The ``event`` rows of one or more touch logs, time ordered: timestamp, touch_id, x, y, source, line.

    A first line whose timestamp does not parse is taken as a header; any later bad line is an error that
    names the file and the line."""
    frames, problems = [], []
    for path in paths:
        try:
            raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataError(f"{path}: cannot be read as a touch log ({err})") from err
        if raw.shape[1] < 5:
            raise DataError(f"{path}: a touch log needs at least 5 columns (timestamp, touch id, event, x, y); "
                            f"found {raw.shape[1]}")
        raw = raw.iloc[:, :5].set_axis(TOUCH_COLUMNS, axis=1)
        raw["line"] = np.arange(1, len(raw) + 1)
        stamps = pd.to_datetime(raw["timestamp"].str.strip(), errors="coerce", format="mixed")
        if len(raw) and pd.isna(stamps.iloc[0]):
            raw, stamps = raw.iloc[1:], stamps.iloc[1:]  # a header line
        raw = raw.assign(timestamp=stamps, event=raw["event"].str.strip())
        rows = raw[raw["event"].str.lower() == event.lower()].copy()
        for column in ("x", "y"):
            rows[column] = pd.to_numeric(rows[column].str.strip(), errors="coerce")
        bad = rows[rows[["timestamp", "x", "y"]].isna().any(axis=1)]
        problems += [f"{path} line {line}: timestamp, x or y unreadable" for line in bad["line"].head(5)]
        rows["source"] = str(path)
        frames.append(rows)
    if problems:
        raise DataError("touch log rows that cannot be read:\n  " + "\n  ".join(problems))
    touches = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TOUCH_COLUMNS)
    return touches.sort_values("timestamp", kind="stable").reset_index(drop=True)


def read_keys(path: str) -> pd.DataFrame:
    """Key centres ``x, y, label`` (a header line optional; the tap2key file had none)."""
    try:
        keys = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot be read as a key table ({err})") from err
    if keys.shape[1] != 3:
        raise DataError(f"{path}: a key table has 3 columns (x, y, label); found {keys.shape[1]}")
    keys = keys.set_axis(["x", "y", "label"], axis=1)
    if len(keys) and pd.isna(pd.to_numeric(keys["x"].iloc[0], errors="coerce")):
        keys = keys.iloc[1:]
    xy = keys[["x", "y"]].apply(pd.to_numeric, errors="coerce")
    bad = np.flatnonzero(xy.isna().any(axis=1).to_numpy())
    if len(bad) or not len(keys):
        raise DataError(f"{path}: " + (f"x or y not a number on line(s) {[int(i) + 1 for i in bad[:5]]}" if len(bad)
                                       else "no keys"))
    return pd.DataFrame({"x": xy["x"].to_numpy(float), "y": xy["y"].to_numpy(float),
                         "label": keys["label"].str.strip().to_numpy()})


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
    name = Path(path).stem
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


def candidate_pairs(taps: np.ndarray, touches: np.ndarray, latency: float,
                    window: float) -> tuple[np.ndarray, np.ndarray]:
    """(tap index, touch index) of every pair with |tap - (touch + latency)| <= window; both inputs sorted."""
    expected = touches + latency
    lo = np.searchsorted(taps, expected - window, side="left")
    hi = np.searchsorted(taps, expected + window, side="right")
    counts = hi - lo
    touch_index = np.repeat(np.arange(len(touches)), counts)
    tap_index = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]) if counts.sum() else np.zeros(0, int)
    return tap_index.astype(np.int64), touch_index.astype(np.int64)


def match(taps: np.ndarray, touches: np.ndarray, latency: float, selectivity: float) -> list[tuple[int, int]]:
    """One-to-one (tap, touch) index pairs: the most pairs within ``selectivity``, then the least total
    |time error|; solved exactly for each connected group of candidate pairs."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    tap_index, touch_index = candidate_pairs(taps, touches, latency, selectivity)
    if not len(tap_index):
        return []
    n_taps = len(taps)
    graph = coo_matrix((np.ones(len(tap_index)), (tap_index, n_taps + touch_index)),
                       shape=(n_taps + len(touches),) * 2)
    _, component = connected_components(graph, directed=False)
    error = np.abs(taps[tap_index] - touches[touch_index] - latency)
    pairs = []
    group_of_pair = component[tap_index]
    for group in np.unique(group_of_pair):
        chosen = np.flatnonzero(group_of_pair == group)
        rows, row_of = np.unique(tap_index[chosen], return_inverse=True)
        cols, col_of = np.unique(touch_index[chosen], return_inverse=True)
        # a pair is worth more than any total error, so the assignment first maximises the number of pairs
        reward = (min(len(rows), len(cols)) + 1) * (selectivity + 1.0)
        cost = np.zeros((len(rows), len(cols)))
        cost[row_of, col_of] = error[chosen] - reward
        for r, c in zip(*linear_sum_assignment(cost)):
            if cost[r, c] < 0:
                pairs.append((int(rows[r]), int(cols[c])))
    return sorted(pairs)


def estimate_latency(taps: list[np.ndarray], touches: list[np.ndarray], selectivity: float,
                     max_latency: float) -> float | None:
    """The latency that lines up the most (tap, touch) pairs over all recordings: the densest interval of
    width 2 x ``selectivity`` among the differences tap - touch within ``max_latency``, then the median
    difference of the pairs one-to-one matching at its centre matches (twice). None without any pair."""
    differences = []
    for t, u in zip(taps, touches):
        a, b = candidate_pairs(t, u, 0.0, max_latency + selectivity)
        differences.append(t[a] - u[b])
    d = np.sort(np.concatenate(differences)) if differences else np.zeros(0)
    d = d[np.abs(d) <= max_latency + selectivity]
    if not len(d):
        return None
    ends = np.searchsorted(d, d + 2 * selectivity, side="right")
    best = int(np.argmax(ends - np.arange(len(d))))
    inside = d[best:ends[best]]
    latency = float(np.median(inside))
    for _ in range(2):
        matched = [t[i] - u[j] for t, u in zip(taps, touches) for i, j in match(t, u, latency, selectivity)]
        if not matched:
            break
        latency = float(np.median(matched))
    return latency


@dataclass
class Alignment:
    """What :func:`align` found: matched events, everything left over, the latency and counts per recording."""

    events: pd.DataFrame  # one row per kept match: the tap's columns + label, x, y, touch_time, error, timestamp
    leftover: pd.DataFrame  # kind (tap | touch | none | outside), path, time, timestamp, x, y, label
    latency: float
    estimated: bool
    recordings: list[dict] = field(default_factory=list)

    def report(self) -> dict:
        kinds = self.leftover["kind"].value_counts().to_dict() if len(self.leftover) else {}
        return {"latency": round(self.latency, 6), "latency_estimated": self.estimated,
                "matched": int(sum(r["matched"] for r in self.recordings)),
                "kept": len(self.events),
                "matched_none": int(kinds.get("none", 0)),
                "unmatched_taps": int(kinds.get("tap", 0)), "unmatched_touches": int(kinds.get("touch", 0)),
                "touches_outside_recordings": int(kinds.get("outside", 0)), "recordings": self.recordings}


def align(taps: pd.DataFrame, starts: dict[str, dt.datetime], durations: dict[str, float], touches: pd.DataFrame,
          keys: pd.DataFrame, options: AlignOptions) -> Alignment:
    """Match each recording's taps (``path, time, ...`` rows) with the touches that fall inside it.

    ``starts``/``durations`` give each path's start time and length in seconds. A touch belongs to the
    recording whose span (shifted by the latency, widened by ``selectivity``) holds it."""
    options.validate()
    labels = key_labels(touches["x"].to_numpy(float), touches["y"].to_numpy(float), keys, options.max_key_distance)
    touches = touches.assign(label=labels)
    stamps = touches["timestamp"].to_numpy("datetime64[ns]")
    paths = list(dict.fromkeys(taps["path"]))
    tap_times, touch_rows = [], []
    for path in paths:
        start = np.datetime64(starts[path], "ns")
        seconds = (stamps - start).astype("timedelta64[ns]").astype(np.int64) / 1e9
        tap_times.append(np.sort(taps.loc[taps["path"] == path, "time"].to_numpy(float)))
        touch_rows.append(seconds)
    estimated = options.latency is None
    latency = options.latency
    if latency is None:
        inside = [s[(s >= -options.max_latency - options.selectivity)
                    & (s <= durations[p] + options.max_latency + options.selectivity)]
                  for p, s in zip(paths, touch_rows)]
        latency = estimate_latency(tap_times, inside, options.selectivity, options.max_latency)
        if latency is None:
            raise DataError(f"no touch lies within {options.max_latency} s (--max_latency) of a tap in any "
                            "recording: check the recording start times (--time_pattern) and the touch log")

    events, leftover, summary = [], [], []
    claimed = np.zeros(len(touches), dtype=bool)
    for path, seconds in zip(paths, touch_rows):
        expected = seconds + latency
        within = np.flatnonzero((expected >= -options.selectivity)
                                & (expected <= durations[path] + options.selectivity) & ~claimed)
        claimed[within] = True
        rows = taps[taps["path"] == path].sort_values("time", kind="stable").reset_index(drop=True)
        pairs = match(rows["time"].to_numpy(float), seconds[within], latency, options.selectivity)
        matched_taps = {i for i, _ in pairs}
        matched_touches = {j for _, j in pairs}
        for i, j in pairs:
            touch = touches.iloc[within[j]]
            record = {**rows.iloc[i].to_dict(), "label": touch["label"], "x": touch["x"], "y": touch["y"],
                      "touch_time": round(float(expected[within[j]]), 6),
                      "error": round(float(rows["time"].iloc[i] - expected[within[j]]), 6),
                      "timestamp": touch["timestamp"].isoformat(sep=" ")}
            if touch["label"] == "none" and not options.keep_none:
                leftover.append({"kind": "none", "path": path, "time": record["time"], **_touch_fields(touch)})
            else:
                events.append(record)
        for i in sorted(set(range(len(rows))) - matched_taps):
            leftover.append({"kind": "tap", "path": path, "time": float(rows["time"].iloc[i])})
        for j in sorted(set(range(len(within))) - matched_touches):
            touch = touches.iloc[within[j]]
            leftover.append({"kind": "touch", "path": path, "time": round(float(expected[within[j]]), 6),
                             **_touch_fields(touch)})
        summary.append({"path": path, "taps": len(rows), "touches": len(within), "matched": len(pairs),
                        "unmatched_taps": len(rows) - len(pairs), "unmatched_touches": len(within) - len(pairs),
                        "median_error": round(float(np.median([rows["time"].iloc[i] - expected[within[j]]
                                                               for i, j in pairs])), 6) if pairs else None})
    for index in np.flatnonzero(~claimed):
        leftover.append({"kind": "outside", "path": "", "time": np.nan, **_touch_fields(touches.iloc[index])})
    columns = ["kind", "path", "time", "timestamp", "x", "y", "label", "source", "line"]
    leftover_table = pd.DataFrame(leftover, columns=columns).astype({"line": "Int64"})
    return Alignment(pd.DataFrame(events), leftover_table, latency, estimated, summary)


def _touch_fields(touch: pd.Series) -> dict:
    return {"timestamp": touch["timestamp"].isoformat(sep=" "), "x": touch["x"], "y": touch["y"],
            "label": touch["label"], "source": touch["source"], "line": int(touch["line"])}


def plot_alignment(path: str, events: pd.DataFrame, leftover: pd.DataFrame, out: Path) -> Path:
    """A recording's taps (heights; matched black, unmatched grey) and touches at their expected times (red;
    unmatched dashed), each match labelled with its key."""
    from audiotune.taps.detect import save_timeline, timeline

    mine = events[events["path"] == path] if len(events) else events
    left = leftover[leftover["path"] == path]
    fig, ax = timeline(Path(path).name)
    heights = (pd.to_numeric(mine["height"], errors="coerce").to_numpy(float) if "height" in mine
               else np.ones(len(mine)))
    top = float(np.nanmax(heights)) if len(mine) else 1.0
    if len(mine):
        ax.plot(mine["time"], heights, "kv", ms=4, label=f"{len(mine)} matched taps")
        ax.vlines(mine["touch_time"], 0, top, color="tab:red", lw=0.8, label="touches (expected time)")
        for t, h, label in zip(mine["time"], heights, mine["label"]):
            ax.annotate(str(label), (t, h), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
    lone = left[left["kind"] == "tap"]
    if len(lone):
        ax.plot(lone["time"], np.full(len(lone), top * 0.5), "x", color="0.5", label=f"{len(lone)} unmatched taps")
    lost = left[left["kind"].isin(["touch", "none"])]
    if len(lost):
        ax.vlines(lost["time"], 0, top, color="tab:red", lw=0.8, linestyles="dashed",
                  label=f"{len(lost)} unmatched or off-key touches")
    return save_timeline(fig, ax, out)


@dataclass
class AlignResult:
    """What :func:`align_csv` wrote."""

    out: Path
    segments: pd.DataFrame
    alignment: Alignment
    leftover_path: Path
    report_path: Path
    skipped: pd.DataFrame
    skipped_path: Path | None


def read_taps(path: Path) -> pd.DataFrame:
    """A ``taps detect`` table (``path, time, ...``), every cell as text except ``time`` (seconds)."""
    from audiotune.data.segments import read_source

    taps = read_source(path)
    if "time" not in taps.columns:
        raise DataError(f"{path}: needs a 'time' column (tap times in seconds, as `audiotune taps detect` writes)")
    times = pd.to_numeric(taps["time"], errors="coerce")
    bad = np.flatnonzero(times.isna().to_numpy() | (times < 0).to_numpy())
    if len(bad):
        raise DataError(f"{path}: 'time' is not a number >= 0 on line(s) {[int(i) + 2 for i in bad[:5]]}")
    return taps.assign(time=times.astype(float))


def recording_starts(taps: pd.DataFrame, source: Path, pattern: str, column: str | None) -> dict[str, dt.datetime]:
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


def align_csv(taps_csv: str | Path, touch_logs: list[str], keys_csv: str | Path, out: str | Path,
              options: AlignOptions, window: tuple[float, float], time_pattern: str = SEED_PATTERN,
              start_column: str | None = None) -> AlignResult:
    """``audiotune taps align``: pair the taps of ``taps_csv`` with the touch logs and write the segment table
    ``out`` (``uid, path, offset, duration, time, label, x, y, ...``; ``window`` = seconds before / after each
    tap), ``OUT.unmatched.csv`` (taps and touches without a partner, off-key matches left out, touches in no
    recording) and ``OUT.report.json``. Segments that would leave their file are listed in
    ``OUT.skipped.csv``. Everything is read and checked before anything is written."""
    from audiotune.data.segments import _Lengths, event_segments, skipped_path
    from audiotune.outputs import check_output_path, write_csv, write_json

    options.validate()
    source, out = Path(taps_csv).resolve(), Path(out).resolve()
    if out.suffix.lower() != ".csv" or out == source:
        raise DataError(f"{out}: --out must be a new .csv file (not the taps table)")
    check_output_path(out)
    if time_pattern != SEED_PATTERN:
        pattern_regex(time_pattern)  # an unsupported directive is an error before any file is read
    taps = read_taps(source)
    lengths, durations, problems = _Lengths(source.parent), {}, []
    for path in dict.fromkeys(taps["path"]):
        length = lengths.get(path)[1]
        if isinstance(length, str):
            problems.append(length)
        else:
            durations[str(path)] = length
    if problems:
        raise DataError(f"{source}: recordings that cannot be read:\n  " + "\n  ".join(problems[:10]))
    starts = recording_starts(taps, source, time_pattern, start_column)
    touches = read_touch_logs(touch_logs, options.event)
    if not len(touches):
        raise DataError(f"{', '.join(touch_logs)}: no {options.event!r} events")
    keys = read_keys(str(keys_csv))
    alignment = align(taps, starts, durations, touches, keys, options)
    if not len(alignment.events):
        raise DataError(f"no tap matched a key touch (latency {alignment.latency:+.3f} s, selectivity "
                        f"{options.selectivity} s); nothing written. Check --latency / --time_pattern, or plot")
    events = alignment.events.astype({"path": str})
    segments, skipped = event_segments(events, window[0], window[1], source, out.parent)
    leftover_path, report_path = out.with_suffix(".unmatched.csv"), out.with_suffix(".report.json")
    report = alignment.report() | {"segments": len(segments), "skipped_near_edge": len(skipped),
                                   "selectivity": options.selectivity,
                                   "window_seconds": {"before": window[0], "after": window[1]}}
    stale = skipped_path(out)
    if len(skipped):
        write_csv(skipped, stale, index=False)
    elif stale.is_file():
        stale.unlink()
    write_csv(alignment.leftover, leftover_path, index=False)
    write_json(report_path, report)
    write_csv(segments, out, index=False)
    return AlignResult(out, segments, alignment, leftover_path, report_path, skipped,
                       stale if len(skipped) else None)
