"""Every command that offers the backbones' options takes those that act in the stages it runs (``option(...,
acts=...)``), and no other: the others are neither listed by ``--help --model NAME`` nor taken from the command
line (one line saying where they act), and a ``--config`` file's values of them go back to their defaults, named
on stderr. The cases come from the backbones' declarations, so a new option is covered as it is declared."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import backbone_option_cases, non_default_value

from audiotune.cli import COMMANDS, build_parser, main
from audiotune.cli.config_args import config_from_args, others_at_defaults
from audiotune.cli.flags import CONFIG_STAGES
from audiotune.cli.seed_flags import Refused
from audiotune.cli.stats import STATS_OPTIONS
from audiotune.config import (
    CLASSIFIER_STAGES,
    ENCODING,
    EVERYWHERE,
    SECTIONS,
    RunConfig,
    Stage,
    TrainConfig,
    acts_of,
    config_to_dict,
    default_of,
    describe_acts,
    recipe_root,
    save_config,
)
from audiotune.models.backbones import resolve_config
from audiotune.models.option_checks import refuse_inactive


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if a.dest == "command").choices[command]


@cache
def stages_of() -> dict[str, frozenset[Stage]]:
    """The stages of each command that offers backbone options, as it declares them."""
    parser = build_parser()
    commands = {c.name: subparser(parser, c.name) for c in COMMANDS}
    return {name: sub.get_default(CONFIG_STAGES) for name, sub in commands.items()
            if any(action.dest.startswith("options.") for action in sub._actions)}


@cache
def parser_for(backbone: str) -> argparse.ArgumentParser:
    return build_parser(backbone)


@cache
def backbone_help(command: str, backbone: str) -> str:
    """The flags ``audiotune COMMAND --help --model BACKBONE`` lists in the group of the backbone's options."""
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        parser_for(backbone).parse_args([command, "--help"])
    group = re.search(rf"^options of --model {backbone}:\n(.*?)(?:\n\n|\Z)", out.getvalue(), re.M | re.S)
    return group.group(1) if group else ""


def flags_of(text: str) -> set[str]:
    return set(re.findall(r"--[\w-]+", text))


CASES = [pytest.param(command, backbone, spec, id=f"{command} --model {backbone} --{spec.name}")
         for command in sorted(stages_of()) for backbone, spec in backbone_option_cases()]


def test_the_commands_that_offer_backbone_options_declare_their_stages() -> None:
    stages = stages_of()
    assert set(stages) == {"train", "cv", "sweep", "pretrain", "probe", "extract", "cluster"}
    assert stages["probe"] == stages["extract"] == stages["cluster"] == ENCODING
    assert stages["pretrain"] == {Stage.PRETRAIN} and stages["train"] == {Stage.ENCODE, Stage.FINE_TUNE}
    # every kind of declaration is in use, so each branch below is walked
    assert {acts_of(spec) for _, spec in backbone_option_cases()} >= {frozenset(Stage), frozenset({Stage.PRETRAIN})}


@pytest.mark.parametrize(("command", "backbone", "spec"), CASES)
def test_a_backbone_option_is_listed_and_taken_where_it_acts_and_refused_elsewhere(
        command: str, backbone: str, spec, capsys: pytest.CaptureFixture) -> None:
    flag = f"--{spec.name}"
    acts = acts_of(spec) & stages_of()[command]
    assert (flag in flags_of(backbone_help(command, backbone))) == bool(acts)
    if acts:
        assert subparser(parser_for(backbone), command)._option_string_actions[flag].dest == f"options.{spec.name}"
        return
    value = non_default_value(backbone, spec)
    words = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    with pytest.raises(SystemExit) as stopped:
        parser_for(backbone).parse_args([command, "--model", backbone, flag, *words])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"audiotune {command}: error: {flag}: {describe_acts(acts_of(spec))}"), err


