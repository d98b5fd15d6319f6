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
