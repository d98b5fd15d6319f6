"""Training losses per head kind, on the labelled targets only.

Targets carry NaN where a head (for binary and regression heads: a column) has no target for a row; each
loss averages over its labelled entries, so NaN never reaches a loss and an unlabelled head adds nothing.

- binary columns: one BCE (or MSE) over every labelled binary entry, as the seeds did;
- categorical and soft heads: cross-entropy against the target distribution, ``-sum_c w_c p_c log q_c`` per
  row, summed over the head's labelled rows and divided by their summed weights ``sum_c w_c p_c`` (the weighted
  mean, as ``CrossEntropyLoss(weight)``; ``w_c`` = 1 without class weights, so one-hot targets give plain CE;
  runs written before config version 6 divide by the number of rows instead); soft heads take their vote shares
  as ``p`` (``soft``), the argmax (``hard``) or a class drawn from the shares (``sample``);
- regression heads: MSE or Huber (delta 1) on the standardised targets when the head has a mean and std.

Balanced class weights (``--class_weights balanced``): ``w_c = (1 / n_c) / mean_k (1 / n_k)`` over the classes
present in the training split (``n_c``: labelled rows of class c; for soft heads, summed vote shares); a class
absent from training gets 1. Categorical and soft heads use them as CE class weights; a binary column weighs each
entry by ``t * w_1 + (1 - t) * w_0`` (per-sample weights, so mixed targets interpolate).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from audiotune.config import HeadSpec
from audiotune.engine.metrics import head_slices

LABELING_METHODS = ("distribution", "hard", "sample")
# head name -> weight per class (categorical / soft: class names; binary: "COLUMN=0", "COLUMN=1")
ClassWeights = dict[str, dict[str, float]]


def resolve_loss(loss: str, heads: list[HeadSpec]) -> str:
    """Loss of the binary heads: BCE unless MSE is asked for; CE is only for categorical heads."""
    if loss == "CE" and any(h.kind == "binary" for h in heads):
        raise ValueError("--loss CE needs categorical heads; binary 0/1 columns take BCE or MSE")
    if loss == "MSE" and not any(h.kind in ("binary", "regression") for h in heads):
        named = ", ".join(f"{h.name} ({h.kind})" for h in heads)
        raise ValueError(f"--loss MSE applies to binary and regression heads, and this run has none ({named}: CE); "
                         "for a real-valued target declare its column `NAME:regression` in the label file")
    return "MSE" if loss == "MSE" else "BCE"


def resolve_regression_loss(loss: str, heads: list[HeadSpec]) -> str:
    """Loss of the regression heads: MSE unless huber is asked for; huber needs a regression head."""
    if loss == "huber" and not any(h.kind == "regression" for h in heads):
        raise ValueError("--loss huber applies to regression heads, and this run has none "
                         "(declare real-valued columns `name:regression` in the label file)")
    return "huber" if loss == "huber" else "MSE"


def _inverse_frequency(counts: np.ndarray) -> list[float]:
    """Inverse counts normalised to mean 1 over the present classes; absent classes get 1."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.ones_like(counts)
    present = counts > 0
    if present.any():
        weights[present] = 1.0 / counts[present]
        weights[present] /= weights[present].mean()
    return [float(w) for w in weights]


def balanced_class_weights(heads: list[HeadSpec], targets: np.ndarray) -> ClassWeights:
    """Inverse class frequency of the (training) targets for categorical and soft heads and binary columns."""
    weights: ClassWeights = {}
    for head, cols in zip(heads, head_slices(heads)):
        block = np.asarray(targets[:, cols], dtype=np.float64)
        if head.is_distribution:
            counts = block[~np.isnan(block).any(axis=1)].sum(axis=0)
            weights[head.name] = dict(zip(head.classes, _inverse_frequency(counts)))
        elif head.kind == "binary":
            entry = {}
            for j, column in enumerate(head.columns):
                values = block[~np.isnan(block[:, j]), j]
                negative, positive = _inverse_frequency(np.array([(1 - values).sum(), values.sum()]))
                entry[f"{column}=0"], entry[f"{column}=1"] = negative, positive
            weights[head.name] = entry
    return weights


def training_class_weights(heads: list[HeadSpec], train_targets: np.ndarray, mode: str) -> ClassWeights | None:
    """The class weights ``--class_weights`` asks for (``none``: None), from the training split's targets."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"--class_weights {mode}: choose none or balanced")
    return balanced_class_weights(heads, train_targets)


def draw_hard_targets(distribution: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One-hot rows of a class drawn from each row's distribution (on the generator's device, the CPU)."""
    drawn = torch.multinomial(distribution.detach().float().cpu(), 1, generator=generator).squeeze(1)
    return F.one_hot(drawn, distribution.shape[1]).to(distribution)


def _soft_head_targets(distribution: Tensor, labeling: str, generator: torch.Generator | None) -> Tensor:
    if labeling == "hard":  # one-hot of the argmax (one_hot itself reads the classes back to check them)
        return torch.zeros_like(distribution).scatter_(1, distribution.argmax(1, keepdim=True), 1.0)
    if labeling == "sample":
        return draw_hard_targets(distribution, generator)
    if labeling != "distribution":
        raise ValueError(f"--labeling_method {labeling}: choose one of {LABELING_METHODS}")
    return distribution


