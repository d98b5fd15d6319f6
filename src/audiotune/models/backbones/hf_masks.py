"""Where a wav2vec2-style encoder's time spans are masked, by one of two rules (``--mask_spans``):

* ``clip``: each clip's spans are counted and placed in its own real frames: ``max(min_masks, int(p * n / L + u))``
  starts, at most ``T // L``, drawn without replacement from its ``n - L + 1`` positions (transformers' rule
  today, ``_compute_mask_indices``). Padding is never masked; a clip shorter than one span gets none.
* ``batch``: one count for the whole batch from its padded length ``T``: ``max(min_masks, int(p * T / L + u))``,
  at most ``T // L``; each clip's starts are drawn over the whole padded width and its spans then cut to its
  real frames (transformers 4.10's rule, with which the emotion seed fine-tuned, ran TAPT and P-TAPT). A short
  clip batched with long ones gets few masked frames, or none.

``p`` is ``--mask_time_prob``, ``L`` ``--mask_time_length``, ``u`` uniform in [0, 1), drawn once per batch by both
rules (as transformers draws it: the clips of a batch round their counts alike). Fine-tuning passes the ``batch``
rule's mask to the encoder (transformers draws the ``clip`` rule itself); pretraining draws both here.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from audiotune.data.features import queued_on

SPAN_RULES = ("clip", "batch")
MIN_MASKS = 2  # span starts per clip (clip) or per batch (batch) at least: the seed's and wav2vec2's value
PTAPT_MASK_PROB, PTAPT_MASK_LENGTH = 0.06, 15  # the seed's P-TAPT masking: span starts, frames per span


def _clip_rule(frames: list[int], total: int, prob: float, length: int, rng: np.random.Generator,
               min_masks: int) -> np.ndarray:
    mask = np.zeros((len(frames), total), dtype=bool)
    rounding = rng.random()
    for row, n in enumerate(frames):
        starts_possible = n - length + 1
        if starts_possible < 1:
            continue
        spans = min(max(min_masks, int(prob * n / length + rounding)), total // length)
        for start in rng.choice(starts_possible, size=min(spans, starts_possible), replace=False):
            mask[row, start:start + length] = True
    return mask


def _batch_rule(frames: list[int], total: int, prob: float, length: int, rng: np.random.Generator,
                min_masks: int) -> np.ndarray:
    mask = np.zeros((len(frames), total), dtype=bool)
    if total < length:
        return mask
    spans = min(max(min_masks, int(prob * total / length + rng.random())), total // length)
    for row, n in enumerate(frames):
        for start in rng.choice(total - length + 1, size=spans, replace=False):
            mask[row, start:start + length] = True
        mask[row, n:] = False
    return mask


def time_mask(rule: str, frames: list[int], total: int, prob: float, length: int, rng: np.random.Generator,
              min_masks: int = MIN_MASKS, at_least: int = 0) -> np.ndarray:
    """(B, total) bool: the masked frames of clips with ``frames[b]`` real frames each, by ``rule`` (see the
    module's text). A clip left with fewer than ``at_least`` masked frames gets none."""
    if rule not in SPAN_RULES:
        raise ValueError(f"--mask_spans {rule}: one of {', '.join(SPAN_RULES)}")
    mask = (_batch_rule if rule == "batch" else _clip_rule)(frames, total, prob, length, rng, min_masks)
    mask[mask.sum(1) < at_least] = False
    return mask


def draws_time_mask(model: Any, total: int, rule: str) -> bool:
    """Whether :func:`time_mask_indices` draws the mask of a batch of ``total`` padded frames (it needs each
    clip's frames, read back from the device, only then): in training with ``mask_time_prob``, by the ``batch``
    rule, or when no span fits the batch."""
    config = model.config
    return bool(model.training and config.mask_time_prob) and (rule != "clip" or total < config.mask_time_length)


def time_mask_indices(model: Any, frames: list[int], total: int, rule: str) -> dict[str, torch.Tensor]:
    """The fine-tuning forward's ``mask_time_indices`` for a training batch of ``total`` padded frames: the
    ``batch`` rule's mask, or none masked when no span fits the batch (transformers leaves a clip shorter than a
    span unmasked within a longer batch but raises for a batch of such clips only: whether a clip is masked
    never depends on the clips batched with it). Otherwise nothing: transformers draws the ``clip`` rule."""
    if not draws_time_mask(model, total, rule):
        return {}
    config = model.config
    rng = np.random.default_rng(int(np.random.randint(2**31 - 1)))  # seeded with the run, as transformers' draws
    mask = time_mask(rule, frames, total, config.mask_time_prob, config.mask_time_length, rng,
                     config.mask_time_min_masks)
    return {"mask_time_indices": queued_on(mask, model.device)}
