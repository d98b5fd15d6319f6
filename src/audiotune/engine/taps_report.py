"""The report pages of `audiotune taps detect` and `taps align`, beside the table they wrote: the counts, a table
per recording and the timelines of ``--plot``, inline; written when the command ends, or drawn again by
`audiotune report TABLE` from the table, the files the command wrote beside it and (detect) the recordings."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.data.errors import DataError
from audiotune.outputs import TAPS_REPORT_SUFFIX, TAPS_SUMMARY_SUFFIX, UNMATCHED_SUFFIX, sidecar, skip_list, write_bytes
from audiotune.report.taps_page import TapsReport, distinct_names, render_taps
from audiotune.taps import file_key
from audiotune.taps.align import AlignResult
from audiotune.taps.detect import Detection, DetectOptions, trace_overview
from audiotune.taps.plots import alignment_figure, detection_figure, timeline_png

DETECTED_COLUMNS = ["path", "time", "height"]  # the first columns of a `taps detect` table


def detection_report(detections: list[Detection], out: str | Path, window: tuple[float, float],
                     page: Path | None = None) -> Path:
    """The page of `taps detect` that wrote ``out``: taps per recording, threshold and noise floor, timelines;
    written to ``page`` (default: beside ``out``)."""
    total = sum(len(d.positions) for d in detections)
    facts: list[list[Any]] = [["taps detected", total], ["recordings", len(detections)],
             ["window (s before, after each tap)", f"{window[0]:g}, {window[1]:g}"]]
    names = distinct_names([d.path for d in detections])
    rows = [[names[d.path], len(d.positions), round(d.duration, 3), d.sample_rate, d.threshold,
             d.floor, round(len(d.positions) / d.duration * 60, 2) if d.duration else None] for d in detections]
    timelines = [(f"{names[d.path]}: {len(d.positions)} taps", timeline_png(*detection_figure(d, window)))
                 for d in detections]
    report = TapsReport(f"taps detected: {Path(out).name}", storage.final_path(out), facts,
                        ["recording", "taps", "seconds", "sample rate", "threshold", "noise floor", "taps per minute"],
                        rows, timelines)
    return write_bytes(page or sidecar(out, TAPS_REPORT_SUFFIX), render_taps(report))


def alignment_report(result: AlignResult) -> Path:
    """The page of `taps align` that wrote ``result.out`` (see :func:`alignment_page`)."""
    return alignment_page(result.out, result.summary, result.alignment.events, result.alignment.leftover)


def alignment_page(out: Path, summary: dict, events: pd.DataFrame, leftover: pd.DataFrame,
                   page: Path | None = None) -> Path:
    """The page of `taps align` that wrote ``out`` with ``summary`` (its OUT.report.json): the latency found, matched
    and unmatched taps and touches, per recording with its median time error, and the timelines of ``events`` (the
    matches kept, their paths as the taps table names the recordings) and ``leftover``; written to ``page``
    (default: beside ``out``)."""
    latency = f"{summary['latency'] * 1000:+.1f} ms ({'estimated' if summary['latency_estimated'] else 'given'})"
    facts = [["latency", latency], ["taps matched to a touch", summary["matched"]],
             ["matched to an off-key touch", summary["matched_none"]],
             ["unmatched taps", summary["unmatched_taps"]], ["unmatched touches", summary["unmatched_touches"]],
             ["touches after --until (not labelled)", summary["touches_after_until"]],
             ["touches in no recording", summary["touches_outside_recordings"]],
             ["segments written", summary["segments"]], ["too near a file's edge", summary["skipped_near_edge"]]]
    names = distinct_names([r["path"] for r in summary["recordings"]])
    rows = [[names[r["path"]], r["taps"], r["touches"], r["matched"], r["unmatched_taps"],
             r["unmatched_touches"], None if r["median_error"] is None else round(r["median_error"] * 1000, 2)]
            for r in summary["recordings"]]
    timelines = []
    for r in summary["recordings"]:
        png = timeline_png(*alignment_figure(r["path"], events, leftover))
        timelines.append((f"{names[r['path']]}: {r['matched']} of {r['taps']} taps matched", png))
    errors = events["error"].to_numpy(float) if "error" in events else np.zeros(0)
    notes = [f"time error of the matches (tap minus expected touch): median {np.median(errors) * 1000:+.1f} ms, "
             f"largest {np.abs(errors).max() * 1000:.1f} ms"] if len(errors) else []
    report = TapsReport(f"taps aligned: {out.name}", storage.final_path(out), facts,
                        ["recording", "taps", "touches", "matched", "unmatched taps", "unmatched touches",
                         "median error (ms)"], rows, timelines, notes)
    return write_bytes(page or sidecar(out, TAPS_REPORT_SUFFIX), render_taps(report))


def is_taps_table(path: Path) -> bool:
    """Whether the file ``path`` is the table of `taps detect` or `taps align`: its summary beside it, or (a table
    that `taps detect` wrote before it wrote one) its first columns."""
    return sidecar(path, TAPS_SUMMARY_SUFFIX).is_file() or _columns(path)[:len(DETECTED_COLUMNS)] == DETECTED_COLUMNS


def rebuild_page(table: Path, page: Path) -> Path:
    """The page of `taps detect` or `taps align` that wrote ``table``, drawn again to ``page`` from the table, its
    summary and (detect: the traces) its recordings: all read and checked before the page is written."""
    summary_path = sidecar(table, TAPS_SUMMARY_SUFFIX)
    if not summary_path.is_file():
        raise DataError(f"{table}: written by a `taps detect` from before it wrote {summary_path.name} beside it "
                        f"(the options, thresholds and noise floors its page shows); re-create it with `audiotune "
                        f"taps detect RECORDINGS --out {table}`")
    summary = _read_json(summary_path)
    command = summary.get("command") or ("taps align" if "latency" in summary else "")  # older: align's only
    if command == "taps detect":
        return _redraw_detection(table, summary, page)
    if command == "taps align":
        return _redraw_alignment(table, summary, page)
    raise DataError(f"{summary_path}: not the summary of `audiotune taps detect` or `taps align`")


def _columns(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError, UnicodeDecodeError):  # ParserError and EmptyDataError are ValueErrors
        return []


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot be read as JSON ({err})") from err
    if not isinstance(value, dict) or not isinstance(value.get("recordings"), list):
        raise DataError(f"{path}: not the summary of `audiotune taps detect` or `taps align`")
    return value


def _text_table(path: Path) -> pd.DataFrame:
    """A table the command wrote, every cell as it was written (its labels as text)."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV table ({err})") from err


