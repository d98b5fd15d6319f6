"""End to end through the command line: train → evaluate → extract on a small generated dataset."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import SMALL_ECAPA, make_uid_dataset
from safetensors.torch import load_file

from audiotune.cli import main
from audiotune.models.backbones import input_spec
from audiotune.models.checkpoint import load_run
from audiotune.outputs import CONFIG_FILE, INPUT_SPEC_FILE


def train_args(ds: dict, out, *extra: str) -> list[str]:
    return ["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
            "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "2", "-bs", "4", "--seed", "3", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One finished two-epoch run for the tests that only read it (evaluate and extract write elsewhere)."""
    dataset = make_uid_dataset(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("run")
    assert main(train_args(dataset, out)) == 0
    return {**dataset, "run": out}


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(trained: dict) -> None:
    run = trained["run"]
    for name in ("config.yaml", "model.safetensors", "metrics.json", "predictions.parquet",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt", "logs/metrics.csv",
                 "plots/training_curves.png", "plots/confusion_val_pitch.png", "plots/roc_test_loud+long.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"val", "test"}
    for split in ("val", "test"):
        m = metrics[split]
        assert m["n"] == 4
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
        assert set(m["auc"]) == {"loud", "long"}
        assert m["heads"]["pitch"]["classes"] == ["high", "low"]
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert {"uid", "split", "score:pitch=high", "target:loud", "predicted:pitch"} <= set(predictions.columns)
    assert len(predictions) == 8 and predictions.filter(like="score:").notna().all().all()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert [h["kind"] for h in config["heads"]] == ["categorical", "binary"]
    assert config["train"]["epochs"] == 2 and config["model"]["channels"] == [16, 16, 48]


def test_the_run_keeps_the_users_options_beside_what_the_model_read(trained: dict) -> None:
    run = trained["run"]
    config = yaml.safe_load((run / CONFIG_FILE).read_text())
    assert config["features"]["freqm"] is None and config["audio"]["min_samples"] == 0  # the model's, as asked
    read = json.loads((run / INPUT_SPEC_FILE).read_text())
    # ECAPA-TDNN's own: masks while it trains, clips long enough for its widest padding (2 frames)
    assert (read["num_mel_bins"], read["freqm"], read["timem"], read["min_samples"]) == (24, 8, 10, 400 + 2 * 160)
    loaded, _ = load_run(run)
    assert input_spec(loaded).to_dict() == read  # a run read back derives the input it was trained with


def test_evaluate_rebuilds_the_model_and_reproduces_test_metrics(trained: dict, tmp_path) -> None:
    out = tmp_path / "eval"
    assert main(["evaluate", "--run", str(trained["run"]), "-d", str(trained["split"] / "test.csv"),
                 "-o", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())["data"]
    original = json.loads((trained["run"] / "metrics.json").read_text())["test"]
    assert again["accuracy"] == pytest.approx(original["accuracy"])
    assert again["auc"] == pytest.approx(original["auc"])
    before = pd.read_parquet(trained["run"] / "predictions.parquet").query("split == 'test'").set_index("uid")
    after = pd.read_parquet(out / "predictions.parquet").set_index("uid").loc[before.index]
    np.testing.assert_allclose(after["score:loud"], before["score:loud"], atol=1e-5)


@pytest.mark.slow
def test_evaluate_on_a_split_directory_scores_every_split(trained: dict, tmp_path) -> None:
    assert main(["evaluate", "--run", str(trained["run"] / "model.safetensors"), "-d", str(trained["split"]),
                 "-o", str(tmp_path)]) == 0
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {"train", "val", "test"}


@pytest.mark.parametrize("kind, dim", [("pt", 16), ("ft", 16)])
def test_extract_streams_embeddings(trained: dict, tmp_path, kind: str, dim: int) -> None:
    out = tmp_path / f"{kind}.parquet"
    csv = trained["split"] / "train.csv"
    assert main(["extract", "--run", str(trained["run"]), "-d", str(csv), "--embedding_type", kind,
                 "--out", str(out), "-bs", "3"]) == 0
    table = pd.read_parquet(out)
    assert sorted(table["uid"]) == sorted(pd.read_csv(csv)["uid"])
    matrix = np.stack(table["embedding"].to_numpy())
    assert matrix.shape == (16, dim) and np.isfinite(matrix).all()


def test_st_embeddings_of_a_run_without_a_shared_dense_layer_are_refused(trained: dict, tmp_path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "st.parquet"
    assert main(["extract", "--run", str(trained["run"]), "-d", str(trained["split"] / "test.csv"),
                 "--embedding_type", "st", "--out", str(out)]) == 2
    assert "embedding type 'st' needs a model trained with --shared_dense" in capsys.readouterr().err
    assert not out.exists()


def test_ft_embeddings_merge_heads_by_pooling_mode(trained: dict, tmp_path) -> None:
    csv = trained["split"] / "test.csv"
    tables = {}
    for mode in ("mean", "sum"):
        out = tmp_path / f"{mode}.parquet"
        assert main(["extract", "--run", str(trained["run"]), "-d", str(csv), "--embedding_type", "ft",
                     "--pooling_mode", mode, "--out", str(out)]) == 0
        tables[mode] = pd.read_parquet(out).set_index("uid").sort_index()
    mean = np.stack(tables["mean"]["embedding"].to_numpy())
    total = np.stack(tables["sum"]["embedding"].to_numpy())
    np.testing.assert_allclose(total, 2 * mean, rtol=1e-5, atol=1e-6)  # two heads


def test_saved_weights_are_the_best_validation_checkpoint(trained: dict) -> None:
    import torch

    weights = load_file(str(trained["run"] / "model.safetensors"))
    best = torch.load(trained["run"] / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, best["state_dict"][f"model.{name}"])


@pytest.mark.slow
def test_same_seed_gives_same_metrics(uid_dataset: dict, tmp_path) -> None:
    results = []
    for name in ("a", "b"):
        assert main(train_args(uid_dataset, tmp_path / name, "-e", "1")) == 0
        results.append(json.loads((tmp_path / name / "metrics.json").read_text())["test"])
    assert results[0]["auc"] == results[1]["auc"] and results[0]["accuracy"] == results[1]["accuracy"]
    a = pd.read_parquet(tmp_path / "a" / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "b" / "predictions.parquet")
    np.testing.assert_allclose(a.filter(like="score:").to_numpy(), b.filter(like="score:").to_numpy(), atol=1e-6)


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(uid_dataset: dict, tmp_path) -> None:
    assert main(train_args(uid_dataset, tmp_path, "-e", "1")) == 0
    assert main(train_args(uid_dataset, tmp_path, "-e", "3", "--resume")) == 0
    log = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    assert sorted(log["epoch"].dropna().unique().astype(int)) == [0, 1, 2]
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_run"] == 3


@pytest.mark.slow
def test_a_resumed_run_ends_as_one_straight_through(uid_dataset: dict, tmp_path) -> None:
    """Stopped after its first epoch and resumed, a run with dropout and augmentation ends with the weights of the
    same run trained straight through: each epoch's draws come from the seed and the epoch."""
    from safetensors.torch import load_file

    same = ("--keep", "last", "--scheduler", "none", "--final_dropout", "0.3", "--tshift", "0.5", "--gain", "0.5")
    assert main(train_args(uid_dataset, tmp_path / "straight", "-e", "3", *same)) == 0
    assert main(train_args(uid_dataset, tmp_path / "resumed", "-e", "1", *same)) == 0
    assert main(train_args(uid_dataset, tmp_path / "resumed", "-e", "3", "--resume", *same)) == 0
    straight, resumed = (load_file(tmp_path / run / "model.safetensors") for run in ("straight", "resumed"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


@pytest.mark.parametrize("validation", [True, False])
@pytest.mark.slow
def test_last_checkpoint_holds_every_finished_epoch(uid_dataset: dict, tmp_path, validation: bool) -> None:
    """last.ckpt, what a resumed run continues from, is replaced after every epoch, also when validation has
    stopped improving (here: a constant validation loss from the second epoch on) and without validation."""
    import pytorch_lightning as pl
    import torch

    from audiotune.cli import build_parser, config_from_args
    from audiotune.engine.train import train

    class Probe(pl.Callback):
        def __init__(self) -> None:
            self.seen: list[tuple[int, int]] = []

        def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if trainer.current_epoch > 0:  # runs before the checkpoint callbacks: no later epoch is a new best
                trainer.callback_metrics["val_loss"] = torch.tensor(1e9)

        def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if trainer.current_epoch > 0:
                saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
                self.seen.append((saved["global_step"], trainer.global_step))

    extra = () if validation else ("--val_size", "0")
    split = uid_dataset["split"]
    if not validation:
        pd.concat([pd.read_csv(split / "train.csv"), pd.read_csv(split / "val.csv")]).to_csv(
            split / "train.csv", index=False)
        (split / "val.csv").unlink()
    config = config_from_args(build_parser().parse_args(train_args(uid_dataset, tmp_path, "-e", "4", *extra)))
    probe = Probe()
    metrics = train(config, callbacks=[probe])
    assert len(probe.seen) == 3 and all(saved == done > 0 for saved, done in probe.seen), probe.seen
    assert ("val" in metrics) == validation
    if validation:  # the best epoch is still the first one
        best = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
        assert best["epoch"] == 0 and best["global_step"] < probe.seen[-1][1]


@pytest.mark.slow
def test_resume_without_a_checkpoint_is_a_clear_error(uid_dataset: dict, tmp_path, capsys) -> None:
    assert main(train_args(uid_dataset, tmp_path, "--resume", "True")) == 2
    assert "last.ckpt" in capsys.readouterr().err


@pytest.mark.shared
@pytest.mark.slow
def test_train_starts_from_a_speechbrain_checkpoint(uid_dataset: dict, tmp_path, capsys) -> None:
    """`--checkpoint` loads the real SpeechBrain-layout ECAPA strictly and fine-tunes from it."""
    import torch
    from conftest import shared_path

    ckpt = shared_path("weights/ecapa_tdnn_c512.ckpt")
    args = ["train", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-l",
            str(uid_dataset["labels"]), "-o", str(tmp_path), "-c", str(ckpt), "--features", "fbank",
            "--num_mel_bins", "80", "--channels", "512", "512", "512", "--kernel_sizes", "5", "3", "3",
            "--dilations", "1", "2", "3", "-e", "1", "-bs", "4", "-lr", "1e-6", "--clf_bottleneck", "16"]
    assert main(args) == 0
    original = torch.load(ckpt, map_location="cpu", weights_only=True)
    trained = load_file(str(tmp_path / "model.safetensors"))
    # a tiny learning rate keeps the weights close to the checkpoint; a random init would be far away
    weight = "blocks.0.conv.conv.weight"
    assert torch.allclose(trained[f"backbone.ecapa.{weight}"], original[weight], atol=1e-3)
    wrong = args[:-14] + ["--channels", "256", "256", "256", "--kernel_sizes", "5", "3", "3", "--dilations",
                          "1", "2", "3", "-e", "1", "-o", str(tmp_path / "wrong")]
    assert main(wrong) == 2
    assert "ecapa_tdnn_c512.ckpt" in capsys.readouterr().err