def test_probe_help_for_hf_leaves_out_what_a_frozen_encoder_never_does(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["probe", "--help", "--model", "hf"])
    text = capsys.readouterr().out
    assert "--max_window" in text
    for flag in ("--mask_time_prob", "--mask_feature_prob", "--gradient_checkpointing", "--pseudo_labels",
                 "--fresh_quantizer", "--gumbel_anneal"):
        assert flag not in text


def test_the_refusals_say_why_the_command_does_not_act_on_them(capsys: pytest.CaptureFixture) -> None:
    lines = {}
    for argv in (["probe", "--model", "hf", "--gradient_checkpointing", "true"],
                 ["probe", "--model", "hf", "--pseudo_labels", "x.parquet"],
                 ["train", "--model", "hf", "--pseudo_labels", "x.parquet"],
                 ["extract", "-c", "ckpt", "--model", "hf", "--pseudo_labels", "x.parquet"],
                 ["pretrain", "--model", "hf", "--mask_feature_prob", "0.1"]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        lines[argv[0], argv[-2]] = capsys.readouterr().err.strip().splitlines()[-1]
    assert lines["probe", "--gradient_checkpointing"].endswith(
        "--gradient_checkpointing: acts only while the encoder trains; probe reads a frozen encoder")
    for key in (("probe", "--pseudo_labels"), ("train", "--pseudo_labels"), ("extract", "--pseudo_labels")):
        assert lines[key].endswith("--pseudo_labels: acts only in audiotune pretrain")
    assert "--mask_feature_prob: acts only while the encoder fine-tunes on labels" in lines["pretrain",
                                                                                           "--mask_feature_prob"]


def test_a_model_flag_for_a_part_the_backbone_lacks_is_refused_before_anything_is_read(
        capsys: pytest.CaptureFixture) -> None:
    for argv, said in ((["--model", "ecapa_tdnn", "--freeze_feature_encoder"],
                        "--freeze_feature_encoder: --model ecapa_tdnn has no separate convolutional feature encoder"),
                       (["--model", "whisper", "--freeze_feature_projection"],
                        "--freeze_feature_projection: --model whisper has no feature projection after its "
                        "convolutional front end")):
        assert main(["train", *argv, "-d", "missing.csv", "-l", "missing.txt"]) == 2  # before the data are read
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(said)


def test_an_encoder_per_fold_is_refused_outside_cv_before_anything_is_read(
        capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.csv")
    for argv in (["train", "-l", missing, "-o", str(tmp_path / "run")], ["pretrain", "-o", str(tmp_path / "run")],
                 ["extract", "--out", str(tmp_path / "e.parquet")]):
        assert main([*argv, "--model", "hf", "-c", "gs://bucket/tapt_{fold}/encoder", "-d", missing]) == 2, argv
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
            "--checkpoint gs://bucket/tapt_{fold}/encoder: {fold} stands for each fold's name in `audiotune cv` only; "
            "give one encoder's path here")
    assert not list(tmp_path.iterdir())


def inactive_config(tmp_path: Path, backbone: str, stages: frozenset[Stage]) -> tuple[Path, dict]:
    """A config file setting every option of ``backbone`` that acts in none of ``stages`` away from its default."""
    values = {spec.name: non_default_value(backbone, spec) for name, spec in backbone_option_cases()
              if name == backbone and not acts_of(spec) & stages}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"model": backbone, **values}}))
    return path, values


def required(command: str, tmp_path: Path) -> list[str]:
    """The arguments ``command`` needs besides ``--config``."""
    return {"probe": ["-o", str(tmp_path / "out")], "extract": ["-d", str(tmp_path / "t.csv"), "--out",
            str(tmp_path / "e.parquet")], "cluster": ["--out", str(tmp_path / "labels.parquet")]}[command]


ENCODING_BACKBONES = sorted({name for name, spec in backbone_option_cases() if not acts_of(spec) & ENCODING})


