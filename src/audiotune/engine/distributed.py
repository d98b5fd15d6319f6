"""Several processes, one run: who this process is, which batches it takes, and gathering what each saw.

Lightning's DDP runs one process per device (``--devices N --strategy ddp``, ``--num_nodes M``). audiotune
shards the data itself (the Trainer's ``use_distributed_sampler`` is off) so that no clip is repeated:

- **Training** (:class:`TrainingBatches`): every process draws the same epoch order (the seed and the epoch fix
  it), cuts it into global batches of ``processes x --batch_size`` clips and takes its slice of each: the
  processes together run exactly the batches one process with ``-bs processes x batch_size`` would. A last
  global batch that is not full is left out of that epoch when the epoch has more than one (one process
  leaves out its last short batch the same way); an epoch of a single, smaller global batch is split evenly.
- **Length buckets** (:class:`DealtBatches`, ``pad=False``): the epoch's batches are dealt round-robin; the
  last fewer-than-``processes`` batches of an epoch are left out of it (a different few each epoch).
- **Validation** (:class:`DealtBatches`, ``pad=True``): one process's batches are dealt round-robin and the
  shorter shares are padded with repeats, so every process runs the same number of steps; the repeats are
  dropped again when the outputs are gathered (:func:`unique_batches`), so metrics count every clip once.

Before the process group exists (while the data are read and checked), :func:`launched_rank_zero` and
:func:`launched_local_rank` read the variables the launcher set: torchrun, SLURM's srun, or Lightning's own
launcher and ``NODE_RANK`` for several nodes.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch.utils.data import Sampler

from audiotune.config import RuntimeConfig
from audiotune.engine.device import parse_devices

STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
T = TypeVar("T")


def _env_int(env: Mapping[str, str], *keys: str) -> int:
    """The first of ``keys`` set in ``env`` as an int (0 when none is)."""
    for key in keys:
        if env.get(key, "").strip():
            return int(env[key])
    return 0


def _external_launcher(env: Mapping[str, str]) -> str | None:
    """``slurm`` or ``torchrun`` when that launcher started this process, detected as Lightning detects them
    (srun: ``SLURM_NTASKS`` outside an interactive job; torchrun: ``TORCHELASTIC_RUN_ID``), else None."""
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "slurm"
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    return None


def launched_rank_zero(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is (or will be) global rank 0, read before the process group exists.

    torchrun sets ``RANK``, srun ``SLURM_PROCID``; Lightning's own launcher starts the other processes of a node
    with ``LOCAL_RANK`` and each node's first process is told its ``NODE_RANK`` (or ``GROUP_RANK``). A process
    started by hand, with none of these, is rank 0.
    """
    env = os.environ if env is None else env
    launcher = _external_launcher(env)
    if launcher == "slurm":
        return _env_int(env, "SLURM_PROCID") == 0
    if launcher == "torchrun":
        return _env_int(env, "RANK") == 0
    return _env_int(env, "NODE_RANK", "GROUP_RANK") == 0 and _env_int(env, "LOCAL_RANK") == 0


def launched_local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's index on its node (which of the node's devices it drives), before the process group exists."""
    env = os.environ if env is None else env
    if _external_launcher(env) == "slurm":
        return _env_int(env, "SLURM_LOCALID")
    return _env_int(env, "LOCAL_RANK")


def process_group() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised process group; ``(1, 0)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def all_gather_objects(value: T) -> list[T]:
    """Every process's ``value`` (picklable, any size), in rank order; ``[value]`` in a single process."""
    world, _ = process_group()
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered


class BatchOutputs(Protocol):
    """What :func:`unique_batches` needs of one gathered batch: its clips' uids."""

    uids: list[str]


B = TypeVar("B", bound=BatchOutputs)


def unique_batches(per_process: Iterable[Iterable[B]]) -> list[B]:
    """The gathered batches of all processes without the repeats :class:`DealtBatches` padded with.

    uids are unique within a split, so a batch whose uids were all seen in an earlier batch is a repeat.
    """
    seen: set[str] = set()
    kept = []
    for batches in per_process:
        for batch in batches:
            if batch.uids and all(uid in seen for uid in batch.uids):
                continue
            seen.update(batch.uids)
            kept.append(batch)
    return kept


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


class EpochSampler(Protocol):
    """A sampler whose order ``set_epoch`` fixes (:class:`EpochShuffle`, ``BalancedSampler``)."""

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[int]: ...

    def __len__(self) -> int: ...


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

    def _global_batches(self, rows: int) -> tuple[int, int]:
        """(global batches per epoch, rows used): a last partial global batch is left out unless it is the only one."""
        size = self.batch_size * self.num_replicas
        if rows <= size:
            return 1, rows
        return rows // size, rows // size * size

    def left_out_per_epoch(self) -> int:
        """Rows of an epoch that no process takes (the last partial global batch)."""
        rows = len(self.sampler)
        return rows - self._global_batches(rows)[1]

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


class DealtBatches(Sampler[list[int]]):
    """This process's share of the batches of ``batches`` (a batch sampler every process builds alike): batch
    ``rank``, ``rank + num_replicas``, ...

    ``pad=False`` (training): every process runs ``len(batches) // num_replicas`` steps; the last few batches
    that would not go round are left out of the epoch. ``pad=True`` (validation): the shorter shares are padded
    with repeats of the first batches, for :func:`unique_batches` to drop after gathering. ``set_epoch`` is
    forwarded to ``batches`` (Lightning reaches it as ``loader.batch_sampler.sampler``).
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


def trainer_devices(runtime: RuntimeConfig) -> dict[str, Any]:
    """The Trainer's ``accelerator``, ``devices``, ``strategy`` and ``num_nodes`` of a runtime config.

    ``ddp_spawn`` and the other strategies are refused: audiotune's run-directory ownership and per-process
    batches are built for processes that each run the whole command (what ddp, torchrun and srun start).
    """
    if runtime.strategy not in STRATEGIES:
        raise ValueError(f"--strategy {runtime.strategy!r}: choose one of {', '.join(STRATEGIES)} (ddp starts one "
                         "process per device by running the command again, or takes the processes torchrun or "
                         "srun started)")
    return {"accelerator": runtime.accelerator, "devices": parse_devices(runtime.devices),
            "strategy": runtime.strategy, "num_nodes": runtime.num_nodes}


def check_launch(lightning_rank_zero: bool, launched_zero: bool) -> None:
    """Fail before anything is written when Lightning's view of this process's rank differs from the one read
    from the launcher's variables (a launcher audiotune does not know): two processes would own the run."""
    if lightning_rank_zero != launched_zero:
        raise RuntimeError(f"this process is{'' if lightning_rank_zero else ' not'} rank 0 for Lightning but was "
                           f"{'' if launched_zero else 'not '}started as rank 0 (RANK / SLURM_PROCID / NODE_RANK / "
                           "LOCAL_RANK): launch with torchrun, srun, or `audiotune ... --devices N [--num_nodes M]` "
                           "with NODE_RANK, MASTER_ADDR and MASTER_PORT set on each node")


@contextlib.contextmanager
def unused_parameter_hint() -> Iterator[None]:
    """Turn DDP's error about weights that received no gradient into one that names the flag to fix it."""
    try:
        yield
    except RuntimeError as err:
        if "find_unused_parameters" not in str(err):
            raise
        raise ValueError("DDP: some trainable weights received no gradient in a training step (an encoder layer above "
                         "--layer, LayerDrop, an unused prediction layer); train with --strategy "
                         "ddp_find_unused_parameters_true") from err

