"""Several training processes (Lightning DDP): shards, gathering, one owner of the run directory.

The end-to-end tests run `audiotune train --accelerator cpu --devices 2 --strategy ddp` as a subprocess (gloo on
the CPU): Lightning's launcher starts rank 1 by running the same command line again.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import make_uid_dataset, small_train_args
from lightning_fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from audiotune.cli import build_parser, config_from_args
from audiotune.config import RunConfig, save_config
from audiotune.data.samplers import BalancedSampler, BucketBatchSampler, DealtBatches, EpochShuffle, TrainingBatches
from audiotune.engine.cache import write_entry
from audiotune.engine.distributed import end_process_group, meet_nodes, trainer_devices, unique_batches
from audiotune.engine.module import ValidationBatch
from audiotune.engine.train import train
from audiotune.interrupts import Terminated, sigterm_raises
from audiotune.launch import NODE_VARIABLES
from audiotune.outputs import CLIPS_READ_FILE, CONFIG_FILE, LOCK_FILE, own_run_dir

# ---------------------------------------------------------------- training shards


def shards(sampler: object, batch_size: int, processes: int) -> list[list[list[int]]]:
    return [list(TrainingBatches(sampler, batch_size, processes, rank)) for rank in range(processes)]  # type: ignore[arg-type]


@pytest.mark.parametrize("rows", [16, 23, 40])
def test_processes_train_on_the_batches_of_one_process_with_the_global_batch(rows: int) -> None:
    one = list(TrainingBatches(EpochShuffle(rows, seed=3), batch_size=8))
    ranks = shards(EpochShuffle(rows, seed=3), batch_size=4, processes=2)
    assert len(ranks[0]) == len(ranks[1]) == len(one)  # the same steps everywhere
    assert [a + b for a, b in zip(*ranks)] == one  # step k of the two processes is step k of one with -bs 8
    seen = [i for rank in ranks for batch in rank for i in batch]
    assert len(seen) == len(set(seen)) == rows // 8 * 8  # disjoint; only a last partial global batch is left out


def test_an_epoch_smaller_than_the_global_batch_is_split_evenly() -> None:
    ranks = shards(EpochShuffle(5), batch_size=4, processes=2)
    assert [len(r) for r in ranks] == [1, 1] and sorted(ranks[0][0] + ranks[1][0]) == list(range(5))
    with pytest.raises(ValueError, match="1 training clips per epoch cannot be shared by 2 processes"):
        TrainingBatches(EpochShuffle(1), 4, 2, 0)


def test_every_process_draws_the_epoch_order_of_the_seed_and_the_epoch() -> None:
    sampler = EpochShuffle(32, seed=1)
    first = shards(sampler, 4, 2)
    sampler.set_epoch(1)
    second = shards(sampler, 4, 2)
    assert first != second and sorted(sum(sum(second, []), [])) == list(range(32))
    sampler.set_epoch(0)
    assert shards(sampler, 4, 2) == first


def test_balanced_epochs_are_sharded_not_repeated() -> None:
    groups = np.array([0] * 12 + [1] * 4)
    balanced = BalancedSampler(groups, "oversample", seed=2)
    ranks = shards(balanced, 3, 2)
    drawn = [i for rank in ranks for batch in rank for i in batch]
    # the processes together take one balanced epoch (24 draws: 12 + 12 per class), each of its draws once
    assert sorted(drawn) == sorted(balanced.indices().tolist())
    assert [a + b for a, b in zip(*ranks)] == [list(balanced.indices()[k:k + 6]) for k in range(0, 24, 6)]


def test_lightning_reaches_set_epoch_through_the_batch_sampler() -> None:
    """Lightning calls ``set_epoch`` on ``loader.sampler`` and ``loader.batch_sampler.sampler`` only."""
    dataset = list(range(40))
    order = EpochShuffle(40, seed=0)
    loader = DataLoader(dataset, batch_sampler=TrainingBatches(order, 4, 2, 0))
    _set_sampler_epoch(loader, 3)
    assert order.epoch == 3
    buckets = BucketBatchSampler(list(range(100, 140)), 4, num_buckets=4)
    loader = DataLoader(dataset, batch_sampler=DealtBatches(buckets, 2, 1, pad=False))
    _set_sampler_epoch(loader, 5)
    assert buckets.epoch == 5


def test_length_buckets_that_do_not_go_round_are_left_out_not_repeated() -> None:
    buckets = BucketBatchSampler(list(range(1000, 1030)), 4, num_buckets=3)  # 8 batches (7 x 4 + 2)
    ranks = [list(DealtBatches(buckets, 3, rank, pad=False)) for rank in range(3)]
    assert [len(r) for r in ranks] == [2, 2, 2]
    seen = [i for rank in ranks for batch in rank for i in batch]
    assert len(seen) == len(set(seen))
    with pytest.raises(ValueError, match="8 training batches per epoch cannot be shared by 9 processes"):
        DealtBatches(buckets, 9, 0, pad=False)


# ---------------------------------------------------------------- validation: padded shares, gathered once

@pytest.mark.parametrize(("rows", "processes"), [(10, 2), (10, 3), (3, 4), (12, 4)])
def test_gathered_validation_counts_every_clip_once(rows: int, processes: int) -> None:
    one = list(BatchSampler(SequentialSampler(range(rows)), 2, drop_last=False))
    ranks = [list(DealtBatches(one, processes, rank, pad=True)) for rank in range(processes)]
    assert len({len(r) for r in ranks}) == 1  # the same steps in every process (padded with repeats)
    gathered = [[ValidationBatch([f"u{i}" for i in batch], np.zeros((len(batch), 1)), np.zeros((len(batch), 1)),
                                 0.0) for batch in rank] for rank in ranks]
    kept = unique_batches(gathered)
    assert sorted(uid for batch in kept for uid in batch.uids) == sorted(f"u{i}" for i in range(rows))
    assert sorted(tuple(b.uids) for b in kept) == sorted(tuple(f"u{i}" for i in batch) for batch in one)


def test_strategies_audiotune_cannot_run_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # torchrun started it as one of several machines
    config = RunConfig()
    config.runtime.strategy, config.runtime.devices, config.runtime.num_nodes = "ddp", "2", 3
    assert trainer_devices(config.runtime) == {"accelerator": "auto", "devices": 2, "strategy": "ddp", "num_nodes": 3}
    config.runtime.strategy = "ddp_spawn"
    with pytest.raises(ValueError, match="--strategy 'ddp_spawn': choose one of auto, ddp"):
        trainer_devices(config.runtime)


def test_probe_runs_in_one_process(tmp_path: Path) -> None:
    from audiotune.engine.probe import probe

    config = RunConfig()
    config.exp_dir, config.runtime.strategy = str(tmp_path / "probe"), "ddp"
    with pytest.raises(ValueError, match="probe runs in one process"):
        probe(config)
    assert not (tmp_path / "probe").exists()


def test_the_commands_of_one_process_refuse_several_devices_before_reading_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from audiotune.cli import main

    missing = str(tmp_path / "missing.csv")
    for argv in (["cluster", "-d", missing, "--out", str(tmp_path / "l.parquet"), "--devices", "2"],
                 ["stats", "-d", missing, "--devices", "0,1"],
                 ["attention", "--run", str(tmp_path / "run"), "--audio", missing, "--devices", "-1"]):
        assert main(argv) == 2, argv
        said = capsys.readouterr().err.strip().splitlines()[-1]
        assert "runs in one process on one device: give --devices auto, 1 or one index" in said, said
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- the run directory and the feature cache

def test_a_follower_neither_locks_creates_nor_deletes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with own_run_dir(run, overwrite=True) as owner:  # rank 0 holds the lock and has written a run
        owner.start()
        (run / "config.yaml").write_text("x")
        with own_run_dir(run, overwrite=True, follower=True) as follower:
            follower.start()
            assert not follower.writes and (run / "config.yaml").is_file()
    with own_run_dir(tmp_path / "absent", follower=True) as follower:
        assert not follower.writes
    assert not (tmp_path / "absent").exists() and (run / LOCK_FILE).exists()


def test_cache_entries_are_written_under_names_of_their_own(tmp_path: Path) -> None:
    target = tmp_path / "entry.safetensors"
    write_entry(target, torch.ones(2, 3))
    write_entry(target, torch.ones(2, 3))  # a second process writing the same key replaces it whole
    assert [p.name for p in tmp_path.iterdir()] == ["entry.safetensors"]


# ---------------------------------------------------------------- end to end: 2 processes vs 1 (slow)

def _train(args: list[str], launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python [-m LAUNCHER ...] -m audiotune ARGS`` in a clean environment, one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, *launcher, "-m", "audiotune", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


RUN_FILES = {LOCK_FILE, "checkpoints", "command.json", "config.yaml", "logs", "metrics.json", "model.safetensors",
             "plots", "predictions.parquet", "report.html", "input_spec.json", CLIPS_READ_FILE}


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_uid_dataset(tmp_path_factory.mktemp("ddp"))  # 16 training clips, 4 validation, 4 test


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(dataset: dict) -> None:
    """Heads on a frozen ECAPA-TDNN from the feature cache (no BatchNorm trains, no dropout): 2 processes of -bs 2
    run the batches of 1 process of -bs 4, so the gradients, the kept epoch and the predictions match."""
    root = dataset["root"]
    common = ["--accelerator", "cpu", "--freeze", "--final_dropout", "0", "-e", "2", "-lr", "0.02",
              "--monitor", "uar", "--scheduler", "none"]
    one, two = root / "one", root / "two"
    _train(small_train_args(dataset, one, *common, "--cache_dir", str(root / "cache1")))
    done = _train([*small_train_args(dataset, two, *common, "--cache_dir", str(root / "cache2")), "-bs", "2",
                   "--devices", "2", "--strategy", "ddp"])
    assert done.stderr.count("run directory:") == 1  # only rank 0 reports
    m1, m2 = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert m2["processes"] == 2 and m1["processes"] == 1
    # (a) every training clip once per epoch over both processes: the 16 of the split, no padding repeats
    assert m2["train_clips"] == 16 and m2["train_clips_per_epoch"] == m1["train_clips_per_epoch"] == [16, 16]
    # (b) validation and test scored on every clip, once
    assert m2["val"]["n"] == m1["val"]["n"] == 4 and m2["test"]["n"] == 4
    p1, p2 = (pd.read_parquet(run / "predictions.parquet").set_index(["split", "uid"]).sort_index()
              for run in (one, two))
    assert p2.index.equals(p1.index) and not p2.index.duplicated().any()
    # (d) the same training: scores, validation curve and metrics equal up to float summation order
    scores = [c for c in p1.columns if c.startswith("score:")]
    assert np.allclose(p1[scores].to_numpy(), p2[scores].to_numpy(), atol=1e-4)
    logs = [pd.read_csv(run / "logs" / "metrics.csv").dropna(subset=["val_loss"]) for run in (one, two)]
    assert np.allclose(logs[0]["val_loss"], logs[1]["val_loss"], atol=1e-5)
    assert logs[0]["val_uar"].tolist() == logs[1]["val_uar"].tolist()
    for split in ("val", "test"):
        assert m2[split]["accuracy"] == pytest.approx(m1[split]["accuracy"])
    assert m2["weights"].split(" (")[0] == m1["weights"].split(" (")[0]  # the same best epoch and score
    # (c) one run directory, one set of outputs: the same files as the one-process run, nothing per rank
    assert _files(two) == _files(one) and {path.split("/")[0] for path in _files(two)} == RUN_FILES
    assert not list(root.glob("two?*"))
    # the feature cache was filled once, by rank 0 before rank 1 started; no partial entries left
    assert m2["feature_cache"]["encoded"] == 24
    assert not [p for p in (root / "cache2").rglob("*") if p.name.endswith(".partial")]


@pytest.mark.slow
def test_torchrun_trains_a_whole_model_on_length_buckets(dataset: dict) -> None:
    """torchrun starts both processes at once (rank 1 must neither lock nor write while rank 0 owns the run); the
    ECAPA-TDNN itself trains (BatchNorm statistics per process, so no equality with one process is expected);
    the bucket sampler's batches are shared out, every clip once, every metric over every clip."""
    run = dataset["root"] / "buckets"
    done = _train([*small_train_args(dataset, run, "--accelerator", "cpu", "--bucket_sampler", "--num_buckets", "2",
                                     "--patience", "3", "--cache_dir", str(dataset["root"] / "cache3")),
                   "-bs", "2", "--devices", "2", "--strategy", "ddp"],
                  launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
    assert done.stderr.count("run directory:") == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["train_clips_per_epoch"] == [16]  # 8 batches of 2: 4 steps each
    assert metrics["val"]["n"] == metrics["test"]["n"] == 4
    log = pd.read_csv(run / "logs" / "metrics.csv")
    assert log["step"].max() + 1 == 4  # the steps of one process: 8 batches dealt to 2
    assert log["train_clips"].dropna().tolist() == [16]
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert sorted(predictions["uid"]) == sorted(dataset["table"].query("subject in ['eve', 'fay']").index)
    assert {path.split("/")[0] for path in _files(run)} == RUN_FILES and _files(run / "logs") == ["metrics.csv"]


def test_training_ends_its_process_group_when_the_fit_ends(dataset: dict) -> None:
    """Each process ends its group once the fit (the run's last collective calls) is over, rank 0 before it scores
    alone: not in the interpreter's exit, where a group thread still running aborts the process (seen as rank 1
    ending with SIGABRT, "terminate called without an active exception", and torchrun then stopping rank 0)."""
    during: list[bool] = []

    class Watch(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            during.append(torch.distributed.is_initialized())

    args = small_train_args(dataset, dataset["root"] / "ended", "--accelerator", "cpu", "--devices", "1",
                            "--strategy", "ddp")
    train(config_from_args(build_parser().parse_args(args)), callbacks=[Watch()])
    assert during == [True]  # Lightning's DDP started a group for the fit
    assert not torch.distributed.is_initialized()


def test_a_fit_keeps_the_sigterm_handler_it_started_with(dataset: dict) -> None:
    """Lightning's SIGTERM handler broadcasts from rank 0 inside the handler, wherever the signal finds the process
    (a DDP run then hangs in mismatched collectives); the fit keeps the handler the process had (the command's)."""
    def handler(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    seen: list[object] = []
    broadcasts: list[object] = []

    class Watch(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            seen.append(signal.getsignal(signal.SIGTERM))

        def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
            # what the loop runs before each step when world_size > 1 (1 here): no collective for a flag never set
            with mock.patch.object(torch.distributed, "broadcast", lambda *a, **k: broadcasts.append(a)):
                trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor()

    before = signal.signal(signal.SIGTERM, handler)
    try:
        args = small_train_args(dataset, dataset["root"] / "sigterm", "--accelerator", "cpu", "--devices", "1",
                                "--strategy", "ddp")
        train(config_from_args(build_parser().parse_args(args)), callbacks=[Watch()])
        assert seen == [handler]
        assert broadcasts == []
        assert signal.getsignal(signal.SIGTERM) is handler  # and Lightning puts back what it found after the fit
    finally:
        signal.signal(signal.SIGTERM, before)


# ---------------------------------------------------------------- several machines

LAUNCHER_VARIABLES = (*NODE_VARIABLES, "GROUP_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID",
                      "SLURM_NTASKS", "CLUSTER_SPEC")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _machine(monkeypatch: pytest.MonkeyPatch, node: int, port: int) -> dict[str, str]:
    """The variables of machine ``node`` of a run started by Lightning's launcher on each (here, on one machine)."""
    for key in LAUNCHER_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_several_nodes_no_launcher_started_are_refused_before_anything_is_written(
        dataset: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """On one machine, --num_nodes 2 waited forever for a second machine that nothing starts."""
    from audiotune.cli import main

    for key in LAUNCHER_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    root, split = dataset["root"] / "nodes", dataset["split"]
    run = root / "run"
    run.mkdir(parents=True)
    config = RunConfig()
    config.runtime.num_nodes = 2  # a run trained on 2 machines: scored on this one unless told (test_shards)
    save_config(config, run / CONFIG_FILE)
    table = ["-i", str(dataset["prefix"]), "-d", str(split / "train.csv")]
    commands = {
        "train": [*small_train_args(dataset, root / "train"), "--num_nodes", "2"],
        "pretrain": ["pretrain", *table, "-o", str(root / "pretrain"), "--num_nodes", "2"],
        "cv": ["cv", *table, "-l", str(dataset["labels"]), "--group", "subject", "--folds", "2", "-o",
               str(root / "cv"), "--num_nodes", "2"],
        "evaluate": ["evaluate", "--run", str(run), "-d", str(split / "test.csv"), "--num_nodes", "2"],
        "extract": ["extract", "--run", str(run), "-d", str(split / "test.csv"), "--out", str(root / "e.parquet"),
                    "--num_nodes", "2"],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        said = capsys.readouterr().err.strip().splitlines()[-1]
        assert said.startswith(f"audiotune {name}: error: --num_nodes 2: nothing started this process as one of 2 "
                               "machines, so it would wait forever for the others; run the same command on each "
                               "machine with MASTER_ADDR, MASTER_PORT"), said
    assert [path.name for path in root.iterdir()] == ["run"] and [path.name for path in run.iterdir()] == [CONFIG_FILE]


def test_machines_meet_then_their_process_group_takes_over_the_meeting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Machine 0's store of the meeting is the one torch's process group sets up on (a store of several tenants)."""
    port = _free_port()
    env = {**os.environ, **_machine(monkeypatch, 1, port), "OMP_NUM_THREADS": "1"}
    script = ("import torch; from audiotune.engine.distributed import meet_nodes; meet_nodes(2); "
              "torch.distributed.init_process_group('gloo', rank=1, world_size=2); t = torch.ones(1); "
              "torch.distributed.all_reduce(t); print(int(t.item())); torch.distributed.destroy_process_group()")
    other = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        monkeypatch.setenv("NODE_RANK", "0")
        meet_nodes(2, timeout_s=120)
        torch.distributed.init_process_group("gloo", rank=0, world_size=2)
        summed = torch.ones(1)
        torch.distributed.all_reduce(summed)
        assert summed.item() == 2
        assert other.communicate(timeout=120)[0].strip() == "2"
    finally:
        end_process_group()
        other.kill()


def test_a_machine_that_never_comes_is_named_and_sigterm_stops_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's own wait for the machines, in C++, let neither SIGTERM nor Ctrl-C stop it for 30 minutes."""
    _machine(monkeypatch, 1, _free_port())  # machine 0 never listens
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"^--num_nodes 2: nothing listened at MASTER_ADDR 127.0.0.1 MASTER_PORT "):
        meet_nodes(2, timeout_s=1)
    try:
        _machine(monkeypatch, 0, _free_port())
        with pytest.raises(TimeoutError, match=r"^--num_nodes 3: no machine with NODE_RANK 1, 2 came to MASTER_ADDR "
                                               r"127.0.0.1 MASTER_PORT \d+ within 1 s; start the same command on each"):
            meet_nodes(3, timeout_s=1)
        with sigterm_raises(), pytest.raises(Terminated):
            threading.Timer(1, os.kill, (os.getpid(), signal.SIGTERM)).start()
            meet_nodes(2)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            _machine(monkeypatch, 0, taken.getsockname()[1])
            with pytest.raises(ValueError, match=r"^MASTER_PORT \d+: machine 0 cannot listen there \(.*\); give every "
                                                 "machine a free port as MASTER_PORT$"):
                meet_nodes(2, timeout_s=1)
    finally:
        end_process_group()  # lets the meeting's store go
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_sigterm_stops_a_run_waiting_for_a_machine_that_never_comes(dataset: dict) -> None:
    """The first machine of a run started by Lightning's launcher on each, the second never started: it waits, and
    SIGTERM (a scheduler, a launcher) stops it as it stops any command, with SIGTERM's status."""
    run, said = dataset["root"] / "alone", dataset["root"] / "alone.stderr"
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), NODE_RANK="0")
    command = [sys.executable, "-m", "audiotune", *small_train_args(dataset, run, "--accelerator", "cpu"),
               "--num_nodes", "2", "--devices", "1"]
    with open(said, "w") as stderr:
        process = subprocess.Popen(command, env=env, stderr=stderr)
    try:
        end = time.monotonic() + 120
        while not (run / CONFIG_FILE).is_file() and process.poll() is None and time.monotonic() < end:
            time.sleep(0.2)  # written just before training, where the machines meet
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
    finally:
        process.kill()
    assert status == 143, said.read_text()[-2000:]
    assert said.read_text().strip().splitlines()[-1].startswith("audiotune train: interrupted by SIGTERM")
