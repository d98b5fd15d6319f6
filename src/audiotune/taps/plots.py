"""The timelines of `taps detect` and `taps align`: one wide figure per recording, written as a PNG for ``--plot``
and drawn inline on the report pages."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.taps.detect import Detection


def plot_names(paths: list[str], suffix: str) -> dict[str, str]:
    """The file name of each recording's plot: its file name's stem, then ``suffix``; recordings that share a stem
    (one file name in two folders) have their place in ``paths`` (from 1) after it, ``r_2_taps.png``."""
    names = [Path(storage.name(path)).stem for path in paths]
    for _ in paths:  # until no two are the same (a numbered name may be another recording's own)
        clashing = {name for name, count in Counter(names).items() if count > 1}
        if not clashing:
            break
        names = [f"{name}_{i + 1}" if name in clashing else name for i, name in enumerate(names)]
    return {path: name + suffix for path, name in zip(paths, names)}


def timeline(title: str) -> tuple[Any, Any]:
    """A wide figure with seconds on its x axis (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 4))
    ax.set_xlabel("seconds")
    ax.set_title(title)
    return fig, ax


def timeline_png(fig: Any, ax: Any) -> bytes:
    """The legend, then the figure as PNG bytes; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format="png")
    plt.close(fig)
    return buffer.getvalue()


def save_timeline(fig: Any, ax: Any, out: Path) -> Path:
    """The figure of :func:`timeline_png` written atomically to ``out``."""
    from audiotune.outputs import write_bytes

    out.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(out, timeline_png(fig, ax))


def detection_figure(d: Detection, window: tuple[float, float]) -> tuple[Any, Any]:
    """The diagnostic figure: the trace's envelope, the threshold, the peaks and each peak's window."""
    fig, ax = timeline(storage.name(d.path))
    if d.overview is not None:
        t = (np.arange(len(d.overview)) + 0.5) * d.duration / len(d.overview)
        ax.plot(t, d.overview, lw=0.6, color="0.4", label="max |trace|")
    times = d.positions / d.sample_rate
    ax.axhline(d.threshold, color="tab:green", lw=1, label=f"threshold {d.threshold:.3g}")
    ax.plot(times, d.heights, "kv", ms=4, label=f"{len(times)} peaks")
    for t0 in times:
        ax.axvspan(t0 - window[0], t0 + window[1], color="tab:orange", alpha=0.25, lw=0)
    return fig, ax


def plot_detection(d: Detection, out: Path, window: tuple[float, float]) -> Path:
    """The figure of :func:`detection_figure` as a PNG file."""
    return save_timeline(*detection_figure(d, window), out)


def alignment_figure(path: str, events: pd.DataFrame, leftover: pd.DataFrame) -> tuple[Any, Any]:
    """A recording's taps (heights; matched black, unmatched grey) and touches at their expected times (red;
    unmatched dashed), each match labelled with its key."""
    mine = events[events["path"] == path] if len(events) else events
    left = leftover[leftover["path"] == path]
    fig, ax = timeline(storage.name(path))
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
    return fig, ax


def plot_alignment(path: str, events: pd.DataFrame, leftover: pd.DataFrame, out: Path) -> Path:
    """The figure of :func:`alignment_figure` as a PNG file."""
    return save_timeline(*alignment_figure(path, events, leftover), out)
