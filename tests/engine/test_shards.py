"""Rows shared between scoring processes, parts written aside and merged in input order, a failure anywhere
failing every process (two real processes over gloo)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from audiotune.config import RunConfig
from audiotune.engine.shard_parts import part_schema, part_writer, write_in_input_order
from audiotune.engine.shards import Shard, asks_for_processes, gathered_parts, heed_others, scoring_runtime, together
from audiotune.partials import PARTIAL_SUFFIX


@pytest.mark.parametrize("processes", [1, 2, 3, 8])
@pytest.mark.parametrize("rows", [0, 1, 7, 8, 23])
def test_every_row_is_in_exactly_one_block(rows: int, processes: int) -> None:
    blocks = [Shard(rank, processes).rows(rows) for rank in range(processes)]
    assert [i for block in blocks for i in range(rows)[block]] == list(range(rows))  # once each, in order
    sizes = [len(range(rows)[block]) for block in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_several_devices_nodes_or_launched_processes_ask_for_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    runtime = RunConfig().runtime
    assert not asks_for_processes(runtime)  # auto: one process
    for devices in ("2", "-1", "0,1", "[0, 1]"):
        runtime.devices = devices
        assert asks_for_processes(runtime)
    runtime.devices = "[1]"
    assert not asks_for_processes(runtime)
    runtime.num_nodes = 2
    assert asks_for_processes(runtime)
    runtime.num_nodes = 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun started 2 processes: they share the rows, whatever --devices
    assert asks_for_processes(runtime)


def test_a_run_trained_on_several_machines_is_scored_on_this_one_unless_told() -> None:
    """The machines are the scoring command's: a run's --num_nodes 2 would wait for a machine nothing starts."""
    trained = RunConfig()
    trained.runtime.num_nodes = 2
    assert scoring_runtime(trained).num_nodes == 1
    assert scoring_runtime(trained, num_nodes=3).num_nodes == 3


SCHEMA = pa.schema([("uid", pa.string()), ("value", pa.float32())])


def _part(path: Path, positions: list[int]) -> None:
    with part_writer(path, SCHEMA) as writer:
        for start in range(0, len(positions), 2):  # written in batches, as scoring does
            batch = positions[start:start + 2]
            writer.write_table(pa.table({"position": batch, "uid": [f"u{p}" for p in batch],
                                         "value": [float(p) for p in batch]}, schema=part_schema(SCHEMA)))


def test_parts_are_merged_in_input_order(tmp_path: Path) -> None:
    """Each part holds its rows in batch order (sorted by length, say); the merged file is in input order."""
    _part(tmp_path / "a.arrow", [3, 0, 2, 1])
    _part(tmp_path / "b.arrow", [6, 4, 5])
    _part(tmp_path / "c.arrow", [])  # a process that had no rows
    out = tmp_path / "merged.parquet"
    write_in_input_order([tmp_path / name for name in ("b.arrow", "c.arrow", "a.arrow")], out)
    merged = pd.read_parquet(out)
    assert list(merged.columns) == ["uid", "value"]
    assert merged["uid"].tolist() == [f"u{p}" for p in range(7)] and np.array_equal(merged["value"], np.arange(7))


def test_one_process_part_is_gathered_and_cleaned_up(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    with gathered_parts(Shard(), target, lambda path: _part(path, [1, 0])) as parts:
        assert len(parts) == 1 and parts[0].is_file()
        write_in_input_order(parts, target)
    assert pd.read_parquet(target)["uid"].tolist() == ["u0", "u1"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]  # the parts' folder is gone

    def fails(path: Path) -> None:
        path.write_text("half")
        raise ValueError("unreadable row")

    with pytest.raises(ValueError, match="unreadable row"):
        with gathered_parts(Shard(), tmp_path / "other.parquet", fails):
            raise AssertionError("no block runs after a failed part")
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_the_parts_of_an_output_in_a_new_folder_make_no_folder_before_it_is_written(tmp_path: Path) -> None:
    """The parts wait beside the first folder the output needs that does not exist yet: only the finished output
    makes it, so a failure (or a killed process) leaves no new folder."""
    target = tmp_path / "new" / "sub" / "out.parquet"
    with gathered_parts(Shard(), target, lambda path: _part(path, [1, 0])) as parts:
        assert not (tmp_path / "new").exists() and parts[0].parent.name.startswith(".new.")
        write_in_input_order(parts, target)
    assert pd.read_parquet(target)["uid"].tolist() == ["u0", "u1"]
    assert [p.name for p in tmp_path.iterdir()] == ["new"]

    def fails(path: Path) -> None:
        raise ValueError("unreadable row")

    with pytest.raises(ValueError, match="unreadable row"):
        with gathered_parts(Shard(), tmp_path / "other" / "out.parquet", fails):
            raise AssertionError("no block runs after a failed part")
    assert [p.name for p in tmp_path.iterdir()] == ["new"]


def test_a_refused_place_for_the_parts_names_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that lets nothing be made in it (/proc, a read-only mount) is reported by the output's name, not
    by the name of the temporary place of its parts; so is a part that cannot be written (a full disk)."""
    import errno
    import tempfile

    from audiotune.atomic import OutputError

    target = tmp_path / "x.parquet"

    def refuse(prefix: str = "", suffix: str = "", dir: str = "") -> str:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", f"{dir}/{prefix}abcd{suffix}")

    with monkeypatch.context() as patched:
        patched.setattr(tempfile, "mkdtemp", refuse)
        with pytest.raises(OutputError) as raised:
            with gathered_parts(Shard(), target, lambda path: _part(path, [0])):
                raise AssertionError("no block runs without its parts")
    assert str(raised.value).startswith(f"{target}: could not be written (No such file or directory)")
    assert PARTIAL_SUFFIX not in str(raised.value)

    def full(path: Path) -> None:
        path.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError) as raised:
        with gathered_parts(Shard(), target, full):
            raise AssertionError("no block runs without its parts")
    assert str(raised.value).startswith(f"{target}: could not be written (No space left on device)")
    assert list(tmp_path.iterdir()) == []