@pytest.mark.parametrize("backbone", ENCODING_BACKBONES)
@pytest.mark.parametrize("command", ["probe", "extract", "cluster"])
def test_a_config_files_options_that_do_nothing_go_back_to_their_defaults_named(
        command: str, backbone: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, values = inactive_config(tmp_path, backbone, stages_of()[command])
    assert values
    argv = [command, "--config", str(path), *required(command, tmp_path)]
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    ignored = others_at_defaults(config, args)
    fields = {spec.name: spec for name, spec in backbone_option_cases() if name == backbone}
    for name, value in values.items():
        assert config.model.options[name] == default_of(fields[name])
        shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        assert f"--{name} {shown}" in ignored
    # the command says so on stderr before it runs (and fails here, with no data and an offline hub)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--config {path}: options {command} does not take are left at their defaults (not " in err
    assert all(f"--{name} " in err for name in values)


def test_a_config_holding_every_option_at_its_default_is_read_as_it_is(tmp_path: Path) -> None:
    """A saved run's config.yaml lists every option of its backbone, most at their defaults: nothing to say."""
    for backbone in ENCODING_BACKBONES:
        values = {spec.name: default_of(spec) for name, spec in backbone_option_cases() if name == backbone}
        path = tmp_path / f"{backbone}.yaml"
        path.write_text(yaml.safe_dump({"model": {"model": backbone, **values}}))
        for command in ("probe", "extract", "cluster"):
            args = build_parser().parse_args([command, "--config", str(path), *required(command, tmp_path)])
            config = config_from_args(args)
            assert others_at_defaults(config, args) == []
            assert {k: config.model.options[k] for k in values} == values


def test_train_and_pretrain_refuse_a_config_files_option_that_does_nothing_there(
        uid_dataset: dict, hf_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The resolved config is what counts: a value from --config is refused as a flag would be, before any
    output, with what would make it act."""
    ds, checkpoint = uid_dataset, str(hf_checkpoints["w2v_layer"])
    data = ["-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"])]
    cases = [
        ("train", {"model": "ssast", "mask_patch": 3}, "--mask_patch 3: acts only in audiotune pretrain"),
        ("train", {"model": "hf", "checkpoint": checkpoint, "mask_time_prob": 0.2},
         "--mask_time_prob 0.2: acts only while the encoder trains; the encoder is frozen"),
        ("cv", {"model": "ssast", "mask_patch": 3}, "--mask_patch 3: acts only in audiotune pretrain"),
        ("train", {"model": "ssast", "task": "pretrain_joint"},
         "--task pretrain_joint: acts only in audiotune pretrain"),
        ("pretrain", {"model": "hf", "checkpoint": checkpoint, "objective": "tapt", "mask_feature_prob": 0.2},
         "--mask_feature_prob 0.2: acts only while the encoder fine-tunes on labels"),
    ]
    for index, (command, model, message) in enumerate(cases):
        path = tmp_path / f"config{index}.yaml"
        path.write_text(yaml.safe_dump({"model": model}))
        out = tmp_path / f"run{index}"
        given = data if command != "pretrain" else data[:4]  # pretraining takes no label file
        assert main([command, "--config", str(path), *given, "-o", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
    # trained, the encoder masks: the same file with --freeze false passes the check (no epoch is run here)
    path = tmp_path / "config1.yaml"
    args = build_parser().parse_args(["train", "--config", str(path), "--freeze", "false"])
    refuse_inactive(resolve_config(config_from_args(args)))


def test_a_value_that_acts_in_other_stages_is_refused_on_the_command_line_and_reset_from_a_config_file(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """SSAST's --task pretrain_* is a pretraining objective; probe pools a classifier's tokens (ft_cls, ft_avgtok)."""
    assert main(["probe", "--model", "ssast", "--task", "pretrain_mpc", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().endswith("--task pretrain_mpc: acts only in audiotune pretrain")
    assert not (tmp_path / "out").exists()
    path = tmp_path / "pretrain_run.yaml"
    path.write_text(yaml.safe_dump({"model": {"model": "ssast", "task": "pretrain_joint"}}))
    args = build_parser().parse_args(["probe", "--config", str(path), "-o", str(tmp_path / "out")])
    config = config_from_args(args)
    assert others_at_defaults(config, args) == ["--task pretrain_joint"] and config.model.options["task"] == "ft_cls"


SECTION_CASES = [(section, spec) for section, cls in SECTIONS.items() for spec in dataclasses.fields(cls)
                 if acts_of(spec) != EVERYWHERE]


@pytest.mark.parametrize("command", sorted(stages_of()))
def test_a_section_option_is_taken_only_by_the_commands_whose_stages_it_acts_in(command: str) -> None:
    """The model section's --objective (pretraining), --freeze_feature_encoder (while the encoder trains) and
    --freeze_feature_projection (fine-tuning) are declared like the backbones' options and read the same way."""
    assert {spec.name for _, spec in SECTION_CASES} >= {"objective", "freeze_feature_encoder",
                                                         "freeze_feature_projection"}
    actions = subparser(build_parser(), command)._option_string_actions
    for _, spec in SECTION_CASES:
        action = actions.get(f"--{spec.name}")
        if action is None:  # the command takes no option of its section
            continue
        refused = isinstance(action, Refused)
        assert refused == (not acts_of(spec) & stages_of()[command]), (command, spec.name)
        if refused and "another" not in action.replacement and "not an option" not in action.replacement:
            assert action.replacement.startswith(describe_acts(acts_of(spec))), (command, spec.name)


def test_train_and_pretrain_refuse_a_model_option_from_a_config_file_that_does_nothing_there() -> None:
    config = RunConfig()
    config.model.objective = "tapt"
    with pytest.raises(ValueError, match=r"^--objective tapt: acts only in audiotune pretrain$"):
        refuse_inactive(config, Stage.FINE_TUNE)
    refuse_inactive(config, Stage.PRETRAIN)
    config.model.objective, config.model.freeze_feature_projection = "", True
    with pytest.raises(ValueError, match=r"^--freeze_feature_projection True: acts only while the encoder fine-tunes"):
        refuse_inactive(config, Stage.PRETRAIN)
    with pytest.raises(ValueError, match=r"the encoder is frozen here .*add --freeze false"):
        refuse_inactive(config, Stage.ENCODE)
    refuse_inactive(config, Stage.FINE_TUNE)


def test_a_pretraining_crop_is_refused_by_train_naming_where_it_acts(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "-d", "split", "-l", "labels.txt", "-o", "run", "--max_seconds", "2"])
    assert capsys.readouterr().err.rstrip().endswith("error: --max_seconds: acts only in audiotune pretrain")


def test_a_seed_switchs_own_sizes_are_not_named_as_a_config_files(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """stats --fbank True: the switch's frames (--target_length 400) are not stats's; they are no --config file's
    either, so nothing is said of them. A config file's --target_length is named."""
    args = build_parser().parse_args(["stats", "-d", "t.csv", "--fbank", "True"])
    config = config_from_args(args, takes=STATS_OPTIONS)
    assert config.features.target_length == 0 and "left at their defaults" not in capsys.readouterr().err
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"features": {"target_length": 300}}))
    config_from_args(build_parser().parse_args(["stats", "-d", "t.csv", "--fbank", "True", "--config", str(path)]),
                     takes=STATS_OPTIONS)
    assert f"--config {path}: options stats does not take are left at their defaults (not --target_length 300)" \
        in capsys.readouterr().err


