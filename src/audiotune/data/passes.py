"""A loader read several times whose workers run on from one pass into the next.

A DataLoader with persistent workers keeps its processes between passes, but starts every pass with an empty
queue: the device waits at each epoch's start while one worker prepares the first batch whole, though the
workers sat idle through the previous epoch's last steps, its validation and its checkpoint.
:class:`StreamingLoader` keeps one worker iterator over all passes, so the next pass's first batches are
prepared while the current one ends; every pass yields the batches a fresh loader would, in the same order.

:class:`Passes` is its batch sampler: the batches of pass after pass, each drawn whole when the workers reach it
(a training order with the inner batches' ``set_epoch`` of that pass's number). Lightning's ``set_epoch``
before each epoch names the pass the loader is to give next (read when the pass's first batch is asked for, as
Lightning creates a resumed run's iterator before naming its pass); when the workers did not run on into that one
(a resumed run, a pass broken off: the sanity check, a run that stops mid-epoch) they start over at it.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

from audiotune.data.draws import DrawnBatches, ResumesInsideEpoch


class Passes(Sampler[list[int]]):
    """The batches of ``total`` passes over ``batches`` one after the other, from :attr:`start`.

    ``ordered``: each pass has its own order (training), drawn by ``batches.set_epoch(pass)``; else every pass
    is the same (scoring) and any pass is as good as the one asked for. ``sizes`` holds the batch count of each
    pass drawn so far, which tells the loader where one pass ends in the stream of batches.
    """

    def __init__(self, batches: Sampler[list[int]], total: int, ordered: bool) -> None:
        self.batches, self.total, self.ordered = batches, max(total, 1), ordered
        self.requested = 0  # the pass the next iteration of the loader is to give (Lightning's set_epoch)
        self.start = 0  # the pass the current stream of batches begins at
        self.sizes: dict[int, int] = {}

    @property
    def sampler(self) -> Passes:
        """This object: Lightning calls ``loader.batch_sampler.sampler.set_epoch`` before each epoch."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.requested = epoch

    def _draw(self, number: int) -> list[list[int]]:
        set_epoch = getattr(self.batches, "set_epoch", None)
        if self.ordered and callable(set_epoch):
            set_epoch(number)
        return list(self.batches)

    def __len__(self) -> int:
        """The batches of the requested pass (the whole epoch's, also for the epoch a run resumed inside)."""
        set_epoch = getattr(self.batches, "set_epoch", None)
        if self.ordered and callable(set_epoch):
            set_epoch(self.requested)
        return len(self.batches)  # type: ignore[arg-type]

    @property
    def end(self) -> int:
        """The pass after the last of the stream that begins at :attr:`start`."""
        return max(self.total, self.start + 1) if self.ordered else self.start + self.total

    def __iter__(self) -> Iterator[list[int]]:
        self.sizes = {}
        for number in range(self.start, self.end):
            batches = self._draw(number)
            self.sizes[number] = len(batches)
            yield from batches


class StreamingLoader(DataLoader):
    """A DataLoader over :class:`Passes` with worker processes whose one iterator serves every pass (see the module
    docstring). ``options`` are DataLoader's, ``persistent_workers`` left out: the stream is what persists, and
    Lightning's teardown stops its workers as it stops a persistent loader's (``loader._iterator``)."""

    def __init__(self, dataset: Dataset, batches: Passes, **options: Any) -> None:
        if not options.get("num_workers"):
            raise ValueError("a streaming loader needs worker processes")
        super().__init__(dataset, batch_sampler=batches, **options)
        self.passes = batches
        self._at: int | None = None  # the pass whose start the stream is at (None: mid-pass or no stream)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # which pass to give is decided when its first batch is asked for: Lightning creates a resumed run's
        # iterator before its set_epoch names the pass the run resumes at
        return self._one_pass()

    def _stream(self) -> tuple[Iterator[Any], int]:
        """The worker stream at the start of the requested pass: the current one where it ran on to that pass,
        else a new one starting there."""
        passes = self.passes
        if self._iterator is None or self._at is None or (passes.ordered and self._at != passes.requested):
            self._iterator = None  # the old stream's workers stop as it is collected
            passes.start = passes.requested if passes.ordered else 0
            self._iterator = super().__iter__()
            self._at = passes.start
        return self._iterator, self._at

    def _one_pass(self) -> Iterator[Any]:
        self.passes.requested = self._named(self.passes.requested)
        stream, number = self._stream()
        yield from self._given(self._pass(stream, number), number)

    def _named(self, number: int) -> int:
        """The pass to give when Lightning names ``number`` (a training stream resumed inside one gives that)."""
        return number

    def _given(self, batches: Iterator[Any], number: int) -> Iterator[Any]:
        """The batches of pass ``number`` as the loader gives them (a training stream counts its place)."""
        return batches

    def _pass(self, stream: Iterator[Any], number: int) -> Iterator[Any]:
        self._at = None  # until the pass is given whole
        taken = 0
        while self.passes.sizes.get(number) != taken:  # the size is known once the pass's first batch is asked for
            try:
                batch = next(stream)
            except StopIteration:  # the stream's last pass is over
                self._iterator = None
                return
            taken += 1
            if self.passes.sizes.get(number) == taken:  # given whole once its last batch is: Lightning stops
                self._at = number + 1  # at the loader's length and never asks past it
                if self._at == self.passes.end:  # the stream's last pass: its workers stop with this generator
                    self._iterator = None
            yield batch


class TrainingStream(ResumesInsideEpoch, StreamingLoader):
    """A streaming loader of training passes over :class:`~audiotune.data.draws.DrawnBatches` that resumes inside
    an epoch (:class:`~audiotune.data.draws.ResumesInsideEpoch`)."""

    def __init__(self, dataset: Dataset, batches: Passes, drawn: DrawnBatches, **options: Any) -> None:
        super().__init__(dataset, batches, **options)
        self.drawn = drawn

    def _given(self, batches: Iterator[Any], number: int) -> Iterator[Any]:
        return self._placed(batches, number)
