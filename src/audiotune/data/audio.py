"""Decode, mix down, resample and crop audio; check files before a run uses them."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import soundfile as sf
import soxr

from audiotune.data.layout import DataError


class AudioError(DataError):
    """An audio file that cannot be used; the message names the file."""


def read_audio(path: str, expected_rate: float = float("nan")) -> tuple[np.ndarray, int]:
    """Decode a file to (channels, samples) float32 and its rate; bad files raise AudioError."""
    if not os.path.isfile(path):  # soundfile reports a missing file only as "System error"
        raise AudioError(f"{path}: file not found")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except FileNotFoundError as err:
        raise AudioError(f"{path}: file not found") from err
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not math.isnan(expected_rate) and int(expected_rate) != rate:
        raise AudioError(f"{path}: sample rate is {rate} Hz but metadata.json says sample_rate_hz={expected_rate:g}")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if not np.any(data):
        raise AudioError(f"{path}: audio is all zeros")
    return np.ascontiguousarray(data.T), int(rate)


def to_mono(waveform: np.ndarray, mode: str = "mean") -> np.ndarray:
    """(channels, samples) to (samples,) by the channel mean or sum."""
    return waveform.sum(axis=0) if mode == "sum" else waveform.mean(axis=0)


def resample(waveform: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample the last axis with soxr (no-op when the rates agree or target is 0)."""
    if not target_rate or rate == target_rate:
        return waveform
    return soxr.resample(waveform.T, rate, target_rate).T.astype(np.float32, copy=False)


def crop(waveform: np.ndarray, max_samples: int) -> np.ndarray:
    """Keep the first ``max_samples`` samples (0 keeps all)."""
    return waveform[..., :max_samples] if max_samples > 0 else waveform


@dataclass(frozen=True)
class AudioSpec:
    """How audio is prepared for a model: rate, mono mix-down and crop."""

    resample_rate: int = 16000
    reduce: bool = True
    mono: str = "mean"
    clip_length: float = 10.0

    def output_rate(self, rate: int) -> int:
        return self.resample_rate or rate

    def max_samples(self, rate: int) -> int:
        return int(self.clip_length * self.output_rate(rate)) if self.clip_length > 0 else 0


def _mono(path: str, waveform: np.ndarray, spec: AudioSpec) -> np.ndarray:
    if spec.reduce:
        return to_mono(waveform, spec.mono)
    if waveform.shape[0] != 1:
        raise AudioError(f"{path}: {waveform.shape[0]} channels and reduce=False; models here take mono input")
    return waveform[0]


def load_clip(path: str, spec: AudioSpec, expected_rate: float = float("nan")) -> tuple[np.ndarray, int]:
    """Decode → mono → resample → crop; returns a mono (samples,) clip and its rate."""
    waveform, rate = read_audio(path, expected_rate)
    waveform = resample(_mono(path, waveform, spec), rate, spec.resample_rate)
    rate = spec.output_rate(rate)
    return crop(waveform, spec.max_samples(rate)), rate


def prepared_length(num_samples: int, rate: int, spec: AudioSpec) -> int:
    """Samples :func:`load_clip` returns for a file of ``num_samples`` at ``rate`` (soxr rounds half up)."""
    if spec.resample_rate and spec.resample_rate != rate:
        num_samples = math.floor(num_samples * spec.resample_rate / rate + 0.5)
    limit = spec.max_samples(rate)
    return min(num_samples, limit) if limit else num_samples


def check_clip(path: str, spec: AudioSpec, expected_rate: float = float("nan")) -> int:
    """Decode and check a file without resampling it; returns its prepared length in samples."""
    waveform, rate = read_audio(path, expected_rate)
    _mono(path, waveform, spec)
    return prepared_length(waveform.shape[1], rate, spec)


def scan_audio(table: pd.DataFrame, spec: AudioSpec, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file of a table; returns the table with ``num_samples`` (after preparation) and the failures.

    The scan decodes each file once so that missing, unreadable, empty, all-zero and wrong-rate files
    are found before training starts rather than in the middle of an epoch.
    """
    lengths, failures = [], []
    for uid, row in table.iterrows():
        try:
            lengths.append(check_clip(row["path"], spec, row.get("expected_rate", float("nan"))))
        except DataError as err:
            lengths.append(-1)
            failures.append({"uid": uid, "split": split, "path": row["path"], "reason": str(err)})
    table = table.copy()
    table["num_samples"] = lengths
    return table[table["num_samples"] > 0], pd.DataFrame(failures, columns=["uid", "split", "path", "reason"])
