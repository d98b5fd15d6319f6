"""Every sampler of audiotune: the order of an epoch's rows, and the batches cut from it.

Orders of row indices (``set_epoch`` fixes each epoch's order from the seed and the epoch, the same in every
process): :class:`EpochShuffle` (plain shuffled epochs) and :class:`BalancedSampler` (``--balance``:
``oversample`` draws every class to the size of the largest, as the tap2key system's round-robin interleaving
did, a class's rows cycled in a fresh random order, so each appears ``floor(max / n)`` or ``ceil(max / n)``
times per epoch; ``undersample`` draws every class down to the smallest, a fresh random subset each epoch; a
class absent from the training split is simply not drawn, rows without a class are drawn once; the epoch is
then shuffled).

Training batches:

- :class:`TrainingBatches`: every process draws the same epoch order, cuts it into global batches of
  ``processes x --batch_size`` clips and takes its slice of each: the processes together run exactly the
  batches one process with ``-bs processes x batch_size`` would. A last global batch that is not full is left
  out of that epoch when the epoch has more than one (one process leaves out its last short batch the same
  way); an epoch of a single, smaller global batch is split evenly.
- :class:`BucketBatchSampler` (``--bucket_sampler``, ``--dynamic_batch``): similar lengths batched together,
  by count or by an audio budget. Each epoch (1) the clips are sorted by length and cut into ``num_buckets``
  buckets of about equal size; (2) the clips of each bucket are shuffled; (3) walking the buckets from the
  shortest, a batch closes at ``batch_size`` clips, or, with a budget (``max_samples`` > 0, from
  ``--dynamic_batch SECONDS``), before the clip that would take the *padded* batch (clips x longest clip) past
  the budget: every batch but a lone over-long clip fits it; (4) the batches are shuffled. Every clip is in
  exactly one batch per epoch, except with ``drop_last`` and a fixed batch size: the ``clips mod batch_size``
  clips that would make a last short batch are left out, drawn anew each epoch from all clips (as a shuffled
  epoch leaves out its last short batch), so that no clip is left out of every epoch (the walk's last batch
  would always hold the longest clips).
- :class:`GroupBatchSampler` (``--group_batches COLUMN``): every batch holds clips of one group.

Bucketed and grouped batches are built alike in every process; under DDP each takes its share through
:class:`DealtBatches` (``pad=False``: the epoch's batches dealt round-robin, the last fewer-than-``processes``
batches of an epoch left out of it, a different few each epoch).

Scoring batches: :class:`LengthSortedBatches`, any mix of lengths for models whose :class:`PaddingRule` is exact,
lengths within the rule's tolerance for models where padding changes outputs (rows in table order, torch's
``BatchSampler``, where lengths are unknown or do not matter); :class:`FixedBatches` for batches chosen
beforehand; under DDP
:class:`DealtBatches` (``pad=True``) deals one process's batches round-robin and pads the shorter shares with
repeats, so every process runs the same number of steps; the repeats are dropped again when the outputs are
gathered (:func:`audiotune.engine.distributed.unique_batches`), so metrics count every clip once.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch.utils.data import Sampler

from audiotune.config import HeadSpec

BALANCE_MODES = ("none", "oversample", "undersample")


# ---------------------------------------------------------------- epoch orders


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(num_rows)`` fixed by the seed and the epoch: the same in every process."""

    def __init__(self, num_rows: int, seed: int = 0) -> None:
        self.num_rows, self.seed, self.epoch = num_rows, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.num_rows).tolist())


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


class EpochSampler(Protocol):
    """A sampler whose order ``set_epoch`` fixes (:class:`EpochShuffle`, :class:`BalancedSampler`)."""

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[int]: ...

    def __len__(self) -> int: ...


# ---------------------------------------------------------------- training batches


