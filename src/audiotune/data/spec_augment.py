"""SpecAugment and SSAST's noise on features: each clip's frequency and time mask drawn as torchaudio draws them
(:func:`draw_masks`), applied to a batch at once (:func:`apply_masks`); :func:`spec_noise` on one clip's features.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from audiotune.data.features import queued_on


def mask_bounds(size: int, mask_param: int, generator: torch.Generator | None) -> tuple[int, int]:
    """Start and end of one mask over ``size`` entries as torchaudio's ``mask_along_axis`` draws it (width
    floor(U * param), start floor(U * rest)); (0, 0) without a draw when ``mask_param`` < 1, as torchaudio."""
    if mask_param < 1:
        return 0, 0
    dev = generator.device if generator is not None else None  # None: the default (global) generator's device
    value = torch.rand(1, generator=generator, device=dev) * mask_param
    min_value = torch.rand(1, generator=generator, device=dev) * (size - value)
    start = int(min_value.long())
    return start, start + int(value.long())


MaskSpans = tuple[tuple[int, int], tuple[int, int]]  # one clip's masked bins, then frames: [start, end) each


def draw_masks(bins: int, frames: int, freqm: int, timem: int, generator: torch.Generator | None) -> MaskSpans:
    """One frequency mask (width in [0, freqm)) over ``bins``, then one time mask (width in [0, timem)) over
    ``frames``, drawn in that order as torchaudio's ``FrequencyMasking`` then ``TimeMasking`` (``iid_masks=False``)
    draw them in SSAST (:func:`mask_bounds`)."""
    return mask_bounds(bins, freqm, generator), mask_bounds(frames, timem, generator)


def oversized_masks(freqm: int, timem: int, bins: int | None, frames: int) -> list[str]:
    """The SpecAugment widths wider than the axis they mask (``bins`` of the features, ``frames`` of
    ``--target_length``; None or 0: unknown), with what that does: a width is drawn up to the flag's, so most masks
    then cover the whole axis."""
    said = []
    for flag, width, size, axis in (("--freqm", freqm, bins, "bins"), ("--timem", timem, frames, "frames")):
        if size and width > size:
            said.append(f"{flag} {width}: wider than the {size} {axis} it masks; a mask's width is drawn up to "
                        f"{width}, so {100 * (width - size) / width:.0f} % of the masks cover every one of them")
    return said


def apply_masks(features: torch.Tensor, masks: Sequence[MaskSpans]) -> torch.Tensor:
    """(B, T, F) features with each clip's masked bins and frames set to 0 (a new tensor); a span reaching past
    the tensor's frames masks only the frames it has."""
    if features.dim() != 3 or len(masks) != features.shape[0]:
        raise ValueError(f"{len(masks)} mask spans for features of shape {tuple(features.shape)}")
    spans = queued_on([[*freq, *time] for freq, time in masks], features.device, torch.long).reshape(-1, 4)
    bins = torch.arange(features.shape[2], device=features.device)[None]
    steps = torch.arange(features.shape[1], device=features.device)[None]
    freq_mask = (bins >= spans[:, 0:1]) & (bins < spans[:, 1:2])
    time_mask = (steps >= spans[:, 2:3]) & (steps < spans[:, 3:4])
    return features.masked_fill(freq_mask[:, None, :] | time_mask[:, :, None], 0.0)


def spec_noise(features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """SSAST noise: add ``rand(T, F) * rand() / 10`` then roll along time by randint(-10, 10)."""
    if features.dim() != 2:
        raise ValueError(f"expected a (T, F) feature, got shape {tuple(features.shape)}")
    dev = generator.device if generator is not None else features.device  # generator fixes the device
    noise = torch.rand(features.shape, generator=generator, device=dev).to(features)
    scale = torch.rand((), generator=generator, device=dev).item()
    shift = int(torch.randint(-10, 10, (), generator=generator, device=dev))
    return torch.roll(features + noise * scale / 10.0, shift, dims=0)