def test_one_process_fails_on_its_own_without_gathers() -> None:
    shard = Shard()
    with pytest.raises(ValueError, match="unreadable table"):
        with together(shard):
            raise ValueError("unreadable table")
    assert not shard.done and shard.sent is None and heed_others(shard) is None


WORKER = """
import os
import signal
import sys
from pathlib import Path
import torch.distributed as dist
from audiotune.engine import shards
from audiotune.engine.shards import Shard, gathered_parts, together

rank, target, failing, store = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if sys.argv[5:] == ["-v"]:
    import logging
    logging.basicConfig(level=logging.INFO)
dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"file://{store}")
shard = Shard(rank, 2)
if failing in (-2, -3):  # a file on rank 1's disk sent to rank 0 in 1000-byte pieces (-3: a file not there)
    shards.TRANSFER_BYTES = 1000
    try:
        with together(shard):
            if rank == 1:
                sent = target.with_name("sent.bin")
                if failing == -2:
                    sent.write_bytes(bytes(range(256)) * 10)
                shards.send_file(shard, sent, 0)
            else:
                shards.receive_file(shard, target, 1)
        print("sent" if rank else "received")
    except SystemExit as ended:
        print(f"exit {ended.code}")
    except Exception as err:
        print(f"{type(err).__name__}: {err}")
    sys.exit()

if failing == 32 and rank == 0:  # rank 0 slow to begin its part: the parts' folder it holds is still empty
    import time
    from audiotune import partials
    look_for_partials = partials.remove_abandoned_partials
    partials.remove_abandoned_partials = lambda path, *crowded: (
        path.name.startswith("part-") and time.sleep(2)) or look_for_partials(path, *crowded)

def write(path):
    if rank == failing:
        raise ValueError("a row that cannot be decoded")
    if failing == 32 and rank == 1:  # process 1 fails before rank 0 has begun its part
        import time
        time.sleep(0.5)
        raise ValueError("a row that cannot be decoded")
    if failing == 31 and rank == 1:  # a launcher stopping this process while it scores
        os.kill(os.getpid(), signal.SIGTERM)
    path.write_text(f"rows of {rank}")

try:
    with together(shard):
        if failing == 10 + rank:  # a failure before the parts are written, in this process only
            raise OSError("the table could not be read")
        with gathered_parts(shard, target, write) as parts:
            if rank == 0:
                if failing == 20:  # rank 0 fails while merging: the other learns of it at the last gather
                    raise OSError("disk full")
                if failing == 30:  # rank 0 is stopped while merging
                    os.kill(os.getpid(), signal.SIGTERM)
                target.write_text("|".join(part.read_text() for part in parts))
    print("done")
except SystemExit as ended:  # a process other than rank 0 ends quietly when rank 0 reports
    print(f"exit {ended.code}")
except (Exception, KeyboardInterrupt) as err:
    print(f"{type(err).__name__}: {err}")
"""


