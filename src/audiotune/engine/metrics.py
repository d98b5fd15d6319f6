"""Metrics per head and overall; NaN-safe: an undefined value is None with a note saying why.

Targets may hold NaN where a head (for binary and regression heads: a column) has no target for a row:
every head is scored on its own labelled rows, and reports how many (``n``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from audiotune.config import HeadSpec
from audiotune.engine.regression_metrics import REGRESSION_KEYS, REGRESSION_RANGES, regression_head_metrics

# f1_of_macro_pr: the harmonic mean of the macro-averaged precision and recall, which the speech-emotion seed
# reported as "microF1"; micro_f1 is the standard one (pooled counts: equal to accuracy for single-label heads)
CLASSIFICATION_KEYS = ("accuracy", "macro_f1", "weighted_f1", "micro_f1", "f1_of_macro_pr", "uar")  # each in [0, 1]
AUC = "auc"  # a binary head's: the mean of its columns' ROC AUC, each in [0, 1]
UNIT = (0.0, 1.0)
# every metric a head can have -> the values it can take
METRIC_RANGES = {**dict.fromkeys((*CLASSIFICATION_KEYS, AUC), UNIT), **REGRESSION_RANGES}


def head_slices(heads: list[HeadSpec]) -> list[slice]:
    """Column range of each head in the concatenated outputs."""
    slices, start = [], 0
    for head in heads:
        slices.append(slice(start, start + head.num_outputs))
        start += head.num_outputs
    return slices


def scores_from_logits(logits: np.ndarray, heads: list[HeadSpec], loss: str = "auto") -> np.ndarray:
    """Per-output scores: softmax per categorical or soft head, sigmoid for BCE heads, raw outputs for MSE
    binary heads, and regression outputs back in the targets' original units (un-standardised)."""
    scores = np.empty_like(logits, dtype=np.float64)
    for head, cols in zip(heads, head_slices(heads)):
        block = logits[:, cols].astype(np.float64)
        if head.is_distribution:
            block = np.exp(block - block.max(axis=1, keepdims=True))
            scores[:, cols] = block / block.sum(axis=1, keepdims=True)
        elif head.kind == "regression":
            if head.target_mean:
                block = block * np.asarray(head.target_std) + np.asarray(head.target_mean)
            scores[:, cols] = block
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


def f1_of_macro_pr(truth: np.ndarray, predicted: np.ndarray, labels: list[int]) -> float:
    """2 P R / (P + R) of the mean per-class precision P and recall R over ``labels`` (a class never predicted
    has precision 0, one never present recall 0; 0 when P + R is 0): the speech-emotion seed's "microF1"."""
    precision, recall, _, _ = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    mean_p, mean_r = float(np.mean(precision)), float(np.mean(recall))
    return 2 * mean_p * mean_r / (mean_p + mean_r) if mean_p + mean_r > 0 else 0.0


def _class_scores(truth: np.ndarray, predicted: np.ndarray, labels: list[int]) -> dict:
    """accuracy, macro/weighted/micro F1 and the F1 of macro precision and recall of hard labels over the given
    label set; the macro F1 averages the classes present or predicted (:func:`scored_classes`: a class that is
    neither has no F1), as the UAR averages the classes present."""
    with warnings.catch_warnings():  # one class scored: the F1 is that class's, as asked
        warnings.filterwarnings("ignore", message="A single label was found")
        macro = float(f1_score(truth, predicted, labels=scored_classes(truth, predicted, labels), average="macro",
                               zero_division=0))
    return {
        "accuracy": float((truth == predicted).mean()),
        "macro_f1": macro,
        "weighted_f1": float(f1_score(truth, predicted, labels=labels, average="weighted", zero_division=0)),
        "micro_f1": float(f1_score(truth, predicted, labels=labels, average="micro", zero_division=0)),
        "f1_of_macro_pr": f1_of_macro_pr(truth, predicted, labels),
    }


def scored_classes(truth: np.ndarray, predicted: np.ndarray, labels: list[int]) -> list[int]:
    """The classes of ``labels`` present in ``truth`` or ``predicted``: those a per-class F1 is defined for (one
    present but never predicted, or predicted but absent, has F1 0)."""
    seen = set(np.unique(truth).tolist()) | set(np.unique(predicted).tolist())
    return [label for label in labels if label in seen]


