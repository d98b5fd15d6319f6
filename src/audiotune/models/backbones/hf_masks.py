"""Where a wav2vec2-style encoder's time spans are masked, by one of two rules (``--mask_spans``):

* ``clip``: each clip's spans are counted and placed in its own real frames: ``max(min_masks, int(p * n / L + u))``
  starts, at most ``T // L``, drawn without replacement from its ``n - L + 1`` positions (transformers' rule
  today, ``_compute_mask_indices``). Padding is never masked; a clip shorter than one span gets none.
* ``batch``: one count for the whole batch from its padded length ``T``: ``max(min_masks, int(p * T / L + u))``,
  at most ``T // L``; each clip's starts are drawn over the whole padded width and its spans then cut to its
  real frames (transformers 4.10's rule, with which the emotion seed fine-tuned, ran TAPT and P-TAPT). A short
  clip batched with long ones gets few masked frames, or none.

``p`` is ``--mask_time_prob``, ``L`` ``--mask_time_length``, ``u`` uniform in [0, 1), drawn once per batch by both
rules (as transformers draws it: the clips of a batch round their counts alike), from torch's generator, which each
epoch seeds from the run's seed (a resumed run draws what one straight through does). A clip's starts are its
``spans`` smallest of uniform keys over its possible start positions: a uniform draw without replacement, as
``np.random.choice``'s, done on the tensors' device (:func:`time_mask`) so that a training step reads nothing back
from it. Fine-tuning draws both rules, and the feature channels' spans (``--mask_feature_prob``, counted as the
batch rule over the channels), inside the encoder (:func:`install_masks`); pretraining draws the time spans here
on the host, where its distractors and targets are drawn too.
"""
from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from audiotune.data.features import queued_on

SPAN_RULES = ("clip", "batch")
MIN_MASKS = 2  # span starts per clip (clip) or per batch (batch) at least: the seed's and wav2vec2's value
PTAPT_MASK_PROB, PTAPT_MASK_LENGTH = 0.06, 15  # the seed's P-TAPT masking: span starts, frames per span


def padding_attention(counts: Tensor, width: int, device: torch.device) -> Tensor | None:
    """The attention mask (B, ``width``) on ``device`` of clips of ``counts`` samples (numbers on the host); None
    where every clip fills the width: a mask of ones changes nothing, and transformers reads it back from the device
    to find that out."""
    if bool((counts >= width).all()):
        return None
    positions = torch.arange(width, device=device)
    return (positions[None, :] < queued_on(counts, device)[:, None]).long()


def time_mask(rule: str, frames: Tensor | Sequence[int], total: int, prob: float, length: int, rounding: float,
              min_masks: int = MIN_MASKS, at_least: int = 0, generator: torch.Generator | None = None) -> Tensor:
    """(B, total) bool on ``frames``' device (a list: the CPU): the masked frames of clips with ``frames[b]`` real
    frames each, by ``rule`` (see the module's text), ``rounding`` the batch's ``u``; the starts' keys come from
    ``generator`` (None: the device's default one). A clip left with fewer than ``at_least`` masked frames gets
    none."""
    if rule not in SPAN_RULES:
        raise ValueError(f"--mask_spans {rule}: one of {', '.join(SPAN_RULES)}")
    frames = torch.as_tensor(frames, dtype=torch.long)
    rows, device, places = frames.shape[0], frames.device, total - length + 1  # start positions of the width
    if places < 1 or rows == 0:
        return torch.zeros(rows, total, dtype=torch.bool, device=device)
    if rule == "clip":
        possible = (frames - length + 1).clamp(min=0)
        exact = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        counted = torch.floor(prob * frames.to(exact) / length + rounding).long()
        spans = torch.minimum(counted.clamp(min=min_masks, max=total // length), possible)
        valid = torch.arange(places, device=device)[None, :] < possible[:, None]
    else:
        spans = torch.full((rows,), min(max(min_masks, int(prob * total / length + rounding)), total // length),
                           device=device)
        valid = torch.ones(rows, places, dtype=torch.bool, device=device)
    keys = torch.rand(rows, places, generator=generator, device=device).masked_fill(~valid, 2.0)
    starts = keys.argsort(1).argsort(1) < spans[:, None]  # each row's `spans` smallest keys
    # frame t is masked when a span starts in t - L + 1 .. t
    mask = F.max_pool1d(F.pad(starts.float()[:, None], (length - 1, length - 1)), length, stride=1)[:, 0] > 0
    if rule == "batch":
        mask &= torch.arange(total, device=device)[None, :] < frames[:, None]
    if at_least:
        mask &= mask.sum(1, keepdim=True) >= at_least
    return mask


def host_time_mask(rule: str, frames: Sequence[int], total: int, prob: float, length: int,
                   rng: np.random.Generator, at_least: int = 0) -> np.ndarray:
    """:func:`time_mask` on the host, its draws from ``rng`` (pretraining's per-step generator)."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    return time_mask(rule, list(frames), total, prob, length, float(rng.random()), at_least=at_least,
                     generator=generator).numpy()


def install_masks(model: Any, rule: str) -> None:
    """Replace the transformers encoder's ``_mask_hidden_states`` (wav2vec2, HuBERT, WavLM, data2vec: what masks
    the projected features before the transformer) with one that means the same but reads nothing back from the
    device: the time spans by ``rule`` from each clip's frames (the frame attention mask's sums) and the channel
    spans, drawn by :func:`time_mask` on the device, applied with ``torch.where`` instead of a boolean index
    (which waits for the device to count its elements). ``u`` comes from numpy's global generator, as
    transformers drew its own; the keys from torch's on the device; both are seeded with the run."""
    if not callable(getattr(model, "_mask_hidden_states", None)):
        return

    def mask_hidden_states(self: Any, hidden_states: Tensor, mask_time_indices: Tensor | None = None,
                           attention_mask: Tensor | None = None) -> Tensor:
        config = self.config
        if not getattr(config, "apply_spec_augment", True):
            return hidden_states
        rows, width, channels = hidden_states.shape
        if mask_time_indices is None and config.mask_time_prob > 0 and self.training:
            frames = attention_mask.sum(-1) if attention_mask is not None else \
                torch.full((rows,), width, device=hidden_states.device)
            mask_time_indices = time_mask(rule, frames, width, config.mask_time_prob, config.mask_time_length,
                                          float(torch.rand(())), config.mask_time_min_masks)
        if mask_time_indices is not None:
            embedding = self.masked_spec_embed.to(hidden_states.dtype)
            hidden_states = torch.where(mask_time_indices[:, :, None], embedding, hidden_states)
        if config.mask_feature_prob > 0 and self.training:
            everywhere = torch.full((rows,), channels, device=hidden_states.device)
            zeroed = time_mask("batch", everywhere, channels, config.mask_feature_prob, config.mask_feature_length,
                               float(torch.rand(())), config.mask_feature_min_masks)
            hidden_states = hidden_states.masked_fill(zeroed[:, None, :], 0.0)
        return hidden_states

    # bound to the model, so that a copy of it (EMA, the weights a validation adapts) masks with its own
    model._mask_hidden_states = types.MethodType(mask_hidden_states, model)
