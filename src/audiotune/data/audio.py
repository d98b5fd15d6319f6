"""Read spans of recordings, map their channels, resample and crop; check one span (:func:`check_clip`).

A table row names a file and may name a **segment** of it: ``offset`` and ``duration`` in seconds and the
``channels`` to read. Only that span is ever decoded (``soundfile`` seeks to it), so a segment of an hour-long
8-channel recording costs what the segment costs. The channels then go through one channel stage
(:data:`CHANNEL_MODES`), the same for every backbone. The check of a whole table before a run is
:func:`audiotune.data.checked_audio.scan_audio`.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import soundfile as sf

from audiotune import storage
from audiotune.data.errors import DataError
from audiotune.data.resample import RESAMPLED_LENGTHS, resample, resampled_count

# a table column the reading of uid-layout rows adds: the sample rate a row's metadata says its audio has, which
# reading the clip checks
EXPECTED_RATE = "expected_rate"

CHANNEL_MODES = ("mean", "sum", "maxabs", "select", "interleave", "stack", "none")
# modes whose output is the channels laid end to end or sample by sample: C times longer than one channel
LENGTHENING_MODES = ("interleave", "stack")
# modes that are linear and per-sample: mixing before resampling equals resampling each channel first
MIX_FIRST_MODES = ("mean", "sum", "select", "none")
CHECK_BLOCK_FRAMES = 1 << 16  # the pre-run check streams spans in blocks of this many frames
# |sample| above which a file holds no audio: decoded PCM is within 1 (full scale), a float file near it; the
# float32 features of samples far above would overflow
LOUDEST = 1e6


class AudioError(DataError):
    """An audio file or segment that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Span:
    """Which part of a file a row uses: ``offset`` and ``duration`` in seconds, the ``channels`` to read.

    ``duration=None`` reads to the end of the file; ``channels=None`` reads the channels the audio settings
    pick (``--channel_select``, else all).
    """

    offset: float = 0.0
    duration: float | None = None
    channels: tuple[int, ...] | None = None

    @property
    def is_whole(self) -> bool:
        return self.offset == 0 and self.duration is None and self.channels is None

    @property
    def where(self) -> str:
        """Where in its file a bad sample of this span is, for an error: "" for the whole file, else
        " in this segment (1.5 s to 3 s, channels [0, 1])"."""
        if self.is_whole:
            return ""
        end = "the end" if self.duration is None else f"{self.offset + self.duration:g} s"
        channels = f", channels {list(self.channels)}" if self.channels is not None else ""
        return f" in this segment ({self.offset:g} s to {end}{channels})"


WHOLE_FILE = Span()


