"""A tiny seeded run gives the metrics, validation loss and scores that a stored copy recorded: refactoring the
data layer, the model or the engine must not change a result."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_ECAPA, make_uid_dataset

from audiotune.cli import main

STORED = Path(__file__).parents[1] / "fixtures" / "seeded_ecapa_run.json"
SUMMARY = ("n", "accuracy", "macro_f1", "uar", "auc")


def seeded_run(root: Path) -> dict:
    """Train the stored run's command (augmentation and SpecAugment on, so their random streams count too)."""
    ds = make_uid_dataset(root)
    out = root / "run"
    assert main(["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
                 "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "2", "-bs", "4", "--seed", "3", "--tshift", "0.5",
                 "--gain", "0.5", "--freqm", "4", "--timem", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    scores = pd.read_parquet(out / "predictions.parquet").sort_values(["split", "uid"])
    return {"metrics": {split: {k: metrics[split][k] for k in SUMMARY} for split in ("val", "test")},
            "val_loss": metrics["selection"]["value"], "epoch": metrics["selection"]["epoch"],
            "uids": scores["uid"].tolist(),
            "scores": scores.filter(like="score:").round(6).to_dict(orient="list")}


@pytest.mark.slow
def test_a_seeded_run_reproduces_its_stored_results(tmp_path: Path) -> None:
    result = seeded_run(tmp_path)
    if os.environ.get("AUDIOTUNE_STORE_SEEDED_RUN"):  # how the stored copy was made
        STORED.write_text(json.dumps(result, indent=1) + "\n")
    stored = json.loads(STORED.read_text())
    assert result["metrics"] == stored["metrics"]
    assert result["epoch"] == stored["epoch"] and result["uids"] == stored["uids"]
    np.testing.assert_allclose(result["val_loss"], stored["val_loss"], atol=1e-4)
    assert result["scores"].keys() == stored["scores"].keys()
    for column, values in stored["scores"].items():
        np.testing.assert_allclose(result["scores"][column], values, atol=1e-4, err_msg=column)
