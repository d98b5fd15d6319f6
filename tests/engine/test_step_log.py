"""Per-step training values read from the device a few steps at a time, logged at their own steps and checked."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import make_uid_dataset, small_train_args

from audiotune.cli import main
from audiotune.engine import step_log
from audiotune.engine.step_log import StepLog


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of steps each read of the step values took in (reads of nothing left out)."""
    sizes: list[int] = []
    read = StepLog.read

    def counted(self: StepLog, trainer, pl_module) -> None:  # noqa: ANN001
        if self.pending:
            sizes.append(len(self.pending))
        read(self, trainer, pl_module)

    monkeypatch.setattr(StepLog, "read", counted)
    monkeypatch.setattr(step_log, "READ_EVERY", 3)
    return sizes


def test_step_values_are_read_a_few_steps_at_a_time_and_logged_at_their_steps(tmp_path: Path,
                                                                               reads: list[int]) -> None:
    dataset = make_uid_dataset(tmp_path / "data")  # 16 training clips: 4 steps of 4 per epoch
    assert main(small_train_args(dataset, tmp_path / "run", "-e", "2")) == 0
    assert reads == [3, 1, 3, 1]  # every 3 steps, and the rest before each validation
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    steps = log.dropna(subset=["train_loss_step"])
    assert steps["step"].tolist() == list(range(8)) and steps["epoch"].tolist() == [0] * 4 + [1] * 4
    epochs = log.dropna(subset=["train_loss_epoch"])
    # each epoch's mean loss is the mean of its steps' (equal batches)
    assert epochs["train_loss_epoch"].tolist() == pytest.approx(
        steps.groupby("epoch")["train_loss_step"].mean().tolist(), rel=1e-5)
    assert epochs["train_clips"].tolist() == [16, 16] and epochs["lr"].notna().all()


def test_a_loss_that_is_not_finite_stops_the_run_naming_its_step(tmp_path: Path, reads: list[int],
                                                                 capsys: pytest.CaptureFixture) -> None:
    dataset = make_uid_dataset(tmp_path / "data")
    assert main(small_train_args(dataset, tmp_path / "run", "-lr", "1e12", "--scheduler", "none")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "train loss is nan at step" in error and "check --dataset_std / --learning_rate" in error
    assert reads and reads[0] <= 3  # found at the first read after it, before validation or a checkpoint
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