class TrainingBatches(Sampler[list[int]]):
    """This process's training batches of an epoch (see the module docstring).

    ``sampler`` gives the epoch's order of row indices, the same in every process; Lightning finds it as
    ``loader.batch_sampler.sampler`` and calls its ``set_epoch`` before each epoch (as for torch's BatchSampler).
    """

    def __init__(self, sampler: EpochSampler, batch_size: int, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: need at least 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} processes")
        self.sampler, self.batch_size, self.num_replicas, self.rank = sampler, batch_size, num_replicas, rank
        if len(sampler) < num_replicas:
            raise ValueError(f"{len(sampler)} training clips per epoch cannot be shared by {num_replicas} processes "
                             "(each needs at least one): use fewer --devices / --num_nodes")

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order :meth:`__iter__` slices (``sampler.set_epoch``)."""
        self.sampler.set_epoch(epoch)

    def _global_batches(self, rows: int) -> tuple[int, int]:
        """(global batches per epoch, rows used): a last partial global batch is left out unless it is the only one."""
        size = self.batch_size * self.num_replicas
        if rows <= size:
            return 1, rows
        return rows // size, rows // size * size

    def __len__(self) -> int:
        return self._global_batches(len(self.sampler))[0]

    def __iter__(self) -> Iterator[list[int]]:
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        steps, used = self._global_batches(len(order))
        size = self.batch_size * self.num_replicas
        for step in range(steps):
            chunk = order[step * size:min((step + 1) * size, used)]
            if len(chunk) == size:
                mine = chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            else:  # the epoch's only global batch, smaller than processes x batch size: an even split
                mine = np.array_split(chunk, self.num_replicas)[self.rank]
            yield mine.tolist()


class BucketBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches of dataset indices, by count or by an audio budget (see the module docstring)."""

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
        ranked = np.argsort(self.lengths, kind="stable")
        short = len(ranked) % self.batch_size if self.drop_last and self.max_samples <= 0 else 0
        if short and len(ranked) > self.batch_size:  # the clips of a last short batch: any clips, new each epoch
            ranked = ranked[np.sort(rng.choice(len(ranked), len(ranked) - short, replace=False))]
        buckets = np.array_split(ranked, self.num_buckets)
        # shortest bucket first: a batch that spans two buckets spans neighbours (similar lengths)
        order = np.concatenate([rng.permutation(bucket) for bucket in buckets])
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order.tolist():
            if current and not self._fits(current, index):
                batches.append(current)
                current = []
            current.append(index)
        if current:
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


class DealtBatches(Sampler[list[int]]):
    """This process's share of the batches of ``batches`` (a batch sampler every process builds alike): batch
    ``rank``, ``rank + num_replicas``, ...

    ``pad=False`` (training): every process runs ``len(batches) // num_replicas`` steps; the last few batches
    that would not go round are left out of the epoch. ``pad=True`` (validation): the shorter shares are padded
    with repeats of the first batches, for :func:`audiotune.engine.distributed.unique_batches` to drop after
    gathering. ``set_epoch`` is forwarded to ``batches`` (Lightning reaches it as ``loader.batch_sampler.sampler``).
    """

    def __init__(self, batches: Iterable[list[int]], num_replicas: int = 1, rank: int = 0, pad: bool = True) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} processes")
        self.sampler, self.num_replicas, self.rank, self.pad = batches, num_replicas, rank, pad
        if not pad and isinstance(batches, Sized) and len(batches) < num_replicas:
            raise ValueError(f"{len(batches)} training batches per epoch cannot be shared by {num_replicas} "
                             "processes (each needs at least one): lower --batch_size / --dynamic_batch or use "
                             "fewer --devices / --num_nodes")

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def _mine(self) -> list[list[int]]:
        batches = list(self.sampler)
        if self.pad:
            steps = -(-len(batches) // self.num_replicas)
            if batches:
                batches = (batches * (1 + steps * self.num_replicas // len(batches)))[:steps * self.num_replicas]
        else:
            batches = batches[:len(batches) // self.num_replicas * self.num_replicas]
        return batches[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._mine()

    def __len__(self) -> int:
        return len(self._mine())


# ---------------------------------------------------------------- scoring batches


class FixedBatches(Sampler[list[int]]):
    """A batch sampler over a fixed list of batches."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches

    def __len__(self) -> int:
        return len(self.batches)


@dataclass(frozen=True)
class PaddingRule:
    """What zero padding a batch does to a model's result for a clip: declared once by each backbone
    (``Backbone.padding``), read by the scoring batches (:func:`audiotune.data.loading.scoring_batches`).

    ``exact``: masks make every clip's result in a padded batch its result alone, so scoring batches take any
    mix of lengths (sorted by length all the same, so little of a batch is padding). Otherwise (``reason`` says
    why, and the log says so) scoring batches hold clips sorted by length whose longest is at most ``tolerance``
    (a fraction) longer than the shortest: :class:`LengthSortedBatches`; ``tolerance`` 0 batches only clips of one
    length, which is exact again.
    """

    exact: bool = True
    tolerance: float = 0.0
    reason: str = ""

    def __post_init__(self) -> None:
        if self.tolerance < 0:
            raise ValueError(f"a padding tolerance is a fraction >= 0, not {self.tolerance}")


EXACT_PADDING = PaddingRule()


class LengthSortedBatches(Sampler[list[int]]):
    """Batches of up to ``batch_size`` clips sorted by length (ties in table order), each closed before the
    clip that is more than ``tolerance`` longer than its shortest clip (:class:`PaddingRule`; ``math.inf`` for
    exact models: sorting only keeps padding small). ``tolerance`` 0: every batch holds clips of one length."""

    def __init__(self, lengths: Sequence[int], batch_size: int, tolerance: float = 0.0) -> None:
        order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
        self.batches: list[list[int]] = []
        for index in order.tolist():
            batch = self.batches[-1] if self.batches else None
            if batch and len(batch) < batch_size and lengths[index] <= lengths[batch[0]] * (1 + tolerance):
                batch.append(index)
            else:
                self.batches.append([index])

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches

    def __len__(self) -> int:
        return len(self.batches)
