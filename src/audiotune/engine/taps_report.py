"""The report pages of `audiotune taps detect` and `taps align`, beside the table they wrote: the counts, a table
per recording and the timelines of ``--plot``, inline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from audiotune import storage
from audiotune.outputs import TAPS_REPORT_SUFFIX, sidecar, write_bytes
from audiotune.report.taps_page import TapsReport, distinct_names, render_taps
from audiotune.taps.align import AlignResult
from audiotune.taps.detect import Detection
from audiotune.taps.plots import alignment_figure, detection_figure, timeline_png


def detection_report(detections: list[Detection], out: str | Path, window: tuple[float, float]) -> Path:
    """The page of `taps detect` that wrote ``out``: taps per recording, threshold and noise floor, timelines."""
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
    return write_bytes(sidecar(out, TAPS_REPORT_SUFFIX), render_taps(report))


def alignment_report(result: AlignResult) -> Path:
    """The page of `taps align` that wrote ``result.out``: the latency found, matched and unmatched taps and
    touches, per recording with its median time error, and the timelines."""
    alignment = result.alignment
    summary = alignment.report()
    latency = f"{summary['latency'] * 1000:+.1f} ms ({'estimated' if summary['latency_estimated'] else 'given'})"
    facts = [["latency", latency], ["taps matched to a touch", summary["matched"]],
             ["matched to an off-key touch", summary["matched_none"]],
             ["unmatched taps", summary["unmatched_taps"]], ["unmatched touches", summary["unmatched_touches"]],
             ["touches after --until (not labelled)", summary["touches_after_until"]],
             ["touches in no recording", summary["touches_outside_recordings"]],
             ["segments written", len(result.segments)], ["too near a file's edge", len(result.skipped)]]
    names = distinct_names([r["path"] for r in summary["recordings"]])
    rows = [[names[r["path"]], r["taps"], r["touches"], r["matched"], r["unmatched_taps"],
             r["unmatched_touches"], None if r["median_error"] is None else round(r["median_error"] * 1000, 2)]
            for r in summary["recordings"]]
    timelines = []
    for r in summary["recordings"]:
        png = timeline_png(*alignment_figure(r["path"], alignment.events, alignment.leftover))
        timelines.append((f"{names[r['path']]}: {r['matched']} of {r['taps']} taps matched", png))
    errors = alignment.events["error"].to_numpy(float) if "error" in alignment.events else np.zeros(0)
    notes = [f"time error of the matches (tap minus expected touch): median {np.median(errors) * 1000:+.1f} ms, "
             f"largest {np.abs(errors).max() * 1000:.1f} ms"] if len(errors) else []
    report = TapsReport(f"taps aligned: {result.out.name}", storage.final_path(result.out), facts,
                        ["recording", "taps", "touches", "matched", "unmatched taps", "unmatched touches",
                         "median error (ms)"], rows, timelines, notes)
    return write_bytes(sidecar(result.out, TAPS_REPORT_SUFFIX), render_taps(report))
