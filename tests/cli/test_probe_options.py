"""``audiotune probe`` takes the options its path reads (PROBE_OPTIONS) and refuses every other one; a config
file holding others (a train run's config.yaml) still runs, those left at their defaults and named."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SMALL_ECAPA

from audiotune.cli import build_parser, main
from audiotune.cli.flags import declared_options
from audiotune.cli.probe import PROBE_OPTIONS
from audiotune.config import load_config

TAKEN = declared_options(PROBE_OPTIONS)
REFUSED = [key for key in declared_options() if key not in TAKEN]


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture(scope="module")
def probe_help() -> str:
    """``audiotune probe --help`` with every option shown."""
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        build_parser(full_help=True).parse_args(["probe", "--help"])
    text = out.getvalue()
    assert re.search(r"^ +(-\S+, )*--epochs[ ,\n]", text, re.M)  # a taken option has its line
    return text


def flag(key: str) -> str:
    return f"--{key.partition('.')[2]}"


def test_probe_takes_a_part_of_every_option() -> None:
    assert TAKEN and REFUSED and set(TAKEN) < set(declared_options())
    assert {"train.patience", "train.resume", "runtime.logger", "augment.tshift", "classifier.layer"} <= set(REFUSED)


@pytest.mark.parametrize("key", REFUSED)
def test_an_option_probe_does_not_read_is_refused(key: str, parser: argparse.ArgumentParser, probe_help: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["probe", flag(key), "1"])
    assert stopped.value.code == 2
    assert f"audiotune probe: error: {flag(key)}: not an option of probe" in capsys.readouterr().err
    assert not re.search(rf"^ +(-\S+, )*{flag(key)}[ ,\n]", probe_help, re.M)  # no line of its own


@pytest.mark.parametrize("key", TAKEN)
def test_an_option_probe_reads_is_taken(key: str, parser: argparse.ArgumentParser) -> None:
    probe = next(a for a in parser._actions if a.dest == "command").choices["probe"]
    choices = next(a for a in probe._actions if a.dest == key).choices
    value = list(choices)[0] if choices else "auto" if key in ("runtime.devices", "runtime.accelerator") else "1"
    assert key in vars(parser.parse_args(["probe", flag(key), value]))


def test_the_seed_spellings_of_probed_options_stay(capsys: pytest.CaptureFixture) -> None:
    args = vars(build_parser().parse_args(["probe", "--fbank", "False", "--mono", "sum", "-e", "3"]))
    assert args["fbank"] is False and args["mono"] == "sum" and args["train.epochs"] == 3


@pytest.mark.slow
def test_a_train_runs_config_probes_with_the_options_probe_does_not_take_at_their_defaults(
        trained_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = yaml.safe_load((trained_run["run"] / "config.yaml").read_text())
    assert config["model"]["freeze"] is False  # an ECAPA-TDNN trained from scratch
    config["train"].update(patience=3, save_top_k=2, resume=True, epochs=2)
    config["augment"]["tshift"], config["data"]["mixup"], config["runtime"]["strategy"] = 0.5, 0.2, "ddp"
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "probe"
    assert main(["probe", "--config", str(tmp_path / "train.yaml"), "-o", str(out), "--report", "False"]) == 0
    err = capsys.readouterr().err
    for ignored in ("--freeze False", "--patience 3", "--save_top_k 2", "--resume True", "--tshift 0.5",
                    "--mixup 0.2", "--strategy ddp"):
        assert ignored in err
    saved = load_config(out / "config.yaml")
    assert saved.model.freeze is True and saved.train.patience == 0 and saved.augment.tshift == 0
    assert saved.train.epochs == 2 and saved.data.seed == 1  # what probe takes comes from the file
    # the probe's own config.yaml runs probe again, and trains
    assert main(["probe", "--config", str(out / "config.yaml"), "-o", str(tmp_path / "again"), "--report",
                 "False"]) == 0
    assert "left at their defaults" not in capsys.readouterr().err
    assert main(["train", "--config", str(out / "config.yaml"), "-o", str(tmp_path / "train"), "--report",
                 "False"]) == 0


@pytest.mark.slow
def test_an_ecapa_tdnn_is_probed_frozen(uid_dataset: dict, tmp_path: Path) -> None:
    ds = uid_dataset
    assert main(["probe", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o",
                 str(tmp_path / "probe"), *SMALL_ECAPA, "-e", "1", "-bs", "4", "--report", "False"]) == 0
    assert load_config(tmp_path / "probe" / "config.yaml").model.freeze is True


def test_probe_into_a_run_says_how_to_go_on_without_resume(uid_dataset: dict, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    ds, out = uid_dataset, tmp_path / "probe"
    out.mkdir()
    (out / "config.yaml").write_text("{}\n")  # an earlier probe's
    assert main(["probe", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
                 *SMALL_ECAPA, "-e", "1", "--report", "False"]) == 2
    error = capsys.readouterr().err
    assert f"{out}: already holds a run; pass --overwrite to replace it (probe cannot continue a run)" in error
    assert "--resume" not in error


def test_a_checkpoint_probe_cannot_read_leaves_nothing_behind(uid_dataset: dict, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    """The encoder is built (its checkpoint read) before the run directory is written: a new one is not left, a
    given one keeps only the lock the command took."""
    import torch

    from audiotune.outputs import LOCK_FILE

    ds, weights, given = uid_dataset, tmp_path / "random.pt", tmp_path / "given"
    torch.save({"foo": torch.zeros(3)}, weights)
    given.mkdir()
    for out in (tmp_path / "new", given):
        assert main(["probe", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o",
                     str(out), *SMALL_ECAPA, "-c", str(weights), "-e", "1", "-bs", "4", "--report", "False"]) == 2
        assert str(weights) in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and [p.name for p in given.iterdir()] == [LOCK_FILE]


@pytest.mark.slow
def test_probe_without_a_training_step_says_its_heads_are_untrained(uid_dataset: dict, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    ds, out = uid_dataset, tmp_path / "probe"
    assert main(["probe", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
                 *SMALL_ECAPA, "-e", "0", "-bs", "4", "--report", "False"]) == 0
    assert "no training step (--epochs 0): these are the metrics of untrained heads" in capsys.readouterr().err
    assert json.loads((out / "probe.json").read_text())["trained"] is False


@pytest.mark.slow
def test_probe_table_has_val_columns_before_test_whether_validation_is_drawn_or_given(
        uid_dataset: dict, tmp_path: Path) -> None:
    ds = uid_dataset
    (tmp_path / "drawn").mkdir()
    for name in ("train", "test"):
        (tmp_path / "drawn" / f"{name}.csv").write_text((ds["split"] / f"{name}.csv").read_text())
    columns = []
    for split, extra in ((ds["split"], []), (tmp_path / "drawn", ["--val_size", "1"])):
        out = tmp_path / f"probe_{len(columns)}"
        assert main(["probe", "-i", str(ds["prefix"]), "-d", str(split), "-l", str(ds["labels"]), "-o", str(out),
                     *SMALL_ECAPA, "-e", "1", "-bs", "4", "--report", "False", *extra]) == 0
        columns.append(pd.read_csv(out / "probe.csv").columns.tolist())
    assert columns[0] == columns[1] and columns[0][1].startswith("val_") and columns[0][-1].startswith("test_")


def test_an_option_typed_with_its_switch_off_is_refused_as_train_refuses_it(tmp_path: Path) -> None:
    """-lr with --scheduler onecycle, --dataset_mean without --dataset_std: typed, refused before anything is
    written; --layer_weights without --weighted is probe's own (its weighted-sum head reads it), and a --config
    file's values are its recipe's or run's (read as they are)."""
    from audiotune.cli.config_args import config_from_args
    from audiotune.cli.stages import refuse_given_idle

    def checked(*argv: str) -> None:
        args = build_parser().parse_args(["probe", "-d", "x", "-o", str(tmp_path / "p"), *argv])
        refuse_given_idle(config_from_args(args, read_inputs=False, takes=PROBE_OPTIONS), args, PROBE_OPTIONS)

    with pytest.raises(ValueError, match=r"^--learning_rate 0\.1: acts only with --scheduler none, cosine or linear"):
        checked("-lr", "0.1", "--scheduler", "onecycle")
    with pytest.raises(ValueError, match=r"^--dataset_mean -5\.0: acts only with --dataset_std"):
        checked("--dataset_mean", "-5")
    checked("-lr", "0.1", "--scheduler", "cosine")
    checked("--layer_weights", "raw")
    made = tmp_path / "config.yaml"
    made.write_text(yaml.safe_dump({"train": {"scheduler": "onecycle", "learning_rate": 0.1}}))
    checked("--config", str(made))
    assert not (tmp_path / "p").exists()
