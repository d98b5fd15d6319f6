"""Pretraining's validation rows: a seeded tenth of the clips, the --val_share asked for, or none (--val_size 0)."""
from __future__ import annotations

from pathlib import Path

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


def test_val_size_0_pretrains_on_every_clip_and_keeps_the_last_weights(uid_dataset: dict, tmp_path: Path) -> None:
    """Without a val split, --val_size 0 validates on nothing (the emotion seed's TAPT and P-TAPT): every clip
    trains, and the encoder written is the one of the last step."""
    import json

    import torch
    import transformers
    from conftest import HF_TINY
    from safetensors.torch import load_file

    from audiotune.cli import main

    argv = ["pretrain", "--model", "ecapa_tdnn", "-i", str(uid_dataset["prefix"]), "-d",
            str(uid_dataset["split"] / "train.csv"), "-o", str(tmp_path / "run"), "--val_size", "0"]
    config = resolve_config(config_from_args(build_parser().parse_args(argv)))
    tables, _ = _tables(config, input_spec(config), tmp_path, writes=False)
    assert set(tables) == {"train"} and len(tables["train"]) == 16

    torch.manual_seed(0)
    checkpoint = tmp_path / "w2v2"
    tiny = transformers.Wav2Vec2Config(**HF_TINY, codevector_dim=16, proj_codevector_dim=16)
    transformers.Wav2Vec2ForPreTraining(tiny).save_pretrained(checkpoint)
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