def _two_processes(tmp_path: Path, failing: int, *verbose: str) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    target = tmp_path / "out" / "merged.txt"
    target.parent.mkdir()
    command = [sys.executable, "-c", WORKER]
    workers = [subprocess.Popen([*command, str(rank), str(target), str(failing), str(tmp_path / "store"), *verbose],
                                env=env, stdout=subprocess.PIPE, text=True) for rank in range(2)]
    return [worker.communicate(timeout=120)[0].strip() for worker in workers]


@pytest.mark.slow
def test_two_processes_gather_their_parts_in_rank_order(tmp_path: Path) -> None:
    assert _two_processes(tmp_path, failing=-1) == ["done", "done"]
    assert (tmp_path / "out" / "merged.txt").read_text() == "rows of 0|rows of 1"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["merged.txt"]  # no part, no partial folder left


@pytest.mark.slow
def test_a_part_on_another_disk_is_sent_in_pieces(tmp_path: Path) -> None:
    assert _two_processes(tmp_path, failing=-2) == ["received", "sent"]
    assert (tmp_path / "out" / "merged.txt").read_bytes() == bytes(range(256)) * 10
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["merged.txt", "sent.bin"]


@pytest.mark.slow
def test_a_part_that_cannot_be_sent_fails_both(tmp_path: Path) -> None:
    rank0, rank1 = _two_processes(tmp_path, failing=-3)
    assert rank0.startswith("ShardError: process 1 of 2 failed, so nothing was written: FileNotFoundError: ")
    assert rank1 == "exit 0"
    assert not [p for p in (tmp_path / "out").rglob("*")]


@pytest.mark.slow
@pytest.mark.parametrize("failing", [1, 32])
def test_a_failed_process_fails_every_process_before_any_output(tmp_path: Path, failing: int) -> None:
    """Process 1 fails writing its part, also while rank 0 has yet to write its own into the parts' folder (which
    process 1 leaves to rank 0)."""
    rank0, rank1 = _two_processes(tmp_path, failing=failing)
    assert rank1 == "exit 0"  # rank 0 reports its failure
    assert rank0 == ("ShardError: process 1 of 2 failed, so nothing was written: ValueError: a row that cannot be "
                     "decoded")
    assert not [p for p in (tmp_path / "out").rglob("*")]  # rank 0's part and the parts' folder are gone too
    assert not list(tmp_path.rglob(f"*{PARTIAL_SUFFIX}"))


@pytest.mark.slow
@pytest.mark.parametrize("failing", [10, 11])
def test_a_failure_before_the_first_gather_reaches_the_other_process(tmp_path: Path, failing: int) -> None:
    """One process fails before it gathers anything while the other waits in the gathers of the parts: both end
    at the same gather, rank 0 with the error, the other quietly."""
    rank0, rank1 = _two_processes(tmp_path, failing=failing)
    assert rank0 == ("OSError: the table could not be read" if failing == 10 else
                     "ShardError: process 1 of 2 failed, so nothing was written: OSError: the table could not be "
                     "read")
    assert rank1 == "exit 0"
    assert not [p for p in (tmp_path / "out").rglob("*")] and not list(tmp_path.rglob(f"*{PARTIAL_SUFFIX}"))


@pytest.mark.slow
def test_with_verbose_rank_zero_shows_the_failing_processs_traceback(tmp_path: Path) -> None:
    """-v shows a traceback: the one of the process that failed, as a one-process command shows its own."""
    rank0, rank1 = _two_processes(tmp_path, 11, "-v")
    report, _, trace = rank0.partition("\nprocess 1: ")
    assert report == "ShardError: process 1 of 2 failed, so nothing was written: OSError: the table could not be read"
    assert trace.startswith("Traceback (most recent call last):") and trace.endswith(
        "OSError: the table could not be read")
    assert 'File "<string>", line' in trace  # where the worker (run with -c) raised it
    assert rank1 == "exit 0"


