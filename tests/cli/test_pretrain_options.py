"""``audiotune pretrain`` takes the options pretraining reads (PRETRAIN_OPTIONS) and refuses every other one, on
the command line and in a ``--config`` file, before it writes anything: an option of labels, heads or a labelled
metric would be recorded in the run and do nothing."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from audiotune.cli import build_parser, main
from audiotune.cli.flags import declared_options
from audiotune.cli.pretrain import PRETRAIN_OPTIONS

TAKEN = declared_options(PRETRAIN_OPTIONS)
REFUSED = [key for key in declared_options() if key not in TAKEN]


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def flag(key: str) -> str:
    return f"--{key.partition('.')[2]}"


def test_pretrain_refuses_the_options_of_labels_heads_and_labelled_metrics() -> None:
    assert {"data.label_txt", "classifier.clf_bottleneck", "classifier.layer", "train.loss",
            "train.class_weights", "train.balance", "train.patience", "train.monitor", "train.ema",
            "runtime.cache", "runtime.report"} <= set(REFUSED)
    assert {"augment.tshift", "data.mixup", "data.val_size", "train.val_share", "train.max_seconds", "runtime.logger",
            "model.objective"} <= set(TAKEN)


@pytest.mark.parametrize("key", REFUSED)
def test_an_option_pretrain_does_not_read_is_refused(key: str, parser: argparse.ArgumentParser,
                                                     capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["pretrain", flag(key), "1"])
    assert stopped.value.code == 2
    assert f"audiotune pretrain: error: {flag(key)}: not an option of pretrain" in capsys.readouterr().err


def test_a_config_files_value_of_such_an_option_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"train": {"patience": 4, "epochs": 2}, "classifier": {"layer": 3}}))
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(config), "-d", str(tmp_path), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"--config {config}: --layer 3, --patience 4: not an option of pretrain" in error
    assert not out.exists()


def test_pretraining_no_epoch_is_an_error_before_anything_is_written(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "-d", str(tmp_path), "-o", str(out), "-e", "0"]) == 2
    assert "--epochs 0: pretraining needs at least one epoch" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("given", [["--val_size", "5"], ["--val_size", "50"]])
def test_a_number_of_validation_subjects_is_an_error_in_pretraining(given: list[str], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "-d", str(tmp_path), "-o", str(out), *given]) == 2
    assert f"--val_size {given[1]}: pretraining validates on the val part, else on --val_share" in \
        capsys.readouterr().err
    assert not out.exists()
