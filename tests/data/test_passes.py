"""The streaming loader: every pass gives a fresh loader's batches, and the workers run on into the next pass."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import SMALL_ECAPA, make_uid_dataset
from pytorch_lightning.utilities.combined_loader import _shutdown_workers_and_reset_iterator
from torch.utils.data import Dataset

from audiotune.cli import build_parser
from audiotune.cli.config_args import config_from_args
from audiotune.data.passes import Passes, StreamingLoader
from audiotune.data.samplers import EpochShuffle, LengthSortedBatches, TrainingBatches
from audiotune.engine.train import train


class Served(Dataset):
    """Row ``i`` is ``i``; every row served is appended to ``log`` (one line per row, from any process)."""

    def __init__(self, rows: int, log: Path) -> None:
        self.rows, self.log = rows, log

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int) -> int:
        with open(self.log, "a") as handle:
            handle.write(f"{index}\n")
        return index


def served(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def training_loader(tmp_path: Path, passes: int = 4, workers: int = 2) -> StreamingLoader:
    batches = TrainingBatches(EpochShuffle(10, seed=3), batch_size=3)  # 3 batches of 3 per epoch
    return StreamingLoader(Served(10, tmp_path / "served.txt"), Passes(batches, passes, ordered=True),
                           num_workers=workers, prefetch_factor=2, collate_fn=list)


def fresh(epoch: int) -> list[list[int]]:
    batches = TrainingBatches(EpochShuffle(10, seed=3), batch_size=3)
    batches.set_epoch(epoch)
    return list(batches)


def epoch(loader: StreamingLoader, number: int) -> list[list[int]]:
    loader.batch_sampler.sampler.set_epoch(number)  # as Lightning does before each epoch
    assert len(loader) == 3
    return list(loader)


def test_every_pass_gives_a_fresh_loaders_batches_from_one_stream(tmp_path: Path) -> None:
    loader = training_loader(tmp_path)
    first = epoch(loader, 0)
    stream = loader._iterator
    later = [epoch(loader, number) for number in (1, 2, 3)]
    assert [first, *later] == [fresh(number) for number in range(4)]
    assert fresh(0) != fresh(1)
    assert loader._iterator is None  # the last of the 4 passes ended the stream, and its workers
    assert stream is not None
    assert epoch(loader, 4) == fresh(4)  # asked for more: a new stream


def test_the_workers_prepare_the_next_pass_before_it_is_asked_for(tmp_path: Path) -> None:
    loader, log = training_loader(tmp_path), tmp_path / "served.txt"
    epoch(loader, 0)
    deadline = time.monotonic() + 20
    while served(log) <= 9 and time.monotonic() < deadline:  # epoch 0 serves 9 rows
        time.sleep(0.05)
    assert served(log) > 9  # rows of epoch 1 served before epoch 1 began
    stream = loader._iterator
    assert epoch(loader, 1) == fresh(1) and loader._iterator is stream


def test_a_plain_loader_with_persistent_workers_waits_for_each_pass(tmp_path: Path) -> None:
    """The baseline the stream improves on: nothing of epoch 1 is read before it begins."""
    log = tmp_path / "served.txt"
    batches = TrainingBatches(EpochShuffle(10, seed=3), batch_size=3)
    loader = torch.utils.data.DataLoader(Served(10, log), batch_sampler=batches, num_workers=2, prefetch_factor=2,
                                         persistent_workers=True, collate_fn=list)
    list(loader)
    time.sleep(1.0)
    assert served(log) == 9


def test_a_pass_broken_off_or_another_epoch_starts_the_stream_over(tmp_path: Path) -> None:
    loader = training_loader(tmp_path, passes=6)
    loader.batch_sampler.sampler.set_epoch(0)
    for batch in loader:  # e.g. a run stopped by --training_steps mid-epoch
        break
    stream = loader._iterator
    assert epoch(loader, 0) == fresh(0)  # the pass whole, from its start
    assert loader._iterator is not stream
    assert epoch(loader, 4) == fresh(4)  # a resumed run: the epoch it resumes at
    assert epoch(loader, 5) == fresh(5)


def test_an_iterator_made_before_its_epoch_is_named_gives_that_epoch(tmp_path: Path) -> None:
    """A resumed run: Lightning makes the training iterator, then names the epoch the run resumes at."""
    loader = training_loader(tmp_path, passes=6)
    made = iter(loader)
    loader.batch_sampler.sampler.set_epoch(4)
    assert list(made) == fresh(4)
    assert epoch(loader, 5) == fresh(5)


def test_lightning_teardown_stops_the_stream(tmp_path: Path) -> None:
    loader = training_loader(tmp_path)
    epoch(loader, 0)
    stream = loader._iterator
    workers = [worker.pid for worker in stream._workers]
    _shutdown_workers_and_reset_iterator(loader)
    assert loader._iterator is None
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)
    assert epoch(loader, 1) == fresh(1)


def alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return waited == 0


def test_scoring_passes_are_alike_whatever_epoch_is_named(tmp_path: Path) -> None:
    """Validation: Lightning names the fit's epoch, the same twice around the sanity check; any pass serves."""
    batches = LengthSortedBatches([5, 1, 4, 2, 3, 6, 7], batch_size=2, tolerance=math.inf)
    loader = StreamingLoader(Served(7, tmp_path / "served.txt"), Passes(batches, 3, ordered=False), num_workers=2,
                             collate_fn=list)
    expected = [[1, 3], [4, 2], [0, 5], [6]]
    for number in (0, 0, 1):
        loader.batch_sampler.sampler.set_epoch(number)
        assert list(loader) == expected
        if number == 0:
            stream = loader._iterator
    assert loader._iterator is None and stream is not None


