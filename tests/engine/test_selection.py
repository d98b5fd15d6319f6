"""Model selection: --monitor picks the best epoch (and stops early) by the metric it names."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL_ECAPA

import audiotune.engine.module as module
from audiotune.cli import main
from audiotune.config import HeadSpec
from audiotune.engine.selection import check_monitor, monitor_value


def train(ds: dict, out: Path, *extra: str) -> int:
    return main(["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
                 "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "5", "-bs", "4", "-lr", "3e-3", "--seed", "1", *extra])


def best_epoch(run: Path) -> int:
    return int(torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["epoch"])


def per_epoch(run: Path, column: str) -> np.ndarray:
    log = pd.read_csv(run / "logs" / "metrics.csv")
    return log.dropna(subset=[column]).groupby("epoch")[column].last().to_numpy()


@pytest.mark.slow
def test_the_monitored_metric_picks_the_epoch_when_it_disagrees_with_the_loss(
        uid_dataset: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = module.compute_metrics

    def disagreeing(scores: np.ndarray, targets: np.ndarray, heads: list[HeadSpec]) -> dict:
        # a "uar" that rises with the validation cross-entropy: it must pick the epoch the loss likes least
        metrics = real(scores, targets, heads)
        pitch = slice(0, 2)
        metrics["uar"] = float(-np.mean(np.log(np.sum(scores[:, pitch] * targets[:, pitch], axis=1))))
        return metrics

    monkeypatch.setattr(module, "compute_metrics", disagreeing)
    assert train(uid_dataset, tmp_path / "by_uar", "--monitor", "uar") == 0
    uar = per_epoch(tmp_path / "by_uar", "val_uar")
    assert len(uar) == 5 and len(set(np.round(uar, 6))) > 1
    assert best_epoch(tmp_path / "by_uar") == int(np.argmax(uar))
    metrics = json.loads((tmp_path / "by_uar" / "metrics.json").read_text())
    assert metrics["weights"].startswith("best validation uar")

    monkeypatch.undo()
    assert train(uid_dataset, tmp_path / "by_loss") == 0
    loss = per_epoch(tmp_path / "by_loss", "val_loss")
    assert best_epoch(tmp_path / "by_loss") == int(np.argmin(loss))
    assert best_epoch(tmp_path / "by_loss") != best_epoch(tmp_path / "by_uar")


@pytest.mark.slow
def test_early_stopping_follows_the_monitor(uid_dataset: dict, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real = module.compute_metrics
    calls = {"n": 0}

    def falling(scores: np.ndarray, targets: np.ndarray, heads: list[HeadSpec]) -> dict:
        calls["n"] += 1
        return {**real(scores, targets, heads), "macro_f1": 1.0 / calls["n"]}  # worse every epoch

    monkeypatch.setattr(module, "compute_metrics", falling)
    assert train(uid_dataset, tmp_path / "run", "--monitor", "macro_f1", "--patience", "2") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_run"] < 5 and best_epoch(tmp_path / "run") == 0


def test_a_monitor_the_heads_cannot_define_is_an_error(uid_dataset: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert train(uid_dataset, tmp_path / "run", "--monitor", "ccc") == 2
    assert "--monitor ccc needs a head of kind regression" in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="choose one of"):
        check_monitor("f2", [])
    # every classification head reports weighted_f1 (a binary head: the mean of its columns'): each may pick by it
    binary = HeadSpec("loud", "binary", ["loud"])
    for monitor in ("weighted_f1", "macro_f1", "uar", "accuracy", "auc"):
        check_monitor(monitor, [binary])


def test_monitor_values_average_heads_and_skip_undefined() -> None:
    assert monitor_value({"auc": {"a": 0.6, "b": None, "c": 0.8}}, "auc") == pytest.approx(0.7)
    assert monitor_value({"auc": {"a": None}}, "auc") is None
    assert monitor_value({"uar": None}, "uar") is None
    assert monitor_value({"uar": 0.5}, "uar") == 0.5


def test_auc_is_a_mean_over_heads_each_the_mean_of_its_columns() -> None:
    """A binary head of two columns and one of one: --monitor auc (and cv's statistics) average the heads, as every
    other metric, not the three columns; each head has its own auc, each column too."""
    from sklearn.metrics import roc_auc_score

    from audiotune.engine.metrics import compute_metrics

    targets = np.array([[0, 1, 0], [1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]], dtype=float)
    scores = np.array([[0.2, 0.9, 0.4], [0.7, 0.3, 0.6], [0.4, 0.6, 0.5], [0.3, 0.4, 0.3], [0.8, 0.7, 0.2],
                       [0.6, 0.2, 0.9]])
    heads = [HeadSpec("A", "binary", ["a1", "a2"]), HeadSpec("B", "binary", ["b"])]
    metrics = compute_metrics(scores, targets, heads)
    column = [roc_auc_score(targets[:, j], scores[:, j]) for j in range(3)]
    assert metrics["auc"] == pytest.approx(dict(zip(["a1", "a2", "b"], column)))
    assert metrics["heads"]["A"]["columns"]["a2"]["auc"] == pytest.approx(column[1])
    assert metrics["heads"]["A"]["auc"] == pytest.approx((column[0] + column[1]) / 2)
    assert metrics["heads"]["B"]["auc"] == pytest.approx(column[2])
    expected = ((column[0] + column[1]) / 2 + column[2]) / 2
    assert monitor_value(metrics, "auc") == pytest.approx(expected) != pytest.approx(np.mean(column))


def test_every_monitor_is_a_value_the_head_kinds_it_needs_are_scored_with_and_others_are_refused() -> None:
    """--monitor's choices, the head kinds each needs and the metrics written are three declarations: a metric a
    monitor names is one compute_metrics gives a head of each kind it needs, and no head of another kind."""
    from audiotune.config.sections import MONITORS, monitor_key
    from audiotune.engine.metrics import compute_metrics
    from audiotune.engine.selection import NEEDS
    from audiotune.outputs import VAL_LOSS_COLUMN

    assert monitor_key("loss") == VAL_LOSS_COLUMN  # the log's column the report draws with the training loss

    targets = {"binary": np.array([[0.0], [1.0], [1.0], [0.0]]), "categorical": np.eye(2)[[0, 1, 1, 0]],
               "regression": np.array([[0.1], [0.9], [0.5], [0.2]])}
    scores = {"binary": np.array([[0.2], [0.7], [0.6], [0.4]]),
              "categorical": np.array([[2.0, 0.1], [0.1, 1.0], [0.3, 0.2], [1.0, 0.0]]),
              "regression": np.array([[0.2], [0.8], [0.4], [0.1]])}
    heads = {"binary": HeadSpec("b", "binary", ["b"]), "categorical": HeadSpec("c", "categorical", ["c"], ["x", "y"]),
             "regression": HeadSpec("r", "regression", ["r"])}
    for monitor in set(MONITORS) - {"loss"}:
        for kind, head in heads.items():
            value = monitor_value(compute_metrics(scores[kind], targets[kind], [head]), monitor)
            if kind in NEEDS[monitor]:
                assert value is not None and np.isfinite(value), (monitor, kind)
            else:
                assert value is None, (monitor, kind)
                with pytest.raises(ValueError, match=f"--monitor {monitor} needs a head of kind"):
                    check_monitor(monitor, [head])


@pytest.mark.slow
def test_ema_weights_are_the_ones_validated_and_saved(uid_dataset: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    assert train(uid_dataset, tmp_path / "plain", "-e", "2") == 0
    assert train(uid_dataset, tmp_path / "ema", "-e", "2", "--ema", "0.9") == 0
    best = torch.load(tmp_path / "ema" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert "current_model_state" in best  # the averaged weights are the checkpoint's state_dict
    averaged = {k.removeprefix("model."): v for k, v in best["state_dict"].items()}
    current = {k.removeprefix("model."): v for k, v in best["current_model_state"].items()}
    saved = load_file(tmp_path / "ema" / "model.safetensors")
    name = next(k for k in saved if k.endswith("weight") and saved[k].dim() > 1)
    torch.testing.assert_close(saved[name], averaged[name])
    assert not torch.equal(averaged[name], current[name])
    plain_saved = load_file(tmp_path / "plain" / "model.safetensors")
    assert not torch.equal(plain_saved[name], saved[name])  # same seed and data: only the averaging differs
    assert main(["train", "-d", str(uid_dataset["split"]), "-o", str(tmp_path / "bad"), "--ema", "1.5"]) == 2
    assert not (tmp_path / "bad").exists()


def weights_of(run: Path, checkpoint: str, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The module's weights in ``run/checkpoints/checkpoint``, named as model.safetensors names them."""
    state = torch.load(run / "checkpoints" / checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix(prefix): v for k, v in state.items()}


def assert_saved_is(run: Path, checkpoint: str, prefix: str = "model.") -> None:
    from safetensors.torch import load_file

    saved, kept = load_file(run / "model.safetensors"), weights_of(run, checkpoint, prefix)
    assert set(saved) <= set(kept)
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, kept[name], rtol=0, atol=0)


