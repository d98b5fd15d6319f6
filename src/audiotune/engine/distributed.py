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
read). Machines started by Lightning's launcher on each (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``) first
meet in :func:`meet_nodes`, where a machine that never comes is an error after :data:`NODES_TIMEOUT_S` and SIGTERM
or Ctrl-C stop the wait.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import torch

from audiotune.config import RuntimeConfig
from audiotune.engine.device import parse_devices
from audiotune.launch import NODE_VARIABLES, check_nodes, launched_local_rank, launched_node_rank, node_launcher

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
NODES_TIMEOUT_S = 600.0  # how long the machines of a run wait for each other in meet_nodes (torchrun's join timeout)
MEETING_POLL_S = 0.5  # how often a machine in meet_nodes looks whether the others have come
T = TypeVar("T")


@dataclass
class _Meetings:
    held: int = 0  # the meetings this process has held (in the same order on every machine): each has its own keys
    store: Any = None  # machine 0's store of the last one, whose server its process group uses


_meetings = _Meetings()


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
    _meetings.store = None  # the meeting's store, whose server the group used, ends with it


@contextlib.contextmanager
def ending_process_group(num_nodes: int = 1) -> Iterator[None]:
    """Meet the other machines of a run on ``num_nodes`` (:func:`meet_nodes`), run the block (a fit: the process
    group's set-up and the last collective calls of a run), then end the process group however the block ended
    (:func:`end_process_group`); what follows it runs in this process alone."""
    try:
        meet_nodes(num_nodes)
        yield
    finally:
        end_process_group()


def _listening(host: str, port: int) -> bool:
    """Whether something accepts connections at ``host``:``port`` (asked without torch, whose failed attempts log
    a trace each)."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def meet_nodes(num_nodes: int, timeout_s: float = NODES_TIMEOUT_S) -> None:
    """Wait, before the process group is set up, until the first process of every machine of a run that Lightning's
    launcher starts on each machine (the ``env`` of :func:`~audiotune.launch.node_launcher`) has come here.

    torch's own wait for the machines, in setting up the group, can be stopped neither by SIGTERM nor by Ctrl-C and
    lasts the group's timeout (30 minutes: it also bounds each collective call). Here the wait is in Python, in short
    steps, so both stop it, and a machine still missing after ``timeout_s`` is an error naming it. Machine 0 holds the
    meeting's store at ``MASTER_ADDR:MASTER_PORT``, whose server (a store of several tenants) torch's process group
    takes over, then ends with it (:func:`end_process_group`). Nothing to do with one machine, in the processes
    Lightning's launcher starts beside a machine's first, and under torchrun (its agents meet before they start
    the processes, and stop them on SIGTERM) or srun (it starts every process itself)."""
    if num_nodes <= 1 or node_launcher() != "env" or launched_local_rank() != 0:
        return
    host, port, node = os.environ[NODE_VARIABLES[0]], int(os.environ[NODE_VARIABLES[1]]), launched_node_rank()
    where = f"{NODE_VARIABLES[0]} {host} {NODE_VARIABLES[1]} {port}"
    deadline = time.monotonic() + timeout_s
    log.info("waiting up to %g s for the %d machines to meet at %s", timeout_s, num_nodes, where)
    while node != 0 and not _listening(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"--num_nodes {num_nodes}: nothing listened at {where} within {timeout_s:g} s; start "
                               f"the same command on machine 0 ({NODE_VARIABLES[2]} 0) and check that this machine "
                               "reaches it there")
        time.sleep(MEETING_POLL_S)
    try:
        store = torch.distributed.TCPStore(host, port, is_master=node == 0, timeout=timedelta(seconds=timeout_s),
                                           wait_for_workers=False, multi_tenant=True)
    except torch.distributed.DistNetworkError as err:
        if node != 0:
            raise
        raise ValueError(f"{NODE_VARIABLES[1]} {port}: machine 0 cannot listen there ({str(err).splitlines()[0]}); "
                         f"give every machine a free port as {NODE_VARIABLES[1]}") from err
    keys = [f"audiotune/meeting{_meetings.held}/node{rank}" for rank in range(num_nodes)]
    _meetings.held += 1
    _meetings.store = store if node == 0 else None
    store.set(keys[node], "")
    while not store.check(keys):
        if time.monotonic() > deadline:
            missing = [rank for rank, key in enumerate(keys) if not store.check([key])]
            raise TimeoutError(f"--num_nodes {num_nodes}: no machine with {NODE_VARIABLES[2]} "
                               f"{', '.join(map(str, missing))} came to {where} within {timeout_s:g} s; start the "
                               f"same command on each machine with its {NODE_VARIABLES[2]} (0 to {num_nodes - 1})")
        time.sleep(MEETING_POLL_S)


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

