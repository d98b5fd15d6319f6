"""The clinical seed layout end to end: UID/metadata.json files -> `table` -> `split` by task -> `train`, on a
local disk and in a bucket (storage emulator on loopback)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import BUCKET, SMALL_ECAPA, Emulator, write_metadata_lake

from audiotune.cli import main

URL = f"gs://{BUCKET}"
AMR = "Alternating Motion Rate"


def _lake(root: Path) -> Path:
    records = [{"uid": f"{subject}_{task[0]}", "subject": subject, "task": task, "encoding": "WAV",
                "sample_rate_hz": 8000,
                "features": [{"name": "slow rate", "score": 1 + 3 * (number % 2)},
                             {"name": "distorted Cs", "score": number % 3},
                             {"name": "distorted V", "score": 1}]}
               for number, subject in enumerate(["ann", "bob", "cat", "dan", "eve", "fay"])
               for task in (AMR, "Sentences")]
    return write_metadata_lake(root, records)


def test_table_and_split_by_task_in_a_bucket_as_on_a_local_disk(gcs: Emulator, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    lake = _lake(tmp_path / "data" / "lake")
    for file in sorted(p for p in lake.rglob("*") if p.is_file()):
        gcs.fs().put_file(str(file), f"{BUCKET}/data/lake/{file.relative_to(lake).as_posix()}")
    split_flags = ["--train_task", AMR, "--test_task", "Sentences", "--split_size", "0", "2", "1"]
    assert main(["table", f"{URL}/data/lake", "--out", f"{URL}/data/tables/all.csv", "--edit_feats"]) == 0
    assert f"{URL}/data/tables/all.csv: 12 recordings, 6 subjects, 2 tasks" in capsys.readouterr().out
    assert main(["split", f"{URL}/data/tables/all.csv", "--out", f"{URL}/data/split", *split_flags]) == 0
    assert main(["table", str(lake), "--out", str(tmp_path / "data" / "tables" / "all.csv"), "--edit_feats"]) == 0
    assert main(["split", str(tmp_path / "data" / "tables" / "all.csv"), "--out", str(tmp_path / "data" / "split"),
                 *split_flags]) == 0
    for name in ("tables/all.csv", "split/train.csv", "split/val.csv", "split/test.csv"):
        assert gcs.fs().cat_file(f"{BUCKET}/data/{name}").decode() == (tmp_path / "data" / name).read_text()
    assert pd.read_csv(tmp_path / "data" / "split" / "test.csv")["path"][0].startswith("../lake/")


@pytest.mark.slow
def test_a_table_by_task_trains_and_evaluates(tmp_path: Path) -> None:
    lake = _lake(tmp_path / "lake")
    assert main(["table", str(lake), "--out", str(tmp_path / "all.csv"), "--edit_feats"]) == 0
    assert main(["split", str(tmp_path / "all.csv"), "--out", str(tmp_path / "split"), "--train_task", AMR,
                 "--test_task", "Sentences", "--split_size", "3", "2", "1", "--seed", "2"]) == 0
    (tmp_path / "labels.txt").write_text("slow rate,distortions\n")
    assert main(["train", "-d", str(tmp_path / "split"), "-l", str(tmp_path / "labels.txt"), "-o",
                 str(tmp_path / "run"), *SMALL_ECAPA, "-e", "1", "-bs", "2", "--seed", "1"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["n"] == 2 and set(metrics["test"]["auc"]) == {"slow rate", "distortions"}
    predictions = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    test = pd.read_csv(tmp_path / "split" / "test.csv")
    assert sorted(predictions.loc[predictions["split"] == "test", "uid"]) == sorted(test["uid"])
