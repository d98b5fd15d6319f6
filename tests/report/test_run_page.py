"""The run page from plain data: the breakdown by group and what it says when something is missing."""
from __future__ import annotations

import pandas as pd

from audiotune.report.run_page import RunReport, group_table, render_run

WORD = {"name": "word", "kind": "categorical", "columns": ["word"], "classes": ["no", "yes"]}
SEVERITY = {"name": "severity", "kind": "regression", "columns": ["severity"], "classes": []}


def test_groups_worst_first_with_accuracy_and_uar() -> None:
    rows = pd.DataFrame({"uid": ["a1", "a2", "a3", "b1", "b2", "c1"],
                         "true:word": ["no", "no", "yes", "no", "yes", None],
                         "predicted:word": ["no", "no", "no", "yes", "yes", "no"]})
    header, table = group_table(rows, [WORD], pd.Series({"a1": "ann", "a2": "ann", "a3": "ann", "b1": "bob",
                                                         "b2": "bob", "c1": "cat"}))
    assert header == ["group", "n", "word accuracy", "word UAR"]
    assert table == [["bob", 2, 0.5, 0.5], ["ann", 3, 2 / 3, 0.5], ["cat", 1, None, None]]


def test_regression_groups_worst_first_by_mae() -> None:
    rows = pd.DataFrame({"uid": ["a", "b", "c"], "score:severity": [1.0, 2.0, 5.0],
                         "target:severity": [1.5, 2.0, 3.0]})
    header, table = group_table(rows, [SEVERITY], pd.Series({"a": "x", "b": "x", "c": "y"}))
    assert header == ["group", "n", "severity MAE"] and table == [["y", 1, 2.0], ["x", 2, 0.25]]


def test_a_page_without_predictions_or_log_says_so() -> None:
    page = render_run(RunReport("run: r", "/runs/r", "", {"test": {"n": 0, "heads": {}, "notes": ["no rows"]}},
                                [WORD]))
    assert "no predictions.parquet in this directory" in page and "no training log" in page
    assert "no config.yaml" in page and "no rows" in page and "<audio" not in page
    # a confusion matrix without predictions: no clips to hover, and the page says so instead of offering them
    matrix = {"n": 2, "classes": ["no", "yes"], "confusion_matrix": [[1, 0], [1, 0]]}
    page = render_run(RunReport("run: r", "/runs/r", "", {"test": {"n": 2, "heads": {"word": matrix}}}, [WORD]))
    assert "No predictions.parquet here: no clips per cell." in page and "Hover a cell" not in page


def test_a_regression_column_without_true_values_says_so_instead_of_an_empty_plot() -> None:
    predictions = pd.DataFrame({"uid": ["a", "b", "c"], "split": ["test", "test", "val"],
                                "score:severity": [1.0, 2.0, 3.0], "target:severity": [None, None, 2.5]})
    page = render_run(RunReport("run: r", "/runs/r", "", {"test": {"n": 2, "heads": {}}}, [SEVERITY], predictions))
    scatter = page.split('<section id="scatter">')[1].split("</section>")[0]
    assert scatter.count("<svg") == 1 and "severity (val, n=1)" in scatter and "n=0" not in scatter
    assert "no row with a true value, so no plot: severity (test)" in scatter
