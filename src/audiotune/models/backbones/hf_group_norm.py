"""A group-norm feature encoder (wav2vec2-base, HuBERT-base, WavLM-base) that scores each clip on its own samples.

The first convolution of such an encoder normalises each channel over time (``nn.GroupNorm``, a group per
channel). Over a padded batch that time holds the zero padding too, so a clip's output depended on its batch.
:class:`ClipGroupNorm` takes the statistics over each clip's own frames instead, whenever the backbone tells it
them (:func:`own_frames`) and the encoder is not training: scoring, the feature cache and a frozen encoder give a
clip the output it has alone, to float rounding, in a batch of any lengths. Training passes normalise as
transformers does, over the batch's padding too, as the emotion seed fine-tuned wav2vec2-base; a batch without
padding normalises as transformers does everywhere (the same numbers, bit for bit).
"""
from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn


class ClipGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` over (B, C, T) whose statistics, outside training, cover each clip's first ``frames`` (B,)
    frames only, where it is given them (None: every frame, as ``nn.GroupNorm``). Its parameters are the
    GroupNorm's: a checkpoint's weights load and save under the same names."""

    frames: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.frames is None or self.training:
            return super().forward(x)
        # in float32 whatever autocast the caller runs under, as CUDA's autocast runs GroupNorm
        with torch.autocast(x.device.type, enabled=False):
            return self._own_frames(x.float(), self.frames)

    def _own_frames(self, values: Tensor, frames: Tensor) -> Tensor:
        batch, channels, steps = values.shape
        per_group = channels // self.num_groups
        own = (torch.arange(steps, device=values.device)[None, :] < frames[:, None]).float()[:, :, None]  # (B, T, 1)
        # each channel's sum and sum of squares over the clip's own frames, then summed over its group
        sums = torch.cat([torch.bmm(values, own), torch.bmm(values.square(), own)], -1)  # (B, C, 2)
        sums = sums.reshape(batch, self.num_groups, per_group, 2).sum(2)
        count = (own.sum(1) * per_group).clamp(min=1.0)  # (B, 1)
        mean = sums[..., 0] / count
        rstd = torch.rsqrt((sums[..., 1] / count - mean.square()).clamp(min=0.0) + self.eps)  # (B, G)
        scale = rstd.repeat_interleave(per_group, 1)  # (B, C)
        shift = -mean.repeat_interleave(per_group, 1) * scale
        if self.affine:
            scale, shift = scale * self.weight.float(), shift * self.weight.float() + self.bias.float()
        return torch.addcmul(shift[:, :, None], values, scale[:, :, None])


def install_clip_norm(model: Any) -> ClipGroupNorm | None:
    """Make the GroupNorm of a transformers encoder's first feature convolution a :class:`ClipGroupNorm` (the same
    parameters); None where the encoder has none there (layer-norm feature encoders)."""
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    norm = getattr(layers[0], "layer_norm", None) if layers else None
    if not isinstance(norm, nn.GroupNorm):
        return None
    norm.__class__ = ClipGroupNorm  # the same module, parameters and all
    return typing.cast(ClipGroupNorm, norm)


@contextlib.contextmanager
def own_frames(norm: ClipGroupNorm | None, samples: Tensor, kernel: int, stride: int) -> Iterator[None]:
    """While the block runs, ``norm`` normalises each clip over the frames of its ``samples`` (B,) real samples
    (the first convolution's ``kernel`` and ``stride``)."""
    if norm is None:
        yield
        return
    norm.frames = torch.div(samples - kernel, stride, rounding_mode="floor") + 1
    try:
        yield
    finally:
        norm.frames = None
