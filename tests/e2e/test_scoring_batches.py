"""Scoring through the command line: batches of mixed lengths score each clip as alone, and every pass reports its
progress on stderr (plain percentage lines, since pytest's stderr is not a terminal)."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import small_train_args

from audiotune.cli import main


def evaluate(run: Path, table: Path, out: Path, batch_size: int, capsys: pytest.CaptureFixture) -> tuple[pd.DataFrame,
                                                                                                          str]:
    assert main(["evaluate", "--run", str(run), "-d", str(table), "-o", str(out), "-bs", str(batch_size)]) == 0
    return pd.read_parquet(out / "predictions.parquet").set_index("uid"), capsys.readouterr().err


@pytest.mark.slow
def test_one_batch_of_mixed_lengths_scores_each_clip_as_alone(trained_run: dict, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    table = trained_run["split"] / "test.csv"
    alone, one_by_one = evaluate(trained_run["run"], table, tmp_path / "alone", 1, capsys)
    together, batched = evaluate(trained_run["run"], table, tmp_path / "together", 24, capsys)
    assert "evaluate test: done (4 batches" in one_by_one
    assert "evaluate test: done (1 batch in" in batched  # the test split's 4 clips have 4 lengths
    scores = [c for c in alone.columns if c.startswith("score:")]
    assert len(scores) == 4 and alone[scores].std().min() > 0  # the clips differ: the comparison can fail
    pd.testing.assert_frame_equal(together.loc[alone.index, scores], alone[scores], rtol=0, atol=1e-5)


def test_evaluate_away_from_a_terminal_prints_percentage_lines(trained_run: dict, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    _, err = evaluate(trained_run["run"], trained_run["split"] / "test.csv", tmp_path / "ev", 1, capsys)
    lines = [line for line in err.splitlines() if line.startswith("evaluate test: ")]
    assert [line.split()[2] for line in lines] == ["25%", "50%", "75%", "done"]
    assert re.fullmatch(r"evaluate test: 50% \(2/4 batches, [\d.e+]+ batches/s, ETA \d+:\d\d:\d\d\)", lines[1])


@pytest.mark.slow
def test_training_reports_each_epoch_and_validation(uid_dataset: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(small_train_args(uid_dataset, tmp_path / "run", "-e", "2")) == 0
    err = capsys.readouterr().err
    for line in ("train epoch 1/2: done (4 batches", "validation epoch 1/2: done (1 batch in",
                 "train epoch 2/2: 50% (2/4 batches", "validation epoch 2/2: done"):
        assert line in err, err
    assert re.search(r"train epoch 2/2: 75% \(3/4 batches, .*, train_loss\w* [\d.]+\)", err)
    assert err.index("train epoch 1/2: done") < err.index("validation epoch 1/2: done")


@pytest.mark.slow
def test_an_epoch_line_shows_its_own_losses(uid_dataset: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A finished training epoch shows its mean loss (as the log's train_loss_epoch), not one step's from the middle
    of it, and a validation line its own val_loss, not carried into the next training epoch's lines."""
    assert main(small_train_args(uid_dataset, tmp_path / "run", "-e", "2")) == 0
    err = capsys.readouterr().err
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    for epoch in (0, 1):
        mean = log.loc[log["epoch"].eq(epoch) & log["train_loss_epoch"].notna(), "train_loss_epoch"].item()
        val = log.loc[log["epoch"].eq(epoch) & log["val_loss"].notna(), "val_loss"].item()
        done = re.search(rf"train epoch {epoch + 1}/2: done \(.*, train_loss_epoch ([\d.e+-]+)\)", err)
        assert done is not None, err
        assert float(done.group(1)) == pytest.approx(mean, rel=1e-3)
        checked = re.search(rf"validation epoch {epoch + 1}/2: done \(.*, val_loss ([\d.e+-]+)\)", err)
        assert checked is not None, err
        assert float(checked.group(1)) == pytest.approx(val, rel=1e-3)
    assert not [line for line in err.splitlines() if line.startswith("train epoch") and "val_" in line]
