"""Recording-level scores: aggregate the rows of a recording's windows into one row per recording.

Scores and targets have the column layout of :mod:`audiotune.engine.metrics` (one block of columns per
head, see :func:`~audiotune.engine.metrics.head_slices`), so the output goes straight to ``compute_metrics``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from audiotune.config import HeadSpec
from audiotune.data.errors import DataError
from audiotune.data.segments import RECORDING_COLUMN
from audiotune.engine.metrics import head_slices

MODES = ("mean", "max")
AGGREGATE_MODES = ("none", *MODES)  # none: only the rows are scored
LISTED = 5


def has_windows(recordings: Sequence[str]) -> bool:
    """True when some recording has more than one row, i.e. aggregating would change anything."""
    return len(set(recordings)) < len(recordings)


def _check_shapes(recordings: Sequence[str], scores: np.ndarray, targets: np.ndarray, heads: list[HeadSpec],
                  mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"aggregation mode must be one of {MODES} (got {mode!r})")
    width = sum(head.num_outputs for head in heads)
    if scores.ndim != 2 or scores.shape != targets.shape or scores.shape != (len(recordings), width):
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be "
                         f"({len(recordings)} rows, {width} outputs of the heads)")


def _check_targets(names: np.ndarray, codes: np.ndarray, targets: np.ndarray, first: np.ndarray,
                   heads: list[HeadSpec]) -> None:
    """Every window of a recording must carry the recording's targets; a head left unlabelled (NaN) matches NaN."""
    reference = targets[first[codes]]
    same = (targets == reference) | (np.isnan(targets) & np.isnan(reference))
    for head, cols in zip(heads, head_slices(heads)):
        bad_rows = ~same[:, cols].all(axis=1)
        if bad_rows.any():
            bad = list(dict.fromkeys(names[codes[bad_rows]].tolist()))
            listed = ", ".join(repr(name) for name in bad[:LISTED]) + (" ..." if len(bad) > LISTED else "")
            raise DataError(f"head '{head.name}': the windows of {len(bad)} recording(s) disagree on their targets "
                            f"({listed}); windows of one recording must share its labels")


def table_recordings(table: pd.DataFrame) -> pd.Series | None:
    """The ``recording`` column of a table whose rows are windows of recordings, else None."""
    if RECORDING_COLUMN not in table.columns or not has_windows(table[RECORDING_COLUMN].astype(str).tolist()):
        return None
    return table[RECORDING_COLUMN].astype(str)


def check_aggregation(tables: dict[str, pd.DataFrame], mode: str | None, where: str) -> None:
    """``--aggregate mean|max`` asked for tables none of whose rows are windows of a recording: refused, as it would
    score no recording (None or none: nothing asked)."""
    if mode in (None, "none") or any(table_recordings(table) is not None for table in tables.values()):
        return
    why = f"every row is its own recording in its '{RECORDING_COLUMN}' column" \
        if any(RECORDING_COLUMN in table.columns for table in tables.values()) else \
        f"it has no '{RECORDING_COLUMN}' column"
    raise ValueError(f"--aggregate {mode}: {where}: {why}; aggregation scores each recording from its windows, "
                     f"several rows naming it in a '{RECORDING_COLUMN}' column (audiotune segment writes them): "
                     "leave --aggregate out")


def check_recording_targets(tables: dict[str, pd.DataFrame], targets: dict[str, np.ndarray],
                            heads: list[HeadSpec]) -> None:
    """Before any training or scoring: the windows of each recording carry the same targets."""
    for split, table in tables.items():
        recordings = table_recordings(table)
        if recordings is None or not heads:
            continue
        try:
            recording_scores(recordings.tolist(), targets[split], targets[split], heads)
        except DataError as err:
            raise DataError(f"{table.attrs.get('source', split)}: {err}") from err


def recording_scores(recordings: Sequence[str], scores: np.ndarray, targets: np.ndarray, heads: list[HeadSpec],
                     mode: str = "mean") -> tuple[list[str], np.ndarray, np.ndarray]:
    """One row per recording, in order of first appearance: (recording names, scores, targets).

    ``mode`` ``mean`` averages each output column over the recording's windows; ``max`` takes its maximum,
    after which each categorical head's class scores are rescaled to sum to one again (argmax is unchanged).
    Targets must be the same on all windows of a recording, else a DataError names the recording and head.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    _check_shapes(recordings, scores, targets, heads, mode)
    codes, names = pd.factorize(pd.Series(list(recordings), dtype=object), sort=False)
    names = np.asarray(names, dtype=object)
    if (codes < 0).any():
        raise DataError("recording names are missing on some rows; every window needs its recording")
    # the first row of each recording, in order of appearance
    first = np.unique(codes, return_index=True)[1]
    _check_targets(names, codes, targets, first, heads)
    if mode == "mean":
        pooled = np.zeros((len(names), scores.shape[1]))
        np.add.at(pooled, codes, scores)
        pooled /= np.bincount(codes, minlength=len(names))[:, None]
    else:
        pooled = np.full((len(names), scores.shape[1]), -np.inf)
        np.maximum.at(pooled, codes, scores)
        for head, cols in zip(heads, head_slices(heads)):
            if head.is_distribution:
                pooled[:, cols] /= pooled[:, cols].sum(axis=1, keepdims=True)
    return [str(name) for name in names], pooled, targets[first]
