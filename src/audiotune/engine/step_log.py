"""Per-step training values, logged and checked without stopping the device at every step.

Reading a value the GPU computed (to log it, show it beside the progress bar, or check that it is finite) makes
the CPU wait until the GPU has finished everything queued, and the GPU then waits while the CPU launches the
next work: a stall per read. A training step hands its per-step values to :class:`StepLog` as tensors on the
device (:func:`step_output`: the training step's output beside ``loss``); the callback keeps them there and reads
them all in one copy every :data:`READ_EVERY` steps, before each validation and at each epoch's end. Then it
checks that the losses are finite (a FloatingPointError naming the first step that is not, with its first
clips, before validation or a checkpoint can use the weights), averages each value over the processes,
writes the ``train_NAME_step`` rows at their own steps to the run's loggers (as ``self.log(..., on_step=True)``
wrote them) and keeps the latest for the progress bar.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from torch import Tensor

if TYPE_CHECKING:
    import pandas as pd

STEP_SUFFIX = "_step"  # of the per-step columns of logs/metrics.csv (train_loss_step, ...)


def step_rows(log: pd.DataFrame) -> pd.Series:
    """The rows of a run's ``logs/metrics.csv`` that hold per-step values only (not an epoch's or a
    validation's)."""
    others = [column for column in log.columns if column not in ("epoch", "step")
              and not column.endswith(STEP_SUFFIX)]
    return log[others].isna().all(axis=1)

READ_EVERY = 25  # training steps between two reads of the per-step values (one device sync each)
STEP_VALUES = "step_values"  # the key of a training step's output that holds them


def step_output(loss: Tensor, **values: Tensor | float) -> dict[str, Any]:
    """A training step's output: ``loss`` for the optimiser, and the per-step values :class:`StepLog` logs
    (``loss`` among them, undivided by gradient accumulation)."""
    return {"loss": loss, STEP_VALUES: {"loss": loss.detach(), **{k: torch.as_tensor(v).detach()
                                                                 for k, v in values.items()}}}


@dataclass
class _Step:
    step: int
    epoch: int
    uids: list[str]
    values: dict[str, Tensor]


class StepLog(pl.Callback):
    """Keeps each training step's values on the device and reads them every :data:`READ_EVERY` steps, before
    validation and at the end of each epoch (see the module docstring). The error for a loss that is not finite
    names it by the module's ``loss_label`` (default ``training``) and ends with its ``divergence_hint``."""

    def __init__(self) -> None:
        self.pending: list[_Step] = []
        self.latest: dict[str, float] = {}
        self._sums: dict[str, float] = {}  # the current epoch's values summed over the steps read, for epoch_means
        self._steps, self._epoch = 0, -1

    @property
    def epoch_means(self) -> dict[str, float]:
        """Each value's mean over the steps of the current (or just finished) epoch read so far, named
        ``train_NAME_epoch`` as the run's log names the epoch's loss."""
        return {f"train_{name}_epoch": total / self._steps for name, total in self._sums.items()} if self._steps else {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        values = outputs.get(STEP_VALUES) if isinstance(outputs, Mapping) else None
        if not values:
            return
        uids = list(batch["uid"][:4]) if isinstance(batch, Mapping) and "uid" in batch else []
        # the step Lightning's own per-step rows are written at (its logger connector's count)
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        self.pending.append(_Step(step, trainer.current_epoch, uids, dict(values)))
        if len(self.pending) >= READ_EVERY:
            self.read(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.read(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.read(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.read(trainer, pl_module)

    def read(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Read the pending steps' values in one copy, check the losses, log them (every process calls this at
        the same steps: the values are averaged over the processes)."""
        steps, self.pending = self.pending, []
        if not steps:
            return
        names = list(steps[0].values)
        device = pl_module.device  # a value computed on the CPU (a temperature) joins the rest there
        table = torch.stack([torch.stack([s.values[name].to(device).float().reshape(()) for name in names])
                             for s in steps])
        if trainer.world_size > 1:
            table = trainer.strategy.reduce(table, reduce_op="mean")
        rows = table.cpu().tolist()
        for step, row in zip(steps, rows, strict=True):
            loss = row[names.index("loss")]
            if not math.isfinite(loss):
                hint = getattr(pl_module, "divergence_hint", "")
                raise FloatingPointError(f"{getattr(pl_module, 'loss_label', 'training')} loss is {loss} at step "
                                         f"{step.step} (uids {step.uids}...)" + (f": {hint}" if hint else ""))
        for step, row in zip(steps, rows, strict=True):
            metrics = {f"train_{name}{STEP_SUFFIX}": value for name, value in zip(names, row, strict=True)}
            for logger in trainer.loggers:
                logger.log_metrics({**metrics, "epoch": step.epoch}, step=step.step)
        self.latest = {f"train_{name}": value for name, value in zip(names, rows[-1], strict=True)}
        for step, row in zip(steps, rows, strict=True):
            if step.epoch != self._epoch:
                self._sums, self._steps, self._epoch = {}, 0, step.epoch
            self._steps += 1
            for name, value in zip(names, row, strict=True):
                self._sums[name] = self._sums.get(name, 0.0) + value
