"""Model selection: which validation metric picks the best epoch and stops training early, and its direction."""
from __future__ import annotations

import math

import numpy as np

from audiotune.config import HEAD_KINDS, HeadSpec
from audiotune.config.sections import MONITORS
from audiotune.engine.metrics import AUC, CLASSIFICATION_KEYS
from audiotune.engine.regression_metrics import REGRESSION_KEYS

REGRESSION = "regression"
CLASSIFICATION_KINDS = tuple(kind for kind in HEAD_KINDS if kind != REGRESSION)
# which head kinds define each metric
NEEDS = {**dict.fromkeys(CLASSIFICATION_KEYS, CLASSIFICATION_KINDS), AUC: ("binary",),
         **dict.fromkeys(REGRESSION_KEYS, (REGRESSION,))}


def monitor_mode(monitor: str) -> str:
    """``max`` or ``min``: which way is better for this metric."""
    if monitor not in MONITORS:
        raise ValueError(f"--monitor {monitor}: choose one of {sorted(MONITORS)}")
    return MONITORS[monitor]


def check_monitor(monitor: str, heads: list[HeadSpec]) -> None:
    """Before training: the metric exists for these heads (``--monitor ccc`` needs a regression head, ...)."""
    monitor_mode(monitor)
    kinds = NEEDS.get(monitor)
    if kinds and not any(head.kind in kinds for head in heads):
        have = sorted({head.kind for head in heads})
        raise ValueError(f"--monitor {monitor} needs a head of kind {' or '.join(kinds)}; this run has {have}")


def monitor_value(metrics: dict, monitor: str) -> float | None:
    """The value of ``monitor`` in :func:`~audiotune.engine.metrics.compute_metrics` output (the mean over heads
    for several heads: for ``auc``, of the binary heads' own, each the mean of its columns'); None when it is
    undefined for this validation set."""
    value = metrics.get(monitor)
    if isinstance(value, dict):  # auc: the top level holds one value per binary column
        heads = [scores[monitor] for scores in metrics.get("heads", {}).values() if monitor in scores]
        # (metrics written before binary heads had their own auc: the mean over the columns)
        present = [v for v in (heads or value.values()) if v is not None]
        value = float(np.mean(present)) if present else None
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def worst_value(monitor: str) -> float:
    """What an undefined metric is logged as: never better than a defined one."""
    return -math.inf if monitor_mode(monitor) == "max" else math.inf
