"""Length-bucketed training batches: similar lengths batched together, by count or by an audio budget.

Each epoch (``set_epoch``; the seed and the epoch fix its order):

1. the clips are sorted by length and cut into ``num_buckets`` buckets of about equal size;
2. the clips of each bucket are shuffled;
3. walking the buckets from the shortest, a batch closes at ``batch_size`` clips, or, with a budget
   (``max_samples`` > 0, from ``--dynamic_batch SECONDS``), before the clip that would take the *padded*
   batch (clips x longest clip) past the budget: every batch but a lone over-long clip fits it;
4. the batches are shuffled.

Every clip is in exactly one batch per epoch (``drop_last`` drops only a last short batch of a fixed-size
epoch). Every process builds the same batches; under DDP each takes its share of them through
:class:`audiotune.engine.distributed.DealtBatches` (every ``world_size``-th batch, no clip twice).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices (see the module docstring)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, num_buckets: int = 50, max_samples: int = 0,
                 drop_last: bool = False, seed: int = 0) -> None:
        if batch_size < 1 and max_samples <= 0:
            raise ValueError(f"batch size {batch_size}: batches need at least one clip, or an audio budget")
        if num_buckets < 1:
            raise ValueError(f"--num_buckets {num_buckets}: need at least 1")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) == 0:
            raise ValueError("no clips to batch")
        self.batch_size = batch_size
        self.num_buckets = min(num_buckets, len(self.lengths))
        self.max_samples = int(max_samples)
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order :meth:`__iter__` yields (Lightning calls it before each epoch)."""
        self.epoch = epoch

    def _fits(self, batch: list[int], index: int) -> bool:
        if self.max_samples > 0:
            longest = max(int(self.lengths[index]), max((int(self.lengths[i]) for i in batch), default=0))
            return (len(batch) + 1) * longest <= self.max_samples
        return len(batch) < self.batch_size

    def batches(self) -> list[list[int]]:
        """Every batch of this epoch, in order (the same in every process)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        buckets = np.array_split(np.argsort(self.lengths, kind="stable"), self.num_buckets)
        # shortest bucket first: a batch that spans two buckets spans neighbours (similar lengths)
        order = np.concatenate([rng.permutation(bucket) for bucket in buckets])
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order.tolist():
            if current and not self._fits(current, index):
                batches.append(current)
                current = []
            current.append(index)
        if current and not (self.drop_last and self.max_samples <= 0 and len(current) < self.batch_size
                            and batches):
            batches.append(current)
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return len(self.batches())


class GroupBatchSampler(Sampler[list[int]]):
    """Training batches that each hold clips of one group (``--group_batches COLUMN``, e.g. one speaker).

    Each epoch (``set_epoch``; the seed and the epoch fix its order) every group's clips are shuffled and cut
    into batches of ``batch_size`` (a group's last batch may be smaller; one of a single clip joins the batch
    before it, since a BatchNorm layer after pooling cannot normalise one value), then all batches are
    shuffled. Every clip is in exactly one batch per epoch. BatchNorm then normalises every training batch with
    one group's statistics, as ``--adapt_bn`` does when a split of one new speaker is scored.
    """

    def __init__(self, groups: Sequence[object], batch_size: int, seed: int = 0) -> None:
        if batch_size < 2:
            raise ValueError(f"--group_batches needs --batch_size of at least 2, not {batch_size}")
        if len(groups) == 0:
            raise ValueError("no clips to batch")
        _, codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        self.members = [np.flatnonzero(codes == code) for code in range(codes.max() + 1)]
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order :meth:`__iter__` yields (Lightning calls it before each epoch)."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """Every batch of this epoch, in order (the same in every process)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        batches: list[list[int]] = []
        for members in self.members:
            order = rng.permutation(members).tolist()
            chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            if len(chunks) > 1 and len(chunks[-1]) == 1:
                last = chunks.pop()
                chunks[-1] += last
            batches += chunks
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return len(self.batches())
