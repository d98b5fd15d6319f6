"""Resampling with soxr "HQ", and how many samples a resampled span has.

soxr rounds its output count (half up), which drops the last output instant that lies inside the span when the
fraction is below one half; librosa and torchaudio, the seeds' resamplers, keep it (``ceil(N * target / rate)``
samples: 8192 samples at 96 kHz give 1366 at 16 kHz, not 1365). ``ceil`` keeps it with soxr's own value there
(its filter reading zeros past the end, as its flush does), every earlier sample unchanged; ``round`` is soxr's own
count, how runs written before config version 6 were read.
"""
from __future__ import annotations

import threading

import numpy as np
import soxr

RESAMPLED_LENGTHS = ("ceil", "round")

_RESAMPLERS = threading.local()  # each thread's soxr resamplers, by (rate, target rate)


def resampled_count(num_samples: int, rate: int, target_rate: int, length: str = "ceil") -> int:
    """Samples per channel that :func:`resample` gives for ``num_samples`` at ``rate`` (``length``: the rule)."""
    if not target_rate or rate == target_rate:
        return num_samples
    if length == "round":
        return (2 * num_samples * target_rate + rate) // (2 * rate)  # floor(N * target / rate + 1/2), exactly
    if length != "ceil":
        raise ValueError(f"resampled length '{length}': choose one of {RESAMPLED_LENGTHS}")
    return -(-num_samples * target_rate // rate)


def _resampler(rate: int, target_rate: int) -> soxr.ResampleStream:
    """This thread's mono float32 soxr "HQ" resampler between two rates, cleared for a new signal; building one
    (its filter) costs about as much as resampling a short clip."""
    streams: dict[tuple[int, int], soxr.ResampleStream] | None = getattr(_RESAMPLERS, "streams", None)
    if streams is None:
        streams = _RESAMPLERS.streams = {}
    if (rate, target_rate) not in streams:
        streams[(rate, target_rate)] = soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
    stream = streams[(rate, target_rate)]
    stream.clear()
    return stream


def resample(waveform: np.ndarray, rate: int, target_rate: int, length: str = "ceil") -> np.ndarray:
    """Resample the last axis with soxr "HQ" to :func:`resampled_count` samples (no-op when the rates agree or
    target is 0)."""
    if not target_rate or rate == target_rate:
        return waveform
    num_samples = waveform.shape[-1]
    wanted = resampled_count(num_samples, rate, target_rate, length)
    if wanted > resampled_count(num_samples, rate, target_rate, "round"):
        # zeros past the end, which soxr's flush reads anyway, give it the output instant it rounds away
        tail = np.zeros((*waveform.shape[:-1], -(-rate // target_rate)), dtype=waveform.dtype)
        waveform = np.concatenate([waveform, tail], axis=-1)
    if waveform.ndim == 1 and waveform.dtype == np.float32:  # one signal: a kept resampler, the same samples
        return _resampler(rate, target_rate).resample_chunk(waveform, last=True)[:wanted]
    return np.ascontiguousarray(soxr.resample(waveform.T, rate, target_rate).T[..., :wanted], dtype=np.float32)