def parse_channels(value: object) -> tuple[int, ...] | None:
    """A ``channels`` cell ("0,1,2,3", "4 5", 3, NaN) as channel indices; None when empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    text = str(value).replace(";", ",").replace(" ", ",").strip("[]() ")
    try:
        channels = tuple(int(float(part)) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise DataError(f"channels {value!r}: expected channel indices like '0,1,2,3'") from err
    if any(c < 0 for c in channels):
        raise DataError(f"channels {value!r}: channel indices start at 0")
    return channels or None


def span_of(row: pd.Series | dict) -> Span:
    """The span a table row names through its optional ``offset``, ``duration`` and ``channels`` columns."""
    def number(key: str) -> float | None:
        value = row.get(key)
        if value is None or pd.isna(value):
            return None
        try:
            return float(value)
        except (TypeError, ValueError) as err:
            raise DataError(f"{key} {value!r}: not a number of seconds") from err

    offset, duration = number(OFFSET), number(DURATION)
    return Span(offset=offset or 0.0, duration=duration, channels=parse_channels(row.get("channels")))


OFFSET, DURATION = "offset", "duration"  # a table's segment columns: a row's span of its file, in seconds
SEGMENT_COLUMNS = (OFFSET, DURATION)
SPAN_COLUMNS = (*SEGMENT_COLUMNS, "channels")  # with the channels a row reads


def table_spans(table: pd.DataFrame) -> list[Span]:
    """The span of every row of a table (whole files for tables without segment columns)."""
    columns = [c for c in SPAN_COLUMNS if c in table.columns]
    if not columns:
        return [WHOLE_FILE] * len(table)
    return [span_of(record) for record in table[columns].to_dict("records")]


@contextlib.contextmanager
def open_audio(path: str) -> Iterator[sf.SoundFile]:
    """The decoder of a local file, or of a remote one read by range through the block cache; a missing or
    undecodable file is an :class:`AudioError` naming it."""
    with contextlib.ExitStack() as stack:
        if storage.is_remote(path):
            try:
                source: object = stack.enter_context(storage.open_input(path))
            except FileNotFoundError:
                raise AudioError(f"{path}: file not found") from None
        else:
            source = path
        try:
            handle = stack.enter_context(sf.SoundFile(source))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            if not storage.is_remote(path) and not os.path.isfile(path):  # soundfile says only "System error"
                missing = "a folder, not an audio file" if os.path.isdir(path) else "file not found"
                raise AudioError(f"{path}: {missing}") from None
            raise AudioError(f"{path}: cannot decode audio ({err})") from err
        _check_length(path, handle)
        yield handle


# libsndfile's log of a chunk shorter than its header says: "data : 4768 (should be 1560)"
_SHORT_CHUNK = re.compile(r"^(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_PLACEHOLDER = 0xFFFFFFF0  # streaming writers promise 0xFFFFFFFF (or 0) bytes: the length was unknown


def _check_length(path: str, handle: sf.SoundFile) -> None:
    """A file whose header promises more audio than it holds (cut off in a copy or a download) is bad audio,
    not a shorter clip."""
    info = handle.extra_info
    if "should be" not in info:  # the common case: no chunk shorter than its header says
        return
    for _, promised, held in _SHORT_CHUNK.findall(info):
        if 0 < int(held) < int(promised) < _PLACEHOLDER:
            raise AudioError(f"{path}: truncated: the header promises {promised} bytes of audio, the file holds "
                             f"{held}")


def read_frames(path: str, handle: sf.SoundFile, start: int, stop: int, dtype: str = "float64") -> np.ndarray:
    """Frames [start, stop) of every channel of an opened file (:func:`open_audio`) as (frames, channels);
    a decoding error is an :class:`AudioError` naming ``path``."""
    try:
        handle.seek(start)
        return handle.read(max(stop - start, 0), dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from err


def _check_header(path: str, handle: sf.SoundFile, expected_rate: float) -> None:
    if handle.frames == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not math.isnan(expected_rate) and int(expected_rate) != handle.samplerate:
        raise AudioError(f"{path}: sample rate is {handle.samplerate} Hz but metadata.json says "
                         f"sample_rate_hz={expected_rate:g}")


def file_rate(path: str) -> int:
    """A file's sample rate, from its header."""
    with open_audio(path) as handle:
        return int(handle.samplerate)


def frame_range(path: str, span: Span, rate: int, frames: int) -> tuple[int, int]:
    """[start, stop) frames of a span in a file of ``frames`` frames; a span outside the file is an AudioError."""
    if not math.isfinite(span.offset) or span.offset < 0:
        raise AudioError(f"{path}: offset {span.offset:g} s is not a time in the file")
    if span.duration is not None and (not math.isfinite(span.duration) or span.duration <= 0):
        raise AudioError(f"{path}: duration {span.duration:g} s is not a positive length")
    start = round(span.offset * rate)
    stop = frames if span.duration is None else start + round(span.duration * rate)
    if start >= frames or stop > frames + 1:  # one frame of slack for rounding of the seconds
        end = "end of file" if span.duration is None else f"{span.offset + span.duration:g} s"
        raise AudioError(f"{path}: segment {span.offset:g} s to {end} is past the end of the file "
                         f"({frames / rate:g} s)")
    return start, min(stop, frames)


