"""Commands declare themselves: the role of every path argument decides remote handling, a backbone's options
appear and apply only with that backbone, a command's own defaults yield to a config file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import SMALL_ECAPA, make_uid_dataset

from audiotune.cli import COMMANDS, build_parser, config_from_args, main
from audiotune.cli.flags import path_roles
from audiotune.storage import Role


def help_text(capsys: pytest.CaptureFixture, *argv: str) -> str:
    with pytest.raises(SystemExit):
        build_parser(*[argv[argv.index("--model") + 1]] if "--model" in argv else []).parse_args([*argv, "--help"])
    return capsys.readouterr().out


def test_every_command_is_declared_once_and_parses_its_help(capsys: pytest.CaptureFixture) -> None:
    names = [command.name for command in COMMANDS]
    assert len(names) == len(set(names))
    for name in names:
        assert f"usage: audiotune {name}" in help_text(capsys, name)
    nested = [(command.name, name) for command in COMMANDS for name in subcommands(command.name)]
    assert len(nested) >= 10  # import naip ... taps, taps detect|align, vertex job|tune|results
    for words in nested:
        assert f"usage: audiotune {' '.join(words)}" in help_text(capsys, *words)


def subcommands(command: str) -> list[str]:
    """The names of ``command``'s own subcommands (import naip, taps detect, ...)."""
    import argparse

    choices = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    return [name for action in choices[command]._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def test_a_backbone_shows_only_its_own_options(capsys: pytest.CaptureFixture) -> None:
    ecapa = help_text(capsys, "train", "--model", "ecapa_tdnn")
    assert "--lin_neurons" in ecapa and "--fshape" not in ecapa and "--mask_time_prob" not in ecapa
    every = help_text(capsys, "train")
    assert all(f"options of --model {name}" in every for name in ("ecapa_tdnn", "hf", "ssast"))
    stats = help_text(capsys, "stats")
    assert "--tshift" not in stats and "--clf_bottleneck" not in stats and "--epochs" not in stats
    assert "--accelerator" in stats
    cluster = help_text(capsys, "cluster")
    assert "--layer" in cluster and "-bs" in cluster and "--epochs" not in cluster and "--weighted" not in cluster


def test_an_option_of_another_backbone_is_refused(capsys: pytest.CaptureFixture) -> None:
    args = build_parser().parse_args(["train", "--model", "ecapa_tdnn", "--fshape", "16"])
    with pytest.raises(ValueError, match=r"--fshape \(--model ssast\).*--model ecapa_tdnn"):
        config_from_args(args)
    assert config_from_args(build_parser().parse_args(["train", "--model", "ssast", "--fshape", "16"])) \
        .model.options == {"fshape": 16}


def test_a_command_default_yields_to_the_config_file(tmp_path: Path) -> None:
    recipe = tmp_path / "tapt.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"model": "hf", "objective": "tapt"}}))
    assert config_from_args(build_parser().parse_args(["pretrain"])).model.model == "ssast"
    assert config_from_args(build_parser().parse_args(["pretrain", "--config", str(recipe)])).model.model == "hf"


def test_path_roles_come_from_the_declarations() -> None:
    roles = path_roles(build_parser().parse_args(["taps", "detect", "a.wav", "--out", "t.csv"]))
    assert roles == {"recordings": Role.AUDIO, "out": Role.OUTPUT_FILE, "plot": Role.OUTPUT_DIR}
    roles = path_roles(build_parser().parse_args(["cv", "-d", "t.csv", "-o", "e"]))
    assert roles["exp_dir"] is Role.EXPERIMENT and roles["data.data_split_root"] is Role.TABLE
    assert roles["data.label_txt"] is Role.INPUT and roles["runtime.cache_dir"] is Role.CACHE


def test_a_remote_path_where_the_command_reads_local_files_only_is_refused(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "space.yaml"  # read only after the paths are checked: the refusal comes first
    argv = ["sweep", "-o", "gs://bucket/sweep", "--space", str(space), "-d", "t.csv"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "gs://bucket/" in error and "local disk only" in error
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_evaluate_and_extract_of_the_model_file_write_beside_it_in_the_run(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(run),
                 "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "1", "-bs", "4"]) == 0
    model_file = str(run / "model.safetensors")  # the seeds' --trained_mdl_path names the weights file
    test = str(ds["split"] / "test.csv")
    assert main(["evaluate", "--trained_mdl_path", model_file, "-d", test]) == 0
    assert json.loads((run / "evaluate" / "metrics.json").read_text())["data"]["n"] == 4
    assert main(["extract", "--trained_mdl_path", model_file, "-d", test]) == 0
    assert (run / "embeddings_ft.parquet").is_file()


def test_a_config_listing_every_backbones_options_loads_with_the_chosen_ones(tmp_path: Path) -> None:
    """Config files of earlier releases list every backbone's options flat in the model section."""
    from audiotune.config import load_config
    from audiotune.models.backbones import resolve_config

    earlier = {"model": {"model": "ecapa_tdnn", "lin_neurons": 16, "channels": [16, 16, 48], "kernel_sizes": [5, 3, 1],
                         "dilations": [1, 2, 1], "fshape": 128, "mask_time_prob": None, "max_window": 0.0}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(earlier))
    config = resolve_config(load_config(path))
    assert config.model.options["lin_neurons"] == 16 and config.model.options["channels"] == [16, 16, 48]
    assert "fshape" not in config.model.options and "max_window" not in config.model.options
    path.write_text(yaml.safe_dump({"model": {"model": "ecapa_tdnn", "lin_neuron": 16}}))
    with pytest.raises(ValueError, match="lin_neuron"):
        resolve_config(load_config(path))
