"""``audiotune pretrain`` takes the options pretraining reads (PRETRAIN_OPTIONS) and refuses every other one, on
the command line and in a ``--config`` file, before it writes anything: an option of labels, heads or a labelled
metric would be recorded in the run and do nothing."""
from __future__ import annotations

import argparse
import json
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


def test_a_pretraining_task_and_another_objective_are_refused_naming_both(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "-d", str(tmp_path), "-o", str(out), "--task", "pretrain_mpg", "--objective",
                 "pretrain_mpc"]) == 2
    assert "--task pretrain_mpg and --objective pretrain_mpc: two pretraining objectives" in capsys.readouterr().err
    assert not out.exists()


# a tiny SSAST on 32 mel bins x 64 frames (2 x 4 patches of 16 x 16), one epoch
TINY_SSAST = ["--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape", "16", "--tshape",
              "16", "--fstride", "16", "--tstride", "16", "--mask_patch", "3", "-e", "1", "-bs", "8"]


@pytest.mark.slow
@pytest.mark.parametrize(("given", "objective"), [
    (["--task", "pretrain_mpg"], "pretrain_mpg"),  # the seed's spelling
    (["--objective", "pretrain_mpc"], "pretrain_mpc"),
    ([], "pretrain_joint"),
])
def test_the_objective_given_either_way_is_trained_recorded_and_read_back(uid_dataset: dict, tmp_path: Path,
                                                                         given: list[str], objective: str) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-o", str(out),
                 *TINY_SSAST, *given]) == 0
    assert json.loads((out / "metrics.json").read_text())["objective"] == objective
    recorded = yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert recorded["objective"] == objective and recorded["task"] in (objective, "ft_cls")
    # the recorded config reads back as the same objective: pretraining again from it is not refused
    again = tmp_path / "again"
    assert main(["pretrain", "--config", str(out / "config.yaml"), "-i", str(uid_dataset["prefix"]), "-d",
                 str(uid_dataset["split"]), "-o", str(again), "-e", "1"]) == 0
    assert json.loads((again / "metrics.json").read_text())["objective"] == objective


def test_the_help_says_what_trainings_validation_options_mean_in_pretrain(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help-all"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(0: none); here only 0 is taken (no validation): pretraining validates on the val part, else on " \
           "--val_share of the rows (default 50" in text
    assert text.count("; here by the validation loss (pretrain has no --monitor)") == 2  # --save_top_k, --keep
