"""Targets: declared head kinds, regression, soft votes, partial labels, class weights, richer metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import SMALL_ECAPA, tone
from torch.utils._python_dispatch import TorchDispatchMode

from audiotune.cli import main
from audiotune.config import HeadSpec, load_config
from audiotune.data.errors import DataError
from audiotune.data.labels import encode_targets, infer_heads, read_label_file
from audiotune.engine.losses import balanced_class_weights, classification_loss, resolve_regression_loss
from audiotune.engine.metrics import compute_metrics, scores_from_logits


def write_labels(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def heads_of(text: str, table: pd.DataFrame, tmp_path: Path) -> list[HeadSpec]:
    return infer_heads(read_label_file(write_labels(tmp_path / "labels.txt", text)), table)


# ---------------------------------------------------------------- label files


def test_declared_kinds_and_inference(tmp_path: Path) -> None:
    table = pd.DataFrame({"sev": [0.5, 1.25, 3.0], "code": [1, 2, 3], "flag": [0, 1, 1],
                          "angry": [2, 0, 1], "sad": [1, 3, 0], "calm": [0, 0, 2]})
    heads = heads_of("sev:regression\ncode\nflag\nangry,sad,calm:soft\ncode2:categorical\n",
                     table.assign(code2=["a", "b", "a"]), tmp_path)
    assert [(h.name, h.kind, h.num_outputs) for h in heads] == [
        ("sev", "regression", 1), ("code", "categorical", 3), ("flag", "binary", 1),
        ("angry+sad+calm", "soft", 3), ("code2", "categorical", 2)]
    assert heads[3].classes == ["angry", "sad", "calm"]


def test_non_integer_numbers_without_a_declaration_are_an_error_suggesting_one(tmp_path: Path) -> None:
    table = pd.DataFrame({"severity": [0.5, 1.25, 3.0]})
    with pytest.raises(DataError, match=r"declare it `severity:regression`"):
        heads_of("severity\n", table, tmp_path)


def test_a_declaration_that_does_not_fit_the_values_names_the_line(tmp_path: Path) -> None:
    table = pd.DataFrame({"flag": [0, 2, 1], "votes_a": [1, -1, 0], "votes_b": [0, 1, 1]})
    with pytest.raises(DataError, match=r"labels.txt:1: column 'flag' is declared :binary but .* holds 2"):
        heads_of("flag:binary\n", table, tmp_path)
    with pytest.raises(DataError, match="negative"):
        heads_of("votes_a,votes_b:soft\n", table, tmp_path)
    with pytest.raises(DataError, match="unknown head kind ':ordinal'"):
        heads_of("flag:ordinal\n", table, tmp_path)
    with pytest.raises(DataError, match="two or more vote columns"):
        heads_of("flag:soft\n", table, tmp_path)


def test_encoding_marks_missing_targets_and_normalises_votes(tmp_path: Path) -> None:
    table = pd.DataFrame({"sev": [1.0, np.nan, 3.0], "a": [2, 0, np.nan], "b": [2, 0, 1], "pitch": ["x", "y", None]})
    heads = heads_of("sev:regression\na,b:soft\npitch\n", table, tmp_path)
    targets = encode_targets(table, heads)
    np.testing.assert_allclose(targets[0], [1.0, 0.5, 0.5, 1.0, 0.0])
    assert np.isnan(targets[1, 0]) and np.isnan(targets[1, 1:3]).all()  # no votes at all: unlabelled
    np.testing.assert_allclose(targets[1, 3:], [0.0, 1.0])
    np.testing.assert_allclose(targets[2, :3], [3.0, 0.0, 1.0])  # an empty vote cell counts as zero votes
    assert np.isnan(targets[2, 3:]).all()


# ---------------------------------------------------------------- losses


def test_soft_loss_equals_hard_loss_for_one_hot_votes() -> None:
    heads = [HeadSpec("votes", "soft", ["a", "b", "c"], ["a", "b", "c"])]
    categorical = [HeadSpec("label", "categorical", ["label"], ["a", "b", "c"])]
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 2, 1, 0]), 3).float()
    soft = classification_loss(logits, one_hot, heads, labeling="distribution")
    hard = classification_loss(logits, one_hot, categorical)
    assert soft.item() == pytest.approx(hard.item(), rel=1e-6)
    assert hard.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, one_hot.argmax(1)).item(), rel=1e-6)
    votes = torch.tensor([[0.5, 0.5, 0.0]] * 6)
    assert classification_loss(logits, votes, heads, labeling="distribution").item() != pytest.approx(
        classification_loss(logits, votes, heads, labeling="hard").item())


def test_sampled_labels_follow_the_votes_and_the_seed() -> None:
    heads = [HeadSpec("votes", "soft", ["a", "b"], ["a", "b"])]
    logits = torch.zeros(2000, 2)
    logits[:, 0] = 3.0  # predicts "a": the loss is small for rows that draw "a"
    votes = torch.tensor([[0.25, 0.75]]).repeat(2000, 1)
    draws = [classification_loss(logits, votes, heads, labeling="sample",
                                 generator=torch.Generator().manual_seed(seed)).item() for seed in (1, 1, 2)]
    assert draws[0] == draws[1] != draws[2]
    loss_a = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])).item()
    loss_b = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([1])).item()
    share_b = (draws[0] - loss_a) / (loss_b - loss_a)
    assert share_b == pytest.approx(0.75, abs=0.04)


def test_missing_targets_add_nothing_to_the_loss() -> None:
    heads = [HeadSpec("sev", "regression", ["sev"]), HeadSpec("flag", "binary", ["flag"])]
    logits = torch.tensor([[1.0, 0.0], [5.0, 2.0]], requires_grad=True)
    targets = torch.tensor([[0.0, float("nan")], [float("nan"), 1.0]])
    loss = classification_loss(logits, targets, heads)
    expected = 1.0 + torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(2.0), torch.tensor(1.0))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1, 0] == 0 and logits.grad[0, 1] == 0


class HostReads(TorchDispatchMode):
    """The operations run under it that read a tensor's values back to the host (on a GPU: wait for it)."""

    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
             torch.ops.aten.masked_select.default}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func in self.READS:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("weighted", [False, True])
