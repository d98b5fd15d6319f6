"""Pretraining's validation rows: a seeded tenth of the clips, the --val_share asked for, or none (--val_size 0);
the weights kept: the lowest validation loss's, or with --keep last the last epoch's."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from audiotune.cli import build_parser, config_from_args
from audiotune.engine.pretrain import _tables
from audiotune.models.backbones import input_spec, resolve_config


def validation_rows(ds: dict, tmp_path: Path, *extra: str) -> tuple[int, list[str]]:
    argv = ["pretrain", "--model", "ecapa_tdnn", "-i", str(ds["prefix"]), "-d", str(ds["split"] / "train.csv"),
            "-o", str(tmp_path / "run"), *extra]
    config = resolve_config(config_from_args(build_parser().parse_args(argv)))
    tables, _ = _tables(config, input_spec(config), tmp_path, writes=False)
    return len(tables["train"]), sorted(tables["val"].index)


def test_val_share_sets_how_many_clips_validate_pretraining(uid_dataset: dict, tmp_path: Path) -> None:
    assert validation_rows(uid_dataset, tmp_path)[0] == 15  # 16 clips: a tenth, at least one
    trained, val = validation_rows(uid_dataset, tmp_path, "--val_share", "0.25")
    assert (trained, len(val)) == (12, 4)
    assert validation_rows(uid_dataset, tmp_path, "--val_share", "0.25")[1] == val  # seeded
    assert validation_rows(uid_dataset, tmp_path, "--val_share", "0.25", "--seed", "7")[1] != val


def test_val_share_draws_the_rows_train_draws_and_an_earlier_run_keeps_its_own(uid_dataset: dict,
                                                                                tmp_path: Path) -> None:
    """--val_share is one draw: a pretraining and a fine-tuning on the same table with the same seed validate on the
    same clips (so the fine-tuning does not validate on clips its encoder pretrained on); a run of an earlier config
    version (resumed) keeps the rows it was drawn."""
    from audiotune.config import VALIDATION_DRAW_VERSION
    from audiotune.data.prepare import prepare_training_data

    share = ("--val_share", "0.25", "--seed", "3")
    only_train = tmp_path / "only_train"  # a split with no val.csv: train draws its validation rows
    only_train.mkdir()
    (only_train / "train.csv").write_bytes((uid_dataset["split"] / "train.csv").read_bytes())
    argv = ["train", "--model", "ecapa_tdnn", "-i", str(uid_dataset["prefix"]), "-d", str(only_train), "-l",
            str(uid_dataset["labels"]), "-o", str(tmp_path / "ft"), *share]
    config = resolve_config(config_from_args(build_parser().parse_args(argv)))
    fine_tuning = prepare_training_data(config, input_spec(config), tmp_path / "ft")
    assert validation_rows(uid_dataset, tmp_path, *share)[1] == sorted(fine_tuning.tables["val"].index)

    argv = ["pretrain", "--model", "ecapa_tdnn", "-i", str(uid_dataset["prefix"]), "-d",
            str(uid_dataset["split"] / "train.csv"), "-o", str(tmp_path / "run"), *share]
    earlier = resolve_config(config_from_args(build_parser().parse_args(argv)))
    earlier.version = VALIDATION_DRAW_VERSION - 1
    tables, _ = _tables(earlier, input_spec(earlier), tmp_path, writes=False)
    assert sorted(tables["val"].index) != sorted(fine_tuning.tables["val"].index) and len(tables["val"]) == 4



def tiny_pretraining_checkpoint(folder: Path) -> Path:
    """A tiny wav2vec2 with its quantizer (what TAPT continues), saved where a hub id's files would be."""
    import transformers
    from conftest import HF_TINY

    torch.manual_seed(0)
    tiny = transformers.Wav2Vec2Config(**HF_TINY, codevector_dim=16, proj_codevector_dim=16)
    transformers.Wav2Vec2ForPreTraining(tiny).save_pretrained(folder)
    return folder

