"""The classes of a run's first categorical (or soft: the vote argmax) head, for class-balanced training epochs
and class-stratified shares of the training split.

Rows without a target for that head form a group of their own that is neither balanced nor dropped.

- :func:`class_groups`: each row's class, what :class:`audiotune.data.samplers.BalancedSampler` (``--balance``)
  balances.
- :func:`training_share` (``--train_fraction``): ``round(fraction x n)`` rows of each class (at least one),
  the first of a per-class random order fixed by the seed, so the shares of one seed are nested (50 % is
  inside 60 %), as learning curves need; and one row of each class of another head (categorical, one-column
  binary) that they would leave without a training row.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from audiotune.config import HeadSpec


def class_head(heads: list[HeadSpec]) -> tuple[int, HeadSpec] | None:
    """The first categorical or soft head and the index of its first output column, if there is one."""
    start = 0
    for head in heads:
        if head.is_distribution:
            return start, head
        start += head.num_outputs
    return None


def class_groups(targets: np.ndarray, heads: list[HeadSpec], what: str) -> np.ndarray:
    """Each row's class index in the first categorical or soft head, -1 where the row has none."""
    found = class_head(heads)
    if found is None:
        raise ValueError(f"{what} needs a categorical or soft head to balance; the heads are "
                         f"{[f'{h.name} ({h.kind})' for h in heads]} (binary heads: use --class_weights balanced)")
    start, head = found
    block = np.asarray(targets[:, start:start + head.num_outputs], dtype=np.float64)
    labelled = ~np.isnan(block).any(axis=1)
    groups = np.full(len(block), -1, dtype=np.int64)
    groups[labelled] = block[labelled].argmax(axis=1)
    return groups


def _row_classes(targets: np.ndarray, heads: list[HeadSpec]) -> list[np.ndarray]:
    """Per categorical head and one-column binary head (the heads a class of which a run can lose): each row's
    class (index, or 0/1), -1 where the row has none."""
    found, start = [], 0
    for head in heads:
        block = np.asarray(targets[:, start:start + head.num_outputs], dtype=np.float64)
        start += head.num_outputs
        if head.kind == "categorical" or (head.kind == "binary" and head.num_outputs == 1):
            labelled = ~np.isnan(block).any(axis=1)
            classes = np.full(len(block), -1, dtype=np.int64)
            classes[labelled] = block[labelled].argmax(axis=1) if head.kind == "categorical" else \
                block[labelled, 0].astype(np.int64)
            found.append(classes)
    return found


def _keep_every_class(keep: np.ndarray, targets: np.ndarray, heads: list[HeadSpec], seed: int) -> None:
    """Add to ``keep`` a row (the first of a seeded order) of each class of each head that the share would
    otherwise leave without a training row: the share stratifies by the first categorical head only."""
    for index, classes in enumerate(_row_classes(targets, heads)):
        for value in np.unique(classes[classes >= 0]):
            members = np.flatnonzero(classes == value)
            if not keep[members].any():
                keep[np.random.default_rng([seed, 1000 + index, int(value)]).permutation(members)[0]] = True


def training_share(table: pd.DataFrame, targets: np.ndarray, heads: list[HeadSpec], fraction: float,
                   seed: int) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """The ``fraction`` of the training rows kept per class (see the module docstring), their targets, and the
    rows left out in the ``dropped_rows.csv`` layout (label columns, split, reason)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--train_fraction {fraction}: must be in (0, 1]")
    keep = np.ones(len(table), dtype=bool)
    if fraction < 1:
        groups = class_groups(targets, heads, "--train_fraction") if class_head(heads) else \
            np.full(len(table), -1, dtype=np.int64)
        keep[:] = False
        for group in np.unique(groups):
            members = np.flatnonzero(groups == group)
            order = np.random.default_rng([seed, int(group) + 1]).permutation(members)
            keep[order[:max(1, int(round(fraction * len(members))))]] = True
        _keep_every_class(keep, targets, heads, seed)
    columns = [c for head in heads for c in head.columns]
    left_out = table.loc[~keep, columns].copy()
    left_out["split"] = "train"
    left_out["reason"] = f"left out by --train_fraction {fraction}"
    return table.loc[keep], targets[keep], left_out
