"""Each command that reads part of the options takes exactly those it reads (``cluster``: CLUSTER_OPTIONS,
``stats``: STATS_OPTIONS) and refuses the rest in one line; augmentations (``option(..., training_only=True)``)
are taken only by the commands that train on clips; beside ``--run``, an encoder's own flags are an error in
``cluster`` as in ``extract``. The cases come from the declarations, so a new option is covered as it is
declared."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from audiotune.cli import build_parser, main
from audiotune.cli.cluster import CLUSTER_OPTIONS
from audiotune.cli.flags import declared_options
from audiotune.cli.stats import STATS_OPTIONS
from audiotune.config import SECTIONS

AUGMENTATIONS = [f"{section}.{spec.name}" for section, cls in SECTIONS.items() for spec in dataclasses.fields(cls)
                 if spec.metadata.get("training_only")]


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def flag(key: str) -> str:
    return f"--{key.partition('.')[2]}"


def refusal(parser: argparse.ArgumentParser, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err


def test_the_augmentations_are_declared_as_such() -> None:
    assert {"features.freqm", "features.timem", "features.noise", "features.vtlp", "data.mixup",
            "augment.tshift", "augment.eq", "augment.cut_max"} <= set(AUGMENTATIONS)
    assert not {"features.num_mel_bins", "audio.clip_length", "data.seed"} & set(AUGMENTATIONS)


@pytest.mark.parametrize("key", AUGMENTATIONS)
@pytest.mark.parametrize("command", ["extract", "cluster", "probe", "stats"])
def test_an_augmentation_is_refused_where_nothing_trains_on_clips(command: str, key: str,
                                                                 parser: argparse.ArgumentParser,
                                                                 capsys: pytest.CaptureFixture) -> None:
    error = refusal(parser, [command, flag(key), "1"], capsys)
    assert f"audiotune {command}: error: {flag(key)}: " in error


@pytest.mark.parametrize("key", AUGMENTATIONS)
@pytest.mark.parametrize("command", ["train", "cv", "sweep", "pretrain"])
def test_an_augmentation_is_taken_where_a_model_trains_on_clips(command: str, key: str,
                                                               parser: argparse.ArgumentParser) -> None:
    value = ["1", "1.2"] if key.endswith("_range") else ["1"]
    required = ["--space", "space.yaml"] if command == "sweep" else []
    assert key in vars(parser.parse_args([command, *required, flag(key), *value]))


def test_extract_says_why_it_refuses_an_augmentation(parser: argparse.ArgumentParser,
                                                      capsys: pytest.CaptureFixture) -> None:
    error = refusal(parser, ["extract", "--freqm", "8"], capsys)
    assert "--freqm: an augmentation: acts only on the clips a model trains on; extract runs the encoder" in error


@pytest.mark.parametrize("command, taken", [("cluster", CLUSTER_OPTIONS), ("stats", STATS_OPTIONS)])
def test_an_option_the_command_does_not_read_is_refused(command: str, taken: tuple[str, ...],
                                                        parser: argparse.ArgumentParser,
                                                        capsys: pytest.CaptureFixture) -> None:
    refused = [key for key in declared_options() if key not in declared_options(taken)]
    assert {"audio.clip_length", "runtime.report", "runtime.strategy", "data.label_txt"} <= set(refused) \
        if command == "cluster" else {"runtime.num_workers", "runtime.precision", "features.dataset_mean"} <= set(
            refused)
    for key in refused:
        error = refusal(parser, [command, flag(key), "1"], capsys)
        assert f"audiotune {command}: error: {flag(key)}: " in error, key


@pytest.mark.parametrize("key", ["features.target_length", "features.pad"])
def test_stats_refuses_what_pads_or_crops_a_batch(key: str, parser: argparse.ArgumentParser,
                                                  capsys: pytest.CaptureFixture) -> None:
    # each clip's features are measured at the clip's own length: a batch's padding or crop would change nothing
    error = refusal(parser, ["stats", flag(key), "1"], capsys)
    assert f"audiotune stats: error: {flag(key)}: not an option of stats" in error
    assert "each clip at its own length (before a batch's padding or --target_length" in error


def test_cluster_beside_a_run_refuses_an_encoders_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "labels.parquet"
    for given, named in ((["-c", "other/encoder"], "--checkpoint"), (["--model", "ssast"], "--model"),
                         (["--num_mel_bins", "64"], "--num_mel_bins"), (["--fbank", "True"], "--fbank")):
        assert main(["cluster", "--run", str(tmp_path / "run"), *given, "-d", str(tmp_path), "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert f"{named}: options of a pretrained encoder read without a run" in error, error
    assert not out.exists()


def test_a_config_files_augmentation_is_left_at_its_default_by_cluster(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    from audiotune.cli.cluster import CLUSTER_OPTIONS
    from audiotune.cli.config_args import config_from_args, others_at_defaults

    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"augment": {"tshift": 0.5}, "features": {"freqm": 4, "num_mel_bins": 64}}))
    args = build_parser().parse_args(["cluster", "--config", str(path), "--out", "x.parquet"])
    config = config_from_args(args)
    left = others_at_defaults(config, args, CLUSTER_OPTIONS)
    assert set(left) == {"--tshift 0.5", "--freqm 4"}
    assert (config.augment.tshift, config.features.freqm, config.features.num_mel_bins) == (0.0, None, 64)