def _numbers(column: pd.Series) -> np.ndarray:
    """Numbers written by pandas, read back exactly (an empty cell: NaN)."""
    return np.array([float(value) if value else np.nan for value in column], dtype=float)


def _redraw_detection(table: Path, summary: dict, page: Path) -> Path:
    taps = _text_table(table)
    known = {r["path"] for r in summary["recordings"]}
    unknown = sorted(set(taps["path"]) - known) if "path" in taps else ["(no path column)"]
    if unknown:
        raise DataError(f"{table}: rows of recordings its summary {sidecar(table, TAPS_SUMMARY_SUFFIX).name} does not "
                        f"list ({', '.join(unknown[:3])}): re-create both with `audiotune taps detect`")
    fields = {spec.name for spec in dataclasses.fields(DetectOptions)}
    options = DetectOptions(**{k: v for k, v in summary["options"].items() if k in fields})
    if options.channel_select is not None:
        options.channel_select = tuple(options.channel_select)
    audio = [storage.resolve(r["path"], table.parent) for r in summary["recordings"]]
    missing = [path for path in audio if not storage.isfile(path)]
    if missing:
        named = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{named}: not found: {'a recording' if len(missing) == 1 else 'recordings'} of {table}, "
                        "whose traces its page draws (put them back there, or re-create the table with `audiotune "
                        "taps detect`)")
    detections = []
    for r, path in zip(summary["recordings"], audio):
        overview, rate, frames = trace_overview(path, options)
        if rate != r["sample_rate"] or frames / rate != r["seconds"]:
            raise DataError(f"{path}: {rate} Hz, {frames / rate:g} s, not the recording of {table} ({r['sample_rate']}"
                            f" Hz, {r['seconds']:g} s); re-create the table with `audiotune taps detect`")
        rows = taps[taps["path"] == r["path"]]
        positions = np.round(_numbers(rows["time"]) * rate).astype(np.int64)
        detections.append(Detection(r["path"], rate, r["threshold"], r["noise_floor"], positions,
                                    _numbers(rows["height"]), np.zeros((len(rows), 0)), r["seconds"], overview))
    window = summary["window_seconds"]
    return detection_report(detections, table, (window["before"], window["after"]), page)


def _redraw_alignment(table: Path, summary: dict, page: Path) -> Path:
    """The matches kept are the segments and those too near a file's edge (OUT.skipped.csv), each of the recording
    of the summary (named as in the taps table, which ``taps_table`` locates; older summaries: beside ``table``)."""
    leftover_path = sidecar(table, UNMATCHED_SUFFIX)
    if not leftover_path.is_file():
        raise DataError(f"{leftover_path}: not found, which `audiotune taps align` wrote beside {table}; re-create "
                        f"them with `audiotune taps align TAPS.csv --touch_log LOG.csv --keys KEYS.csv --out {table}`")
    leftover = _text_table(leftover_path)
    leftover["time"] = _numbers(leftover["time"])
    skipped = skip_list(table)
    events = pd.concat([_text_table(table), *([_text_table(skipped)] if skipped.is_file() else [])],
                       ignore_index=True)
    recorded = "taps_table" in summary
    taps_dir = storage.parent(storage.resolve(summary["taps_table"], table.parent)) if recorded else table.parent
    order = {file_key(storage.resolve(r["path"], taps_dir)): (i, r["path"])
             for i, r in enumerate(summary["recordings"])}
    found = [order.get(file_key(storage.resolve(path, table.parent))) for path in events["path"]]
    kept = [each for each in found if each is not None]
    counts = np.bincount([i for i, _ in kept], minlength=len(order))
    none = leftover.loc[leftover["kind"] == "none", "path"].value_counts()
    expected = [r["matched"] - int(none.get(r["path"], 0)) for r in summary["recordings"]]
    if len(kept) < len(found) or list(counts) != expected:
        hint = "" if recorded else " (written by an older `taps align`, which did not record where its taps table was)"
        summary_name = sidecar(table, TAPS_SUMMARY_SUFFIX).name
        raise DataError(f"{table}: its segments are not the matches of {summary_name}{hint}; "
                        f"re-create them with `audiotune taps align TAPS.csv --touch_log LOG.csv --keys KEYS.csv "
                        f"--out {table}`")
    events = events.assign(path=[path for _, path in kept], recording=[i for i, _ in kept],
                           **{c: _numbers(events[c]) for c in ("time", "touch_time", "error")})
    events = events.sort_values(["recording", "time"], kind="stable")  # as the command kept them
    return alignment_page(table, summary, events, leftover, page)
