"""Class-balanced training epochs and class-stratified shares of the training split.

Both work on the classes of the run's first categorical (or soft: the vote argmax) head; rows without a
target for that head form a group of their own that is neither balanced nor dropped.

- :class:`BalancedSampler` (``--balance``): ``oversample`` draws every class to the size of the largest, as
  the tap2key system's round-robin interleaving did (a class's rows are cycled in a fresh random order, so
  each appears ``floor(max / n)`` or ``ceil(max / n)`` times per epoch); ``undersample`` draws every class down
  to the smallest, a fresh random subset each epoch. A class absent from the training split is simply not
  drawn. The epoch is then shuffled.
- :func:`training_share` (``--train_fraction``): ``round(fraction x n)`` rows of each class (at least one),
  the first of a per-class random order fixed by the seed, so the shares of one seed are nested (50 % is
  inside 60 %), as learning curves need.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from torch.utils.data import Sampler

from audiotune.config import HeadSpec

BALANCE_MODES = ("none", "oversample", "undersample")


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


class BalancedSampler(Sampler[int]):
    """Row indices of one class-balanced epoch (see the module docstring); ``set_epoch`` redraws."""

    def __init__(self, groups: np.ndarray, mode: str, seed: int = 0) -> None:
        if mode not in ("oversample", "undersample"):
            raise ValueError(f"--balance {mode}: choose one of {BALANCE_MODES}")
        self.groups = np.asarray(groups, dtype=np.int64)
        self.mode, self.seed, self.epoch = mode, seed, 0
        classes = [c for c in np.unique(self.groups) if c >= 0]
        if not classes:
            raise ValueError("--balance: no training row has a target for the balanced head")
        self.members = {int(c): np.flatnonzero(self.groups == c) for c in classes}
        sizes = [len(m) for m in self.members.values()]
        self.per_class = max(sizes) if mode == "oversample" else min(sizes)
        self.unlabelled = np.flatnonzero(self.groups < 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_class * len(self.members) + len(self.unlabelled)

    def indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        drawn = [self.unlabelled]
        for members in self.members.values():
            if self.mode == "undersample":
                drawn.append(rng.choice(members, self.per_class, replace=False))
                continue
            cycles = -(-self.per_class // len(members))
            drawn.append(np.concatenate([rng.permutation(members) for _ in range(cycles)])[:self.per_class])
        return rng.permutation(np.concatenate(drawn))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def summary(self, head: HeadSpec) -> dict:
        """For metrics.json: the mode, rows per epoch and each class's training rows."""
        counts = {head.classes[c]: len(m) for c, m in self.members.items()}
        return {"mode": self.mode, "head": head.name, "rows_per_epoch": len(self), "rows_per_class": self.per_class,
                "class_rows": counts, "rows_without_target": len(self.unlabelled)}


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
    columns = [c for head in heads for c in head.columns]
    left_out = table.loc[~keep, columns].copy()
    left_out["split"] = "train"
    left_out["reason"] = f"left out by --train_fraction {fraction}"
    return table.loc[keep], targets[keep], left_out
