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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.data.errors import DataError, refuse
from audiotune.taps import ALIGN_WRITES, check_written, file_key
from audiotune.taps.align_inputs import (
    SEED_PATTERN,
    key_labels,
    pattern_regex,
    read_keys,
    read_taps,
    read_touch_logs,
    recording_starts,
)


@dataclass
class AlignOptions:
    latency: float | None = None  # seconds from a logged touch to its sound; None: estimated
    selectivity: float = 0.1  # seconds a tap may lie from its touch's expected time
    max_latency: float = 1.0  # |latency| searched when it is estimated
    keep_none: bool = False  # keep taps matched to off-key touches, labelled 'none'
    max_key_distance: float | None = None  # a touch farther than this from every key centre is 'none'
    event: str = "Down"  # the touch-log event that marks a touch
    until: float | None = None  # only touches expected in the first this many seconds of a recording (tap2key: 60)

    def validate(self) -> None:
        if self.selectivity <= 0 or self.max_latency < 0:
            raise ValueError(f"--selectivity {self.selectivity} must be > 0 and --max_latency {self.max_latency} "
                             ">= 0")
        if self.max_key_distance is not None and self.max_key_distance <= 0:
            raise ValueError(f"--max_key_distance {self.max_key_distance} must be > 0")
        if self.until is not None and self.until <= 0:
            raise ValueError(f"--until {self.until}: seconds from a recording's start, > 0")


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

    events: pd.DataFrame  # one row per kept match: the tap's columns + label, x, y, touch_time, error, timestamp;
    # indexed as the tap's row in the taps table
    leftover: pd.DataFrame  # kind (tap | touch | none | late | outside), path, time, timestamp, x, y, label
    latency: float
    estimated: bool
    recordings: list[dict] = field(default_factory=list)

    def report(self) -> dict:
        """The counts of the alignment: taps and matches per recording; a touch left unpaired (or late) that
        several recordings hold (arrays recording at once) is listed with each and counted once, by its log line."""
        left = self.leftover
        if len(left):
            by_touch = left["kind"].isin(("touch", "late"))
            left = pd.concat([left[~by_touch], left[by_touch].drop_duplicates(["kind", "source", "line"])])
        kinds = left["kind"].value_counts().to_dict() if len(left) else {}
        return {"latency": round(self.latency, 6), "latency_estimated": self.estimated,
                "matched": int(sum(r["matched"] for r in self.recordings)),
                "kept": len(self.events),
                "matched_none": int(kinds.get("none", 0))  # off-key matches left out, and those kept (--keep_none)
                + (int((self.events["label"] == "none").sum()) if len(self.events) else 0),
                "unmatched_taps": int(kinds.get("tap", 0)), "unmatched_touches": int(kinds.get("touch", 0)),
                "touches_after_until": int(kinds.get("late", 0)),
                "touches_outside_recordings": int(kinds.get("outside", 0)), "recordings": self.recordings}


def align(taps: pd.DataFrame, starts: dict[str, dt.datetime], durations: dict[str, float], touches: pd.DataFrame,
          keys: pd.DataFrame, options: AlignOptions) -> Alignment:
    """Match each recording's taps (``path, time, ...`` rows) with the touches that fall inside it.

    ``starts``/``durations`` give each path's start time and length in seconds. A touch is paired in every
    recording whose span (shifted by the latency, widened by ``selectivity``) holds it: recordings made at once
    (two arrays) each pair it, as tap2key labelled each recording from the whole log."""
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

    events, event_rows, leftover, summary = [], [], [], []
    claimed = np.zeros(len(touches), dtype=bool)  # in a recording's span
    for path, seconds in zip(paths, touch_rows):
        expected = seconds + latency
        inside = (expected >= -options.selectivity) & (expected <= durations[path] + options.selectivity)
        late = inside & (expected >= options.until) if options.until is not None else np.zeros_like(inside)
        within = np.flatnonzero(inside & ~late)
        claimed[inside] = True
        for index in np.flatnonzero(late):  # in the recording, past the labelled start (--until)
            leftover.append({"kind": "late", "path": path, "time": round(float(expected[index]), 6),
                             **_touch_fields(touches.iloc[index])})
        rows = taps[taps["path"] == path].sort_values("time", kind="stable")
        order, rows = rows.index, rows.reset_index(drop=True)
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
                event_rows.append(order[i])
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
    return Alignment(pd.DataFrame(events, index=event_rows), leftover_table, latency, estimated, summary)


