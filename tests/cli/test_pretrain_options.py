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
    assert "(0: none); here only 0 is taken (no validation without a val part; with one, it is refused); by " \
           "default pretraining validates on the val part, else on --val_share of the rows (valid [0, inf))" in text
    assert text.count("; here by the validation loss (pretrain has no --monitor)") == 2  # --save_top_k, --keep


# ------------------------------------------------------------------ options of one objective


@pytest.fixture(scope="module")
def wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny wav2vec2 pretraining checkpoint (quantizer included)."""
    import torch
    import transformers
    from conftest import HF_TINY

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w2v2") / "pretraining"
    tiny = transformers.Wav2Vec2Config(**HF_TINY, codevector_dim=16, proj_codevector_dim=16, num_codevector_groups=2,
                                       num_codevectors_per_group=8, num_negatives=5, mask_time_prob=0.2,
                                       mask_time_length=2)
    transformers.Wav2Vec2ForPreTraining(tiny).save_pretrained(path)
    return path


def hf_pretrain(ds: dict, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--model", "hf", "-c", str(checkpoint), "-i", str(ds["prefix"]), "-d", str(ds["split"]),
            "-o", str(out), "-bs", "4", "--training_steps", "1", "--clip_length", "0", "--num_workers", "0", *extra]


@pytest.mark.parametrize(("objective", "given", "message"), [
    ("ptapt", ["--fresh_quantizer", "true"], "--fresh_quantizer True: acts only with --objective tapt"),
    ("ptapt", ["--tapt_loss", "batch"], "--tapt_loss batch: acts only with --objective tapt"),
    ("ptapt", ["--gumbel_anneal", "false"], "--gumbel_anneal False: acts only with --objective tapt"),
    ("ptapt", ["--freeze_feature_encoder", "true"], "--freeze_feature_encoder True: acts only with fine-tuning or "
                                                    "--objective tapt (--objective ptapt always freezes it)"),
    ("tapt", ["--pseudo_labels", "labels.parquet"], "--pseudo_labels labels.parquet: acts only with --objective "
                                                    "ptapt"),
    ("", ["--pseudo_labels", "labels.parquet"], "--pseudo_labels labels.parquet: acts only with --objective ptapt"),
    ("ptapt", ["--pseudo_labels", ""], "--objective ptapt: give the frame labels to predict with --pseudo_labels "
                                       "LABELS.parquet (written by `audiotune cluster`)"),
])
def test_an_option_of_another_objective_is_refused_before_anything_is_written(
        objective: str, given: list[str], message: str, wav2vec2: Path, uid_dataset: dict, tmp_path: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """P-TAPT reads no quantizer, TAPT loss or temperature and always freezes the feature encoder; TAPT reads no
    frame labels (no objective named: --model hf's first, tapt). Each was taken and changed nothing. P-TAPT without
    frame labels has nothing to predict. Refused at once: before the checkpoint is loaded."""
    monkeypatch.setattr("audiotune.engine.pretrain.build_backbone", built)
    out = tmp_path / "run"
    named = ["--objective", objective, "--pseudo_labels", "x.parquet"] if objective == "ptapt" else \
        ["--objective", objective] * bool(objective)
    assert main(hf_pretrain(uid_dataset, wav2vec2, out, *named, *given)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"audiotune pretrain: error: {message}"
    assert not out.exists()


def built(*args: object, **kwargs: object) -> None:
    """In place of the backbone's build: a refusal must come before it."""
    raise AssertionError("the backbone was built (its checkpoint loaded) before the options were checked")


@pytest.mark.parametrize(("given", "message"), [
    (["--objective", "tapt"], "--objective tapt: --model ssast pretrains with ['pretrain_joint', 'pretrain_mpc', "
                              "'pretrain_mpg']"),
    (["--task", "pretrain_mpc", "--objective", "tapt"], "--objective tapt: --model ssast pretrains with "
                                                        "['pretrain_mpc', 'pretrain_mpg', 'pretrain_joint']"),
    # the default objective (--task ft_cls names none) checks the patches when the input is resolved
    (["--fstride", "8", "--tstride", "8"], "pretrain_joint: pretraining needs --fstride = --fshape and --tstride = "
                                           "--tshape (no overlapping patches), got stride (8, 8), shape (16, 16)"),
    (["--task", "ft_avgtok"], "--task ft_avgtok: acts where the encoder encodes labelled clips, not in audiotune "
                              "pretrain; audiotune pretrain trains the encoder on its self-supervised objective"),
])
def test_an_ssast_objective_is_settled_and_checked_before_its_checkpoint_is_loaded(
        given: list[str], message: str, uid_dataset: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SSAST's objectives follow --task and --objective, options of the config: no model is built to read them."""
    monkeypatch.setattr("audiotune.engine.pretrain.build_backbone", built)
    checkpoint = tmp_path / "ssast.pth"
    checkpoint.write_bytes(b"not read")
    out = tmp_path / "run"
    assert main(["pretrain", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-o", str(out),
                 *TINY_SSAST, "--pretrained_mdl_path", str(checkpoint), *given]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"audiotune pretrain: error: {message}"
    assert not out.exists()


def test_a_model_without_an_objective_is_refused_before_it_is_built(uid_dataset: dict, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("audiotune.engine.pretrain.build_backbone", built)
    out = tmp_path / "run"
    assert main(["pretrain", "--model", "whisper", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]),
                 "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "audiotune pretrain: error: --model whisper has no self-supervised objective"
    assert not out.exists()


def test_the_options_of_tapt_are_taken_with_it_and_those_of_ptapt_with_it(wav2vec2: Path, uid_dataset: dict,
                                                                         tmp_path: Path) -> None:
    from audiotune.cli import config_from_args
    from audiotune.config import Stage
    from audiotune.models.backbones import resolve_config
    from audiotune.models.option_checks import refuse_inactive

    out = tmp_path / "tapt"
    assert main(hf_pretrain(uid_dataset, wav2vec2, out, "--tapt_loss", "batch", "--gumbel_anneal", "false",
                            "--freeze_feature_encoder", "true", "--val_size", "0", "-d",
                            str(uid_dataset["split"] / "train.csv"))) == 0
    recorded = yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert (recorded["objective"], recorded["tapt_loss"], recorded["gumbel_anneal"]) == ("tapt", "batch", False)
    # P-TAPT's frame labels and its options (read when its heads are built: tests/models/backbones/test_hf_ptapt.py)
    argv = hf_pretrain(uid_dataset, wav2vec2, tmp_path / "ptapt", "--objective", "ptapt", "--pseudo_labels",
                       "x.parquet", "--layerdrop", "0.1")
    config = resolve_config(config_from_args(build_parser().parse_args(argv)))
    refuse_inactive(config, Stage.PRETRAIN)


def test_an_objectives_option_in_a_training_config_is_refused_once_for_the_stage(wav2vec2: Path) -> None:
    """Refused as an option of pretrain, not also as one of another objective."""
    from audiotune.config import RunConfig
    from audiotune.models.backbones import resolve_config
    from audiotune.models.option_checks import refuse_inactive

    config = RunConfig()
    config.model.model, config.model.checkpoint, config.model.freeze = "hf", str(wav2vec2), False
    config.model.options = {"pseudo_labels": "x.parquet"}
    with pytest.raises(ValueError) as refused:
        refuse_inactive(resolve_config(config))
    assert str(refused.value) == "--pseudo_labels x.parquet: acts only in audiotune pretrain"


def test_a_fresh_quantizer_for_a_checkpoint_that_has_one_is_refused(wav2vec2: Path, uid_dataset: dict,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """--fresh_quantizer starts a missing quantizer; one the checkpoint has was kept whatever it said."""
    out = tmp_path / "run"
    assert main(hf_pretrain(uid_dataset, wav2vec2, out, "--fresh_quantizer", "true")) == 2
    assert f"--fresh_quantizer true: {wav2vec2} has quantizer weights, from which TAPT continues; leave " \
           "--fresh_quantizer out" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------ validation with a val part


@pytest.mark.parametrize(("given", "shown"), [
    (["--val_size", "0"], "--val_size 0"),
    (["--val_share", "0.3"], "--val_share 0.3"),
    (["--val_size", "0", "--val_share", "0.3"], "--val_share 0.3 --val_size 0"),
])
def test_validation_options_with_a_val_part_are_refused_naming_it(given: list[str], shown: str, uid_dataset: dict,
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """A val part validates whatever --val_size 0 or --val_share say: both were taken and did nothing."""
    out = tmp_path / "run"
    split = uid_dataset["split"]
    assert main(["pretrain", "-i", str(uid_dataset["prefix"]), "-d", str(split), "-o", str(out), *TINY_SSAST,
                 *given]) == 2
    assert f"{shown}: {split} has a val part ({split / 'val.csv'}), on which pretraining validates whatever " \
           f"{shown} says" in capsys.readouterr().err
    assert not out.exists()


def test_without_a_val_part_or_from_a_recipe_they_are_taken(uid_dataset: dict, tmp_path: Path) -> None:
    """A table without a val part draws --val_share of its rows or, with --val_size 0, none; a recipe's
    --val_size 0 is its rule for a split without a val part (seeds/naip_ssast_pretrain scores val.csv)."""
    from audiotune.cli.pretrain import _validation_rule

    def rule(*argv: str) -> None:
        args = build_parser().parse_args(["pretrain", "-i", str(uid_dataset["prefix"]), "-o", str(tmp_path), *argv])
        from audiotune.cli import config_from_args

        _validation_rule(args, config_from_args(args))

    table = str(uid_dataset["split"] / "train.csv")
    rule("-d", table, "--val_size", "0")
    rule("-d", table, "--val_share", "0.3")
    rule("-d", str(uid_dataset["split"]), "--config", "seeds/naip_ssast_pretrain")
    rule("-d", str(uid_dataset["split"]), "--val_size", "0", "--resume")  # a resumed run goes on as it was made


def test_a_run_made_with_an_option_of_another_objective_resumes(wav2vec2: Path, uid_dataset: dict,
                                                                  tmp_path: Path) -> None:
    """A run whose config.yaml holds such an option from before it was refused (it did nothing) goes on."""
    out = tmp_path / "run"
    argv = hf_pretrain(uid_dataset, wav2vec2, out, "--val_size", "0", "-d", str(uid_dataset["split"] / "train.csv"))
    assert main(argv) == 0
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    recorded["model"]["pseudo_labels"] = "labels.parquet"  # taken with tapt before
    (out / "config.yaml").write_text(yaml.safe_dump(recorded))
    assert main([*argv, "--pseudo_labels", "labels.parquet", "--training_steps", "2", "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps_run"] == 2


def test_a_new_run_from_a_config_written_before_its_options_were_refused(wav2vec2: Path, uid_dataset: dict,
                                                                          tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """A run's config.yaml from before: TAPT's --pseudo_labels and a --val_share beside a val part (both did nothing)
    are read at their defaults, and said to be; a --fresh_quantizer for a checkpoint that has one is refused
    naming the file's line to drop."""
    argv = hf_pretrain(uid_dataset, wav2vec2, tmp_path / "run")
    assert main(argv) == 0
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    recorded["model"]["pseudo_labels"] = "labels.parquet"  # taken with tapt before
    recorded["train"]["val_share"] = 0.2  # with a val part, which validated
    earlier = tmp_path / "earlier.yaml"
    earlier.write_text(yaml.safe_dump(recorded))
    capsys.readouterr()
    again = tmp_path / "again"
    assert main(["pretrain", "--config", str(earlier), "-o", str(again)]) == 0
    err = capsys.readouterr().err
    assert f"--config {earlier}: left at their defaults, as they do nothing with the options given: " \
           "--pseudo_labels labels.parquet" in err
    assert f"--config {earlier}: --val_share 0.2: does nothing with the val part of {uid_dataset['split']}" in err
    written = yaml.safe_load((again / "config.yaml").read_text())
    assert (written["model"]["pseudo_labels"], written["train"]["val_share"]) == ("", 0.0)
    recorded["model"]["fresh_quantizer"] = True
    earlier.write_text(yaml.safe_dump(recorded))
    refused = tmp_path / "refused"
    assert main(["pretrain", "--config", str(earlier), "-o", str(refused)]) == 2
    assert f"leave --fresh_quantizer out (it starts a missing quantizer from random weights) (--config {earlier} " \
           "sets fresh_quantizer: true: drop that line)" in capsys.readouterr().err
    assert not refused.exists()


@pytest.mark.parametrize("task", ["ft_cls", "ft_avgtok"])
def test_a_fine_tuning_task_typed_in_pretrain_is_refused_its_default_too(task: str) -> None:
    """--task ft_cls (SSAST's default) chooses the tokens fine-tuning pools; typed in pretrain it would do nothing
    there (the run's objective is --objective, or --task pretrain_*)."""
    from audiotune.cli import config_from_args

    args = build_parser("ssast").parse_args(["pretrain", "-d", "x", "-o", "o", "--model", "ssast", "--task", task])
    with pytest.raises(ValueError, match=f"--task {task}: acts where the encoder encodes labelled clips, not in "
                                         "audiotune pretrain"):
        config_from_args(args, read_inputs=False)
    trained = build_parser("ssast").parse_args(["train", "-d", "x", "-o", "o", "--model", "ssast", "--task", task])
    assert config_from_args(trained, read_inputs=False).model.options["task"] == task
