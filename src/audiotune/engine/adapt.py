"""Test-time BatchNorm adaptation (``--adapt_bn``): re-estimate the BatchNorm statistics on the clips about to
be scored, then score them with those statistics (AdaBN; Li et al. 2016, "Revisiting batch normalization for
practical domain adaptation").

A network trained on a few speakers normalises every layer with its training speakers' statistics; a new
speaker (or microphone) shifts them. Re-estimating them on the new speaker's own clips, unlabelled, removes
much of that shift at every layer, as per-speaker mean/variance normalisation does for the input features.
Only the running means and variances change, never a weight; they are restored afterwards, so the model
saved to disk keeps its training statistics.

The statistics come from padded batches of ``--batch_size`` clips in table order, as training batches are
(training normalises padded batches too), so a split's adapted statistics are fixed by its clips and their
order. Every BatchNorm layer in the model takes part (backbone and heads); dropout stays off.

``--adapt_bn split`` adapts on each scored split as a whole; ``--adapt_bn COLUMN`` (e.g. ``subject``) on each
group of that column apart, scoring every group with its own statistics (a test split of many speakers).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch import nn

from audiotune.data.loading import batch_features
from audiotune.engine.inference import on_device
from audiotune.interrupts import raise_if_terminated

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]


OFF, WHOLE_SPLIT = "none", "split"


def adaptation_groups(table: pd.DataFrame, mode: str, split: str) -> list[tuple[str | None, np.ndarray]]:
    """The row positions adapted on together under ``--adapt_bn mode``: the whole table (``split``) or one
    group per value of the column ``mode``, in order of first appearance. Every group needs 2 clips."""
    if mode == WHOLE_SPLIT:
        groups: list[tuple[str | None, np.ndarray]] = [(None, np.arange(len(table)))]
    else:
        if mode not in table.columns:
            raise ValueError(f"--adapt_bn {mode}: the {split} table has no such column (it has "
                             f"{', '.join(map(str, table.columns))}); or adapt on the whole split: --adapt_bn split")
        missing = table[mode].isna().to_numpy()
        if missing.any():
            raise ValueError(f"--adapt_bn {mode}: {int(missing.sum())} {split} rows have no {mode} (e.g. uid "
                             f"{table.index[missing][0]})")
        codes, names = pd.factorize(table[mode].astype(str))
        groups = [(str(name), np.flatnonzero(codes == i)) for i, name in enumerate(names)]
    small = [f"{name or split} ({table.index[rows][0] if len(rows) else 'no clips'})"
             for name, rows in groups if len(rows) < 2]
    if small:
        raise ValueError(f"--adapt_bn {mode}: BatchNorm statistics need at least 2 clips per group; {split} has "
                         f"{len(small)} group(s) with fewer: {', '.join(small[:5])}")
    return groups


def check_adaptation(mode: str, tables: dict[str, pd.DataFrame]) -> None:
    """Before anything is written: every scored split can be adapted under ``--adapt_bn mode``."""
    if mode != OFF:
        for split, table in tables.items():
            adaptation_groups(table, mode, split)


def batchnorm_state(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """A copy of the running statistics of every BatchNorm layer of the model."""
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in batch_norms(model)]


def load_batchnorm_state(model: nn.Module, state: list[dict[str, torch.Tensor]]) -> None:
    """Put back statistics taken by :func:`batchnorm_state`."""
    for m, values in zip(batch_norms(model), state, strict=True):
        m.load_state_dict(values)


def check_adaptable(model: nn.Module) -> None:
    """``--adapt_bn`` needs BatchNorm layers with running statistics."""
    if not batch_norms(model):
        raise ValueError("--adapt_bn: the model has no BatchNorm layer with running statistics to re-estimate "
                         "(it normalises with LayerNorm/GroupNorm, which need no adaptation)")


def estimate_batchnorm(model: nn.Module, batches: Iterable[dict], device: torch.device) -> int:
    """Replace the running statistics of the model's BatchNorm layers by statistics of ``batches`` (each batch
    weighs the same: the cumulative mean of the batch statistics), on ``device`` (where the model is moved and
    stays); module modes are left as they were.
    Returns the number of clips the statistics were estimated on.

    A batch of one clip is skipped when others exist (a pooled layer sees one value per channel there);
    a split of one clip is an error.
    """
    norms = batch_norms(model)
    modes = {module: module.training for module in model.modules()}
    model.to(device)  # the batches go to the scoring device; the model must be there too (a GPU run)
    try:
        for m in norms:
            m.reset_running_stats()
        model.eval()
        for m in norms:
            m.train()
        clips, steps, single = 0, 0, None
        features = batch_features(batches)
        with torch.no_grad():
            for batch in batches:
                raise_if_terminated()  # its own pass, also inside a fit's validation, where no batch of the fit starts
                if len(batch["uid"]) < 2:
                    single = single or batch
                    continue
                steps += 1
                for m in norms:
                    # the cumulative moving average (every batch weighs the same), as momentum None takes it, with its
                    # factor counted here: torch's reads each layer's batch count back from the device at every batch
                    m.momentum = 1.0 / steps
                model.forward_batch(on_device(batch, device, features))  # type: ignore[operator]
                clips += len(batch["uid"])
    finally:
        for m in norms:
            m.momentum = None
        for module, mode in modes.items():
            module.train(mode)
    if clips == 0:
        raise ValueError("--adapt_bn: BatchNorm statistics need at least 2 clips; the scored split has "
                         + (f"1 ({single['uid'][0]})" if single else "none"))
    return clips


@contextmanager
def adapted_batchnorm(model: nn.Module, batches: Iterable[dict], device: torch.device) -> Iterator[int]:
    """Within the block, the model's BatchNorm layers hold statistics re-estimated on ``batches`` (see
    :func:`estimate_batchnorm`, whose clip count it yields); on exit the earlier statistics and momenta are
    back."""
    norms = batch_norms(model)
    momenta, saved = [m.momentum for m in norms], batchnorm_state(model)
    try:
        yield estimate_batchnorm(model, batches, device)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        load_batchnorm_state(model, saved)