def test_a_training_loss_reads_nothing_back_from_the_device(weighted: bool) -> None:
    """Missing targets, class weights and standardised regression targets, without a value read back."""
    heads = [HeadSpec("word", "categorical", ["word"], ["a", "b", "c"]), HeadSpec("x+y", "binary", ["x", "y"]),
             HeadSpec("votes", "soft", ["p", "q"], ["p", "q"]),
             HeadSpec("sev", "regression", ["sev"], target_mean=[2.0], target_std=[3.0])]
    nan = float("nan")
    targets = torch.tensor([[1, 0, 0, 1, nan, 0.3, 0.7, 4.0], [nan, nan, nan, 0, 1, nan, nan, nan],
                            [0, 0, 1, nan, nan, 0.5, 0.5, -1.0]])
    logits = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = balanced_class_weights(heads, np.nan_to_num(targets.numpy(), nan=0.0)) if weighted else None
    for labeling in ("distribution", "hard"):
        expected = classification_loss(logits, targets, heads, class_weights=weights, labeling=labeling)
        with HostReads() as mode:
            loss = classification_loss(logits, targets, heads, class_weights=weights, labeling=labeling)
            loss.backward()
        assert mode.reads == [] and torch.isfinite(loss) and loss.item() == expected.item()


def test_huber_loss_bounds_the_pull_of_large_errors() -> None:
    heads = [HeadSpec("sev", "regression", ["sev"])]
    logits, targets = torch.tensor([[0.0], [0.0]]), torch.tensor([[0.5], [4.0]])
    mse = classification_loss(logits, targets, heads)
    huber = classification_loss(logits, targets, heads, regression_loss="huber")
    assert mse.item() == pytest.approx((0.25 + 16.0) / 2)
    assert huber.item() == pytest.approx((0.5 * 0.25 + (4.0 - 0.5)) / 2)
    with pytest.raises(ValueError, match="--loss huber applies to regression heads"):
        resolve_regression_loss("huber", [HeadSpec("flag", "binary", ["flag"])])


