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


def _section(page: str, name: str) -> str:
    return page.split(f'<section id="{name}">')[1].split("</section>")[0]


def test_recordings_scored_from_their_windows_are_on_the_page_beside_the_windows() -> None:
    """An evaluation of windows writes each split's recordings' scores too (its `recording` section): the page
    shows them as a section of their own, with their confusion matrix (no clips to hover: they are recordings)."""
    windows = {"n": 6, "classes": ["no", "yes"], "confusion_matrix": [[3, 0], [1, 2]], "uar": 0.8333}
    recordings = {"n": 3, "classes": ["no", "yes"], "confusion_matrix": [[1, 0], [0, 2]], "uar": 1.0}
    metrics = {"test": {"n": 6, "heads": {"word": windows}, "notes": ["a note of the windows"],
                        "recording": {"aggregate": "mean", "n": 3, "heads": {"word": recordings}}}}
    predictions = pd.DataFrame({"uid": ["a", "b"], "split": ["test", "test"], "true:word": ["no", "yes"],
                                "predicted:word": ["no", "no"]})
    page = render_run(RunReport("run: r", "/runs/r", "", metrics, [WORD], predictions))
    overview, table, confusion = (_section(page, name) for name in ("overview", "metrics", "confusion"))
    assert "test, recordings" in overview and "test: a note of the windows" in overview
    assert "<td class=text>test, recordings</td><td class=text>word</td><td>3</td><td>1</td>" in table
    assert "word (test, recordings, n=3)" in confusion and "word (test, n=6)" in confusion


def test_an_evaluated_table_named_as_a_fact_of_runs_is_a_split_not_a_fact() -> None:
    """`evaluate -d RUN/validation.csv` names its section "validation", the key of a run's validation fact."""
    metrics = {"validation": {"n": 2, "heads": {}}, "weights": "best validation loss (best.ckpt)"}
    overview = _section(render_run(RunReport("evaluation: e", "/e", "", metrics, [WORD])), "overview")
    assert "{&#x27;n&#x27;" not in overview and "{'n'" not in overview
    assert "<td class=text>validation</td><td>2</td>" in overview
    assert "best validation loss (best.ckpt)" in overview


def test_a_head_of_one_column_has_one_row_of_metrics_and_a_head_of_two_has_its_columns() -> None:
    one = {"mae": 0.5, "r2": 0.1, "columns": {"severity": {"mae": 0.5, "r2": 0.1}}}
    two = {"mae": 0.4, "columns": {"left": {"mae": 0.3}, "right": {"mae": 0.5}}}
    both = {"name": "both", "kind": "regression", "columns": ["left", "right"], "classes": []}
    page = render_run(RunReport("run: r", "/runs/r", "", {"test": {"n": 3, "heads": {"severity": one, "both": two}}},
                                [SEVERITY, both]))
    rows = _section(page, "metrics")
    assert rows.count(">severity") == 1 and "severity / severity" not in rows
    assert "both / left" in rows and "both / right" in rows
