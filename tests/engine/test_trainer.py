"""The Trainer factory's checkpoints: last.ckpt every epoch, the --save_top_k best validation epochs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import small_train_args

from audiotune.cli import main


def best_files(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("best"))


def test_save_top_k_keeps_the_k_best_validation_epochs(uid_dataset: dict, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(small_train_args(uid_dataset, one, "-e", "3")) == 0
    assert best_files(one) == ["best.ckpt"]  # the default: one best epoch
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


def test_a_run_in_steps_shows_no_last_epoch(tmp_path: Path) -> None:
    from audiotune.config import RuntimeConfig, TrainConfig
    from audiotune.engine.trainer import StepsProgressBar, build_trainer

    trainer, _ = build_trainer(TrainConfig(training_steps=40), RuntimeConfig(accelerator="cpu"), tmp_path)
    bar = trainer.progress_bar_callback
    assert isinstance(bar, StepsProgressBar) and trainer.max_epochs == -1
    bar._trainer = trainer  # as the fit's set-up does
    assert bar._get_train_description(3) == "Epoch 3 (up to step 40)"
    by_epochs, _ = build_trainer(TrainConfig(epochs=10), RuntimeConfig(accelerator="cpu"), tmp_path / "e")
    assert not isinstance(by_epochs.progress_bar_callback, StepsProgressBar)
    by_epochs.progress_bar_callback._trainer = by_epochs
    assert by_epochs.progress_bar_callback._get_train_description(3).strip() == "Epoch 3/9"