def test_a_recipes_value_whose_switch_is_off_is_left_at_its_default_and_the_same_flag_is_refused(
        tmp_path: Path) -> None:
    """seeds/naip_w2v2 holds the seed's ways for when their switches are on: raw layer weights for --weighted, a
    frozen encoder in training mode for its frozen encoder. With the switch off they are left at their defaults
    (fine-tuning it: --freeze false); typed on the command line, or in the user's own file, they are refused."""
    def loaded(*argv: str) -> RunConfig:
        return config_from_args(build_parser().parse_args(["train", "-d", "x", "-o", "o", *argv]), read_inputs=False)

    recipe = ["--config", "seeds/naip_w2v2"]
    plain, trained, weighted = loaded(*recipe), loaded(*recipe, "--freeze", "false"), loaded(*recipe, "--weighted",
                                                                                               "true")
    assert (plain.model.frozen_train_mode, plain.classifier.layer_weights) == (True, "softmax")
    assert (trained.model.frozen_train_mode, weighted.classifier.layer_weights) == (False, "raw")
    for config in (plain, trained, weighted):
        refuse_inactive(config)
    with pytest.raises(ValueError, match=r"^--frozen_train_mode True: acts only with --freeze true"):
        refuse_inactive(loaded(*recipe, "--freeze", "false", "--frozen_train_mode", "true"))
    with pytest.raises(ValueError, match=r"^--layer_weights raw: acts only with --weighted true$"):
        refuse_inactive(loaded(*recipe, "--layer_weights", "raw"))
    own = tmp_path / "my_w2v2.yaml"  # the user's copy of the recipe: its values are the user's
    own.write_text((recipe_root() / "seeds" / "naip_w2v2.yaml").read_text())
    with pytest.raises(ValueError, match=r"^--layer_weights raw: acts only with --weighted true$"):
        refuse_inactive(loaded("--config", str(own)))


