"""`audiotune evaluate` of one CSV: its section is named after the file (and still found under "data"), and
predictions.parquet lists the rows in the order of the file, however the clips were batched."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from audiotune.cli import main


@pytest.mark.slow
def test_one_table_named_after_its_file_in_its_own_order(trained_run: dict, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    table = trained_run["table"]
    # subjects interleaved: BatchNorm adaptation per subject scores them subject by subject
    order = [uid for pair in zip(table.index[table.subject == "eve"], table.index[table.subject == "fay"])
             for uid in pair][::-1]
    heldout = tmp_path / "heldout.csv"
    table.loc[order].to_csv(heldout)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(trained_run["run"]), "-d", str(heldout), "-o", str(tmp_path / "ev"),
                 "--adapt_bn", "subject", "--report", "False"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["heldout"]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["heldout"]["n"] == len(order) and metrics["data"] == metrics["heldout"]
    predictions = pd.read_parquet(tmp_path / "ev" / "predictions.parquet")
    assert predictions["uid"].tolist() == order and set(predictions["split"]) == {"heldout"}