@pytest.mark.slow
def test_rank_zero_failing_in_its_block_ends_the_other_at_the_last_gather(tmp_path: Path) -> None:
    rank0, rank1 = _two_processes(tmp_path, failing=20)
    assert (rank0, rank1) == ("OSError: disk full", "exit 0")
    assert not [p for p in (tmp_path / "out").rglob("*")]  # both parts and their folder are gone


SCAN_WORKER = """
import sys
import pandas as pd
import torch.distributed as dist
from audiotune.data import audio, checked_audio
from audiotune.engine.shards import Shard, shared_scan, together

rank, folder, failing, store = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"file://{store}")
checked, table = [], pd.read_csv(f"{folder}/table.csv", index_col="uid")

def counted(path, *args, **kwargs):
    if rank == failing:
        raise OSError(f"{path}: connection reset")
    checked.append(path.rsplit("/", 1)[-1])
    return check(path, *args, **kwargs)

check, checked_audio.check_clip = checked_audio.check_clip, counted
spec = audio.AudioSpec(resample_rate=0, clip_length=0)
try:
    with together(shard := Shard(rank, 2)):
        kept, failures = shared_scan(shard)(table, spec, "test", 100)
    alone, alone_failures = checked_audio.scan_audio(table, spec, "test", 100)  # one process's scan, for comparison
    same = kept.equals(alone) and failures.equals(alone_failures)
    print(" ".join(checked[:len(checked) - len(table)]), "|", list(kept.index), list(failures["uid"]), same)
except SystemExit as ended:
    print(f"exit {ended.code}")
except Exception as err:
    print(f"{type(err).__name__}: {err}")
"""


def _scan_in_two_processes(tmp_path: Path, failing: int) -> list[str]:
    import soundfile as sf

    # b: all zeros; d: shorter than the 100 samples needed; f: no such file
    waves = {"a": np.full(800, 0.1), "b": np.zeros(400), "c": np.full(400, 0.1), "d": np.full(50, 0.1),
             "e": np.full(600, 0.1)}
    for uid, wave in waves.items():
        sf.write(tmp_path / f"{uid}.wav", wave.astype(np.float32), 8000)
    uids = [*waves, "f"]
    pd.DataFrame({"uid": uids, "path": [str(tmp_path / f"{uid}.wav") for uid in uids]}).to_csv(tmp_path / "table.csv",
                                                                                                 index=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-c", SCAN_WORKER, str(rank), str(tmp_path), str(failing),
                                 str(tmp_path / "store")], env=env, stdout=subprocess.PIPE, text=True)
               for rank in range(2)]
    return [worker.communicate(timeout=120)[0].strip() for worker in workers]


@pytest.mark.slow
def test_two_processes_share_the_audio_checks_and_both_get_every_result(tmp_path: Path) -> None:
    """Each process checks its block of the rows (3 + 3 of 6); both get the usable rows and the failures of all,
    in table order, as one process scanning the whole table finds them."""
    rank0, rank1 = _scan_in_two_processes(tmp_path, failing=-1)
    assert rank0 == "a.wav b.wav c.wav | ['a', 'c', 'e'] ['b', 'd', 'f'] True"
    assert rank1 == "d.wav e.wav f.wav | ['a', 'c', 'e'] ['b', 'd', 'f'] True"


@pytest.mark.slow
def test_a_check_that_fails_in_one_process_fails_both(tmp_path: Path) -> None:
    rank0, rank1 = _scan_in_two_processes(tmp_path, failing=1)
    assert rank1 == "exit 0"  # rank 0 reports its failure
    assert rank0.startswith("ShardError: process 1 of 2 failed, so nothing was written: OSError: ")
    assert rank0.endswith("d.wav: connection reset")


@pytest.mark.slow
@pytest.mark.parametrize("failing", [30, 31])
def test_a_process_stopped_by_sigterm_ends_both_and_leaves_nothing(tmp_path: Path, failing: int) -> None:
    """SIGTERM (torchrun's agent, a scheduler) in rank 0 while it merges, or in process 1 while it writes its part:
    raised where the process is and sent to the other as a failure; both end, nothing is left."""
    rank0, rank1 = _two_processes(tmp_path, failing=failing)
    stopped = "Stopped: stopped by signal SIGTERM"
    assert rank0 == (stopped if failing == 30 else f"ShardError: process 1 of 2 failed, so nothing was written: "
                                                   f"{stopped}")
    assert rank1 == "exit 0"
    assert not [p for p in (tmp_path / "out").rglob("*")]

