"""Commands that print JSON (train, evaluate, pretrain, stats) print it alone on stdout, so that
``audiotune train ... | python -m json.tool`` works; what else they say goes to stderr."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import small_train_args

from audiotune.cli import main


@pytest.mark.slow
def test_train_prints_only_its_metrics_on_stdout(uid_dataset: dict, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(small_train_args(uid_dataset, run, "-e", "0")) == 0
    printed = capfd.readouterr()  # file-descriptor level: Lightning's and the libraries' output too
    assert set(json.loads(printed.out)) == {"val", "test"}
    assert "no training step (--epochs 0)" in printed.err and f"run directory: {run}" in printed.err
    assert f"report: {run / 'report.html'}" in printed.err

    assert main(["evaluate", "--run", str(run), "-d", str(uid_dataset["split"]), "--report", "False"]) == 0
    printed = capfd.readouterr()
    assert set(json.loads(printed.out)) == {"train", "val", "test"}
