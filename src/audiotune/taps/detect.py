"""Tap detection in long (multichannel) recordings, streamed in overlapping blocks.

The trace is the channel mean (or the mean of ``channel_select``), high-passed with a zero-phase Butterworth
filter (``sosfiltfilt``; the tap2key system used order 3 at 1200 Hz), then optionally turned into an envelope
(short-time RMS over ``envelope`` seconds). Peaks are the trace's local maxima above a height that is
either given (``height``) or adaptive: ``factor`` × the robust noise floor (the ``floor_quantile`` of
``|trace|`` over the whole recording) and, with ``relative`` > 0, at least ``relative`` × the median height
of the ``top`` strongest peaks (for recordings whose noise floor is near zero, e.g. behind a noise gate).
Peaks closer than ``min_distance`` to a higher one are dropped, as ``scipy.signal.find_peaks(distance=...)``
does; peaks within ``edge`` seconds of either end of the recording are dropped (start/stop transients); and
with ``release`` > 0 a peak that follows a kept one within ``release`` seconds and is below
``release_ratio`` × its height is dropped (a key's release, a stop click).

Memory is bounded by the block, not the recording: each block is read with a margin of context on both sides,
so the filter and the envelope see the same samples as a whole-file pass: the margin is ``margin_seconds``, or
more where the envelope window plus the filter's settling time (:func:`settling_samples`: its slowest pole
decays to 1e-12 of the block edge's transient) needs more, so the peaks do not depend on ``block_seconds``; the
floor comes from a log-spaced histogram of
``|trace|`` whose counts add up across blocks. Two passes: the histogram, then the peaks.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from audiotune import storage
from audiotune.data.audio import LOUDEST, AudioError, check_samples, open_audio, read_frames
from audiotune.data.errors import DataError, refuse
from audiotune.progress import track
from audiotune.taps import TAP_WINDOW, refuse_repeated

# |trace| histogram for the noise floor: log-spaced bins, 1 % wide, from 1e-9 to 1e3 (float audio and int PCM
# read as float both fall inside)
HIST_EDGES = np.geomspace(1e-9, 1e3, int(np.log(1e12) / np.log(1.01)) + 1)
# bits of the integers scipy.io.wavfile reads per sample format (24-bit: shifted into int32), which tap2key divided
# by 2**32; float formats are read as they are
SCIPY_WAV_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 32, "PCM_32": 32}
SETTLED = 1e-12  # what is left of the high-pass filter's transient from a block's edge where the block begins
OVERVIEW_BINS = 4000  # parts of a recording whose max |trace| its timeline draws


def tap2key_height(peak_height: float, subtype: str) -> float:
    """tap2key's ``--peak_height`` (a height of its trace: the WAV's samples as scipy reads them, divided by 2**32)
    as a height of the trace read here (samples in [-1, 1]): twice it for 32- and 24-bit PCM."""
    bits = SCIPY_WAV_BITS.get(subtype)
    return peak_height * 2.0 ** 32 / (2.0 ** (bits - 1) if bits else 1.0)


@dataclass
class DetectOptions:
    cutoff: float = 1200.0  # high-pass cutoff, Hz
    order: int = 3  # Butterworth order (zero-phase: applied twice)
    min_distance: float = 0.125  # seconds between peaks
    height: float | None = None  # fixed threshold on the trace; None: adaptive
    peak_height: float | None = None  # fixed threshold in tap2key's units (see tap2key_height)
    factor: float = 8.0  # adaptive threshold = factor x noise floor
    floor_quantile: float = 0.5  # the noise floor: this quantile of |trace| over the recording
    envelope: float = 0.0  # seconds of the short-time RMS of the trace (0: the signed trace, positive peaks)
    relative: float = 0.0  # threshold at least relative x median height of the top strongest peaks (0 = off)
    top: int = 15
    edge: float = 0.0  # seconds at each end of the recording where peaks are dropped
    release: float = 0.0  # seconds after a kept peak in which a weaker one (< release_ratio x) is dropped
    release_ratio: float = 0.8
    channel_select: tuple[int, ...] | None = None  # channels averaged into the trace (default: all)
    block_seconds: float = 60.0
    margin_seconds: float = 0.5

    def validate(self) -> None:
        """A ValueError naming each option out of its range, as its flag with its value (``--factor 0: must be
        > 0``), on one line."""
        rules = (("cutoff", self.cutoff > 0, "must be > 0 (Hz)"), ("order", self.order >= 1, "must be >= 1"),
                 ("min_distance", self.min_distance >= 0, "must be >= 0 (seconds)"),
                 ("factor", self.factor > 0, "must be > 0"),
                 ("floor_quantile", 0 < self.floor_quantile < 1, "must be between 0 and 1"),
                 ("envelope", self.envelope >= 0, "must be >= 0 (seconds)"),
                 ("block_seconds", self.block_seconds > 0, "must be > 0"),
                 ("margin_seconds", self.margin_seconds > 0, "must be > 0"),
                 ("relative", self.relative >= 0, "must be >= 0"), ("top", self.top >= 1, "must be >= 1"),
                 ("edge", self.edge >= 0, "must be >= 0 (seconds)"), ("release", self.release >= 0,
                                                                      "must be >= 0 (seconds)"),
                 ("release_ratio", self.release_ratio > 0, "must be > 0"))
        bad = [f"--{name} {getattr(self, name):g}: {rule}" for name, ok, rule in rules if not ok]
        if self.height is not None and self.height <= 0:
            bad.append(f"--height {self.height:g}: a threshold must be positive")
        if self.peak_height is not None and (self.peak_height <= 0 or self.height is not None):
            bad.append(f"--peak_height {self.peak_height:g}: tap2key's threshold, positive and given instead of "
                       "--height")
        if bad:
            raise ValueError("; ".join(bad))


@dataclass
class Detection:
    path: str
    sample_rate: int
    threshold: float
    floor: float | None  # the adaptive noise floor, None when the height was given
    positions: np.ndarray  # peak sample indices
    heights: np.ndarray  # trace value at each peak
    energies: np.ndarray  # (peaks, channels): RMS of each raw channel around the peak
    duration: float = 0.0  # seconds
    overview: np.ndarray | None = None  # max |trace| per equal bin of the recording (for plots)


def settling_samples(sos: np.ndarray) -> int:
    """Samples in which the transient of the filter ``sos`` decays to :data:`SETTLED` of its start (its slowest
    pole's radius r: r**n = SETTLED)."""
    from scipy.signal import sos2zpk

    radius = float(np.max(np.abs(sos2zpk(sos)[1]), initial=0.0))
    return int(np.ceil(np.log(SETTLED) / np.log(radius))) if 0 < radius < 1 else 1


def check_finite(path: str, data: np.ndarray, start: int, rate: int) -> None:
    """The samples of :func:`~audiotune.data.audio.read_audio`'s rule (finite, no larger than
    :data:`~audiotune.data.audio.LOUDEST`), else an AudioError naming ``path`` and the time of the first bad one
    (``data``: frames from sample ``start``)."""
    try:
        check_samples(path, data)
    except AudioError as err:
        first = int(np.argmax(~(np.abs(data) <= LOUDEST).all(axis=1)))  # NaN compares False: bad as well
        raise AudioError(f"{err}; the first at {(start + first) / rate:.3f} s") from None


class _Trace:
    """The detection trace of one recording, block by block (start sample, trace values), read from its opened
    file (:func:`~audiotune.data.audio.open_audio`)."""

    def __init__(self, path: str, handle: sf.SoundFile, options: DetectOptions) -> None:
        from scipy.signal import butter

        self.path, self.handle, self.options = path, handle, options
        self.rate, self.frames, self.channels = handle.samplerate, handle.frames, handle.channels
        select = options.channel_select
        if select is not None and (not select or min(select) < 0 or max(select) >= self.channels):
            raise ValueError(f"{path}: --channel_select {list(select)} outside its {self.channels} channels")
        if options.cutoff >= self.rate / 2:
            raise ValueError(f"{path}: high-pass cutoff {options.cutoff} Hz is not below its Nyquist frequency "
                             f"({self.rate / 2:g} Hz)")
        self.select = list(select) if select is not None else None
        self.sos = butter(options.order, options.cutoff, btype="highpass", fs=self.rate, output="sos")
        self.block = max(int(options.block_seconds * self.rate), 1)
        self.pool = int(round(options.envelope * self.rate))
        # the envelope of a block's first sample reads a window's samples before it, and those must be filtered
        # as in a whole-file pass: the filter's transient from the read's edge has died away before them
        self.margin = max(int(options.margin_seconds * self.rate), 1, self.pool + settling_samples(self.sos))

    def _mono(self, start: int, stop: int) -> np.ndarray:
        data = read_frames(self.path, self.handle, start, stop)
        data = data if self.select is None else data[:, self.select]
        check_finite(self.path, data, start, self.rate)
        return data.mean(axis=1)

    def blocks(self, label: str) -> Iterator[tuple[int, np.ndarray]]:
        """(first sample, trace) per block; together the blocks cover the recording once. The pass's progress is
        reported as ``label``."""
        from scipy.ndimage import uniform_filter1d
        from scipy.signal import sosfiltfilt

        for start in track(range(0, self.frames, self.block), label, unit="block"):
            stop = min(start + self.block, self.frames)
            lo, hi = max(start - self.margin, 0), min(stop + self.margin, self.frames)
            x = self._mono(lo, hi)
            # sosfiltfilt pads the ends by reflection; too short a piece is filtered without padding
            padlen = min(3 * (2 * len(self.sos) + 1), len(x) - 1)
            y = sosfiltfilt(self.sos, x, padlen=max(padlen, 0)) if len(x) > 1 else x
            if self.pool > 1:
                y = np.sqrt(np.maximum(uniform_filter1d(y * y, size=self.pool, mode="nearest"), 0.0))
            yield start, y[start - lo: stop - lo]

    def raw_window(self, centre: int, before: int, after: int) -> np.ndarray:
        lo, hi = max(centre - before, 0), min(centre + after, self.frames)
        return read_frames(self.path, self.handle, lo, hi)


def noise_floor(trace: _Trace, quantile: float) -> float:
    """The ``quantile`` of |trace| over the recording, from a histogram (1 % bins) that blocks add up to."""
    counts = np.zeros(len(HIST_EDGES) + 1, dtype=np.int64)
    for _, y in trace.blocks(f"{trace.path}: noise floor"):
        counts += np.bincount(np.searchsorted(HIST_EDGES, np.abs(y)), minlength=len(counts))
    rank = np.searchsorted(np.cumsum(counts), quantile * counts.sum())
    if rank == 0:
        return float(HIST_EDGES[0])
    return float(HIST_EDGES[min(rank, len(HIST_EDGES) - 1)])


def local_maxima(y: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the strict local maxima (a plateau counts once, at its middle) at or above ``threshold``."""
    from scipy.signal import find_peaks

    return find_peaks(y, height=threshold)[0]


def select_by_distance(positions: np.ndarray, heights: np.ndarray, distance: int) -> np.ndarray:
    """Mask of the peaks kept when each peak removes the lower ones within ``distance`` samples, highest
    first (the rule of ``scipy.signal.find_peaks(distance=...)``)."""
    keep = np.ones(len(positions), dtype=bool)
    if distance < 1 or len(positions) < 2:
        return keep
    for i in np.argsort(heights, kind="stable")[::-1]:
        if not keep[i]:
            continue
        lo = np.searchsorted(positions, positions[i] - distance, side="right")
        hi = np.searchsorted(positions, positions[i] + distance, side="left")
        keep[lo:i] = False
        keep[i + 1:hi] = False
    return keep


def after_release(positions: np.ndarray, heights: np.ndarray, window: int, ratio: float) -> np.ndarray:
    """Mask without the peaks that follow a kept peak within ``window`` samples below ``ratio`` x its height."""
    keep = np.ones(len(positions), dtype=bool)
    for i in range(len(positions)):
        lo = np.searchsorted(positions, positions[i] - window, side="left")
        earlier = heights[lo:i][keep[lo:i]]
        if len(earlier) and heights[i] < ratio * earlier.max():
            keep[i] = False
    return keep


def detect(path: str | Path, options: DetectOptions, window: tuple[float, float] = TAP_WINDOW,
           overview_bins: int = 0) -> Detection:
    """The taps of one recording. ``window`` (seconds before, after) is where each channel's energy is
    measured; ``overview_bins`` > 0 also keeps the
    maximum |trace| of that many equal parts of the recording."""
    options.validate()
    with open_audio(str(path)) as handle:
        return _detect(path, _Trace(str(path), handle, options), window, overview_bins)


def _detect(path: str | Path, trace: _Trace, window: tuple[float, float], overview_bins: int) -> Detection:
    """The taps of the recording at ``path``, which ``trace`` reads (see :func:`detect`)."""
    options = trace.options
    floor = None
    if options.peak_height is not None:
        threshold = tap2key_height(options.peak_height, trace.handle.subtype)
    elif options.height is None:
        floor = noise_floor(trace, options.floor_quantile)
        threshold = options.factor * floor
    else:
        threshold = options.height
    positions, heights = [], []
    previous: tuple[int, np.ndarray] | None = None
    bins = np.zeros(overview_bins) if overview_bins > 0 else None
    for start, y in trace.blocks(f"{trace.path}: taps"):
        if bins is not None:
            _add_to_overview(bins, start, y, trace.frames)
        peaks = local_maxima(y, threshold)
        positions.append(peaks + start)
        heights.append(y[peaks])
        if previous is not None:  # find_peaks never reports an array's end samples: check the boundary here
            boundary = _boundary_peaks(previous, (start, y), threshold)
            positions.append(np.asarray([b[0] for b in boundary], dtype=np.int64))
            heights.append(np.asarray([b[1] for b in boundary], dtype=np.float64))
        previous = (start, y)
    pos = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    hgt = np.concatenate(heights) if heights else np.zeros(0)
    order = np.argsort(pos, kind="stable")
    pos, hgt = pos[order], hgt[order]
    keep = select_by_distance(pos, hgt, int(round(options.min_distance * trace.rate)))
    edge = int(round(options.edge * trace.rate))
    keep &= (pos >= edge) & (pos < trace.frames - edge)
    pos, hgt = pos[keep], hgt[keep]
    if options.relative > 0 and len(hgt):
        reference = float(np.median(np.sort(hgt)[::-1][:options.top]))
        threshold = max(threshold, options.relative * reference)
        pos, hgt = pos[hgt >= threshold], hgt[hgt >= threshold]
    if options.release > 0:
        keep = after_release(pos, hgt, int(round(options.release * trace.rate)), options.release_ratio)
        pos, hgt = pos[keep], hgt[keep]
    before, after = round(window[0] * trace.rate), round(window[1] * trace.rate)
    energies = np.array([np.sqrt(np.mean(trace.raw_window(int(p), before, after) ** 2, axis=0)) for p in pos])
    return Detection(str(path), trace.rate, float(threshold), floor, pos, hgt,
                     energies.reshape(len(pos), trace.channels), trace.frames / trace.rate, bins)


def _add_to_overview(bins: np.ndarray, start: int, y: np.ndarray, frames: int) -> None:
    """The max |trace| of each of ``bins``' equal parts of a recording of ``frames`` samples, updated with the block
    ``y`` that begins at sample ``start``."""
    if len(y):
        np.maximum.at(bins, (np.arange(start, start + len(y)) * len(bins)) // max(frames, 1), np.abs(y))


def trace_overview(path: str, options: DetectOptions, bins: int = OVERVIEW_BINS) -> tuple[np.ndarray, int, int]:
    """The timeline's trace of the recording at ``path`` as :func:`detect` with ``options`` kept it (max |trace| of
    ``bins`` equal parts), its sample rate and its length in samples: one pass over its blocks."""
    with open_audio(path) as handle:
        trace = _Trace(path, handle, options)
        overview = np.zeros(bins)
        for start, y in trace.blocks(f"{path}: trace"):
            _add_to_overview(overview, start, y, trace.frames)
        return overview, trace.rate, trace.frames


def check_recordings(paths: list[str]) -> None:
    """Every recording given once, readable as audio (local, or remote: only its header is read) and of one
    channel count, or one error naming each bad file."""
    refuse_repeated(paths, "recording(s)", "each recording is searched once")
    problems = []
    channels: dict[int, list[str]] = {}
    for path in paths:
        try:
            with open_audio(str(path)) as handle:
                if handle.frames == 0:
                    problems.append(f"{path}: no samples")
                channels.setdefault(handle.channels, []).append(str(path))
        except AudioError as err:
            problems.append(f"{path}: cannot be read as audio ({str(err).removeprefix(f'{path}: ')})")
        except OSError as err:  # a remote file system that cannot be reached
            problems.append(f"{path}: cannot be read as audio ({err})")
    refuse(problems, "recording(s) cannot be searched for taps")
    if len(channels) > 1:
        counts = ", ".join(f"{count} channels ({len(files)} recording(s), e.g. {files[0]})"
                           for count, files in sorted(channels.items()))
        raise DataError(f"recordings of different channel counts: {counts}; the segments of one taps table are read "
                        "with all their recording's channels, so detect the taps of each channel count into a table "
                        "of its own")


def taps_table(detections: list[Detection], out: Path) -> pd.DataFrame:
    """``path, time, height, energy_ch0..`` rows (paths relative to ``out``'s folder, as `audiotune segment`
    reads them; in full where the recording and ``out`` are not in one place, see :func:`storage.relative`)."""
    rows = []
    for d in detections:
        rel = table_path(d.path, out)
        for i, (p, h) in enumerate(zip(d.positions, d.heights)):
            row = {"path": rel, "time": round(float(p) / d.sample_rate, 6), "height": float(h)}
            row.update({f"energy_ch{c}": float(e) for c, e in enumerate(d.energies[i])})
            rows.append(row)
    columns = ["path", "time", "height"] + sorted({k for r in rows for k in r if k.startswith("energy_ch")},
                                                  key=lambda k: int(k[9:]))
    return pd.DataFrame(rows, columns=columns)


def table_path(path: str, out: Path) -> str:
    """A recording's ``path`` as the taps table ``out`` names it: relative to its folder where both are in one
    place."""
    absolute = path if storage.is_remote(path) else str(Path(path).resolve())
    return storage.relative(absolute, out.resolve().parent)


def detection_summary(detections: list[Detection], out: Path, options: DetectOptions,
                      window: tuple[float, float]) -> dict[str, Any]:
    """What OUT.report.json holds beside the taps table ``out``: the options and, per recording (those without a
    tap too, which the table has no row of), its length, rate, threshold and noise floor: with the table and the
    recordings, all that the report page draws."""
    return {"command": "taps detect", "taps": int(sum(len(d.positions) for d in detections)),
            "window_seconds": {"before": window[0], "after": window[1]}, "options": dataclasses.asdict(options),
            "recordings": [{"path": table_path(d.path, out), "taps": len(d.positions), "seconds": d.duration,
                            "sample_rate": d.sample_rate, "threshold": d.threshold, "noise_floor": d.floor}
                           for d in detections]}


def _boundary_peaks(left: tuple[int, np.ndarray], right: tuple[int, np.ndarray],
                    threshold: float) -> list[tuple[int, float]]:
    """The last sample of block ``left`` and the first of block ``right`` when they are strict local maxima of
    the joined trace (``find_peaks`` cannot see them from inside either block)."""
    (a_start, a), (b_start, b) = left, right
    found = []
    before = a[-2] if len(a) > 1 else -np.inf
    if a[-1] >= threshold and a[-1] > before and a[-1] > b[0]:
        found.append((a_start + len(a) - 1, float(a[-1])))
    after = b[1] if len(b) > 1 else -np.inf
    if b[0] >= threshold and b[0] > a[-1] and b[0] > after:
        found.append((b_start, float(b[0])))
    return found
