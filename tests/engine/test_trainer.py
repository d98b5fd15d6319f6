"""The Trainer factory: last.ckpt every epoch, the --save_top_k best validation epochs, gradient accumulation
as the optimiser sees it, and the loggers (the CSV always, TensorBoard with --logger tensorboard)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import read_report, small_train_args
from torch.utils.data import DataLoader, TensorDataset

from audiotune.cli import build_parser, config_from_args, main
from audiotune.config import RunConfig, RuntimeConfig, TrainConfig, check_config
from audiotune.engine.module import optimizers
from audiotune.engine.trainer import build_trainer


def best_files(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("best"))


@pytest.mark.slow
def test_save_top_k_keeps_the_k_best_validation_epochs(uid_dataset: dict, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(small_train_args(uid_dataset, one, "-e", "3")) == 0
    assert best_files(one) == ["best.ckpt"]  # the default: one best epoch
    assert [p.name for p in (one / "logs").iterdir()] == ["metrics.csv"]  # the default logger: the CSV alone
    assert main(small_train_args(uid_dataset, two, "-e", "3", "--save_top_k", "2")) == 0
    kept = best_files(two)
    assert len(kept) == 2 and all(name.startswith("best-epoch=") for name in kept)
    metrics = json.loads((two / "metrics.json").read_text())
    losses = metrics["selection"]["kept"]
    assert sorted(losses) == kept and metrics["selection"]["value"] == pytest.approx(min(losses.values()))
    epochs = {name: torch.load(two / "checkpoints" / name, weights_only=True)["epoch"] for name in kept}
    assert metrics["selection"]["epoch"] - 1 in epochs.values()  # the saved model is the best of the two
    assert len(set(epochs.values())) == 2


def test_save_top_k_without_validation_is_an_error(uid_dataset: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    split = uid_dataset["split"]
    (split / "val.csv").unlink()
    out = tmp_path / "run"
    assert main(small_train_args(uid_dataset, out, "--val_size", "0", "--save_top_k", "2")) == 2
    assert "--save_top_k need(s) validation" in capsys.readouterr().err and not out.exists()


class CountingModule(pl.LightningModule):
    """A linear regression that counts its optimiser steps."""

    def __init__(self, config: TrainConfig, batches: int) -> None:
        super().__init__()
        self.layer, self.config, self.batches, self.steps = torch.nn.Linear(3, 1), config, batches, 0

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.layer(inputs), targets)

    def optimizer_step(self, *args, **kwargs) -> None:
        self.steps += 1
        super().optimizer_step(*args, **kwargs)

    def configure_optimizers(self):
        return optimizers(self.parameters(), self.config, self.batches)


def _fit(tmp_path: Path, accumulate: int) -> tuple[CountingModule, pl.Trainer]:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 3), torch.randn(32, 1))
    loader = DataLoader(data, batch_size=4)  # 8 batches per epoch
    config = TrainConfig(epochs=2, accumulate_grad_batches=accumulate, scheduler="cosine")
    module = CountingModule(config, len(loader))
    trainer, _ = build_trainer(config, RuntimeConfig(accelerator="cpu", devices="1"), tmp_path / f"run{accumulate}")
    trainer.fit(module, loader)
    return module, trainer


def test_accumulated_batches_step_the_optimiser_half_as_often(tmp_path: Path) -> None:
    plain, plain_trainer = _fit(tmp_path, 1)
    accumulated, trainer = _fit(tmp_path, 2)
    assert (plain.steps, plain_trainer.global_step) == (16, 16)
    assert (accumulated.steps, trainer.global_step) == (8, 8)
    # the schedule counts optimiser steps: the cosine ends at 0 after the last of them, not half-way
    assert trainer.optimizers[0].param_groups[0]["lr"] == plain_trainer.optimizers[0].param_groups[0]["lr"] == 0.0


def test_accumulate_grad_batches_is_a_train_flag() -> None:
    args = build_parser().parse_args(["train", "-d", "split", "-l", "labels.txt", "-o", "run",
                                      "--accumulate_grad_batches", "4", "-bs", "64"])
    config = config_from_args(args)
    assert (config.train.accumulate_grad_batches, config.train.batch_size) == (4, 64)


def test_a_run_in_steps_shows_no_last_epoch(tmp_path: Path) -> None:
    from audiotune.config import RuntimeConfig, TrainConfig
    from audiotune.engine.trainer import PassProgress, build_trainer

    trainer, _ = build_trainer(TrainConfig(training_steps=40), RuntimeConfig(accelerator="cpu"), tmp_path)
    bar = trainer.progress_bar_callback
    assert isinstance(bar, PassProgress) and trainer.max_epochs == -1
    assert bar._epoch(trainer) == "epoch 1"  # not Lightning's "Epoch 0/-2"
    by_epochs, _ = build_trainer(TrainConfig(epochs=10), RuntimeConfig(accelerator="cpu"), tmp_path / "e")
    assert by_epochs.progress_bar_callback._epoch(by_epochs) == "epoch 1/10"


def test_a_fit_without_a_run_directory_runs_as_long_and_clips_as_a_run_does() -> None:
    runtime = RuntimeConfig(accelerator="cpu")
    quiet, best = build_trainer(TrainConfig(epochs=5, training_steps=7, grad_clip=0.5), runtime, None, devices=1)
    assert best is None and (quiet.max_epochs, quiet.max_steps, quiet.gradient_clip_val) == (-1, 7, 0.5)
    plain, _ = build_trainer(TrainConfig(epochs=3), runtime, None, devices=1)
    assert (plain.max_epochs, plain.max_steps, plain.gradient_clip_val) == (3, -1, None)
    assert plain.logger is None and plain.checkpoint_callback is None



def test_logger_tensorboard_without_the_package_fails_before_anything_is_written(
        uid_dataset: dict, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # tensorboard (or tensorboardX) not installed
                        lambda name, *rest: None if name in ("tensorboard", "tensorboardX") else real(name, *rest))
    run = tmp_path / "run"
    assert main(small_train_args(uid_dataset, run, "--logger", "tensorboard")) == 2
    err = capsys.readouterr().err
    assert "--logger tensorboard: the tensorboard package is not installed (pip install tensorboard)" in err
    assert "Traceback" not in err and not run.exists()
    config = RunConfig()
    config.runtime.logger = "wandb"  # from a config file, which argparse's choices do not see
    with pytest.raises(ValueError, match="--logger wandb: choose one of csv, tensorboard"):
        check_config(config)


@pytest.mark.slow
def test_logger_tensorboard_writes_event_files_beside_the_csv_the_report_reads(uid_dataset: dict,
                                                                                 tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="--logger tensorboard needs `pip install tensorboard`")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(small_train_args(uid_dataset, run, "-e", "2", "--logger", "tensorboard")) == 0
    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    logged = pd.read_csv(run / "logs" / "metrics.csv")
    assert [e.value for e in events.Scalars("val_loss")] == pytest.approx(logged["val_loss"].dropna().tolist())
    assert len(events.Scalars("val_loss")) == 2 and "train_loss_epoch" in events.Tags()["scalars"]
    curves = (run / "report.html").read_text().split('<section id="curves">')[1].split("</section>")[0]
    assert "<figcaption>loss</figcaption>" in curves and read_report(run / "report.html")["audio"] > 0


def test_a_resumed_run_stopped_again_keeps_every_epoch_it_logged(tmp_path: Path) -> None:
    """Lightning's CSV logger starts the log afresh when a run resumes: the epochs before are kept aside until the
    fit ends, so a second stop loses none of them, and the run that finishes logs every epoch once."""
    from audiotune.engine.trainer import earlier_log, merge_logs
    from audiotune.outputs import EARLIER_LOG_FILE, LOG_DIR, LOG_FILE

    logs = tmp_path / LOG_DIR
    logs.mkdir()

    def logged(*epochs: int) -> None:  # what the logger of one attempt writes
        pd.DataFrame({"epoch": list(epochs), "val_loss": [1.0 / (e + 1) for e in epochs]}).to_csv(
            logs / LOG_FILE, index=False)

    logged(0, 1, 2)  # the first attempt, stopped after epoch 2
    assert earlier_log(tmp_path, resuming=False) is None
    assert earlier_log(tmp_path, resuming=True)["epoch"].tolist() == [0, 1, 2]
    logged(3, 4)  # the second, stopped again: the log holds its epochs only
    earlier = earlier_log(tmp_path, resuming=True)
    assert earlier["epoch"].tolist() == [0, 1, 2, 3, 4]
    logged(4, 5)  # the third redoes epoch 4 (stopped inside it) and ends
    merge_logs(earlier, tmp_path)
    assert pd.read_csv(logs / LOG_FILE)["epoch"].tolist() == [0, 1, 2, 3, 4, 5]
    assert not (logs / EARLIER_LOG_FILE).exists()