def test_a_streaming_loader_needs_workers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="worker processes"):
        training_loader(tmp_path, workers=0)


class Uids(pl.Callback):
    """The uids of every training and validation batch, by epoch, the training loader's class and its worker
    iterator at each epoch's first batch."""

    def __init__(self) -> None:
        self.train: dict[int, list[str]] = {}
        self.val: dict[int, list[str]] = {}
        self.loader, self.streams = "", set()

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: dict, index: int) -> None:
        self.train.setdefault(trainer.current_epoch, []).extend(batch["uid"])
        self.loader = type(trainer.train_dataloader).__name__
        if index == 0:
            self.streams.add(id(getattr(trainer.train_dataloader, "_iterator", None)))

    def on_validation_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: dict, index: int,
                                  dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self.val.setdefault(trainer.current_epoch, []).extend(batch["uid"])


@pytest.mark.slow
def test_a_run_reads_each_epochs_clips_in_order_with_streaming_workers(tmp_path: Path) -> None:
    """Lightning drives the stream: the same clips per epoch, in the same order, as a run without workers."""
    dataset, seen = make_uid_dataset(tmp_path / "data"), {}
    for workers in (0, 2):
        args = build_parser("ecapa_tdnn").parse_args(
            ["train", "-i", str(dataset["prefix"]), "-d", str(dataset["split"]), "-l", str(dataset["labels"]),
             "-o", str(tmp_path / f"run{workers}"), *SMALL_ECAPA, "-e", "3", "-bs", "4", "-nw", str(workers)])
        seen[workers] = Uids()
        train(config_from_args(args), callbacks=[seen[workers]])
    assert (seen[0].loader, seen[2].loader) == ("TrainingLoader", "TrainingStream")
    assert seen[2].train == seen[0].train and sorted(seen[2].train) == [0, 1, 2]
    assert seen[2].train[0] != seen[2].train[1]  # each epoch its own order
    assert len(seen[2].streams) == 1  # one stream of batches served all three epochs
    assert seen[2].val == seen[0].val and sorted(seen[2].val) == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Experiment logs directory:UserWarning", "ignore:Checkpoint directory:UserWarning")
def test_a_run_resumed_with_streaming_workers_reads_the_epochs_one_straight_through_reads(tmp_path: Path) -> None:
    dataset = make_uid_dataset(tmp_path / "data")

    def run(out: str, epochs: int, *extra: str) -> Uids:
        args = build_parser("ecapa_tdnn").parse_args(
            ["train", "-i", str(dataset["prefix"]), "-d", str(dataset["split"]), "-l", str(dataset["labels"]),
             "-o", str(tmp_path / out), *SMALL_ECAPA, "-e", str(epochs), "-bs", "4", "-nw", "2", "--report", "False",
             *extra])
        seen = Uids()
        train(config_from_args(args), callbacks=[seen])
        return seen

    straight = run("straight", 3)
    run("resumed", 1)
    resumed = run("resumed", 3, "--resume")
    assert sorted(resumed.train) == [1, 2] and resumed.loader == "TrainingStream"
    assert {epoch: resumed.train[epoch] for epoch in (1, 2)} == {epoch: straight.train[epoch] for epoch in (1, 2)}
