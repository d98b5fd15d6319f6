"""Classification metrics: the standard micro-F1 beside the speech-emotion seed's F1 of macro precision and recall."""
from __future__ import annotations

import numpy as np
import pytest

from audiotune.config import HeadSpec
from audiotune.engine.metrics import compute_metrics


def test_micro_f1_and_the_f1_of_macro_precision_and_recall_differ() -> None:
    heads = [HeadSpec("emotion", "categorical", ["emotion"], ["angry", "happy", "sad"])]
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    metrics = compute_metrics(np.eye(3)[predicted], np.eye(3)[truth], heads)
    # by hand: precision 3/3, 1/2, 2/3 (mean 13/18); recall 3/4, 1/2, 2/2 (mean 3/4)
    # 2 (13/18)(3/4) / (13/18 + 3/4) = 39/53; micro-F1 pools the counts: 6 right of 8
    assert metrics["f1_of_macro_pr"] == pytest.approx(39 / 53)
    assert metrics["micro_f1"] == pytest.approx(6 / 8) == metrics["accuracy"]
    assert metrics["heads"]["emotion"]["f1_of_macro_pr"] == pytest.approx(39 / 53)


def test_a_class_never_predicted_has_precision_0_in_the_f1_of_macro_pr() -> None:
    heads = [HeadSpec("emotion", "categorical", ["emotion"], ["angry", "happy", "sad"])]
    truth = np.array([0, 1, 2, 2])
    predicted = np.array([0, 0, 2, 2])  # happy never predicted: precision 0, recall 0
    metrics = compute_metrics(np.eye(3)[predicted], np.eye(3)[truth], heads)
    mean_p, mean_r = (0.5 + 0 + 1) / 3, (1 + 0 + 1) / 3
    assert metrics["f1_of_macro_pr"] == pytest.approx(2 * mean_p * mean_r / (mean_p + mean_r))
    assert metrics["micro_f1"] == pytest.approx(3 / 4)


def test_a_class_neither_present_nor_predicted_has_no_f1_and_the_macro_f1_leaves_it_out() -> None:
    """Its F1 would be 0/0: counted as 0 it lowered the macro F1 of a split that lacks the class (a perfect binary
    column scored 0.5); the UAR already averaged the classes present."""
    heads = [HeadSpec("word", "categorical", ["word"], ["no", "up", "yes"]), HeadSpec("flag", "binary", ["flag"])]
    truth = np.array([0, 0, 1, 1])
    predicted = np.array([0, 1, 1, 1])  # "yes" neither present nor predicted
    flag = np.ones((4, 1))  # one class present, every row predicted right
    metrics = compute_metrics(np.hstack([np.eye(3)[predicted], flag]), np.hstack([np.eye(3)[truth], flag]), heads)
    word = metrics["heads"]["word"]
    assert word["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2) and word["uar"] == pytest.approx(0.75)
    assert word["per_class"]["yes"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert "macro_f1 of head 'word' over the 2 classes present or predicted: yes neither (no F1)" in metrics["notes"]
    column = metrics["heads"]["flag"]["columns"]["flag"]
    assert column["macro_f1"] == 1.0 and column["uar"] == 1.0  # the recall of the one class present
    assert metrics["auc"]["flag"] is None


def test_a_mean_over_heads_says_which_heads_it_left_out() -> None:
    heads = [HeadSpec("word", "categorical", ["word"], ["no", "up"]), HeadSpec("grp", "categorical", ["grp"],
                                                                                ["a", "b"])]
    targets = np.hstack([np.eye(2)[[0, 1, 1]], np.full((3, 2), np.nan)])  # grp: no labelled row
    metrics = compute_metrics(np.hstack([np.eye(2)[[0, 1, 0]], np.eye(2)[[0, 0, 0]]]), targets, heads)
    assert metrics["uar"] == metrics["heads"]["word"]["uar"] == pytest.approx(0.75)
    assert "uar: the mean of 1 of the 2 classification heads (grp undefined)" in metrics["notes"]


def test_constant_regression_targets_leave_ccc_and_r2_undefined() -> None:
    heads = [HeadSpec("sev", "regression", ["sev"])]
    metrics = compute_metrics(np.array([[2.4], [2.6], [2.5]]), np.full((3, 1), 2.5), heads)
    column = metrics["heads"]["sev"]["columns"]["sev"]
    assert (column["ccc"], column["r2"], column["pearson"]) == (None, None, None)
    assert column["mae"] == pytest.approx(0.2 / 3)
    assert "ccc and r2 of 'sev' undefined: constant targets" in metrics["notes"]


def test_rows_the_model_scored_nan_are_left_out_of_every_metric_and_counted() -> None:
    heads = [HeadSpec("word", "categorical", ["word"], ["no", "up"])]
    scores = np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8]])
    metrics = compute_metrics(scores, np.eye(2)[[0, 1, 1]], heads)
    assert metrics["n"] == 2 and metrics["accuracy"] == 1.0 and metrics["heads"]["word"]["n"] == 2
    assert metrics["notes"][0] == "1 row(s) scored NaN or infinite by the model: left out of every metric (their " \
                                  "scores are in the predictions)"
