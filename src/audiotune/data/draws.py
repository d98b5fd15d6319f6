"""Where a training run's random draws come from: the row indices of a training loader's batches carry the seed
of their clip's draws in the epoch (:class:`DrawnRow`), which the dataset seeds its generators with; the draws of
the training step (dropout, masks, sampled labels) come from the seed of the epoch and the process
(:func:`epoch_seed`). A run then draws the same whatever worker prepares a clip, and a resumed run what one
straight through draws."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of process ``rank``'s training-step draws in ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class DrawnRow(int):
    """A row index that carries the seed of its clip's random draws in one epoch (augmentation, mixup, VTLP,
    SpecAugment): the run's seed, the epoch, the row and how many times the epoch drew the row before. A clip's
    draws then do not depend on the process or loader worker that prepares it, nor on the epoch a resumed run
    started at."""

    draw: tuple[int, int, int, int]

    def __new__(cls, row: int, draw: tuple[int, int, int, int]) -> DrawnRow:
        drawn = super().__new__(cls, row)
        drawn.draw = draw
        return drawn

    def __reduce__(self) -> tuple[type[DrawnRow], tuple[int, tuple[int, int, int, int]]]:
        return DrawnRow, (int(self), self.draw)


class DrawnBatches(Sampler[list[int]]):
    """The training batches of ``batches`` with every row a :class:`DrawnRow` of the epoch ``set_epoch`` names
    (forwarded to ``batches``); Lightning finds ``set_epoch`` as ``loader.batch_sampler.sampler``."""

    def __init__(self, batches: Sampler[list[int]], seed: int) -> None:
        self.batches, self.seed, self.epoch = batches, seed, 0

    @property
    def sampler(self) -> DrawnBatches:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        set_epoch = getattr(self.batches, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        drawn: dict[int, int] = {}  # times each row was drawn so far this epoch (oversampled rows recur)
        for batch in self.batches:
            rows: list[int] = []
            for row in batch:
                times = drawn.get(row, 0)
                drawn[row] = times + 1
                rows.append(DrawnRow(row, (self.seed, self.epoch, int(row), times)))
            yield rows
