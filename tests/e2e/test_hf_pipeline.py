"""Pretrained encoders through the command line: train, evaluate, extract, probe on tiny offline checkpoints."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import HF_KINDS
from safetensors.torch import load_file

from audiotune.cli import main

pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning"),
              pytest.mark.slow]
KINDS = ["w2v_group", "w2v_layer", "hubert", "wavlm"]


def train(ds: dict, ckpt, out, *extra: str) -> dict:
    args = ["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
            "--model", "hf", "-c", str(ckpt), "-e", "2", "-bs", "4", "--clf_bottleneck", "8", "--seed", "1",
            "--cache_dir", str(out.parent / "cache"), *extra]
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def embeddings(run, csv, out, *extra: str) -> np.ndarray:
    assert main(["extract", "--run", str(run), "-d", str(csv), "--out", str(out), *extra]) == 0
    return np.stack(pd.read_parquet(out).sort_values("uid")["embedding"].to_numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_train_evaluate_extract_probe(uid_dataset: dict, hf_checkpoints: dict, tmp_path, kind: str) -> None:
    ckpt = hf_checkpoints[kind]
    metrics = train(uid_dataset, ckpt, tmp_path / "run")
    assert metrics["feature_cache"]["used"] and metrics["test"]["n"] == 4
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "freeze: true" in config and "resample_rate: 16000" in config
    read = json.loads((tmp_path / "run" / "input_spec.json").read_text())  # the extractor's, not the options'
    assert (read["features"], read["waveform_norm"]) == ("waveform", HF_KINDS[kind][3][0])
    assert (tmp_path / "run" / "encoder" / "preprocessor_config.json").is_file()  # so a rebuild reads the same
    # the run rebuilds without the original checkpoint directory
    moved = tmp_path / "moved"
    shutil.move(str(ckpt), moved)
    try:
        test_csv = uid_dataset["split"] / "test.csv"
        assert main(["evaluate", "--run", str(tmp_path / "run"), "-d", str(test_csv), "-o", str(tmp_path / "ev")]) == 0
        again = json.loads((tmp_path / "ev" / "metrics.json").read_text())["data"]
        assert again["accuracy"] == metrics["test"]["accuracy"]
        pt = embeddings(tmp_path / "run", test_csv, tmp_path / "pt.parquet", "--embedding_type", "pt")
        first = embeddings(tmp_path / "run", test_csv, tmp_path / "pt0.parquet", "--embedding_type", "pt",
                           "--layer", "0")
        assert pt.shape == (4, 32) and np.isfinite(pt).all() and not np.allclose(pt, first)
        ft = embeddings(tmp_path / "run", test_csv, tmp_path / "ft.parquet", "--embedding_type", "ft")
        assert ft.shape == (4, 8)
    finally:
        shutil.move(str(moved), ckpt)
    assert main(["probe", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-l",
                 str(uid_dataset["labels"]), "-o", str(tmp_path / "probe"), "--model", "hf", "-c", str(ckpt),
                 "-e", "2", "-bs", "4", "--clf_bottleneck", "8", "--cache_dir", str(tmp_path / "cache")]) == 0
    table = pd.read_csv(tmp_path / "probe" / "probe.csv")
    assert table["layer"].astype(str).tolist() == ["0", "1", "2", "weighted"]
    assert table["val_accuracy"].notna().all() and (tmp_path / "probe" / "plots" / "probe.png").is_file()
    probe_info = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert probe_info["feature_cache"]["encoded"] == 0  # the training run above filled the cache


def test_weighted_sum_trains_and_is_reported(uid_dataset: dict, hf_checkpoints: dict, tmp_path) -> None:
    metrics = train(uid_dataset, hf_checkpoints["w2v_layer"], tmp_path / "run", "--weighted", "-e", "3",
                    "-lr", "0.05")
    weights = metrics["layer_weights"]
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-5 and max(weights) - min(weights) > 1e-3
    assert (tmp_path / "run" / "plots" / "layer_weights.png").is_file()
    wt = embeddings(tmp_path / "run", uid_dataset["split"] / "test.csv", tmp_path / "wt.parquet",
                    "--embedding_type", "wt")
    assert wt.shape == (4, 32)
    # raw weights (the NAIP seeds'): learned as they are, on the max-pooled states the feature cache holds
    raw = train(uid_dataset, hf_checkpoints["w2v_layer"], tmp_path / "raw", "--weighted", "--layer_weights", "raw",
                "-pm", "max", "-e", "3", "-lr", "0.05")
    learned = load_file(str(tmp_path / "raw" / "model.safetensors"))["layer_weights"]
    assert raw["feature_cache"]["used"] and raw["layer_weights"] == pytest.approx(learned.tolist(), abs=1e-6)
    assert abs(sum(raw["layer_weights"]) - 1) > 1e-3


def test_freeze_options(uid_dataset: dict, hf_checkpoints: dict, tmp_path) -> None:
    ckpt = hf_checkpoints["w2v_group"]
    # the unused SpecAugment mask embedding is dropped when the encoder loads
    original = {k: v for k, v in load_file(str(ckpt / "model.safetensors")).items() if k != "masked_spec_embed"}
    train(uid_dataset, ckpt, tmp_path / "cnn", "--freeze", "False", "--freeze_feature_encoder", "-lr", "0.01")
    tuned = load_file(str(tmp_path / "cnn" / "model.safetensors"))
    conv = [k for k in original if k.startswith("feature_extractor.")]
    rest = [k for k in original if k.startswith("encoder.layers.") and k.endswith("weight")]
    assert conv and rest
    assert all(torch.equal(tuned[f"backbone.model.{k}"], original[k]) for k in conv)
    assert any(not torch.equal(tuned[f"backbone.model.{k}"], original[k]) for k in rest)
    metrics = train(uid_dataset, ckpt, tmp_path / "frozen", "--freeze")
    frozen = load_file(str(tmp_path / "frozen" / "model.safetensors"))
    assert all(torch.equal(frozen[f"backbone.model.{k}"], v) for k, v in original.items())
    assert metrics["feature_cache"]["used"]


def test_bf16_and_windows_change_embeddings_by_measured_amounts(uid_dataset: dict, hf_checkpoints: dict,
                                                                tmp_path) -> None:
    ckpt, test_csv = hf_checkpoints["w2v_layer"], uid_dataset["split"] / "test.csv"
    train(uid_dataset, ckpt, tmp_path / "fp32", "-e", "1")
    train(uid_dataset, ckpt, tmp_path / "bf16", "-e", "1", "--precision", "bf16")
    train(uid_dataset, ckpt, tmp_path / "win", "-e", "1", "--max_window", "0.2")
    fp32 = embeddings(tmp_path / "fp32", test_csv, tmp_path / "a.parquet", "--embedding_type", "pt")
    bf16 = embeddings(tmp_path / "bf16", test_csv, tmp_path / "b.parquet", "--embedding_type", "pt")
    windowed = embeddings(tmp_path / "win", test_csv, tmp_path / "c.parquet", "--embedding_type", "pt")
    relative = np.abs(bf16 - fp32).max() / np.abs(fp32).max()
    assert 0 < relative < 0.05  # bf16 keeps ~3 significant digits
    assert not np.allclose(windowed, fp32, atol=1e-4)  # clips of 0.6-0.75 s are cut into 0.2 s windows


@pytest.mark.parametrize("kind", ["w2v_group", "w2v_layer", "wavlm"])
def test_embedding_does_not_depend_on_the_batch(hf_checkpoints: dict, tmp_path, kind: str) -> None:
    """Through the real loader: each clip alone vs. batched with longer clips (atol 1e-4)."""
    import soundfile as sf
    from conftest import tone

    from audiotune.config import HeadSpec, RunConfig
    from audiotune.data.checked_audio import scan_audio
    from audiotune.data.loading import make_dataset, make_loader
    from audiotune.models.backbones import input_spec, resolve_config
    from audiotune.models.checkpoint import build_classifier

    rows = []
    for i, seconds in enumerate([0.3, 0.3, 0.55, 0.8, 0.3, 0.8]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, tone(200 + 90 * i, seconds, 16000, seed=i), 16000)
        rows.append({"uid": f"c{i}", "path": str(path), "expected_rate": np.nan})
    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", str(hf_checkpoints[kind])
    resolve_config(config)
    config.heads = [HeadSpec("y", "binary", ["y"])]
    inputs = input_spec(config)
    table, _ = scan_audio(pd.DataFrame(rows).set_index("uid"), inputs.audio(train=True), "x")
    model = build_classifier(config).eval()

    def pooled(frame: pd.DataFrame, batch_size: int) -> dict:
        config.train.batch_size = batch_size
        loader = make_loader(config, make_dataset(config, inputs, frame, np.zeros((len(frame), 1), np.float32)), frame,
                             False, model.backbone.padding, device=torch.device("cpu"))
        result = {}
        for batch in loader:
            result.update(zip(batch["uid"], model.pooled_states(batch["inputs"], batch["lengths"])))
        return result

    batched = pooled(table, 6)
    for uid in table.index:
        torch.testing.assert_close(batched[uid], pooled(table.loc[[uid]], 1)[uid], atol=1e-4, rtol=0)