@functools.lru_cache(maxsize=256)
def _constant(values: tuple[float, ...], device: torch.device) -> Tensor:
    """``values`` as a float32 tensor on ``device``, copied there once: a copy from the host at every step would
    wait for the device's queue. A normal tensor even when first asked for under inference mode (validation)."""
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=torch.float32).to(device)


def _masked_mean(per_entry: Tensor, labelled: Tensor) -> Tensor:
    """The mean of ``per_entry`` over its ``labelled`` entries; 0 when none is (adds nothing, as no term). No
    value is read back to the host, as selecting the labelled entries would."""
    return (per_entry * labelled).sum() / labelled.sum().clamp_min(1)


def _binary_weights(heads: list[HeadSpec], class_weights: ClassWeights, device: torch.device) -> tuple[Tensor, Tensor]:
    negative, positive = [], []
    for head in heads:
        if head.kind == "binary":
            weights = class_weights.get(head.name, {})
            negative += [weights.get(f"{c}=0", 1.0) for c in head.columns]
            positive += [weights.get(f"{c}=1", 1.0) for c in head.columns]
    return _constant(tuple(negative), device), _constant(tuple(positive), device)


def _binary_loss(logits: Tensor, targets: Tensor, heads: list[HeadSpec], binary_loss: str,
                 class_weights: ClassWeights | None) -> Tensor | None:
    blocks = [cols for head, cols in zip(heads, head_slices(heads)) if head.kind == "binary"]
    if not blocks:
        return None
    out, target = (torch.cat([values[:, cols] for cols in blocks], dim=1) for values in (logits, targets))
    labelled = ~torch.isnan(target)
    # zero stands in for a missing target: its entry is masked out below, and NaN must not enter the graph
    target = torch.where(labelled, target, torch.zeros_like(target))
    if binary_loss == "MSE":
        per_entry = (out - target) ** 2
    else:
        per_entry = F.binary_cross_entropy_with_logits(out, target, reduction="none")
    if class_weights:
        negative, positive = _binary_weights(heads, class_weights, logits.device)
        per_entry = per_entry * (target * positive + (1 - target) * negative)
    return _masked_mean(per_entry, labelled)


def classification_loss(logits: Tensor, targets: Tensor, heads: list[HeadSpec], binary_loss: str = "BCE", *,
                        regression_loss: str = "MSE", labeling: str = "distribution",
                        class_weights: ClassWeights | None = None,
                        generator: torch.Generator | None = None, weighted_mean: bool = True) -> Tensor:
    """The training loss of all heads: the binary block plus one term per categorical, soft and regression head.

    Each term averages over the entries its head is labelled for (NaN targets are unlabelled); a head without
    a labelled row in the batch adds nothing. Targets may be mixed (mixup): cross-entropy takes class
    probabilities and BCE probabilities. ``labeling`` applies to soft heads only (``sample`` draws with
    ``generator``). ``weighted_mean`` False: a class-weighted head's rows are averaged by their number, not by
    their summed class weights (the loss of runs written before config version 6).
    """
    logits, targets = logits.float(), targets.float()
    if targets.device != logits.device:
        targets = targets.to(logits.device)
    # a zero that keeps the graph, so a batch whose mixed targets are all unlabelled still backpropagates
    total = logits.sum() * 0.0
    binary = _binary_loss(logits, targets, heads, binary_loss, class_weights)
    if binary is not None:
        total = total + binary
    for head, cols in zip(heads, head_slices(heads)):
        target = targets[:, cols]
        if head.is_distribution:
            labelled = ~torch.isnan(target).any(dim=1)
            log_probs = F.log_softmax(logits[:, cols], dim=1)
            if head.kind == "soft" and labeling == "sample":  # drawn on the host from the labelled rows' shares
                if not labelled.any():
                    continue
                distribution, log_probs = _soft_head_targets(target[labelled], labeling, generator), log_probs[labelled]
            else:  # an unlabelled row's target is all zero: it adds nothing to either sum
                distribution = torch.where(labelled[:, None], target, torch.zeros_like(target))
                if head.kind == "soft":
                    distribution = _soft_head_targets(distribution, labeling, generator) * labelled[:, None]
            if class_weights and head.name in class_weights:
                weights = _constant(tuple(class_weights[head.name][c] for c in head.classes), logits.device)
                distribution = distribution * weights
            # the weighted mean over the rows: a row counts by its target's class weight (CrossEntropyLoss(weight)
            # on class indices divides by the batch's summed weights); unweighted, each row's target sums to 1
            rows = distribution.sum().clamp_min(1e-12) if weighted_mean else labelled.sum().clamp_min(1)
            total = total - (distribution * log_probs).sum() / rows
        elif head.kind == "regression":
            labelled = ~torch.isnan(target)
            if head.target_mean:
                mean, std = _constant(tuple(head.target_mean), logits.device), _constant(tuple(head.target_std),
                                                                                            logits.device)
                target = (target - mean) / std
            target = torch.where(labelled, target, torch.zeros_like(target))
            out = logits[:, cols]
            if regression_loss == "huber":
                per_entry = F.huber_loss(out, target, reduction="none", delta=1.0)
            else:
                per_entry = (out - target) ** 2
            total = total + _masked_mean(per_entry, labelled)
    return total
