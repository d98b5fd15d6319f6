"""The run's options a scoring command sets anew: every spelling, choice and check of the option's declaration."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from audiotune.cli import build_parser, config_from_args
from audiotune.cli.flags import spellings
from audiotune.cli.run_flags import SCORING_OPTIONS, scoring_data, scoring_options
from audiotune.config import SECTIONS

SCORING = {"evaluate": ["evaluate", "--run", "run", "-d", "test.csv"],
           "extract": ["extract", "--run", "run", "-d", "test.csv", "--out", "emb.parquet"]}
# a value of each option other than its default, as train writes it into the config
VALUES = {"train.batch_size": "3", "runtime.num_workers": "0", "data.on_error": "skip", "runtime.accelerator": "cpu",
          "runtime.devices": "1", "runtime.precision": "bf16", "runtime.num_nodes": "2", "train.adapt_bn": "subject",
          "classifier.layer": "2", "classifier.pooling_mode": "sum"}
TAKEN = [(command, key) for command in SCORING for key in SCORING_OPTIONS] + \
    [("evaluate", "train.adapt_bn"), ("extract", "classifier.layer"), ("extract", "classifier.pooling_mode")]


def spellings_of(key: str) -> list[str]:
    section, name = key.split(".")
    spec = next(spec for spec in dataclasses.fields(SECTIONS[section]) if spec.name == name)
    return spellings(name, spec.metadata.get("flags", ()))


@pytest.mark.parametrize(("command", "key"), TAKEN)
def test_every_spelling_train_takes_is_taken_and_means_the_same(command: str, key: str) -> None:
    """train --nworkers 0, evaluate --nworkers 0: the option's seed spellings are the scoring commands' too."""
    section, name = key.split(".")
    for flag in spellings_of(key):
        trained = config_from_args(build_parser().parse_args(["train", flag, VALUES[key]]))
        scored = build_parser().parse_args([*SCORING[command], flag, VALUES[key]])
        assert getattr(scored, name) == getattr(getattr(trained, section), name) != \
            getattr(SECTIONS[section](), name), flag


@pytest.mark.parametrize("command", SCORING)
def test_an_option_not_given_is_the_runs(command: str) -> None:
    args = build_parser().parse_args(SCORING[command])
    assert scoring_options(args) == dict.fromkeys(key.partition(".")[2] for key in SCORING_OPTIONS)


@pytest.mark.parametrize(("flag", "value", "error"), [
    ("-bs", "0", "--batch_size 0: must be in [1, inf)"),
    ("--nworkers", "-1", "--num_workers -1: must be in [0, 1024]"),
    ("--num_nodes", "0", "--num_nodes 0: must be in [1, inf)"),
    ("--accelerator", "tpu", "invalid choice: 'tpu'"),
    ("--precision", "8", "invalid choice: '8'"),
    ("--on_error", "ignore", "invalid choice: 'ignore'"),
    ("-nw", "some", "expected int or auto, got 'some'"),
])
@pytest.mark.parametrize("command", SCORING)
def test_a_bad_value_is_the_options_own_error(command: str, flag: str, value: str, error: str,
                                              capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*SCORING[command], flag, value])
    scored = capsys.readouterr().err.strip().splitlines()[-1]
    assert scored.startswith(f"audiotune {command}: error: ") and error in scored
    try:  # train says the same of the same value
        config_from_args(build_parser().parse_args(["train", flag, value]))
    except SystemExit:
        trained = capsys.readouterr().err
    except ValueError as err:
        trained = str(err)
    assert error in trained


def test_the_accelerators_are_one_list_for_config_files_and_flags() -> None:
    from audiotune.config import RuntimeConfig, range_problems

    for accelerator in ("cuda", "mps"):
        assert config_from_args(build_parser().parse_args(["train", "--accelerator", accelerator])) \
            .runtime.accelerator == accelerator
    assert range_problems(RuntimeConfig(accelerator="tpu")) == \
        ["--accelerator tpu: choose one of auto, cpu, gpu, cuda, mps"]


def test_extract_pools_ssast_tokens_besides_the_frame_poolings() -> None:
    args = build_parser().parse_args([*SCORING["extract"], "--pm", "avgtok"])
    assert args.pooling_mode == "avgtok"


@pytest.mark.parametrize("command", SCORING)
def test_a_bucket_beside_a_run_reads_a_relative_prefix_and_is_refused_without_one(command: str) -> None:
    """-b is where a relative -i is read from (or where --cloud uploads): beside --run alone it did nothing."""
    read = build_parser().parse_args([*SCORING[command], "-b", "bkt", "-i", "lake"])
    assert scoring_data(read) == {"prefix": "gs://bkt/lake"}
    uploads = build_parser().parse_args([*SCORING[command], "-b", "bkt", "--cloud", "--cloud_dir", "out"])
    assert scoring_data(uploads) == {}
    for idle in (["-b", "bkt"], ["-b", "bkt", "-i", "gs://other/lake"]):
        with pytest.raises(ValueError, match=r"-b/--bucket_name bkt: .* give -i PREFIX or --cloud, or leave -b out"):
            scoring_data(build_parser().parse_args([*SCORING[command], *idle]))


@pytest.mark.parametrize("command", [["evaluate", "-d", "t.csv"], ["extract", "-d", "t.csv"], ["export", "--out", "m"],
                                     ["attention", "--audio", "a.wav"], ["cluster", "--out", "l.parquet"],
                                     ["report", "folder"]])
def test_every_command_reading_a_run_takes_its_folder_or_its_model_file_under_one_set_of_spellings(
        command: list[str]) -> None:
    """--run (the seeds' --trained_mdl_path, -mp) names the run directory or the model.safetensors inside it, in
    every command that reads a trained run."""
    for flag in ("--run", "--trained_mdl_path", "-mp", "--finetuned_mdl_path"):
        assert build_parser().parse_args([*command, flag, "runs/r1/model.safetensors"]).run == "runs/r1"
    assert build_parser().parse_args([*command, "--run", "runs/r1/"]).run == "runs/r1"


@pytest.mark.parametrize("command", SCORING)
def test_the_data_a_scoring_command_reads_is_the_data_options_flag(command: str) -> None:
    """-d of evaluate and extract is train's: its spellings, its role, and its help (extract also reads a folder of
    audio, as the option's help says)."""
    def flag(parser_of: str) -> argparse.Action:
        parser = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
        return parser[parser_of]._option_string_actions["-d"]

    scoring, train = flag(command), flag("train")
    assert scoring.option_strings == train.option_strings and scoring.required
    assert scoring.help.startswith(train.help.rpartition(" [")[0]) and "a folder of audio" in scoring.help
    assert build_parser().parse_args(SCORING[command]).data_split_root == "test.csv"


@pytest.mark.parametrize("command", SCORING)
def test_the_run_given_twice_must_be_one_run(command: str, capsys: pytest.CaptureFixture) -> None:
    """--run and the seeds' -mp name one argument: two runs are an error, not the last one silently."""
    same = build_parser().parse_args([*SCORING[command], "-mp", "run/model.safetensors"])
    assert same.run == "run"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*SCORING[command], "-mp", "other"])
    assert "-mp other: the run is given already (run); give one" in capsys.readouterr().err