def _touch_fields(touch: pd.Series) -> dict:
    return {"timestamp": touch["timestamp"].isoformat(sep=" "), "x": touch["x"], "y": touch["y"],
            "label": touch["label"], "source": touch["source"], "line": int(touch["line"])}


@dataclass
class AlignResult:
    """What :func:`align_csv` wrote."""

    out: Path
    segments: pd.DataFrame
    alignment: Alignment
    summary: dict  # what OUT.report.json holds
    leftover_path: Path
    report_path: Path
    skipped: pd.DataFrame
    skipped_path: Path | None


def align_csv(taps_csv: str | Path, touch_logs: list[str], keys_csv: str | Path, out: str | Path,
              options: AlignOptions, window: tuple[float, float], time_pattern: str = SEED_PATTERN,
              start_column: str | None = None, report: bool = True) -> AlignResult:
    """``audiotune taps align``: pair the taps of ``taps_csv`` with the touch logs and write the segment table
    ``out`` (``uid, path, offset, duration, time, label, x, y, ...``; ``window`` = seconds before / after each
    tap), ``OUT.unmatched.csv`` (taps and touches without a partner, off-key matches left out, touches in no
    recording) and ``OUT.report.json``. Segments that would leave their file are listed in
    ``OUT.skipped.csv``; with ``report``, the caller writes ``OUT.report.html`` (none of these may be an input).
    Everything is read and checked before anything is written."""
    from audiotune.data.layout import FileLines
    from audiotune.data.segments import _Lengths, event_segments, source_path
    from audiotune.outputs import (
        TAPS_SUMMARY_SUFFIX,
        UNMATCHED_SUFFIX,
        check_output_path,
        sidecar,
        write_csv,
        write_json,
        write_with_skip_list,
    )

    options.validate()
    source, out = source_path(taps_csv), Path(out).resolve()
    if out.suffix.lower() != ".csv":
        raise DataError(f"{out}: --out must be a new .csv file")
    inputs = {file_key(path): what for what, paths in (("the key table", [keys_csv]), ("a touch log", touch_logs),
                                                        ("the taps table", [taps_csv])) for path in paths}
    check_written(out, ALIGN_WRITES, inputs, report)
    check_output_path(out)
    if time_pattern != SEED_PATTERN:
        pattern_regex(time_pattern)  # an unsupported directive is an error before any file is read
    taps = read_taps(source)
    lengths, durations, problems = _Lengths(storage.parent(source)), {}, []
    for path in dict.fromkeys(taps["path"]):
        length = lengths.get(path)[1]
        if isinstance(length, str):
            problems.append(length)
        else:
            durations[str(path)] = length
    refuse(problems, f"recording(s) of {source} cannot be read")
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
    taps_lines = FileLines(source)  # an event is named by its tap's line in the taps table (events keep its index)
    segments, skipped = event_segments(events, window[0], window[1], source, out.parent,
                                       lambda position: taps_lines(int(events.index[position])))
    leftover_path, report_path = sidecar(out, UNMATCHED_SUFFIX), sidecar(out, TAPS_SUMMARY_SUFFIX)
    # taps_table: named as the segments name their recordings (relative to OUT's folder), so that `audiotune report`
    # finds which recording of the summary (named as in the taps table) each segment is of
    summary = alignment.report() | {"segments": len(segments), "skipped_near_edge": len(skipped),
                                    "selectivity": options.selectivity,
                                    "window_seconds": {"before": window[0], "after": window[1]},
                                    "command": "taps align", "taps_table": storage.relative(source, out.parent)}
    write_csv(alignment.leftover, leftover_path, index=False)
    write_json(report_path, summary)
    listed = write_with_skip_list(out, skipped, lambda path: write_csv(segments, path, index=False))
    return AlignResult(out, segments, alignment, summary, leftover_path, report_path, skipped, listed)