def uar(truth: np.ndarray, predicted: np.ndarray) -> float:
    """The mean recall of the classes present in ``truth`` (a class only predicted has no recall to average)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")  # one class present: its recall
        return float(balanced_accuracy_score(truth, predicted))


def _distribution_metrics(scores: np.ndarray, targets: np.ndarray, head: HeadSpec, notes: list[str]) -> dict:
    """A categorical or soft head on its labelled rows; soft targets are scored against their argmax class."""
    labelled = ~np.isnan(targets).any(axis=1)
    labels = list(range(len(head.classes)))
    metrics: dict = {"n": int(labelled.sum()), "classes": list(head.classes)}
    if not labelled.any():
        notes.append(f"metrics of head '{head.name}' undefined: no labelled rows")
        return {**metrics, **{key: None for key in CLASSIFICATION_KEYS},
                "confusion_matrix": np.zeros((len(labels), len(labels)), dtype=int).tolist(), "per_class": {}}
    truth, predicted = targets[labelled].argmax(1), scores[labelled].argmax(1)
    metrics.update(_class_scores(truth, predicted, labels))
    metrics["uar"] = uar(truth, predicted)
    metrics["confusion_matrix"] = confusion_matrix(truth, predicted, labels=labels).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels,
                                                                     zero_division=0)
    scored = scored_classes(truth, predicted, labels)
    predictions = np.bincount(predicted, minlength=len(labels))
    # 0 / 0 is no score: a class never predicted has no precision, one absent no recall (its F1, 0, still counts)
    metrics["per_class"] = {name: {"precision": float(precision[i]) if predictions[i] else None,
                                   "recall": float(recall[i]) if support[i] else None,
                                   "f1": float(f1[i]), "support": int(support[i])} if i in scored else
                            {"precision": None, "recall": None, "f1": None, "support": 0}
                            for i, name in enumerate(head.classes)}
    for what, classes in (("precision", [head.classes[i] for i in scored if not predictions[i]]),
                          ("recall", [head.classes[i] for i in scored if not support[i]])):
        if classes:
            notes.append(f"per-class {what} of head '{head.name}' undefined for {', '.join(map(str, classes))} ("
                         + ("never predicted" if what == "precision" else "absent") + "; F1 0)")
    absent = [head.classes[i] for i in labels if i not in scored]
    if absent:
        notes.append(f"macro_f1 of head '{head.name}' over the {len(scored)} classes present or predicted: "
                     f"{', '.join(map(str, absent))} neither (no F1)")
    return metrics


def _binary_metrics(scores: np.ndarray, targets: np.ndarray, head: HeadSpec, result: dict) -> dict:
    """Each 0/1 column on its labelled rows (threshold 0.5), its AUC also into ``result[AUC]``; the head's values
    are their means (its ``auc``: over the columns where it is defined)."""
    per_column: dict[str, dict[str, float | None]] = {}  # n, the classification keys and uar per column
    for j, column in enumerate(head.columns):
        labelled = ~np.isnan(targets[:, j])
        truth, score = targets[labelled, j].astype(int), scores[labelled, j]
        if not labelled.any():
            result["notes"].append(f"metrics of '{column}' undefined: no labelled rows")
            result[AUC][column] = None
            per_column[column] = {"n": 0, **{key: None for key in CLASSIFICATION_KEYS}, AUC: None}
            continue
        predicted = (score >= 0.5).astype(int)
        two_classes = len(np.unique(truth)) > 1
        if not two_classes:
            result["notes"].append(f"auc of '{column}' undefined: only one class present")
        result[AUC][column] = _finite(roc_auc_score(truth, score)) if two_classes else None
        per_column[column] = {"n": int(labelled.sum()), **_class_scores(truth, predicted, [0, 1]),
                              "uar": uar(truth, predicted), AUC: result[AUC][column]}
    metrics: dict = {"n": int((~np.isnan(targets)).any(axis=1).sum())}
    metrics.update({key: _mean([c[key] for c in per_column.values()]) for key in (*CLASSIFICATION_KEYS, AUC)})
    metrics["columns"] = per_column
    return metrics


def compute_metrics(scores: np.ndarray, targets: np.ndarray, heads: list[HeadSpec]) -> dict:
    """Metrics per head (each on its labelled rows, with its ``n``) and their means over heads.

    Classification heads (binary, categorical, soft): accuracy, macro_f1, weighted_f1, micro_f1 (standard),
    f1_of_macro_pr (the harmonic mean of macro precision and macro recall), uar; categorical
    and soft heads also a confusion matrix and a per-class report; binary columns an AUC (top-level ``auc``, by
    column; a binary head's ``auc``: the mean of its columns').
    Binary columns are thresholded at 0.5. Regression heads: mae, rmse, pearson, spearman, ccc, r2 in the
    targets' units. Top level: the classification keys averaged over classification heads and the regression
    keys over regression heads, each set only where there are such heads (without any head: the classification
    keys, None).
    """
    finite = np.isfinite(scores).all(axis=1)
    notes = [] if finite.all() else [f"{int((~finite).sum())} row(s) scored NaN or infinite by the model: left out "
                                     "of every metric (their scores are in the predictions)"]
    scores, targets = scores[finite], targets[finite]
    result: dict = {"n": int(len(scores)), "heads": {}, AUC: {}, "notes": notes}
    has_regression = any(head.kind == "regression" for head in heads)
    has_classification = any(head.kind != "regression" for head in heads) or not heads
    if len(scores) == 0:
        result["notes"].append("no rows to score")
        keys = (*CLASSIFICATION_KEYS * has_classification, *REGRESSION_KEYS * has_regression)
        result.update({key: None for key in keys})
        return result
    for head, cols in zip(heads, head_slices(heads)):
        head_scores, head_targets = scores[:, cols], targets[:, cols]
        if head.is_distribution:
            metrics = _distribution_metrics(head_scores, head_targets, head, result["notes"])
        elif head.kind == "regression":
            metrics = regression_head_metrics(head_scores, head_targets, head.columns, result["notes"])
        else:
            metrics = _binary_metrics(head_scores, head_targets, head, result)
        result["heads"][head.name] = metrics
    for kind, keys in (("classification", CLASSIFICATION_KEYS), ("regression", REGRESSION_KEYS)):
        averaged = {h.name: result["heads"][h.name] for h in heads
                    if (h.kind == "regression") == (kind == "regression")}
        if not (has_regression if kind == "regression" else has_classification):
            continue
        for key in keys:
            result[key] = _mean([m[key] for m in averaged.values()])
            left = [name for name, m in averaged.items() if m[key] is None]
            if left and len(left) < len(averaged):
                result["notes"].append(f"{key}: the mean of {len(averaged) - len(left)} of the {len(averaged)} "
                                       f"{kind} heads ({', '.join(left)} undefined)")
    return result
