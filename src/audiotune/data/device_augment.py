"""The last waveform augmentations of training, batched on the model's device.

Where the features are computed on the device (``--features_on device``) and no mixup mixes finished clips in the
workers, a data worker applies a clip's augmentations up to the pitch shift and only draws the last three
(:meth:`~audiotune.data.augment.WaveformAugmenter.split`: a :class:`~audiotune.data.augment.DeviceTail`); the
collator turns the batch's draws into a few tensors (:func:`collate_tails`) and, after the transfer,
:func:`finish_tails` applies them to the zero-padded batch, before the front end:

- equalisation: the clip convolved, by FFT in float64 (float32 on MPS), with its cascade's impulse response, which
  the worker computes up to where it has decayed below ``DECAYED``: the workers' ``sosfilt``, to the last bit of the
  float32 clip in every case tried;
- gain: one factor per clip;
- Gaussian noise: a std of the drawn share of the clip's peak after the gain (at least ``GAUSS_PEAK_FLOOR``), its
  values from the device's generator seeded by the clip's draw (in the workers, from their own generator: the same
  distribution, other values).

Clips that draw none of them, and the padding, are left as they are.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import signal
from torch import Tensor

from audiotune.data.augment import GAUSS_PEAK_FLOOR, DeviceTail

# keys of a training batch's tails: the impulse responses (B, L) as float32 and what float32 left of them, which
# rows have one (B,), the gain factors and noise shares (B,), and (row, seed) of each clip with noise, plain numbers
EQ_IMPULSES, EQ_REMAINDERS, EQ_ROWS, GAINS = "eq_impulses", "eq_remainders", "eq_rows", "gains"
NOISE_SHARES, NOISE_SEEDS = "noise_shares", "noise_seeds"
TAIL_KEYS = (EQ_IMPULSES, EQ_REMAINDERS, EQ_ROWS, GAINS, NOISE_SHARES, NOISE_SEEDS)
DECAYED = 1e-9  # the slowest pole's decay where an impulse response is cut (its length then doubled: a cascade)


def impulse_response(sections: np.ndarray, limit: int) -> np.ndarray:
    """The first samples of a stable SOS cascade's impulse response: until its slowest pole has decayed to
    ``DECAYED``, twice over, and at most ``limit`` (the clip's samples: later ones reach no sample of it)."""
    radius = max(_pole_radius(a1, a2) for a1, a2 in sections[:, 4:])
    length = limit if radius >= 1.0 else min(limit, 2 * math.ceil(math.log(DECAYED) / math.log(max(radius, 1e-3))))
    impulse = np.zeros(max(length, 1))
    impulse[0] = 1.0
    return signal.sosfilt(sections, impulse)


def _pole_radius(a1: float, a2: float) -> float:
    """The larger |pole| of a biquad whose denominator is 1 + a1/z + a2/z^2."""
    disc = a1 * a1 - 4.0 * a2
    if disc < 0:  # a complex pair: |p|^2 = a2
        return math.sqrt(a2)
    return (abs(a1) + math.sqrt(disc)) / 2.0


def collate_tails(tails: Sequence[DeviceTail], counts: Sequence[int]) -> dict:
    """The batch entries of the clips' tails (``counts``: each clip's samples); empty where no clip has one."""
    if not any(tail.active for tail in tails):
        return {}
    entries: dict = {GAINS: torch.tensor([tail.gain for tail in tails], dtype=torch.float32),
                     NOISE_SHARES: torch.tensor([tail.noise_share for tail in tails], dtype=torch.float32),
                     NOISE_SEEDS: [(row, tail.noise_seed) for row, tail in enumerate(tails) if tail.noise_share > 0]}
    responses = [None if tail.sections is None else impulse_response(tail.sections, count)
                 for tail, count in zip(tails, counts)]
    if any(response is not None for response in responses):
        impulses = torch.zeros(len(tails), max(len(response) for response in responses if response is not None),
                               dtype=torch.float64)
        for row, response in enumerate(responses):
            if response is not None:
                impulses[row, :len(response)] = torch.from_numpy(response)
        rounded = impulses.float()  # float32 pairs, as every device takes them: their sum is the float64 response
        entries.update({EQ_IMPULSES: rounded, EQ_REMAINDERS: (impulses - rounded.double()).float(),
                        EQ_ROWS: torch.tensor([r is not None for r in responses])})
    return entries


def convolved(waveforms: Tensor, batch: dict, float64: bool = True) -> Tensor:
    """``waveforms`` (B, N) convolved with the batch's impulse responses, by FFT, cut to N. In float64, as the
    workers' filter runs: the clips are then the workers' to the last bit of float32; in float32, within about 5e-7
    of the clip's peak."""
    width, device = waveforms.shape[1], waveforms.device
    if float64:
        impulses = batch[EQ_IMPULSES].to(device, torch.float64) + batch[EQ_REMAINDERS].to(device, torch.float64)
    else:
        impulses = batch[EQ_IMPULSES].to(device)
    size = 1 << (width + impulses.shape[1] - 2).bit_length()  # a power of two: no wrap into the clip
    spectrum = torch.fft.rfft(waveforms.to(impulses.dtype), size) * torch.fft.rfft(impulses, size)
    return torch.fft.irfft(spectrum, size)[:, :width].to(waveforms.dtype)


def finish_tails(waveforms: Tensor, num_samples: Tensor, counts: Sequence[int] | None, batch: dict) -> Tensor:
    """The zero-padded ``waveforms`` (B, N) with the tails of ``batch`` (:func:`collate_tails`) applied, on their
    device; ``num_samples`` (B,) on that device and ``counts`` (plain numbers; None: read back from it): each clip's
    samples."""
    if GAINS not in batch:
        return waveforms
    width = waveforms.shape[1]
    if EQ_IMPULSES in batch:
        filtered = convolved(waveforms, batch, float64=waveforms.device.type != "mps")  # MPS has no float64
        own = torch.arange(width, device=waveforms.device)[None, :] < num_samples[:, None]
        waveforms = torch.where(batch[EQ_ROWS].to(waveforms.device)[:, None] & own, filtered, waveforms)
    waveforms = waveforms * batch[GAINS].to(waveforms.device)[:, None]
    if batch[NOISE_SEEDS]:
        device = waveforms.device
        peaks = waveforms.abs().amax(1).clamp(min=GAUSS_PEAK_FLOOR)  # the padding is zeros: never a clip's peak
        noise = torch.zeros_like(waveforms)
        counts = num_samples.tolist() if counts is None else counts
        for row, seed in batch[NOISE_SEEDS]:
            source = torch.Generator(device=device).manual_seed(int(seed))
            noise[row, :counts[row]] = torch.randn(int(counts[row]), generator=source, device=device)
        waveforms = waveforms + noise * (batch[NOISE_SHARES].to(device) * peaks)[:, None]
    return waveforms

