"""Hugging Face encoders that score each clip on its own frames, in a batch of any lengths.

Two kinds of encoder let a batch's zero padding reach a clip's result, where transformers runs them as it does:

* a group-norm feature encoder (wav2vec2-base, HuBERT-base, WavLM-base): its first convolution normalises each
  channel over time (``nn.GroupNorm``, a group per channel), and over a padded batch that time holds the padding
  too. :class:`ClipGroupNorm` takes the statistics over each clip's own frames;
* data2vec-audio: its stack of positional convolutions writes into the padded frames, and the next layer reads
  that back into the clip's last frames. :class:`ClipPositionalConvs` gives every layer zeros past each clip's
  frames, as a clip alone gets its convolutions' own zero padding.

Both do so whenever the backbone tells them the clips' frames (:func:`own_frames`) and the encoder is not
training: scoring, the feature cache and a frozen encoder give a clip the output it has alone, to float rounding.
Training passes run as transformers runs them, padding included, as the emotion seed fine-tuned wav2vec2-base; a
batch without padding runs as transformers runs it everywhere (the same numbers, bit for bit).
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
    GroupNorm's: a checkpoint's weights load and save under the same names.

    Past a clip's frames its output holds the channel's shift alone (the frames zeroed before the scaling): the
    convolutions after it never read them into a clip's own frames, whose output lengths cover their own samples
    only. Without autograd (scoring, the feature cache) it writes into the one float32 tensor it makes, so that a
    padded batch costs one copy of the convolution's output, not three."""

    frames: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.frames is None or self.training:
            return super().forward(x)
        # in float32 whatever autocast the caller runs under, as CUDA's autocast runs GroupNorm
        with torch.autocast(x.device.type, enabled=False):
            return self._own_frames(x, self.frames)

    def _own_frames(self, x: Tensor, frames: Tensor) -> Tensor:
        batch, channels, steps = x.shape
        per_group = channels // self.num_groups
        values = x.float()  # x itself when it is float32 already
        graph = torch.is_grad_enabled() and (values.requires_grad or (self.affine and self.weight.requires_grad))
        own = (torch.arange(steps, device=x.device)[None, :] < frames[:, None]).to(values.dtype)  # (B, T)
        # the caller's tensor and autograd's are never written; a float32 copy made here is
        zeroed = values * own[:, None, :] if graph or values is x else values.mul_(own[:, None, :])
        # each group's sum and sum of squares over the clip's own frames: reductions, not matrix products, so that
        # --precision tf32 leaves them in float32
        groups = zeroed.reshape(batch, self.num_groups, -1)
        count = (own.sum(1, keepdim=True) * per_group).clamp(min=1.0)  # (B, 1)
        mean = groups.sum(-1) / count  # (B, G)
        square = torch.linalg.vector_norm(groups, dim=-1).square() / count
        rstd = torch.rsqrt((square - mean.square()).clamp(min=0.0) + self.eps)
        scale = rstd.repeat_interleave(per_group, 1)  # (B, C)
        shift = -mean.repeat_interleave(per_group, 1) * scale
        if self.affine:
            scale, shift = scale * self.weight.float(), shift * self.weight.float() + self.bias.float()
        return torch.addcmul(shift[:, :, None], zeroed, scale[:, :, None], out=None if graph else zeroed)


class ClipPositionalConvs(nn.Module):
    """data2vec-audio's positional convolutions (``encoder.pos_conv_embed``: ``layers``, each (B, D, T) -> (B, D,
    T)) over (B, T, D) frames, whose layers, outside training, read zeros past each clip's first ``frames`` (B,)
    frames, where it is given them (None: as transformers runs them). Its parameters are the layers'."""

    layers: nn.ModuleList
    frames: Tensor | None = None

    def forward(self, hidden_states: Tensor) -> Tensor:
        hidden = hidden_states.transpose(1, 2)
        past = None
        if self.frames is not None and not self.training:
            past = (torch.arange(hidden.shape[2], device=hidden.device)[None, :] >= self.frames[:, None])[:, None]
        for layer in self.layers:
            hidden = layer(hidden if past is None else hidden.masked_fill(past, 0.0))
        return hidden.transpose(1, 2)


# what transformers calls the stack of positional convolutions that ClipPositionalConvs runs
POSITIONAL_CONVS = ("Data2VecAudioPositionalConvEmbedding",)


def install_clip_norm(model: Any) -> ClipGroupNorm | None:
    """Make the GroupNorm of a transformers encoder's first feature convolution a :class:`ClipGroupNorm` (the same
    module and parameters); None where the encoder has none there (layer-norm feature encoders)."""
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    norm = getattr(layers[0], "layer_norm", None) if layers else None
    if not isinstance(norm, nn.GroupNorm):
        return None
    norm.__class__ = ClipGroupNorm
    return typing.cast(ClipGroupNorm, norm)


def install_clip_positions(model: Any) -> ClipPositionalConvs | None:
    """Make a transformers encoder's stack of positional convolutions a :class:`ClipPositionalConvs` (the same
    module and parameters); None where it has a single one (which reads the padding as zeros already)."""
    convs = getattr(getattr(model, "encoder", None), "pos_conv_embed", None)
    if type(convs).__name__ not in POSITIONAL_CONVS or not isinstance(getattr(convs, "layers", None), nn.ModuleList):
        return None
    convs.__class__ = ClipPositionalConvs
    return typing.cast(ClipPositionalConvs, convs)


@contextlib.contextmanager
def own_frames(*given: tuple[ClipGroupNorm | ClipPositionalConvs | None, Tensor]) -> Iterator[None]:
    """While the block runs, each module of ``given`` reads its (B,) frames of each clip; a module None is left
    out."""
    modules = [(module, frames) for module, frames in given if module is not None]
    for module, frames in modules:
        module.frames = frames
    try:
        yield
    finally:
        for module, _ in modules:
            module.frames = None