@dataclass(frozen=True)
class AudioSpec:
    """How audio is prepared for a model: rate, channel stage and crop.

    ``channel_mode``: ``mean``/``sum`` mix the channels per sample; ``maxabs`` takes per sample the value of
    the channel with the largest magnitude; ``select`` keeps the one channel ``channel_select`` names;
    ``interleave`` lays the channels sample by sample (c0[0], c1[0], ..., c0[1], ...) and ``stack`` end to
    end, both C times longer, which the model sees as audio at the same rate; ``none`` takes mono files only.
    ``channel_select`` (file channel indices) keeps a subset before any mode; a row's ``channels`` wins over it.
    ``clip_length`` crops each channel to that many seconds before the channel stage. ``remove_dc`` subtracts the
    prepared signal's mean (after the channel stage and the crop). ``pad_clips`` pads each channel shorter than
    ``clip_length`` to it with the channel's mean, after the crop (the NAIP seeds' Truncate stage: with
    ``remove_dc`` the padding is silence). ``resampled_length``: the count of resampled samples
    (:mod:`audiotune.data.resample`).
    """

    resample_rate: int = 16000
    channel_mode: str = "mean"
    channel_select: tuple[int, ...] = ()
    clip_length: float = 10.0
    remove_dc: bool = False
    pad_clips: bool = False
    resampled_length: str = "ceil"

    def __post_init__(self) -> None:
        if self.resampled_length not in RESAMPLED_LENGTHS:
            raise ValueError(f"resampled length '{self.resampled_length}': choose one of {RESAMPLED_LENGTHS}")
        if self.channel_mode not in CHANNEL_MODES:
            raise ValueError(f"--channel_mode {self.channel_mode}: choose one of {CHANNEL_MODES}")
        if self.channel_mode == "select" and len(self.channel_select) != 1:
            raise ValueError("--channel_mode select keeps one channel: give it as --channel_select N "
                             "(several channels: --channel_select with interleave, stack, mean, sum or maxabs)")
        if any(c < 0 for c in self.channel_select):
            raise ValueError(f"--channel_select {list(self.channel_select)}: channel indices start at 0")

    def output_rate(self, rate: int) -> int:
        return self.resample_rate or rate

    def max_samples(self, rate: int) -> int:
        """Samples per channel after the crop (0 = no crop), at the output rate."""
        return int(self.clip_length * self.output_rate(rate)) if self.clip_length > 0 else 0

    def channels_to_read(self, path: str, span: Span, file_channels: int) -> list[int]:
        """File channel indices this span reads, checked against the file."""
        chosen = span.channels if span.channels is not None else (self.channel_select or None)
        if chosen is None:
            return list(range(file_channels))
        bad = [c for c in chosen if c >= file_channels]
        if bad:
            raise AudioError(f"{path}: channel(s) {bad} asked for, but the file has {file_channels} "
                             f"(0..{file_channels - 1})")
        return list(chosen)

    def check_channel_count(self, path: str, count: int) -> None:
        if self.channel_mode == "none" and count != 1:
            modes = ", ".join(m for m in CHANNEL_MODES if m != "none")
            raise AudioError(f"{path}: {count} channels, and --channel_mode none (the seeds' --reduce False) reads "
                             f"mono files only; choose --channel_mode {modes}")
        if self.channel_mode == "select" and count != 1:
            raise AudioError(f"{path}: --channel_mode select keeps one channel, but this row reads {count}")


def to_mono(waveform: np.ndarray, mode: str = "mean") -> np.ndarray:
    """(channels, samples) to (samples,) by the channel mean or sum (one channel: itself, without a copy)."""
    if waveform.shape[0] == 1:
        return waveform[0]
    return waveform.sum(axis=0) if mode == "sum" else waveform.mean(axis=0)


def map_channels(waveform: np.ndarray, mode: str) -> np.ndarray:
    """(channels, samples) → one signal: see :class:`AudioSpec` for what each mode does to the time axis."""
    if mode in ("mean", "sum"):
        return to_mono(waveform, mode)
    if mode == "maxabs":
        loudest = np.abs(waveform).argmax(axis=0)
        return np.take_along_axis(waveform, loudest[None], axis=0)[0]
    if mode == "interleave":
        return np.ascontiguousarray(waveform.T).reshape(-1)
    if mode in ("stack", "select", "none"):
        return waveform.reshape(-1)
    raise ValueError(f"channel mode '{mode}' is not one of {CHANNEL_MODES}")


def crop(waveform: np.ndarray, max_samples: int, pad: bool = False) -> np.ndarray:
    """Keep the first ``max_samples`` samples of the last axis (0 keeps all); ``pad``: a shorter one padded to
    ``max_samples`` with each channel's mean (the NAIP seeds' Truncate)."""
    if max_samples <= 0:
        return waveform
    short = max_samples - waveform.shape[-1]
    if not pad or short <= 0:
        return waveform[..., :max_samples]
    fill = np.broadcast_to(waveform.mean(axis=-1, keepdims=True, dtype=np.float64).astype(waveform.dtype),
                           (*waveform.shape[:-1], short))
    return np.concatenate([waveform, fill], axis=-1)


