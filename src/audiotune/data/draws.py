"""Where a training run's random draws come from: the row indices of a training loader's batches carry the seed
of their clip's draws in the epoch (:class:`DrawnRow`), which the dataset seeds its generators with; the draws of
the training step (dropout, masks, sampled labels) come from the seed of the step's batch and the process
(:func:`step_seed`). A run then draws the same whatever worker prepares a clip, and a resumed run what one
straight through draws, also where it resumes inside an epoch (:meth:`DrawnBatches.resume_at`)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler


def step_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """The seed of process ``rank``'s training-step draws for batch ``batch`` of ``epoch`` of a run seeded with
    ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(1)[0])


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
    (forwarded to ``batches``); Lightning finds ``set_epoch`` as ``loader.batch_sampler.sampler``. The epoch a run
    resumes inside (:meth:`resume_at`) gives the batches its first part did not reach; its length stays the
    epoch's, as Lightning counts the trained ones in."""

    def __init__(self, batches: Sampler[list[int]], seed: int) -> None:
        self.batches, self.seed, self.epoch = batches, seed, 0
        self.resumed = (-1, 0)  # (epoch, its batches trained before the run was resumed)

    def resume_at(self, epoch: int, trained: int) -> None:
        """The run resumes after ``trained`` batches of ``epoch``."""
        self.resumed = (epoch, trained)

    def skipped(self, epoch: int) -> int:
        """The batches of ``epoch`` trained before the run was resumed (0 but in the epoch it resumed inside)."""
        return self.resumed[1] if self.resumed[0] == epoch else 0

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
        skipped = self.skipped(self.epoch)
        for number, batch in enumerate(self.batches):
            rows: list[int] = []
            for row in batch:
                times = drawn.get(row, 0)
                drawn[row] = times + 1
                rows.append(DrawnRow(row, (self.seed, self.epoch, int(row), times)))
            if number >= skipped:
                yield rows


class ResumesInsideEpoch:
    """A training loader's place in the epoch it gives (the epoch and how many of its batches it gave), which
    Lightning keeps in every checkpoint: it saves the ``state_dict`` of a training loader that has one and hands it
    back to ``load_state_dict`` before a resumed run asks for its first batch. A run resumed from a checkpoint
    written inside an epoch (a ``--training_steps`` run that ended there, ``pretrain`` validating every N steps)
    then goes on with the batches that epoch had not reached, not with its first ones again; the loader gives that
    epoch's batches whatever pass Lightning names (it names the next: it counted the epoch the run stopped in as
    run)."""

    drawn: DrawnBatches
    place = (0, 0)
    inside: int | None = None  # the epoch a run resumed inside, until its rest is given

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.place[0], "batches": self.place[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, given = int(state["epoch"]), int(state["batches"])
        self.drawn.set_epoch(epoch)
        if 0 < given < len(self.drawn):
            self.drawn.resume_at(epoch, given)
            self.inside = epoch

    def _named(self, epoch: int) -> int:
        """The epoch to give when Lightning names ``epoch``: the one a run resumed inside, first."""
        inside, self.inside = self.inside, None
        return epoch if inside is None else inside

    def _placed(self, batches: Iterator[Any], epoch: int) -> Iterator[Any]:
        """``batches``, those of ``epoch``, each given with the place it takes the loader to."""
        given = self.drawn.skipped(epoch)
        self.place = (epoch, given)
        for batch in batches:
            given += 1
            self.place = (epoch, given)
            yield batch


class TrainingLoader(ResumesInsideEpoch, DataLoader):
    """A DataLoader of :class:`DrawnBatches` that resumes inside an epoch (:class:`ResumesInsideEpoch`). Its
    batches are drawn when the first is asked for, after Lightning named their epoch (it creates a resumed run's
    iterator before)."""

    def __init__(self, dataset: Dataset, batches: DrawnBatches, **options: Any) -> None:
        super().__init__(dataset, batch_sampler=batches, **options)
        self.drawn = batches

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._epoch()

    def _epoch(self) -> Iterator[Any]:
        epoch = self._named(self.drawn.epoch)
        self.drawn.set_epoch(epoch)
        yield from self._placed(super().__iter__(), epoch)
