"""A resumed run trains as one straight through (resumed at an epoch's end or inside one), and with the learning
rate and weight decay its config.yaml records (--allow_changes), not the ones the restored optimiser state holds;
what that state is made of (optimiser, schedule) is kept."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import small_train_args

from audiotune.cli import main


def epoch_rates(run: Path) -> pd.Series:
    log = pd.read_csv(run / "logs" / "metrics.csv")
    return log.dropna(subset=["lr"]).groupby("epoch")["lr"].last()


def test_a_changed_rate_and_weight_decay_train_after_resume_and_the_optimiser_or_schedule_cannot_change(
        uid_dataset: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = tmp_path / "same"
    assert main([*small_train_args(uid_dataset, first, "-lr", "0.001"), "-e", "1", "--report", "False"]) == 0
    shutil.copytree(first, tmp_path / "changed")
    assert main([*small_train_args(uid_dataset, first, "-lr", "0.001"), "-e", "2", "--resume",
                 "--report", "False"]) == 0
    changed = tmp_path / "changed"
    assert main([*small_train_args(uid_dataset, changed, "-lr", "0.003", "--weight_decay", "0.05"), "-e", "2",
                 "--resume", "--allow_changes", "--report", "False"]) == 0
    same, new = epoch_rates(first), epoch_rates(changed)
    assert same[0] == pytest.approx(new[0])  # the first epoch, trained before
    assert new[1] == pytest.approx(3 * same[1], rel=1e-5)  # the schedule at its step, from the new base rate
    groups = torch.load(changed / "checkpoints" / "last.ckpt", map_location="cpu",
                        weights_only=True)["optimizer_states"][0]["param_groups"]
    assert {(group["weight_decay"], group["initial_lr"]) for group in groups} == {(0.05, 0.003)}
    capsys.readouterr()
    for flags, shown in ((["--optim", "adam"], "--optim 'adamw' -> 'adam'"),
                         (["--scheduler", "linear"], "--scheduler 'cosine' -> 'linear'")):
        assert main([*small_train_args(uid_dataset, first, "-lr", "0.001", *flags), "-e", "3", "--resume",
                     "--allow_changes", "--report", "False"]) == 2
        err = capsys.readouterr().err
        assert f"--resume with {shown}: the run's checkpoint holds the state of its optimiser and schedule" in err


def test_a_run_of_training_steps_stopped_at_an_epochs_end_resumes_as_one_straight_through(
        uid_dataset: dict, tmp_path: Path) -> None:
    """Lightning counts a --training_steps run resumed at an epoch's end one epoch ahead when it names the pass to
    the samplers: the run trained the next epoch's batches (one epoch's never), and logged an empty epoch."""
    from safetensors.torch import load_file

    def run(out: Path, steps: int, *extra: str) -> None:
        assert main([*small_train_args(uid_dataset, out), "--training_steps", str(steps), "--scheduler", "none",
                     "--keep", "last", "--report", "False", *extra]) == 0

    run(tmp_path / "straight", 12)
    run(tmp_path / "resumed", 8)  # 4 batches an epoch: two whole epochs
    run(tmp_path / "resumed", 12, "--resume")
    straight, resumed = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "resumed"))
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    clips = [json.loads((tmp_path / name / "metrics.json").read_text())["train_clips_per_epoch"]
             for name in ("straight", "resumed")]
    assert clips[0] == clips[1] == [16, 16, 16]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_run_of_training_steps_stopped_inside_an_epoch_resumes_with_the_batches_it_had_not_reached(
        uid_dataset: dict, tmp_path: Path, workers: str) -> None:
    """Four batches an epoch; 6 steps end after two batches of the second, then resumed to 10. Lightning gives a
    resumed epoch its loader from the start: the run trained that epoch's first two batches again and never its
    last two. The loader's place is kept in the checkpoint, and each step's dropout and label draws are seeded by
    its batch (with 2 workers: the loader streaming from one epoch into the next)."""
    from safetensors.torch import load_file

    def run(out: Path, steps: int, *extra: str) -> None:
        assert main([*small_train_args(uid_dataset, out), "--training_steps", str(steps), "--scheduler", "none",
                     "--keep", "last", "--report", "False", "-nw", workers, "--mixup", "0.5", *extra]) == 0

    run(tmp_path / "straight", 10)
    run(tmp_path / "resumed", 6)
    run(tmp_path / "resumed", 10, "--resume")
    straight, resumed = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "resumed"))
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    # the log: every step's loss once, at its step; the resumed epoch's clips counted whole
    steps = [pd.read_csv(tmp_path / name / "logs" / "metrics.csv").dropna(subset=["train_loss_step"])
             for name in ("straight", "resumed")]
    assert steps[0]["step"].tolist() == steps[1]["step"].tolist() == list(range(10))
    assert steps[0]["train_loss_step"].tolist() == steps[1]["train_loss_step"].tolist()
    clips = [json.loads((tmp_path / name / "metrics.json").read_text())["train_clips_per_epoch"]
             for name in ("straight", "resumed")]
    assert clips[0] == clips[1] == [16, 16, 8]