@pytest.mark.slow
def test_keep_last_saves_the_last_epoch_although_validation_liked_an_earlier_one(uid_dataset: dict,
                                                                                  tmp_path: Path) -> None:
    from safetensors.torch import load_file

    rising = ("-e", "2", "-lr", "0.1", "--scheduler", "none", "--seed", "4")  # validation loss rises
    best_run, last_run = tmp_path / "best", tmp_path / "last"
    assert train(uid_dataset, best_run, *rising) == 0
    assert train(uid_dataset, last_run, *rising, "--keep", "last") == 0
    loss = per_epoch(last_run, "val_loss")
    assert len(loss) == 2 and loss[1] > loss[0]  # scored every epoch; the first is the best
    best, last = (json.loads((run / "metrics.json").read_text()) for run in (best_run, last_run))
    assert best["selection"]["epoch"] == 1 and best["weights"].startswith("best validation loss")
    assert_saved_is(best_run, "best.ckpt")
    # --keep last: the last epoch's weights, and metrics.json says so; the best epoch stays a checkpoint
    assert last["weights"] == "last epoch (--keep last)" and "selection" not in last
    assert last["best_checkpoint"]["epoch"] == 1 and last["best_checkpoint"]["path"] == "best.ckpt"
    assert last["best_checkpoint"]["value"] == pytest.approx(loss[0])
    assert_saved_is(last_run, "last.ckpt")
    saved_best, saved_last = load_file(best_run / "model.safetensors"), load_file(last_run / "model.safetensors")
    assert any(not torch.equal(saved_best[name], saved_last[name]) for name in saved_last)
    assert last["val"] != best["val"]  # the scores are the saved weights'
    # the same training: only the choice of weights differs
    for name, tensor in weights_of(best_run, "last.ckpt").items():
        torch.testing.assert_close(saved_last[name], tensor)

    assert train(uid_dataset, last_run, "-e", "3", "-lr", "0.1", "--scheduler", "none", "--seed", "4", "--keep",
                 "last", "--resume") == 0
    resumed = json.loads((last_run / "metrics.json").read_text())
    assert resumed["epochs_run"] == 3 and resumed["weights"] == "last epoch (--keep last)"
    assert torch.load(last_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 2
    assert_saved_is(last_run, "last.ckpt")


@pytest.mark.slow
def test_keep_last_with_ema_saves_the_average_at_the_last_epoch_and_keeps_the_best_checkpoints(
        uid_dataset: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(uid_dataset, run, "-e", "2", "-lr", "0.1", "--scheduler", "none", "--ema", "0.9", "--keep",
                 "last", "--save_top_k", "2") == 0
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    # the best of the kept checkpoints is named (epochs counted from 1; Lightning's file names count from 0)
    assert min(best["kept"], key=best["kept"].get) == f"best-epoch={best['epoch'] - 1:02d}.ckpt", best
    kept = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("best-"))
    assert len(kept) == 2 and sorted(best["kept"]) == kept  # --save_top_k: kept for inspection
    assert_saved_is(run, "last.ckpt")  # the checkpoint's state_dict is the average
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    current = {k.removeprefix("model."): v for k, v in last["current_model_state"].items()}
    averaged = weights_of(run, "last.ckpt")
    name = next(k for k in averaged if k.endswith("weight") and averaged[k].dim() > 1)
    assert not torch.equal(averaged[name], current[name])


def test_keep_last_with_patience_is_an_error_naming_both(uid_dataset: dict, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert train(uid_dataset, tmp_path / "run", "--keep", "last", "--patience", "3") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--patience 3 with --keep last" in error
    assert not (tmp_path / "run").exists()
