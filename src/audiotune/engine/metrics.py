"""Metrics per head and overall; NaN-safe: an undefined value is None with a note saying why."""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

from audiotune.config import HeadSpec


def head_slices(heads: list[HeadSpec]) -> list[slice]:
    """Column range of each head in the concatenated outputs."""
    slices, start = [], 0
    for head in heads:
        slices.append(slice(start, start + head.num_outputs))
        start += head.num_outputs
    return slices


def scores_from_logits(logits: np.ndarray, heads: list[HeadSpec], loss: str = "auto") -> np.ndarray:
    """Per-output scores: sigmoid for BCE heads, softmax per categorical head, raw outputs for MSE."""
    scores = np.empty_like(logits, dtype=np.float64)
    for head, cols in zip(heads, head_slices(heads)):
        block = logits[:, cols].astype(np.float64)
        if head.kind == "categorical":
            block = np.exp(block - block.max(axis=1, keepdims=True))
            scores[:, cols] = block / block.sum(axis=1, keepdims=True)
        elif loss == "MSE":
            scores[:, cols] = block
        else:
            scores[:, cols] = 1.0 / (1.0 + np.exp(-block))
    return scores


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def compute_metrics(scores: np.ndarray, targets: np.ndarray, heads: list[HeadSpec]) -> dict:
    """accuracy, macro_f1, uar per head and averaged over heads; per-label AUC for binary columns.

    Binary columns are thresholded at 0.5; soft (mixed) targets never reach here.
    """
    result: dict = {"n": int(len(scores)), "heads": {}, "auc": {}, "notes": []}
    if len(scores) == 0:
        result["notes"].append("no rows to score")
        result.update(accuracy=None, macro_f1=None, uar=None)
        return result
    for head, cols in zip(heads, head_slices(heads)):
        head_scores, head_targets = scores[:, cols], targets[:, cols]
        if head.kind == "categorical":
            truth, predicted = head_targets.argmax(1), head_scores.argmax(1)
            labels = list(range(len(head.classes)))
            metrics = {
                "accuracy": float((truth == predicted).mean()),
                "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
                "uar": float(balanced_accuracy_score(truth, predicted)),
                "confusion_matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
                "classes": list(head.classes),
            }
        else:
            per_column = []
            for j, column in enumerate(head.columns):
                truth = head_targets[:, j].astype(int)
                predicted = (head_scores[:, j] >= 0.5).astype(int)
                if len(np.unique(truth)) < 2:
                    auc = None
                    result["notes"].append(f"auc of '{column}' undefined: only one class present")
                else:
                    auc = _finite(roc_auc_score(truth, head_scores[:, j]))
                result["auc"][column] = auc
                per_column.append({
                    "accuracy": float((truth == predicted).mean()),
                    "macro_f1": float(f1_score(truth, predicted, labels=[0, 1], average="macro", zero_division=0)),
                    "uar": float(balanced_accuracy_score(truth, predicted)) if len(np.unique(truth)) > 1 else None,
                })
            metrics = {key: _mean([c[key] for c in per_column]) for key in ("accuracy", "macro_f1", "uar")}
        result["heads"][head.name] = metrics
    for key in ("accuracy", "macro_f1", "uar"):
        result[key] = _mean([m[key] for m in result["heads"].values()])
    return result
