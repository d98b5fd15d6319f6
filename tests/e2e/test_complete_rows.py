"""The NAIP seeds' row rule end to end: a seed recipe trains and scores only rows labelled in every label column,
lists the others, and `evaluate` scores a run's test rows by the run's rule or the one it is given."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_ECAPA, make_uid_dataset

from audiotune.cli import main
from audiotune.outputs import DROPPED_FILE, METRICS_FILE

ECAPA_SIZES = SMALL_ECAPA[:SMALL_ECAPA.index("--features")]  # the recipe's own MFCC features


@pytest.mark.slow  # trains a run and scores it twice
def test_the_naip_recipe_scores_complete_rows_and_evaluate_can_keep_the_others(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    blanked = {}
    for name in ("train", "val", "test"):  # two rows of each split miss the `long` column of the loud,long head
        table = pd.read_csv(ds["split"] / f"{name}.csv", index_col="uid")
        table.iloc[:2, table.columns.get_loc("long")] = np.nan
        table.to_csv(ds["split"] / f"{name}.csv")
        blanked[name] = sorted(table.index[:2])
    run = tmp_path / "run"
    assert main(["train", "--config", "seeds/naip_ecapa", "-i", str(ds["prefix"]), "-d", str(ds["split"]),
                 "-l", str(ds["labels"]), "-o", str(run), *ECAPA_SIZES, "-bs", "4"]) == 0
    test = json.loads((run / METRICS_FILE).read_text())["test"]["heads"]
    assert (test["pitch"]["n"], test["loud+long"]["n"]) == (2, 2)  # of 4 test rows, as the seed scored them
    dropped = pd.read_csv(run / DROPPED_FILE, dtype={"uid": str})
    assert {split: sorted(rows["uid"]) for split, rows in dropped.groupby("split")} == blanked

    def evaluate(out: str, *extra: str) -> dict:
        assert main(["evaluate", "--run", str(run), "-i", str(ds["prefix"]), "-d", str(ds["split"] / "test.csv"),
                     "-o", str(tmp_path / out), *extra]) == 0
        return json.loads((tmp_path / out / METRICS_FILE).read_text())["test"]["heads"]

    as_run = evaluate("as_run")
    assert (as_run["pitch"]["n"], as_run["loud+long"]["n"]) == (2, 2)
    assert sorted(pd.read_csv(tmp_path / "as_run" / DROPPED_FILE, dtype={"uid": str})["uid"]) == blanked["test"]
    every_row = evaluate("every_row", "--complete_rows", "False")  # each row scored for the heads it is labelled for
    assert (every_row["pitch"]["n"], every_row["loud+long"]["n"]) == (4, 4)
    assert not (tmp_path / "every_row" / DROPPED_FILE).exists()