def test_balanced_class_weights_are_inverse_frequency_with_mean_one() -> None:
    heads = [HeadSpec("label", "categorical", ["label"], ["a", "b", "c"])]
    targets = np.eye(3)[[0, 0, 0, 1, 2, 2]]
    weights = balanced_class_weights(heads, targets)["label"]
    inverse = np.array([1 / 3, 1, 1 / 2])
    np.testing.assert_allclose([weights[c] for c in "abc"], inverse / inverse.mean())
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    plain = classification_loss(logits, torch.tensor(targets, dtype=torch.float32), heads)
    weighted = classification_loss(logits, torch.tensor(targets, dtype=torch.float32), heads,
                                   class_weights={"label": weights})
    assert plain.item() != pytest.approx(weighted.item())
    # the batch's weighted mean, as CrossEntropyLoss(weight=w) on class indices (the emotion seed's loss)
    reference = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 0, 1, 2, 2]),
                                                  weight=torch.tensor([weights[c] for c in "abc"]))
    assert weighted.item() == pytest.approx(reference.item(), rel=1e-6)
    assert plain.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 0, 1, 2, 2]))
                                         .item(), rel=1e-6)


def test_runs_of_an_earlier_config_version_average_the_weighted_rows_by_their_number() -> None:
    """weighted_mean=False (runs written before config version 6): the plain mean of the class-weighted rows'
    losses, as classification_loss gave then; unweighted, both are plain cross-entropy."""
    heads = [HeadSpec("label", "categorical", ["label"], ["a", "b", "c"])]
    classes = torch.tensor([0, 0, 0, 1, 2, 2])
    targets = torch.eye(3)[classes]
    weights = balanced_class_weights(heads, targets.numpy())["label"]
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    earlier = classification_loss(logits, targets, heads, class_weights={"label": weights}, weighted_mean=False)
    weighted = classification_loss(logits, targets, heads, class_weights={"label": weights})
    per_row = torch.nn.functional.cross_entropy(logits, classes, weight=torch.tensor([weights[c] for c in "abc"]),
                                                reduction="none")
    assert earlier.item() == pytest.approx(per_row.mean().item(), rel=1e-6)
    assert weighted.item() == pytest.approx((per_row.sum() / per_row.new_tensor([weights["abc"[k]] for k in classes])
                                             .sum()).item(), rel=1e-6)
    assert earlier.item() != pytest.approx(weighted.item())
    assert classification_loss(logits, targets, heads, weighted_mean=False).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, classes).item(), rel=1e-6)


# ---------------------------------------------------------------- metrics


def test_metrics_report_weighted_and_micro_f1_and_per_class() -> None:
    heads = [HeadSpec("label", "categorical", ["label"], ["a", "b", "c"])]
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    metrics = compute_metrics(np.eye(3)[predicted], np.eye(3)[truth], heads)
    head = metrics["heads"]["label"]
    assert head["per_class"]["a"] == {"precision": 1.0, "recall": 0.75, "f1": pytest.approx(6 / 7), "support": 4}
    f1 = np.array([6 / 7, 0.5, 0.8])
    assert head["weighted_f1"] == pytest.approx(float((f1 * [4, 2, 2]).sum() / 8))
    assert head["micro_f1"] == pytest.approx(6 / 8) == metrics["micro_f1"]
    assert head["n"] == 8


def test_a_per_class_score_of_zero_over_zero_is_null_with_a_note() -> None:
    """b is present and never predicted (no precision), c absent and predicted (no recall); both F1 0, as macro-F1
    counts them."""
    heads = [HeadSpec("label", "categorical", ["label"], ["a", "b", "c"])]
    metrics = compute_metrics(np.eye(3)[[0, 0, 0, 2]], np.eye(3)[[0, 0, 1, 1]], heads)
    per_class = metrics["heads"]["label"]["per_class"]
    assert per_class["b"] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 2}
    assert per_class["c"] == {"precision": 0.0, "recall": None, "f1": 0.0, "support": 0}
    assert per_class["a"]["precision"] == pytest.approx(2 / 3) and per_class["a"]["recall"] == 1.0
    assert "per-class precision of head 'label' undefined for b (never predicted; F1 0)" in metrics["notes"]
    assert "per-class recall of head 'label' undefined for c (absent; F1 0)" in metrics["notes"]


