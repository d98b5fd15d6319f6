"""Run-directory plots: training curves, confusion matrices, ROC curves, regression scatter plots (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from audiotune.atomic import atomic_path  # noqa: E402
from audiotune.outputs import SCORED_SPLITS, TRAIN_LOSS_COLUMN, VAL_LOSS_COLUMN  # noqa: E402
from audiotune.report.probe_page import probe_metric  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def plot_training_curves(log_csv: str | Path, out: str | Path,
                         columns: tuple[str, ...] = (TRAIN_LOSS_COLUMN, VAL_LOSS_COLUMN),
                         ylabel: str = "loss") -> Path | None:
    """Per-epoch curves of the Lightning CSV log; None when none of ``columns`` was logged."""
    log_csv = Path(log_csv)
    if not log_csv.is_file():
        return None
    log = pd.read_csv(log_csv)
    columns = tuple(c for c in columns if c in log.columns)
    if not columns or "epoch" not in log.columns:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for column in columns:
        series = log[["epoch", column]].dropna().groupby("epoch")[column].last()
        ax.plot(series.index, series.to_numpy(), marker="o", label=column.replace("_epoch", ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend()
    return _save(fig, Path(out))


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], out: str | Path, title: str) -> Path:
    """Counts with the row-normalised share as colour."""
    counts = np.asarray(matrix)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(3.5, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black",
                fontsize=8)
    return _save(fig, Path(out))


def plot_roc(truth: dict[str, np.ndarray], scores: dict[str, np.ndarray], out: str | Path, title: str) -> Path:
    """One ROC curve per binary label that has both classes."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for label, y in truth.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, scores[label])
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, Path(out))


def plot_scatter(truth: np.ndarray, predicted: np.ndarray, out: str | Path, title: str, label: str = "") -> Path:
    """Predicted against true values of one regression target, with the identity line."""
    truth, predicted = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(truth, predicted, s=10, alpha=0.6)
    if len(truth):
        low = float(min(truth.min(), predicted.min()))
        high = float(max(truth.max(), predicted.max()))
        ax.plot([low, high], [low, high], linestyle="--", color="grey")
    ax.set_xlabel(f"true {label}".strip())
    ax.set_ylabel(f"predicted {label}".strip())
    ax.set_title(title)
    return _save(fig, Path(out))


def plot_probe(table: pd.DataFrame, out: str | Path) -> Path:
    """Validation (and test) metrics per probed layer; the weighted sum as the last point."""
    metric = probe_metric(table)[1] or "accuracy"
    fig, ax = plt.subplots(figsize=(max(4.5, 0.45 * len(table) + 2), 3.5))
    for split in SCORED_SPLITS:
        column = f"{split}_{metric}"
        if column in table:
            ax.plot(table["layer"], table[column].astype(float), marker="o", label=split)
    ax.set_xlabel("hidden state")
    ax.set_ylabel(metric)
    ax.set_title("layer probe")
    ax.legend()
    return _save(fig, Path(out))


def plot_layer_weights(weights: list[float], out: str | Path) -> Path:
    """The learned weight of each hidden state (softmax or raw, as the run weighed them)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.4 * len(weights) + 2), 3.0))
    ax.bar(range(len(weights)), weights)
    ax.set_xlabel("hidden state")
    ax.set_ylabel("weight")
    ax.set_title("learned layer weights")
    return _save(fig, Path(out))


def plot_attention(spectrogram: np.ndarray, attention: np.ndarray, out: str | Path, title: str,
                   covered: tuple[int, int] | None = None) -> Path:
    """A (bins, frames) spectrogram with a (rows, cols) attention map over the ``covered`` (bins, frames) its
    patches read (None: all of it)."""
    fig, axes = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True)
    extent = (0, spectrogram.shape[1], 0, spectrogram.shape[0])
    bins, frames = covered or spectrogram.shape
    axes[0].imshow(spectrogram, origin="lower", aspect="auto", cmap="magma", extent=extent)
    axes[0].set_ylabel("mel bin")
    axes[0].set_title(title)
    axes[1].imshow(spectrogram, origin="lower", aspect="auto", cmap="gray", extent=extent)
    axes[1].imshow(attention, origin="lower", aspect="auto", cmap="jet", alpha=0.55, extent=(0, frames, 0, bins),
                   interpolation="nearest")
    axes[1].set_xlim(0, spectrogram.shape[1])
    axes[1].set_ylim(0, spectrogram.shape[0])
    axes[1].set_xlabel("frame")
    axes[1].set_ylabel("attention")
    return _save(fig, Path(out))