def test_val_size_0_pretrains_on_every_clip_and_keeps_the_last_weights(uid_dataset: dict, tmp_path: Path) -> None:
    """Without a val split, --val_size 0 validates on nothing (the emotion seed's TAPT and P-TAPT): every clip
    trains, and the encoder written is the one of the last step."""
    from audiotune.cli import main

    argv = ["pretrain", "--model", "ecapa_tdnn", "-i", str(uid_dataset["prefix"]), "-d",
            str(uid_dataset["split"] / "train.csv"), "-o", str(tmp_path / "run"), "--val_size", "0"]
    config = resolve_config(config_from_args(build_parser().parse_args(argv)))
    tables, _ = _tables(config, input_spec(config), tmp_path, writes=False)
    assert set(tables) == {"train"} and len(tables["train"]) == 16

    checkpoint = tiny_pretraining_checkpoint(tmp_path / "w2v2")
    out = tmp_path / "tapt"
    assert main(["pretrain", "--model", "hf", "-c", str(checkpoint), "--objective", "tapt", "-i",
                 str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"] / "train.csv"), "-o", str(out), "-bs", "4",
                 "--training_steps", "3", "--clip_length", "0", "--val_size", "0", "--num_workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_run"] == 3 and metrics["best_val_loss"] is None and not (out / "validation.csv").exists()
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    saved = load_file(out / "encoder" / "model.safetensors")
    weight = "wav2vec2.encoder.layers.0.attention.q_proj.weight"
    trained = next(v for k, v in last.items() if k.endswith(weight.removeprefix("wav2vec2.")))
    assert torch.equal(saved[weight], trained)


@pytest.mark.slow
def test_the_ssast_seed_recipe_keeps_the_last_epoch_although_validation_liked_an_earlier_one(
        uid_dataset: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """seeds/naip_ssast_pretrain: val.csv is scored every epoch and chooses nothing, as in the seed; --keep best
    would have saved the first epoch here."""
    import pytorch_lightning as pl

    from audiotune.cli import main
    from audiotune.engine import pretrain
    from audiotune.engine.trainer import build_trainer

    class LaterEpochsWorse(pl.Callback):
        """What the checkpoints see of the second epoch's validation: a worse loss than the first's (it runs before
        them), so that the first epoch is the best whatever the losses of this tiny run do."""

        def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if trainer.current_epoch > 0:
                trainer.callback_metrics["val_loss"] = torch.tensor(1e9)

    def with_worse_later_epochs(*args: object, callbacks: tuple = (), **kwargs: object) -> object:
        return build_trainer(*args, callbacks=[*callbacks, LaterEpochsWorse()], **kwargs)

    monkeypatch.setattr(pretrain, "build_trainer", with_worse_later_epochs)
    small = ["--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape", "16", "--tshape",
             "16", "--fstride", "16", "--tstride", "16", "-bs", "4", "--seed", "2", "--mask_patch", "3",
             "--cluster_factor", "2", "--cluster_side", "fixed", "-e", "2", "--scheduler", "none", "-lr", "0.01",
             "--remove_dc", "false"]
    runs = {keep: tmp_path / keep for keep in ("last", "best")}
    for keep, run in runs.items():
        assert main(["pretrain", "--config", "seeds/naip_ssast_pretrain", "-i", str(uid_dataset["prefix"]), "-d",
                     str(uid_dataset["split"]), "-o", str(run), *small, "--keep", keep]) == 0
    log = pd.read_csv(runs["last"] / "logs" / "metrics.csv")
    loss = log.dropna(subset=["val_loss"]).groupby("epoch")["val_loss"].last().to_numpy()
    assert len(loss) == 2
    metrics = {keep: json.loads((run / "metrics.json").read_text()) for keep, run in runs.items()}
    assert metrics["last"]["weights"] == "last epoch (--keep last)"
    assert metrics["last"]["best_val_loss"] == pytest.approx(loss[0])
    assert metrics["best"]["weights"] == "best validation loss (best.ckpt)"

    def saved_is(run: Path, checkpoint: str) -> bool:
        state = torch.load(run / "checkpoints" / checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        saved = load_file(run / "model.safetensors")
        return all(torch.equal(tensor, state[f"backbone.model.{name}"]) for name, tensor in saved.items())

    assert saved_is(runs["last"], "last.ckpt") and not saved_is(runs["last"], "best.ckpt")
    assert saved_is(runs["best"], "best.ckpt")


def test_a_resumed_pretraining_keeps_its_options_unless_the_changes_are_allowed_and_recorded(
        uid_dataset: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """As a resumed training run: more epochs go on; another learning rate is an error naming it, or with
    --allow_changes goes on and is recorded in config_history.yaml (before, the new options silently replaced
    config.yaml)."""
    import yaml

    from audiotune.cli import main
    from audiotune.outputs import CONFIG_FILE, CONFIG_HISTORY_FILE

    run = tmp_path / "run"
    small = ["pretrain", "--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape", "16",
             "--tshape", "16", "--fstride", "16", "--tstride", "16", "-bs", "8", "--mask_patch", "3",
             "--cluster_factor", "2", "--val_size", "0", "-i", str(uid_dataset["prefix"]), "-d",
             str(uid_dataset["split"] / "train.csv"), "-o", str(run), "-lr", "0.01"]
    assert main([*small, "-e", "1"]) == 0
    log_csv = run / "logs" / "metrics.csv"
    first = pd.read_csv(log_csv)
    assert main([*small, "-e", "1", "--resume"]) == 0  # nothing left to train: its log and history stay
    assert pd.read_csv(log_csv).equals(first)
    assert main([*small, "-e", "2", "--resume"]) == 0  # how long it trains is free
    logged = pd.read_csv(log_csv)  # the first epoch's rows kept in front of the second's
    assert sorted(logged["epoch"].dropna().unique()) == [0, 1] and logged.iloc[:len(first)].equals(first)
    assert len(json.loads((run / "metrics.json").read_text())["history"]["train_loss_epoch"]) == 2
    capsys.readouterr()
    assert main([*small[:-1], "0.001", "-e", "3", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "--resume with options that differ from the run's config.yaml (learning_rate 0.01 -> 0.001); resume " \
           f"with the run's own options (--config {run / 'config.yaml'} gives them all; -e N trains longer)" in error
    assert yaml.safe_load((run / CONFIG_FILE).read_text())["train"]["learning_rate"] == 0.01
    assert main([*small[:-1], "0.001", "-e", "3", "--resume", "--allow_changes"]) == 0
    history = yaml.safe_load((run / CONFIG_HISTORY_FILE).read_text())
    assert [entry["changes"] for entry in history] == [{"train.learning_rate": {"from": 0.01, "to": 0.001}}]
    assert yaml.safe_load((run / CONFIG_FILE).read_text())["train"]["learning_rate"] == 0.001


def test_a_frozen_encoder_is_refused_by_pretraining(uid_dataset: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """--freeze true would pretrain nothing (it was accepted, and the encoder trained anyway)."""
    from audiotune.cli import main

    run = tmp_path / "run"
    assert main(["pretrain", "--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape",
                 "16", "--tshape", "16", "--fstride", "16", "--tstride", "16", "-bs", "8", "--mask_patch", "3",
                 "--cluster_factor", "2", "--val_size", "0", "-i", str(uid_dataset["prefix"]), "-d",
                 str(uid_dataset["split"] / "train.csv"), "-o", str(run), "--freeze", "true"]) == 2
    assert "--freeze true: pretraining trains the encoder" in capsys.readouterr().err and not run.exists()


def test_more_masked_patches_than_a_clip_has_are_named_and_leave_no_run(uid_dataset: dict, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """A command that fails before it has anything to score or resume leaves no directory it made."""
    from audiotune.cli import main

    run = tmp_path / "run"
    argv = ["pretrain", "--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape", "16",
            "--tshape", "16", "--fstride", "16", "--tstride", "16", "-bs", "8", "--mask_patch", "100",
            "--cluster_factor", "2", "--val_size", "0", "-i", str(uid_dataset["prefix"]), "-d",
            str(uid_dataset["split"] / "train.csv"), "-o", str(run)]
    for _ in range(2):  # and again: the same error, not a run to resume
        assert main(argv) == 2
        assert "--mask_patch 100: more patches than a clip has (8: 2 x 4 of this --num_mel_bins" in \
            capsys.readouterr().err and not run.exists()


def test_validation_losses_stay_on_the_device_until_the_epoch_ends() -> None:
    """A validation step keeps its losses as they are (nothing read back from the device per batch); the epoch's
    end reads them once and logs the mean weighted by batch size."""
    from types import SimpleNamespace

    from conftest import OnDevice

    from audiotune.config import RunConfig
    from audiotune.engine.pretrain import PretrainModule

    class Losses(torch.nn.Module):
        pretrain_objectives = ("tapt",)
        objective_problems = ()

        def start_pretraining(self, objective: str, config: RunConfig) -> None:
            pass

        def clip_problems(self, uids: list[str]) -> list[str]:
            return []

        def pretrain_loss(self, batch: dict, objective: str, step: int = 0, rng: object = None) -> dict:
            return {"loss": batch["inputs"].sum()}

        def save_pretrained_outputs(self, folder: Path) -> list[Path]:
            return []

    module = PretrainModule(Losses(), "tapt", RunConfig(), steps_per_epoch=1)  # type: ignore[arg-type]
    module._trainer = SimpleNamespace(world_size=1, global_rank=0, global_step=0,  # type: ignore[assignment]
                                      training=False)
    logged = {}
    module.log = lambda name, value, **kwargs: logged.update({name: value})  # type: ignore[method-assign]
    module.on_validation_epoch_start()
    for index, values in enumerate(([1.0, 2.0], [6.0])):
        inputs = torch.tensor(values).as_subclass(OnDevice)
        module.validation_step({"uid": [f"{index}{n}" for n in range(len(values))], "inputs": inputs}, index)
    with OnDevice.read_back():
        module.on_validation_epoch_end()
    assert logged["val_loss"] == pytest.approx((3.0 * 2 + 6.0 * 1) / 3)


@pytest.mark.slow
def test_a_resumed_pretraining_ends_as_one_straight_through(uid_dataset: dict, tmp_path: Path) -> None:
    """Stopped after its first epoch and resumed, SSAST's masked-patch pretraining ends with the weights of the same
    run straight through: each epoch's masks and dropout come from the seed and the epoch."""
    from safetensors.torch import load_file

    from audiotune.cli import main

    def pretrain(out: Path, *extra: str) -> int:
        return main(["pretrain", "--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape",
                     "16", "--tshape", "16", "--fstride", "16", "--tstride", "16", "-bs", "8", "--mask_patch", "3",
                     "--cluster_factor", "2", "--val_size", "0", "-i", str(uid_dataset["prefix"]), "-d",
                     str(uid_dataset["split"] / "train.csv"), "-o", str(out), "--scheduler", "none", *extra])

    assert pretrain(tmp_path / "straight", "-e", "3") == 0
    assert pretrain(tmp_path / "resumed", "-e", "1") == 0
    assert pretrain(tmp_path / "resumed", "-e", "3", "--resume") == 0
    straight, resumed = (load_file(tmp_path / run / "model.safetensors") for run in ("straight", "resumed"))
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_a_step_budget_ending_inside_an_epoch_validates_and_checkpoints_its_last_step(uid_dataset: dict,
                                                                                      tmp_path: Path) -> None:
    """Four batches an epoch, six steps: the second epoch stops after two; it is validated and checkpointed there,
    as an epoch's end is, so its steps can be the kept weights and last.ckpt holds them."""
    from audiotune.cli import main

    checkpoint = tiny_pretraining_checkpoint(tmp_path / "w2v2")
    out = tmp_path / "tapt"
    assert main(["pretrain", "--model", "hf", "-c", str(checkpoint), "--objective", "tapt", "-i",
                 str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-o", str(out), "-bs", "4",
                 "--training_steps", "6", "--clip_length", "0", "--num_workers", "0", "--keep", "last"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_run"] == 6 and len(metrics["history"]["val_loss"]) == 2
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
