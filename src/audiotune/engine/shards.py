"""The scoring commands (evaluate, extract) over several processes: one per device, each scoring its share.

``--devices N`` (and ``--num_nodes M``) start one process per device with Lightning Fabric's DDP launcher, the
one ``train``'s Trainer uses (the command runs again with ``LOCAL_RANK`` set; torchrun and srun start the
processes themselves). Each process scores one contiguous block of each split's rows (:meth:`Shard.rows`: every
row exactly once, no repeats to pad the shares) and writes its part atomically into a folder rank 0 holds
(:func:`gathered_parts`; a part on another machine's disk is sent to rank 0 over the process group). When every
process has finished, rank 0 reads the parts, puts the rows back in the order of the input (each part row
carries its input ``position``: :mod:`audiotune.engine.shard_parts`) and writes the command's outputs, metrics
computed once over all rows. A process that fails makes every process fail before any output is written.

The audio of the input is checked once over all processes (:func:`shared_scan`): each checks its block of each
table's rows, and every process gets what all found, so each holds the same usable rows and the same skip list as
one process would, and takes its block of the usable rows.

Everything the processes do between their start and the last gather runs inside :func:`together`: a failure in
any one process (reading the run or a table, building the model, a check, scoring, writing its part) is sent to
the others in place of what it would have sent at its next gather, so that every process makes the same number of
gathers and each raises at the same one; a process still scoring learns of it before its next batch
(:func:`heed_others`) and goes to that gather at once. Rank 0 reports the failure (its own error, or a
:class:`ShardError` naming the process that failed) and ends with the command's error status; the other processes
end quietly with status 0, so that no launcher ends rank 0 before it has cleaned up (Lightning's launcher kills
every process within 5 s of one ending with an error; torchrun's agent stops the others). SIGTERM (torchrun's
agent, a scheduler) is raised as :class:`Stopped` where the process is, told to the others as a failure, and ends
the command as Ctrl-C does. Not collective: a process killed by the system (out of memory, SIGKILL) or one failing
before the process group is set up (while reading the run's config.yaml to know how many processes to start):
Lightning's launcher then kills every process, rank 0 included (SIGKILL: nothing of it can clean up), torchrun's
agent stops them, and a process blocked in a gather waits for the process group's timeout, torch's default of 30
minutes (Lightning's ``default_pg_timeout``). It is kept: it also bounds how long a gather waits for a slower
process to finish its share, which may take that long on a large input. So no output folder is made before every
process's part is in (an evaluation's folder is made by rank 0 after the last gather): a killed rank 0 leaves at
most the parts' ``.partial`` folder, which the next command writing that output removes.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from audiotune.atomic import OutputError, atomic_path, refused
from audiotune.config import RunConfig, RuntimeConfig
from audiotune.data.audio import AudioSpec
from audiotune.data.checked_audio import CheckRecord, check_rows, scan_audio, usable_rows
from audiotune.data.prepare import Scanner
from audiotune.engine.device import parse_devices
from audiotune.engine.distributed import all_gather_objects, end_process_group, meet_nodes, process_group
from audiotune.engine.inference import override_device
from audiotune.interrupts import handler_raises, raise_from_handler
from audiotune.launch import check_nodes, launched_rank_zero, launched_world_size
from audiotune.partials import partial_place

log = logging.getLogger(__name__)

TRANSFER_BYTES = 16 << 20  # a part another machine holds comes over the process group in pieces of this size
FAILED_KEY = "audiotune/failed"  # set in the process group's store by a process that fails (see heed_others)
HEED_SECONDS = 1.0  # how often a process at work looks whether another has failed


@dataclass
class Shard:
    """Process ``rank`` of ``processes`` scoring rows; rank 0 writes the outputs. ``done``: this process has made
    its last gather (or sent its failure to the others) and gathers no more; ``sent``: the failure it sent."""

    rank: int = 0
    processes: int = 1
    done: bool = field(default=False, compare=False, repr=False)
    sent: BaseException | None = field(default=None, compare=False, repr=False)

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def rows(self, count: int) -> slice:
        """This process's block of ``count`` rows: contiguous, the first ``count % processes`` blocks one row
        longer; together the blocks hold every row once (a block may be empty when there are fewer rows)."""
        size, longer = divmod(count, self.processes)
        start = self.rank * size + min(self.rank, longer)
        return slice(start, start + size + (self.rank < longer))


def asks_for_processes(runtime: RuntimeConfig) -> bool:
    """Whether ``runtime`` asks for more than one process (several devices: a count, -1 or a list; or nodes), or a
    launcher (torchrun, srun) started several."""
    devices = parse_devices(runtime.devices)
    several = devices == -1 or (isinstance(devices, int) and devices > 1) or (
        isinstance(devices, list) and len(devices) > 1)
    return several or runtime.num_nodes > 1 or launched_world_size() > 1


def start_processes(runtime: RuntimeConfig) -> Shard:
    """This process's :class:`Shard`; with several devices or nodes, the other processes are started first (rank
    0 starts its node's others; see the module's doc) and the process group is set up (on several machines, once
    they have met: :func:`~audiotune.engine.distributed.meet_nodes`). Several nodes that no launcher started are
    refused at once (:func:`~audiotune.launch.check_nodes`)."""
    check_nodes(runtime.num_nodes)
    if not asks_for_processes(runtime):
        return Shard()
    from lightning_fabric import Fabric  # torch.distributed set-up only for several processes

    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # its banner of every process's rank: with -v only
        logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    fabric = Fabric(accelerator=runtime.accelerator, devices=parse_devices(runtime.devices),
                    num_nodes=runtime.num_nodes, strategy="ddp")
    if fabric.world_size == 1:
        return Shard()
    meet_nodes(runtime.num_nodes)
    fabric.launch()
    return Shard(fabric.global_rank, fabric.world_size)


def scoring_runtime(config: RunConfig, accelerator: str | None = None, devices: str | None = None,
                    precision: str | None = None, num_nodes: int | None = None) -> RuntimeConfig:
    """What the scoring processes run on (the device options of the command line over ``config``'s, read from the
    run before any model is built): start them with it, and give it to the config each loads. The machines are the
    command's, never the run's: a run trained on several is scored on one unless ``num_nodes`` says otherwise."""
    override_device(config, accelerator, devices, precision)
    config.runtime.num_nodes = RuntimeConfig().num_nodes if num_nodes is None else num_nodes
    return config.runtime


def quiet_followers() -> None:
    """In a process other than rank 0 (read from the launcher's variables, as it starts), log errors only: the
    warnings about the data would repeat rank 0's."""
    if not launched_rank_zero():
        logging.getLogger().setLevel(logging.ERROR)


class ShardError(RuntimeError):
    """Another process of a multi-process command failed; its error is in the message."""


class Stopped(KeyboardInterrupt):
    """SIGTERM reached a process of a multi-process command (a launcher or a scheduler stopping it): raised where
    the process is, so that it ends as after Ctrl-C, what it holds cleaned up and the others told."""
    signum = signal.SIGTERM  # the command ends with SIGTERM's status and names it


def _stop(signum: int, frame: Any) -> None:
    raise_from_handler(Stopped(f"stopped by signal {signal.Signals(signum).name}"))


def report_of(failure: BaseException) -> str:
    """How a process tells the others of its ``failure`` (in the message of the :class:`ShardError` they raise)."""
    return f"{type(failure).__name__}: {failure}"


@dataclass(frozen=True)
class _Failure:
    """What a process that failed sends at its next gather in place of its value: its one-line report and its
    traceback (shown by rank 0 with -v, as a one-process command shows its own)."""

    rank: int
    report: str
    trace: str = ""


def exchange(shard: Shard, value: Any) -> list[Any]:
    """Every process's ``value`` in rank order, inside :func:`together` (every process calls it, in the same
    order). When a process sent its failure instead, every process raises a :class:`ShardError` naming it."""
    values = all_gather_objects(value)
    failed = [found for found in values if isinstance(found, _Failure)]
    if failed:
        shard.done = True  # the process that failed makes no further gather
        trace = f"\nprocess {failed[0].rank}: {failed[0].trace}" if log.isEnabledFor(logging.INFO) else ""
        raise ShardError(f"process {failed[0].rank} of {shard.processes} failed, so nothing was written: "
                         f"{failed[0].report}{trace}")
    return values


def _store() -> Any:
    """The key-value store where the processes of the process group met, or None (it is reached through a private
    function of torch, which may go)."""
    default_store = getattr(torch.distributed.distributed_c10d, "_get_default_store", None)
    try:
        return default_store() if default_store is not None else None
    except (RuntimeError, ValueError):
        return None


def _send_failure(shard: Shard, failure: BaseException) -> None:
    """Tell the others of this process's ``failure`` at the gather they are waiting in (or will reach next), and
    those still working at once, through the store (:func:`heed_others`)."""
    shard.done, shard.sent = True, failure
    store = _store()
    if store is not None:
        with contextlib.suppress(Exception):  # the gather still tells them
            store.set(FAILED_KEY, str(shard.rank))
    all_gather_objects(_Failure(shard.rank, report_of(failure), "".join(traceback.format_exception(failure))))


def heed_others(shard: Shard) -> Callable[[], None] | None:
    """A check for long work between gathers (before each batch scored): when another process has failed, go to
    the gather where it sent its failure (the next one, as every process is between the same two gathers), and
    raise its :class:`ShardError` there, instead of first finishing this process's share. Looks at most once a
    second; None with one process."""
    store = _store() if shard.processes > 1 else None
    if store is None:
        return None
    last = [time.monotonic()]

    def check() -> None:
        now = time.monotonic()
        if now - last[0] < HEED_SECONDS:
            return
        last[0] = now
        if store.check([FAILED_KEY]):
            exchange(shard, None)  # raises: the process that failed sent its failure at this gather

    return check


@contextlib.contextmanager
def together(shard: Shard) -> Iterator[None]:
    """Around everything the processes of ``shard`` do from their start to their last gather (see the module's
    doc): a failure in one process fails all of them at the same gather. Rank 0 raises (its own error, or a
    :class:`ShardError` naming the process that failed); the others end quietly with status 0, rank 0 reporting."""
    if shard.processes == 1:
        yield
        return
    try:
        with handler_raises(signal.SIGTERM, _stop):
            yield
    except (Exception, Stopped) as err:
        shared = isinstance(err, ShardError) or err is shard.sent  # raised at a gather, or sent to the others
        if not shared and not shard.done:
            _send_failure(shard, err)
            shared = True
        if shard.writes or not shared:  # a follower's own failure after the last gather is its own to report
            raise
        raise SystemExit(0) from None
    finally:
        end_process_group()  # every process is past its last gather: end it here, not in the interpreter's exit


def shared_scan(shard: Shard) -> Scanner:
    """:func:`~audiotune.data.checked_audio.scan_audio` shared by ``shard``'s processes (all must call it, table after
    table, inside :func:`together`): each checks the audio of its block of the rows, and every process gets all the
    usable rows and all the failures, in table order, as one process scanning the whole table finds them."""
    if shard.processes == 1:
        return scan_audio

    def scan(table: pd.DataFrame, spec: AudioSpec, split: str, min_samples: int = 0,
             record: CheckRecord | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        reports = exchange(shard, check_rows(table.iloc[shard.rows(len(table))], spec, split, min_samples, record))
        lengths = [length for block, _ in reports for length in block]
        return usable_rows(table, lengths), pd.concat([found for _, found in reports], ignore_index=True)

    return scan


def _part_name(rank: int) -> str:
    return f"part-{rank:05d}.arrow"


@contextlib.contextmanager
def gathered_parts(shard: Shard, target: Path, write_part: Callable[[Path], None]) -> Iterator[list[Path]]:
    """Every process writes its part with ``write_part(path)`` (atomically, into a folder beside ``target``, or
    beside the first of its folders that does not exist yet, that rank 0 holds while the block runs and removes
    after); the block gets the parts of all processes in rank order in rank 0, and an empty list in the others.
    With several processes, call it inside :func:`together`: it makes the last gather, after rank 0's block.

    If any process fails to write its part, every process raises (the others a :class:`ShardError` naming it)
    and no block runs. A part that rank 0 does not see (another machine's disk) is sent to it."""
    world, _ = process_group()
    if world != shard.processes:
        raise RuntimeError(f"{shard.processes} processes expected, the process group has {world}")
    place = target  # in a folder not made yet: beside the first such folder, which only the finished output makes
    while not place.parent.is_dir() and place.parent != place.parent.parent:
        place = place.parent
    with contextlib.ExitStack() as stack:
        try:  # the folder of parts is on the way to the output: a file-system refusal names the output
            own = stack.enter_context(partial_place(place, directory=True)) if shard.writes else None
        except OSError as err:
            raise refused(target, err) from err
        folder = Path(exchange(shard, str(own) if own else "")[0])
        part = folder / _part_name(shard.rank)
        made = not folder.is_dir()  # a follower's own folder (another machine's disk); rank 0's is not its to remove
        try:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with atomic_path(part) as partial:
                    write_part(partial)
                sizes = exchange(shard, part.stat().st_size)
                parts = [folder / _part_name(rank) for rank in range(shard.processes)]
                # parts on another machine's disk (no shared folder, or a gs:// output staged on each machine)
                unseen = exchange(shard, [rank for rank, (path, size) in enumerate(zip(parts, sizes))
                                          if not path.is_file() or path.stat().st_size != size]
                                  if shard.writes else [])[0]
                for rank in unseen:
                    if shard.writes:
                        receive_file(shard, parts[rank], rank)
                    elif shard.rank == rank:
                        send_file(shard, part, 0)
            except BaseException as err:
                part.unlink(missing_ok=True)
                if isinstance(err, OutputError) and isinstance(err.__cause__, OSError):  # a part, not the output
                    raise refused(target, err.__cause__) from err.__cause__
                raise
            try:
                yield parts if shard.writes else []
            except (Exception, Stopped) as err:
                if shard.processes > 1 and not shard.done:
                    _send_failure(shard, err)  # the last gather: the others learn that rank 0's block failed
                raise
            if shard.processes > 1 and not shard.done:
                exchange(shard, None)  # the others keep their parts until rank 0 has read them
                shard.done = True
        finally:
            if not shard.writes:
                part.unlink(missing_ok=True)
                if made:
                    with contextlib.suppress(OSError):  # a folder of its own on another machine's disk, now empty
                        folder.rmdir()


def send_file(shard: Shard, path: Path, to: int) -> None:
    """Send the file at ``path`` to process ``to`` (which calls :func:`receive_file`), a few MiB at a time. A file
    that cannot be read sends the failure in place of a piece, then to every process (:func:`together`)."""
    try:
        with open(path, "rb") as stream:
            while True:
                chunk = stream.read(TRANSFER_BYTES)
                torch.distributed.send_object_list([chunk], dst=to)
                if not chunk:
                    return
    except OSError as err:
        torch.distributed.send_object_list([_Failure(shard.rank, report_of(err))], dst=to)
        _send_failure(shard, err)
        raise


def receive_file(shard: Shard, path: Path, sender: int) -> None:
    """Write the file process ``sender`` sends with :func:`send_file` to ``path``, atomically. A file that cannot
    be written is still received to its end (the sender is not left waiting), then raises."""
    failure: OSError | None = None
    with contextlib.ExitStack() as stack:
        stream = None
        try:
            stream = stack.enter_context(open(stack.enter_context(atomic_path(path)), "wb"))
        except OSError as err:
            failure = err
        while True:
            box: list[Any] = [None]
            torch.distributed.recv_object_list(box, src=sender)
            if isinstance(box[0], _Failure):
                exchange(shard, None)  # raises: the sender sends its failure to every process
            if not box[0]:
                break
            if stream is not None and failure is None:
                try:
                    stream.write(box[0])
                except OSError as err:
                    failure = err
        if failure is not None:
            raise failure
