"""What the commands print: where outputs went, metric summaries, one-line errors."""
from __future__ import annotations

import logging
from pathlib import Path

from audiotune import storage
from audiotune.data.errors import DataError


def shown(path: str | Path) -> str:
    """Where an output ends up: its remote URL when it was written in a staging folder."""
    return storage.join(storage.final_place(Path(path).parent), Path(path).name)


def one_line(err: BaseException) -> str:
    """The error's own message (what the user must fix), with its type when the message alone says too little."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, (DataError, ValueError, OSError)):
        return text
    return f"{type(err).__name__}: {text} (rerun with -v for the traceback)"


def summary(metrics: dict) -> dict:
    """The headline metrics of one split (and of its recordings, when windows were aggregated)."""
    keys = ("n", "accuracy", "macro_f1", "weighted_f1", "uar", "auc", "mae", "rmse", "pearson", "ccc")
    picked = {k: metrics.get(k) for k in keys if metrics.get(k) not in (None, {})}
    if "recording" in metrics:
        picked["recording"] = summary(metrics["recording"])
    return picked


def quiet_lightning(verbose: bool) -> None:
    """Lightning sets INFO when imported: its hardware and tips banner on every run, unless -v."""
    if not verbose:
        logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
