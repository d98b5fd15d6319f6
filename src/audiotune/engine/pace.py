"""What each training epoch cost: its seconds and the most memory the device held, logged with the epoch.

:class:`EpochPace` logs, when a training epoch ends, ``train_seconds``: the wall time of its training steps,
from the epoch's start to the end of its last step, the device's queued work included (one wait for the device
there, where the per-step values are read anyway), not its validation; and on a CUDA GPU
``device_peak_mib``: the most memory the process's tensors had taken on it by the epoch's end, validation
included (torch's peak since the process started, left as it is for anything else that reads it: what a larger
``--batch_size`` has to fit under). Both are the largest over the processes of a DDP run. The run's ``metrics.json``
derives the training clips per second from them (:func:`pace_summary`).
"""
from __future__ import annotations

import statistics
import time

import pandas as pd
import pytorch_lightning as pl
import torch

from audiotune.outputs import DEVICE_PEAK_MIB, TRAIN_CLIPS_PER_S

TRAIN_SECONDS = "train_seconds"  # logged per epoch (logs/metrics.csv)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class EpochPace(pl.Callback):
    """Logs each training epoch's ``train_seconds`` and, on a CUDA GPU, ``device_peak_mib`` (module docstring)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.seconds: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start, self.seconds = time.perf_counter(), None

    def _training_ends(self, pl_module: pl.LightningModule) -> None:
        if self.start is not None and self.seconds is None:
            synchronize(pl_module.device)
            self.seconds = time.perf_counter() - self.start

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object,
                           batch: object, batch_idx: int) -> None:
        if batch_idx + 1 == trainer.num_training_batches:
            self._training_ends(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training_ends(pl_module)
        if self.seconds is None:
            return
        pl_module.log(TRAIN_SECONDS, self.seconds, reduce_fx="max", sync_dist=True)
        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
            pl_module.log(DEVICE_PEAK_MIB, peak, reduce_fx="max", sync_dist=True)
        self.start = None


def pace_summary(log: pd.DataFrame, clips_column: str | None = None) -> dict:
    """From a run's ``logs/metrics.csv``: each epoch's training seconds, the device's peak memory over all epochs
    and, with ``clips_column`` (each epoch's training clips), the median training clips per second of the epochs
    after the first (which includes starting the loader's workers and, when compiled, compiling; the first alone
    when it is the only one); empty for a log without them (a run from before they were logged)."""
    if TRAIN_SECONDS not in log:
        return {}
    epochs = log.dropna(subset=[TRAIN_SECONDS])
    seconds = epochs[TRAIN_SECONDS].astype(float).tolist()
    summary: dict = {"train_seconds_per_epoch": [round(s, 3) for s in seconds]}
    if clips_column is not None and clips_column in epochs:
        rated = epochs.dropna(subset=[clips_column])
        rates = [n / s for n, s in zip(rated[clips_column].astype(float), rated[TRAIN_SECONDS].astype(float))
                 if s > 0]
        if rates:
            summary[TRAIN_CLIPS_PER_S] = round(statistics.median(rates[1:] or rates), 2)
    if DEVICE_PEAK_MIB in log and log[DEVICE_PEAK_MIB].notna().any():
        summary[DEVICE_PEAK_MIB] = round(float(log[DEVICE_PEAK_MIB].max()), 1)
    return summary
