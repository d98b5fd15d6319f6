"""Window rows aggregated to recording rows: mean / max by hand, order, target agreement, metrics."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audiotune.config import HeadSpec
from audiotune.data.errors import DataError
from audiotune.engine.aggregate import check_aggregation, has_windows, recording_scores
from audiotune.engine.metrics import compute_metrics

NAN = np.nan
# a binary head with two columns, then a categorical head with three classes
HEADS = [HeadSpec("voice", "binary", ["hoarse", "breathy"]),
         HeadSpec("mood", "categorical", ["mood"], ["calm", "sad", "angry"])]
RECORDINGS = ["r2", "r1", "r2", "r3", "r1", "r2"]
SCORES = np.array([
    # hoarse breathy calm  sad  angry
    [0.9, 0.2, 0.6, 0.3, 0.1],  # r2
    [0.1, 0.4, 0.2, 0.2, 0.6],  # r1
    [0.7, 0.5, 0.2, 0.7, 0.1],  # r2
    [0.3, 0.3, 0.1, 0.1, 0.8],  # r3
    [0.3, 0.8, 0.4, 0.4, 0.2],  # r1
    [0.2, 0.2, 0.4, 0.5, 0.1],  # r2
])
TARGETS_R1 = [0, 1, 0, 0, 1]
TARGETS_R2 = [1, NAN, 1, 0, 0]  # breathy not labelled for r2
TARGETS_R3 = [0, 0, NAN, NAN, NAN]  # mood not labelled for r3
TARGETS = np.array([TARGETS_R2, TARGETS_R1, TARGETS_R2, TARGETS_R3, TARGETS_R1, TARGETS_R2], dtype=float)


def test_mean_in_order_of_first_appearance() -> None:
    names, scores, targets = recording_scores(RECORDINGS, SCORES, TARGETS, HEADS, "mean")
    assert names == ["r2", "r1", "r3"]
    np.testing.assert_allclose(scores, [[0.6, 0.3, 0.4, 0.5, 0.1],
                                        [0.2, 0.6, 0.3, 0.3, 0.4],
                                        [0.3, 0.3, 0.1, 0.1, 0.8]])
    np.testing.assert_array_equal(targets, np.array([TARGETS_R2, TARGETS_R1, TARGETS_R3]))


def test_max_per_column_with_categorical_scores_rescaled() -> None:
    names, scores, _ = recording_scores(RECORDINGS, SCORES, TARGETS, HEADS, "max")
    assert names == ["r2", "r1", "r3"]
    np.testing.assert_allclose(scores[:, :2], [[0.9, 0.5], [0.3, 0.8], [0.3, 0.3]])
    # class maxima r2: (0.6, 0.7, 0.1) / 1.4; r1: (0.4, 0.4, 0.6) / 1.4; r3 unchanged
    np.testing.assert_allclose(scores[:, 2:], [[0.6 / 1.4, 0.7 / 1.4, 0.1 / 1.4],
                                               [0.4 / 1.4, 0.4 / 1.4, 0.6 / 1.4],
                                               [0.1, 0.1, 0.8]])


def test_one_window_per_recording_changes_nothing() -> None:
    names, scores, targets = recording_scores(["a", "b"], SCORES[:2], TARGETS[:2], HEADS, "max")
    assert names == ["a", "b"]
    np.testing.assert_allclose(scores, SCORES[:2])
    np.testing.assert_array_equal(targets, TARGETS[:2])


def test_disagreeing_targets_name_the_recording_and_head() -> None:
    targets = TARGETS.copy()
    targets[4, 2:] = [1, 0, 0]  # a window of r1 says calm, the other says angry
    with pytest.raises(DataError, match=r"head 'mood': .*1 recording\(s\).*'r1'"):
        recording_scores(RECORDINGS, SCORES, targets, HEADS, "mean")
    targets = TARGETS.copy()
    targets[2, 1] = 1.0  # labelled on one window of r2, NaN on the others
    with pytest.raises(DataError, match=r"head 'voice': .*'r2'"):
        recording_scores(RECORDINGS, SCORES, targets, HEADS, "mean")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        recording_scores(RECORDINGS, SCORES, TARGETS, HEADS, "median")
    with pytest.raises(ValueError, match="must both be"):
        recording_scores(RECORDINGS[:3], SCORES, TARGETS, HEADS, "mean")
    with pytest.raises(ValueError, match="must both be"):
        recording_scores(RECORDINGS, SCORES[:, :4], TARGETS[:, :4], HEADS, "mean")


def test_has_windows() -> None:
    assert has_windows(RECORDINGS)
    assert not has_windows(["a", "b", "c"])
    assert not has_windows([])


def test_compute_metrics_accepts_the_output() -> None:
    heads = [HeadSpec("voice", "binary", ["hoarse"]), HeadSpec("mood", "categorical", ["mood"], ["calm", "sad"])]
    recordings = ["a", "a", "b", "b", "c", "d"]
    scores = np.array([[0.9, 0.8, 0.2], [0.7, 0.6, 0.4], [0.2, 0.3, 0.7], [0.4, 0.1, 0.9],
                       [0.6, 0.2, 0.8], [0.1, 0.7, 0.3]])
    targets = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 1], [0, 1, 0]], dtype=float)
    for mode in ("mean", "max"):
        names, pooled, pooled_targets = recording_scores(recordings, scores, targets, heads, mode)
        metrics = compute_metrics(pooled, pooled_targets, heads)
        assert metrics["n"] == 4 and names == ["a", "b", "c", "d"]
        assert metrics["heads"]["voice"]["accuracy"] == 1.0 and metrics["auc"]["hoarse"] == 1.0
        assert metrics["heads"]["mood"]["accuracy"] == 1.0


def test_aggregation_asked_of_tables_without_windows_is_refused_naming_the_table_and_column() -> None:
    windows = pd.DataFrame({"recording": ["a", "a", "b"]})
    own = pd.DataFrame({"recording": ["a", "b", "c"]})
    for mode in ("mean", "max"):
        check_aggregation({"test": own, "val": windows}, mode, "split")  # some split has windows
        with pytest.raises(ValueError, match=rf"--aggregate {mode}: t.csv: it has no 'recording' column; .* leave"):
            check_aggregation({"data": pd.DataFrame({"uid": ["a"]})}, mode, "t.csv")
        with pytest.raises(ValueError, match=rf"--aggregate {mode}: t.csv: every row is its own recording"):
            check_aggregation({"data": own}, mode, "t.csv")
    for mode in (None, "none"):  # not asked: nothing to refuse
        check_aggregation({"data": own}, mode, "t.csv")
