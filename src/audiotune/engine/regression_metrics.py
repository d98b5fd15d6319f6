"""Metrics of regression heads: MAE, RMSE, Pearson, Spearman, Lin's concordance (CCC) and R².

Pure numpy/scipy on the labelled rows only; an undefined value (constant column, too few rows) is None
with a note saying why, never NaN.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

UNBOUNDED, CORRELATION = (0.0, math.inf), (-1.0, 1.0)
# each metric of a regression head -> the values it can take
REGRESSION_RANGES = {"mae": UNBOUNDED, "rmse": UNBOUNDED, "pearson": CORRELATION, "spearman": CORRELATION,
                     "ccc": CORRELATION, "r2": (-math.inf, 1.0)}
REGRESSION_KEYS = tuple(REGRESSION_RANGES)


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denominator) if denominator > 0 else None


def concordance(truth: np.ndarray, predicted: np.ndarray) -> float | None:
    """Lin's concordance correlation coefficient, with population (1/n) moments as Lin defined it."""
    mt, mp = truth.mean(), predicted.mean()
    vt, vp = truth.var(), predicted.var()
    covariance = ((truth - mt) * (predicted - mp)).mean()
    denominator = vt + vp + (mt - mp) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else None


def regression_column_metrics(truth: np.ndarray, predicted: np.ndarray, column: str,
                              notes: list[str]) -> dict[str, float | int | None]:
    """All regression metrics of one column's labelled rows; undefined ones are None with a note."""
    truth, predicted = np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    result: dict[str, float | int | None] = {"n": int(len(truth))}
    if len(truth) == 0:
        notes.append(f"regression metrics of '{column}' undefined: no labelled rows")
        return {**result, **{key: None for key in REGRESSION_KEYS}}
    error = predicted - truth
    result["mae"] = float(np.abs(error).mean())
    result["rmse"] = float(math.sqrt((error ** 2).mean()))
    if len(truth) < 2:
        notes.append(f"pearson, spearman, ccc and r2 of '{column}' undefined: one labelled row")
        return {**result, "pearson": None, "spearman": None, "ccc": None, "r2": None}
    result["pearson"] = _pearson(truth, predicted)
    result["spearman"] = _pearson(rankdata(truth), rankdata(predicted))
    if result["pearson"] is None:
        notes.append(f"pearson and spearman of '{column}' undefined: constant targets or predictions")
    total = float(((truth - truth.mean()) ** 2).sum())
    # constant targets: R² divides by their zero variance, and the CCC is 0 whatever the predictions (no covariance)
    result["ccc"] = concordance(truth, predicted) if total > 0 else None
    result["r2"] = float(1 - (error ** 2).sum() / total) if total > 0 else None
    if total == 0:
        notes.append(f"ccc and r2 of '{column}' undefined: constant targets")
    return result


def _mean(values: list[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def regression_head_metrics(scores: np.ndarray, targets: np.ndarray, columns: list[str],
                            notes: list[str]) -> dict:
    """Per-column metrics of a regression head (rows where that column is labelled) and their means."""
    per_column = {}
    for j, column in enumerate(columns):
        labelled = ~np.isnan(targets[:, j])
        per_column[column] = regression_column_metrics(targets[labelled, j], scores[labelled, j], column, notes)
    metrics: dict = {"n": int((~np.isnan(targets)).any(axis=1).sum())}
    metrics.update({key: _mean([m[key] for m in per_column.values()]) for key in REGRESSION_KEYS})
    metrics["columns"] = per_column
    return metrics