def _frames_to_read(spec: AudioSpec, rate: int, start: int, stop: int) -> int:
    """Frames of the span the crop needs, with a margin that keeps the resampler's edge outside the crop."""
    limit = spec.max_samples(rate)
    if not limit:
        return stop - start
    needed = math.ceil(limit * rate / spec.output_rate(rate)) + 1
    margin = 0 if spec.output_rate(rate) == rate else max(1024, rate // 20)
    return min(stop - start, needed + margin)


def read_audio(path: str, expected_rate: float = float("nan"), span: Span = WHOLE_FILE,
               spec: AudioSpec | None = None) -> tuple[np.ndarray, int]:
    """Decode a span to (channels, samples) float32 and its rate; bad files and spans raise AudioError.

    With ``spec``, only the channels and frames it needs are returned (the crop's frames plus a margin).
    """
    spec = spec or AudioSpec(clip_length=0)
    with open_audio(path) as handle:
        _check_header(path, handle, expected_rate)
        rate = handle.samplerate
        start, stop = frame_range(path, span, rate, handle.frames)
        channels = spec.channels_to_read(path, span, handle.channels)
        data = read_frames(path, handle, start, start + _frames_to_read(spec, rate, start, stop), "float32")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if channels != list(range(data.shape[1])):
        data = data[:, channels]
    check_samples(path, data, span.where)
    if not np.any(data):
        raise AudioError(f"{path}: audio is all zeros{span.where}")
    return np.ascontiguousarray(data.T), int(rate)


def check_samples(path: str, samples: np.ndarray, where: str = "") -> None:
    """Finite samples no larger than :data:`LOUDEST`, else an AudioError naming the file (one pass: the peak is
    NaN or infinite when a sample is) and ``where`` in it (:attr:`Span.where`)."""
    peak = float(np.max(np.abs(samples), initial=0.0))
    if not math.isfinite(peak):
        raise AudioError(f"{path}: audio contains NaN or infinite samples{where}")
    if peak > LOUDEST:
        raise AudioError(f"{path}: samples up to {peak:.3g}{where}, where audio is at most about 1 (full scale): not "
                         f"audio samples (the check refuses above {LOUDEST:g}, before any feature overflows)")


def load_clip(path: str, spec: AudioSpec, expected_rate: float = float("nan"),
              span: Span = WHOLE_FILE) -> tuple[np.ndarray, int]:
    """Read the span → channel stage → resample → crop (→ less its mean: ``remove_dc``); one signal, its rate."""
    waveform, rate = read_audio(path, expected_rate, span, spec)
    spec.check_channel_count(path, waveform.shape[0])
    limit = spec.max_samples(rate)
    out_rate = spec.output_rate(rate)
    if spec.channel_mode in MIX_FIRST_MODES:  # linear mixes commute with resampling: resample one signal
        mixed = map_channels(waveform, spec.channel_mode)
        signal = crop(resample(mixed, rate, spec.resample_rate, spec.resampled_length), limit, spec.pad_clips)
    else:
        resampled = resample(waveform, rate, spec.resample_rate, spec.resampled_length)
        signal = map_channels(crop(resampled, limit, spec.pad_clips), spec.channel_mode)
    return (signal - signal.mean(dtype=np.float64)).astype(np.float32) if spec.remove_dc else signal, out_rate


def prepared_length(num_samples: int, rate: int, spec: AudioSpec, num_channels: int = 1) -> int:
    """Samples :func:`load_clip` returns for a span of ``num_samples`` frames at ``rate``."""
    num_samples = resampled_count(num_samples, rate, spec.resample_rate, spec.resampled_length)
    limit = spec.max_samples(rate)
    per_channel = (limit if spec.pad_clips else min(num_samples, limit)) if limit else num_samples
    return per_channel * (num_channels if spec.channel_mode in LENGTHENING_MODES else 1)


def check_clip(path: str, spec: AudioSpec, expected_rate: float = float("nan"), span: Span = WHOLE_FILE) -> int:
    """Check a span without keeping it: header, span, channels, then the samples streamed in blocks.

    Memory is bounded by one block, not by the file. Returns the prepared length in samples.
    """
    with open_audio(path) as handle:
        _check_header(path, handle, expected_rate)
        rate = handle.samplerate
        start, stop = frame_range(path, span, rate, handle.frames)
        channels = spec.channels_to_read(path, span, handle.channels)
        spec.check_channel_count(path, len(channels))
        wanted = _frames_to_read(spec, rate, start, stop)
        read, nonzero = 0, False
        try:
            handle.seek(start)
            for block in handle.blocks(blocksize=CHECK_BLOCK_FRAMES, frames=wanted, dtype="float32",
                                       always_2d=True):
                block = block[:, channels] if len(channels) != block.shape[1] else block
                check_samples(path, block, span.where)
                # what the model reads: channels that cancel in their mean are silence too
                nonzero = nonzero or bool(np.any(map_channels(block.T, spec.channel_mode)))
                read += block.shape[0]
        except AudioError:  # bad samples: said as they are, not as a decoding error
            raise
        except (sf.LibsndfileError, RuntimeError, ValueError) as err:
            raise AudioError(f"{path}: cannot decode audio ({err})") from err
    if read == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not nonzero:
        cropped = f" in its first {read / rate:g} s, all the --clip_length crop reads" if read < stop - start else ""
        raise AudioError(f"{path}: audio is all zeros{span.where}{cropped}")
    # the length comes from the span, not from what the crop needed to read
    return prepared_length(stop - start if read == wanted else read, rate, spec, len(channels))