def test_regression_metrics_and_unstandardised_scores() -> None:
    head = HeadSpec("sev", "regression", ["sev"], target_mean=[10.0], target_std=[2.0])
    logits = np.array([[-1.0], [0.0], [1.0], [np.nan]])[:3]
    scores = scores_from_logits(logits, [head])
    np.testing.assert_allclose(scores[:, 0], [8.0, 10.0, 12.0])
    truth = np.array([[8.0], [11.0], [np.nan]])
    metrics = compute_metrics(scores, truth, [head])
    assert metrics["heads"]["sev"]["n"] == 2
    assert metrics["mae"] == pytest.approx(0.5) and metrics["rmse"] == pytest.approx(np.sqrt(0.5))
    assert metrics["pearson"] == pytest.approx(1.0)
    assert "accuracy" not in metrics and "uar" not in metrics  # no classification head: no such keys


# ---------------------------------------------------------------- end to end


def loudness_dataset(root: Path, clips: int = 48) -> dict:
    """Clips of random gain; ``level`` = their RMS level in dB (a learnable regression target) and a
    binary ``high`` pitch label that only half of the clips carry (partial labels)."""
    rng = np.random.default_rng(0)
    audio = root / "audio"
    audio.mkdir(parents=True)
    rows = []
    for k in range(clips):
        high = int(k % 2)
        gain = float(10 ** rng.uniform(-1.5, 0.0))
        wave = tone(300 + 500 * high, 0.5, 16000, seed=k) * gain
        path = audio / f"c{k}.wav"
        sf.write(path, wave, 16000)
        rows.append({"uid": f"c{k}", "path": str(path), "speaker": f"s{k % 6}",
                     "level": float(20 * np.log10(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))),
                     "high": high if k % 4 < 2 else None})
    table = pd.DataFrame(rows).set_index("uid")
    split = root / "split"
    split.mkdir()
    order = np.arange(clips)
    table.iloc[order[: int(clips * 0.6)]].to_csv(split / "train.csv")
    table.iloc[order[int(clips * 0.6): int(clips * 0.8)]].to_csv(split / "val.csv")
    table.iloc[order[int(clips * 0.8):]].to_csv(split / "test.csv")
    return {"split": split, "table": table}


def train(split: Path, labels: Path, out: Path, *extra: str) -> int:
    return main(["train", "-d", str(split), "-l", str(labels), "-o", str(out), "--model", "ecapa_tdnn",
                 *SMALL_ECAPA, "-bs", "4", "-lr", "3e-3", "--seed", "0", "--clip_length", "0", *extra])


@pytest.mark.slow
def test_a_regression_head_learns_loudness_and_predicts_in_its_units(tmp_path: Path) -> None:
    ds = loudness_dataset(tmp_path)
    labels = write_labels(tmp_path / "labels.txt", "level:regression\n")
    assert train(ds["split"], labels, tmp_path / "run", "-e", "12", "--monitor", "ccc") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["test"]
    assert test["heads"]["level"]["n"] == 10 and test["pearson"] > 0.8, test
    predictions = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    test_rows = predictions[predictions.split == "test"]
    # predictions are in dB, not standardised units
    assert abs(test_rows["score:level"].mean() - test_rows["target:level"].mean()) < 5
    assert (tmp_path / "run" / "plots" / "scatter_test_level.png").is_file()
    assert metrics["weights"].startswith("best validation ccc")