def test_a_run_config_holding_a_value_that_did_nothing_starts_a_run_without_it_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run made before -lr was refused with --scheduler onecycle (the NAIP SSAST recipe's learning_rate: 0.0001):
    its config.yaml starts a new run with the default rate, named on stderr; with another schedule its rate acts."""
    made = RunConfig()
    made.train.scheduler, made.train.learning_rate = "onecycle", 1e-4
    path = tmp_path / "config.yaml"
    save_config(made, path)

    def loaded(*argv: str) -> RunConfig:
        args = build_parser().parse_args(["train", "--config", str(path), "-o", "o", *argv])
        return config_from_args(args, read_inputs=False)

    config = loaded()
    assert config.train.learning_rate == default_of(field_of(TrainConfig, "learning_rate"))
    refuse_inactive(config)
    assert capsys.readouterr().err.strip() == (
        f"--config {path}: left at their defaults, as they do nothing with the options given: --learning_rate "
        "0.0001: acts only with --scheduler none, cosine or linear (onecycle sets the rate itself: from --max_lr / 25 "
        "up to --max_lr, then down)")
    assert loaded("--scheduler", "cosine").train.learning_rate == 1e-4
    with pytest.raises(ValueError, match=r"^--learning_rate 0\.001: acts only with --scheduler none"):
        refuse_inactive(loaded("-lr", "0.001"))


def field_of(cls: type, name: str) -> dataclasses.Field:
    return next(spec for spec in dataclasses.fields(cls) if spec.name == name)


def test_a_run_config_holding_a_head_option_its_labels_lack_starts_a_run_without_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run's config.yaml from before --labeling_method was refused for labels without a soft head: a new run from
    it reads the option at its default, named on stderr; typed, it stays (refused once the labels are read)."""
    labels = tmp_path / "labels.txt"
    labels.write_text("pitch\n")
    made = RunConfig()
    made.data.label_txt, made.train.labeling_method = str(labels), "hard"
    path = tmp_path / "config.yaml"
    save_config(made, path)

    def loaded(*argv: str) -> RunConfig:
        args = build_parser().parse_args(["train", "--config", str(path), "-o", "o", *argv])
        return config_from_args(args, read_inputs=False)

    assert loaded().train.labeling_method == "distribution"
    assert f"--config {path}: left at their defaults, as they do nothing with the options given: --labeling_method " \
           f"hard: acts only on soft (vote) heads, and {labels} has none" in capsys.readouterr().err
    assert loaded("--labeling_method", "hard").train.labeling_method == "hard"
    labels.write_text("a,b,c:soft\n")  # with a soft head it acts
    assert loaded().train.labeling_method == "hard"


def test_a_run_made_before_its_recipe_set_an_option_resumes_with_the_recipe_as_it_was_made(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """seeds/naip_ecapa gained pad_clips after runs were made with it: such a run's config.yaml (written as then,
    without it) resumed with the same recipe goes on without it, named on stderr, instead of being refused as
    changed, the next time too (its config.yaml then records it at its default); a run that records the recipe's
    value keeps it, silently; one given on the command line is the user's (refused as a change)."""
    from audiotune.engine.resume import resumed_changes

    def loaded(run: Path, *argv: str) -> RunConfig:
        args = build_parser().parse_args(["train", "--config", "seeds/naip_ecapa", "-o", str(run), "--clip_length",
                                          "1", *argv])
        return config_from_args(args, read_inputs=False)

    made, before = tmp_path / "made_today", tmp_path / "made_before"
    for run in (made, before):
        run.mkdir()
        save_config(resolve_config(loaded(run)), run / "config.yaml")  # as train writes it
    written = yaml.safe_load((before / "config.yaml").read_text())
    del written["audio"]["pad_clips"], written["model"]["read_padding"]
    (before / "config.yaml").write_text(yaml.safe_dump(written))
    capsys.readouterr()

    for _ in range(2):  # resumed, its config.yaml is written again, with pad_clips at its default
        config = resolve_config(loaded(before, "--resume"))
        assert not config.audio.pad_clips
        assert capsys.readouterr().err.strip() == (
            f"--config {recipe_root() / 'seeds' / 'naip_ecapa.yaml'}: {before} was made before the recipe set "
            "--pad_clips True; it goes on without them, as it was made")
        assert resumed_changes(before, config, CLASSIFIER_STAGES) == {}
        save_config(config, before / "config.yaml")
    today = resolve_config(loaded(made, "--resume"))
    assert today.audio.pad_clips and not capsys.readouterr().err
    assert resumed_changes(made, today, CLASSIFIER_STAGES) == {}
    with pytest.raises(ValueError, match=r"options that differ from the run's config\.yaml \(lin_neurons 192 -> 96"):
        resumed_changes(before, resolve_config(loaded(before, "--resume", "--lin_neurons", "96")), CLASSIFIER_STAGES)


def test_a_cv_folder_made_before_its_recipe_set_an_option_goes_on_as_it_was_made(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The settings a cv folder recorded (cv_config.yaml's ``config``) before seeds/naip_ecapa set pad_clips: a rerun
    with the recipe reads it at the recorded default, named on stderr; a folder that records it keeps the recipe's."""
    from audiotune.cli.stages import config_file_sections, keep_what_the_record_predates

    args = build_parser().parse_args(["cv", "--config", "seeds/naip_ecapa", "-d", "t.csv", "-o", str(tmp_path),
                                      "--clip_length", "1"])
    config = config_from_args(args, read_inputs=False)
    recorded = config_to_dict(config)
    del recorded["audio"]["pad_clips"]
    record = tmp_path / "cv_config.yaml"
    record.write_text(yaml.safe_dump({"folds": {"folds": 3}, "config": recorded}))
    capsys.readouterr()
    keep_what_the_record_predates(config, *config_file_sections(args), set(), str(record), "config")
    assert not config.audio.pad_clips
    assert f"{tmp_path} was made before the recipe set --pad_clips True" in capsys.readouterr().err
    recorded["audio"]["pad_clips"] = True
    record.write_text(yaml.safe_dump({"folds": {"folds": 3}, "config": recorded}))
    again = config_from_args(args, read_inputs=False)
    assert keep_what_the_record_predates(again, *config_file_sections(args), set(), str(record), "config") \
        .audio.pad_clips and not capsys.readouterr().err
