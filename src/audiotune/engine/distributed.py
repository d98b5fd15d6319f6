"""Several processes, one run: who this process is, and gathering what each saw.

Lightning's DDP runs one process per device (``--devices N --strategy ddp``, ``--num_nodes M``). audiotune
shards the data itself (the Trainer's ``use_distributed_sampler`` is off) so that no clip is repeated: each
process takes its share of the batches through :class:`audiotune.data.samplers.TrainingBatches` (training) and
:class:`audiotune.data.samplers.DealtBatches` (length buckets, groups, validation: validation shares padded with
repeats so every process runs the same number of steps); :func:`unique_batches` drops the repeats again when
the outputs are gathered, so metrics count every clip once.

Before the process group exists (while the data are read and checked), :mod:`audiotune.launch` tells who this
process is from the variables its launcher set, and whether a launcher started it as one of several machines at
all (:func:`~audiotune.launch.check_nodes`: ``--num_nodes`` above 1 without one is refused before anything is
read).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

import torch

from audiotune.config import RuntimeConfig
from audiotune.engine.device import parse_devices
from audiotune.launch import check_nodes

STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
T = TypeVar("T")


def process_group() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised process group; ``(1, 0)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def end_process_group() -> None:
    """Destroy the process group, if there is one, once this process makes no more collective calls: its threads
    and connections end in order, instead of in the interpreter's exit, where a thread still running aborts the
    process (after its error was reported, with a status the launcher reads as a crash)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        with contextlib.suppress(Exception):  # a peer already gone: nothing left to end in order
            torch.distributed.destroy_process_group()


@contextlib.contextmanager
def ending_process_group() -> Iterator[None]:
    """Run the block (a fit: the last collective calls of a run), then end the process group however the block
    ended (:func:`end_process_group`); what follows it runs in this process alone."""
    try:
        yield
    finally:
        end_process_group()


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
    """The gathered batches of all processes without the repeats
    :class:`~audiotune.data.samplers.DealtBatches` padded with.

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


def trainer_devices(runtime: RuntimeConfig) -> dict[str, Any]:
    """The Trainer's ``accelerator``, ``devices``, ``strategy`` and ``num_nodes`` of a runtime config.

    ``ddp_spawn`` and the other strategies are refused: audiotune's run-directory ownership and per-process
    batches are built for processes that each run the whole command (what ddp, torchrun and srun start). So are
    several nodes without a launcher (:func:`~audiotune.launch.check_nodes`).
    """
    check_nodes(runtime.num_nodes)
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