@pytest.mark.slow
def test_a_monitored_metric_undefined_in_every_epoch_keeps_the_last_epoch_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--monitor ccc with constant validation targets: no epoch is better than another; the last epoch is kept and
    named, with no -inf in metrics.json. The log says so of each epoch, counted from 1 (not of the sanity check)."""
    ds = loudness_dataset(tmp_path, clips=20)
    val = pd.read_csv(ds["split"] / "val.csv")
    val["level"] = -20.0
    val.to_csv(ds["split"] / "val.csv", index=False)
    labels = write_labels(tmp_path / "labels.txt", "level:regression\n")
    assert train(ds["split"], labels, tmp_path / "run", "-e", "2", "--monitor", "ccc") == 0
    text = (tmp_path / "run" / "metrics.json").read_text()
    assert json.loads(text)["weights"] == "last epoch (validation ccc undefined in every epoch)"
    assert "inf" not in text.lower()
    said = [r.getMessage().split(":")[0] for r in caplog.records if "validation ccc is undefined" in r.getMessage()]
    assert said == ["epoch 1", "epoch 2"]


@pytest.mark.slow
def test_partial_labels_train_every_head_on_its_own_rows(tmp_path: Path) -> None:
    ds = loudness_dataset(tmp_path, clips=24)
    labels = write_labels(tmp_path / "labels.txt", "level:regression\nhigh\n")
    assert train(ds["split"], labels, tmp_path / "run", "-e", "1") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    table = ds["table"]
    for split, rows in (("val", table.iloc[14:19]), ("test", table.iloc[19:])):
        assert metrics[split]["heads"]["level"]["n"] == len(rows)
        assert metrics[split]["heads"]["high"]["n"] == int(rows["high"].notna().sum()) < len(rows)
    assert not (tmp_path / "run" / "dropped_rows.csv").exists()  # every row has some target
    # the regression head learns standardised targets: the training split's mean and std are kept with it
    level = next(h for h in load_config(tmp_path / "run" / "config.yaml").heads if h.name == "level")
    assert level.target_mean == [pytest.approx(table.iloc[:14]["level"].mean())]
    assert level.target_std == [pytest.approx(table.iloc[:14]["level"].std(ddof=0))]

    table_without_any = table.assign(level=np.where(table["high"].isna(), np.nan, table["level"]))
    table_without_any.iloc[:14].to_csv(ds["split"] / "train.csv")
    assert train(ds["split"], labels, tmp_path / "run2", "-e", "1") == 0
    dropped = pd.read_csv(tmp_path / "run2" / "dropped_rows.csv")
    assert set(dropped["split"]) == {"train"} and len(dropped) == int(table.iloc[:14]["high"].isna().sum())
    assert dropped["reason"].str.contains("no target for any head").all()


@pytest.mark.slow
def test_soft_heads_and_class_weights_end_to_end(tmp_path: Path) -> None:
    ds = loudness_dataset(tmp_path, clips=24)
    table = ds["table"]
    votes = pd.DataFrame({"low": 1 - table["high"].fillna(0) * 1.0 + 1, "hi": table["high"].fillna(1) * 3.0},
                         index=table.index)
    for name in ("train", "val", "test"):
        split = pd.read_csv(ds["split"] / f"{name}.csv", index_col="uid")
        split.join(votes).to_csv(ds["split"] / f"{name}.csv")
    labels = write_labels(tmp_path / "labels.txt", "low,hi:soft\n")
    assert train(ds["split"], labels, tmp_path / "run", "-e", "1", "--class_weights", "balanced",
                 "--labeling_method", "sample", "--monitor", "weighted_f1") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["class_weights"]["low+hi"]) == {"low", "hi"}
    assert metrics["test"]["heads"]["low+hi"]["per_class"]["hi"]["support"] > 0
    predictions = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert set(predictions["true:low+hi"]) <= {"low", "hi"}
    assert (tmp_path / "run" / "plots" / "confusion_test_low+hi.png").is_file()


def test_one_class_heads_are_refused_and_a_wrong_binary_cell_suggests_categorical(tmp_path: Path) -> None:
    one_class = pd.DataFrame({"digit": ["a", "a", None]})
    with pytest.raises(DataError, match=r"'digit' holds one class only \(\['a'\]\)"):
        infer_heads([["digit"]], one_class, "train.csv")
    with pytest.raises(DataError, match="binary column 'loud' holds only 0"):
        infer_heads([["loud"]], pd.DataFrame({"loud": [0, 0, 0]}), "train.csv")
    assert [h.kind for h in infer_heads([["loud", "long"]], pd.DataFrame({"loud": [0, 0], "long": [0, 1]}))] == \
        ["binary"]  # a multi-label head may hold a label no training row has
    heads = infer_heads([["digit"]], pd.DataFrame({"digit": [0, 1, 1]}), "train.csv")
    with pytest.raises(DataError, match="'digit' is 2, not 0/1: .* declare `digit:categorical`"):
        encode_targets(pd.DataFrame({"digit": [0, 2]}, index=["u0", "u1"]), heads, "test.csv")
