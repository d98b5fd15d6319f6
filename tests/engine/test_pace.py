"""Each training epoch's seconds and the device's peak memory, logged and summarised in metrics.json."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import make_uid_dataset, small_train_args

from audiotune.cli import build_parser, config_from_args
from audiotune.engine.pace import TRAIN_SECONDS, EpochPace, pace_summary
from audiotune.engine.train import train
from audiotune.outputs import DEVICE_PEAK_MIB
from audiotune.report.html import cell
from audiotune.report.run_page import RunReport, render_run


def test_the_summary_takes_the_median_rate_after_the_first_epoch() -> None:
    log = pd.DataFrame({"epoch": [0, 0, 1, 1, 2, 2], "train_loss_step": [1, None, 1, None, 1, None],
                        "train_clips": [None, 16, None, 16, None, 16],
                        TRAIN_SECONDS: [None, 4.0, None, 0.5, None, 0.25],
                        DEVICE_PEAK_MIB: [None, 900.0, None, 1200.0, None, 1100.0]})
    summary = pace_summary(log, "train_clips")
    assert summary == {"train_seconds_per_epoch": [4.0, 0.5, 0.25], "train_clips_per_s": 48.0,  # of 32 and 64
                       DEVICE_PEAK_MIB: 1200.0}
    assert pace_summary(log.iloc[:2], "train_clips")["train_clips_per_s"] == 4.0  # one epoch: its own
    assert DEVICE_PEAK_MIB not in pace_summary(log.drop(columns=DEVICE_PEAK_MIB), "train_clips")  # not a CUDA run
    assert "train_clips_per_s" not in pace_summary(log)  # pretraining logs no clips
    assert pace_summary(log.drop(columns=TRAIN_SECONDS), "train_clips") == {}  # a run from before


class Slow(pl.Callback):
    """Training's first batch of each epoch takes ``training`` s longer, each validation ``validation`` s."""

    def __init__(self, training: float, validation: float) -> None:
        self.training, self.validation = training, validation

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        if batch_idx == 0:
            time.sleep(self.training)

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            time.sleep(self.validation)


def test_an_epoch_s_seconds_count_its_training_steps_and_not_its_validation(tmp_path: Path) -> None:
    dataset = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    args = small_train_args(dataset, run, "--accelerator", "cpu", "-e", "3")
    train(config_from_args(build_parser().parse_args(args)), callbacks=[Slow(training=0.3, validation=1.5)])
    log = pd.read_csv(run / "logs" / "metrics.csv")
    seconds = log[TRAIN_SECONDS].dropna().tolist()
    assert len(seconds) == 3 and all(0.3 <= s < 1.5 for s in seconds)
    assert DEVICE_PEAK_MIB not in log  # the CPU: no device memory to report
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_seconds_per_epoch"] == [round(s, 3) for s in seconds]
    clips = metrics["train_clips_per_epoch"]
    later = [clips[1] / seconds[1], clips[2] / seconds[2]]  # the epochs after the first
    assert metrics["train_clips_per_s"] == pytest.approx(sum(later) / 2, abs=0.01)
    page = render_run(RunReport("run", str(run), "", metrics, []))
    assert f"<td class=text>train_clips_per_s</td><td class=text>{cell(metrics['train_clips_per_s'])}</td>" in page


def test_on_a_cuda_gpu_an_epoch_waits_for_its_steps_once_and_logs_the_peak_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    device, calls, logged = torch.device("cuda", 0), [], {}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append(("reset", d)))  # not called
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d: calls.append(("wait", d)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: 3 * 2**20)
    module = SimpleNamespace(device=device, log=lambda name, value, **how: logged.update({name: (value, how)}))
    trainer = SimpleNamespace(num_training_batches=2)
    pace = EpochPace()
    pace.on_train_epoch_start(trainer, module)
    for batch in range(2):
        pace.on_train_batch_end(trainer, module, None, None, batch)
    pace.on_train_epoch_end(trainer, module)
    assert calls == [("wait", device)]  # the wait after the last step only; the process's peak left as it is
    assert logged[DEVICE_PEAK_MIB] == (3.0, {"reduce_fx": "max", "sync_dist": True})
    assert logged[TRAIN_SECONDS][1] == {"reduce_fx": "max", "sync_dist": True}  # the slowest process's
