"""--balance (class-balanced epochs) and --train_fraction (nested class-stratified shares)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import SMALL_ECAPA, tone

from audiotune.cli import main
from audiotune.config import HeadSpec
from audiotune.data.balance import class_groups, training_share
from audiotune.data.samplers import BalancedSampler


def test_oversampling_cycles_every_class_to_the_largest():
    groups = np.array([0] * 6 + [1] * 2 + [2] * 1 + [-1] * 2)
    sampler = BalancedSampler(groups, "oversample", seed=0)
    epoch = list(sampler)
    assert len(sampler) == len(epoch) == 3 * 6 + 2
    counts = Counter(epoch)
    assert all(counts[i] == 1 for i in range(6)) and counts[6] == counts[7] == 3 and counts[8] == 6
    assert counts[9] == counts[10] == 1  # rows without a target for the head: once each, neither drawn nor lost
    again = list(BalancedSampler(groups, "oversample", seed=0))
    assert again == epoch
    sampler.set_epoch(1)
    assert list(sampler) != epoch and Counter(sampler) == counts


def test_undersampling_draws_each_class_down_anew_each_epoch():
    groups = np.array([0] * 8 + [1] * 3)
    sampler = BalancedSampler(groups, "undersample", seed=0)
    drawn = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        rows = list(sampler)
        assert len(rows) == 6 and sum(r < 8 for r in rows) == 3 and sorted(r for r in rows if r >= 8) == [8, 9, 10]
        drawn.append(frozenset(r for r in rows if r < 8))
    assert len(set(drawn)) > 1


def test_the_balanced_head_is_the_first_categorical_one():
    heads = [HeadSpec("flag", "binary", ["flag"]), HeadSpec("key", "categorical", ["key"], classes=["a", "b", "c"])]
    targets = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [np.nan, np.nan, np.nan, np.nan]], dtype=np.float32)
    assert class_groups(targets, heads, "--balance").tolist() == [2, 0, -1]
    with pytest.raises(ValueError, match="needs a categorical or soft head"):
        class_groups(targets[:, :1], heads[:1], "--balance oversample")


def test_train_fraction_keeps_a_nested_share_of_every_class():
    heads = [HeadSpec("key", "categorical", ["key"], classes=["a", "b"])]
    labels = np.array([0] * 30 + [1] * 7 + [0])
    targets = np.eye(2, dtype=np.float32)[labels]
    table = pd.DataFrame({"key": np.array(["a", "b"])[labels]}, index=[f"u{i}" for i in range(len(labels))])
    kept = {}
    for fraction in (0.1, 0.5, 0.9, 1.0):
        part, part_targets, left_out = training_share(table, targets, heads, fraction, seed=3)
        assert len(part) + len(left_out) == len(table) and len(part_targets) == len(part)
        assert (part["key"] == "a").sum() == max(1, round(fraction * 31))
        assert (part["key"] == "b").sum() == max(1, round(fraction * 7))
        assert (left_out["split"] == "train").all() and left_out["reason"].str.contains("train_fraction").all()
        kept[fraction] = set(part.index)
    assert kept[0.1] < kept[0.5] < kept[0.9] < kept[1.0] == set(table.index)
    assert set(training_share(table, targets, heads, 0.5, seed=4)[0].index) != kept[0.5]


def test_train_fraction_keeps_a_row_of_each_class_of_the_other_heads_too():
    """The share stratifies by the first categorical head: a rare class of another head (here a binary column's 1
    on one row) keeps a training row whatever the seed, which the run would otherwise refuse as lost."""
    heads = [HeadSpec("key", "categorical", ["key"], classes=["a", "b"]), HeadSpec("loud", "binary", ["loud"])]
    labels = np.array([0] * 10 + [1] * 10)
    loud = np.zeros(20)
    loud[13] = 1
    targets = np.column_stack([np.eye(2)[labels], loud]).astype(np.float32)
    table = pd.DataFrame({"key": np.array(["a", "b"])[labels], "loud": loud}, index=[f"u{i}" for i in range(20)])
    for seed in range(8):
        part, _, _ = training_share(table, targets, heads, 0.2, seed=seed)
        assert (part["loud"] == 1).sum() == 1 and (part["loud"] == 0).any()
        assert (part["key"] == "a").sum() == 2 and 2 <= (part["key"] == "b").sum() <= 3


def keys_dataset(root: Path) -> Path:
    """Three tone classes, 12 / 4 / 2 training clips: an imbalanced split."""
    rows = []
    (root / "audio").mkdir(parents=True)
    for split, counts in (("train", (12, 4, 2)), ("val", (2, 2, 2)), ("test", (2, 2, 2))):
        for key, count in zip("abc", counts):
            for k in range(count):
                path = root / "audio" / f"{split}_{key}{k}.wav"
                sf.write(path, tone(300 + 400 * "abc".index(key), 0.3, 16000, seed=len(rows)), 16000)
                rows.append({"uid": path.stem, "path": str(path), "key": key, "subject": f"{split}{k}", "split": split})
    table = pd.DataFrame(rows)
    for split, part in table.groupby("split"):
        part.drop(columns="split").to_csv(root / f"{split}.csv", index=False)
    (root / "labels.txt").write_text("key\n")
    return root


def run(root: Path, out: Path, *extra: str) -> dict:
    assert main(["train", "-d", str(root), "-l", str(root / "labels.txt"), "-o", str(out), "--model", "ecapa_tdnn",
                 *SMALL_ECAPA, "-bs", "4", "-e", "1", "--seed", "0", "--clip_length", "0", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_balance_and_train_fraction_end_to_end(tmp_path):
    root = keys_dataset(tmp_path / "data")
    metrics = run(root, tmp_path / "over", "--balance", "oversample")
    assert metrics["balance"]["rows_per_epoch"] == 36 and metrics["balance"]["class_rows"] == {"a": 12, "b": 4, "c": 2}
    plain = run(root, tmp_path / "plain")
    assert "balance" not in plain
    steps = {name: pd.read_csv(tmp_path / name / "logs" / "metrics.csv")["step"].max() for name in ("over", "plain")}
    assert steps["over"] > steps["plain"]  # 36 drawn rows an epoch instead of 18: twice the batches
    under = run(root, tmp_path / "under", "--balance", "undersample")
    assert under["balance"]["rows_per_epoch"] == 6
    share = run(root, tmp_path / "half", "--train_fraction", "0.5")
    assert share["train_fraction"] == {"fraction": 0.5, "rows": 9, "left_out": 9}
    dropped = pd.read_csv(tmp_path / "half" / "dropped_rows.csv")
    assert len(dropped) == 9 and Counter(dropped["key"]) == {"a": 6, "b": 2, "c": 1}
    scores = {name: pd.read_parquet(tmp_path / name / "predictions.parquet").filter(like="score:").to_numpy()
              for name in ("half", "plain", "over")}
    assert scores["plain"].shape == (12, 3)
    assert not np.allclose(scores["half"], scores["plain"]) and not np.allclose(scores["over"], scores["plain"])
    # bucketed batches draw their own epochs: an error before the run directory is written
    assert main(["train", "-d", str(root), "-l", str(root / "labels.txt"), "-o", str(tmp_path / "bad"),
                 "--model", "ecapa_tdnn", *SMALL_ECAPA, "--balance", "oversample", "--bucket_sampler"]) == 2
    assert not (tmp_path / "bad" / "metrics.json").exists()
