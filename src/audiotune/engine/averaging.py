"""``--ema``: Lightning's exponential moving average of the weights, updated after every step without waiting for the
device.

torch's :class:`~torch.optim.swa_utils.AveragedModel` reads its update count back from the device twice per update
(whether to copy the weights, then whether to average them), and Lightning updates it after every training step:
each read makes the host wait until the device has finished the step, so the next step cannot be queued meanwhile.
:class:`QueuedAverage` knows on the host whether it has started, and updates the same weights with the same values.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


class QueuedAverage(AveragedModel):
    """An :class:`~torch.optim.swa_utils.AveragedModel` of an ``avg_fn`` (EMA's) whose updates queue their work on
    the device: the first copies the model, each later one averages it in, as torch's do."""

    def __init__(self, model: nn.Module, *args: Any, **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        if self.avg_fn is None or self.multi_avg_fn is not None:
            raise ValueError("QueuedAverage averages with an avg_fn (and no multi_avg_fn)")
        self.started: bool | None = False  # whether n_averaged > 0, on the host; None: read it at the next update

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.started = None  # a resumed average: its count is read once, at its first update
        return super().load_state_dict(*args, **kwargs)

    def _pairs(self, model: nn.Module) -> Iterator[tuple[Tensor, Tensor]]:
        if self.use_buffers:
            return zip(itertools.chain(self.module.parameters(), self.module.buffers()),
                       itertools.chain(model.parameters(), model.buffers()), strict=False)
        return zip(self.module.parameters(), model.parameters(), strict=False)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self.started is None:
            self.started = bool(self.n_averaged > 0)
        assert self.avg_fn is not None  # checked in __init__
        for averaged, current in self._pairs(model):
            current = current.detach()
            if current.device != averaged.device:
                current = current.to(averaged.device)
            averaged.detach().copy_(self.avg_fn(averaged.detach(), current, self.n_averaged) if self.started
                                    else current)
        if not self.use_buffers:  # buffers not averaged follow the model's
            for averaged, current in zip(self.module.buffers(), model.buffers(), strict=True):
                averaged.detach().copy_(current.detach())
        self.n_averaged += 1
        self.started = True


class QueuedEMA(EMAWeightAveraging):
    """Lightning's :class:`~pytorch_lightning.callbacks.EMAWeightAveraging` averaging into a :class:`QueuedAverage`,
    kept on the device the strategy trains on. (Lightning's builds it on the module's device at the setup hook, which
    runs before the strategy moves the module: the CPU, so that every step would copy each weight back to the host and
    average it there.)"""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._average_model = QueuedAverage(pl_module, device=self._device or trainer.strategy.root_device,
                                                use_buffers=self._use_buffers, **self._kwargs)
