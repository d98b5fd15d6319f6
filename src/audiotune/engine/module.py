"""The Lightning module that trains a Classifier: losses per head type (engine/losses.py), optimizers,
schedules."""
from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch
from pytorch_lightning.utilities.types import OptimizerConfig, OptimizerLRSchedulerConfig
from torch import Tensor

from audiotune.config import HeadSpec, TrainConfig
from audiotune.config.sections import monitor_key
from audiotune.data.batch_features import batch_lengths
from audiotune.data.draws import step_seed
from audiotune.data.loading import batch_features
from audiotune.engine.adapt import batchnorm_state, estimate_batchnorm, load_batchnorm_state
from audiotune.engine.checkpoint_io import set_frozen_aside
from audiotune.engine.cuda_graphs import CudaGraphSkips
from audiotune.engine.distributed import all_gather_objects, unique_batches
from audiotune.engine.losses import ClassWeights, classification_loss, resolve_loss, resolve_regression_loss
from audiotune.engine.metrics import compute_metrics, scores_from_logits
from audiotune.engine.selection import monitor_value, worst_value
from audiotune.engine.step_log import step_output
from audiotune.models.classifier import Classifier
from audiotune.outputs import LR_COLUMN, TRAIN_CLIPS, TRAIN_LOSS_COLUMN, VAL_LOSS_COLUMN

log = logging.getLogger(__name__)


# the checkpoint's entry for the training epoch's clips and learning rates up to the step it was written at
EPOCH_SO_FAR = "epoch_so_far"


@dataclass
class DeviceFeatures:
    """What turns the training and the validation loaders' batches into model inputs once Lightning has moved
    them to the device (:func:`~audiotune.data.loading.batch_features`; None: they come as model inputs)."""

    train: Callable[[dict], dict] | None = None
    val: Callable[[dict], dict] | None = None

    @classmethod
    def of(cls, train: Iterable[dict], val: Iterable[dict] | None) -> DeviceFeatures:
        return cls(batch_features(train), batch_features(val) if val is not None else None)

    def __call__(self, batch: dict, training: bool) -> dict:
        features = self.train if training else self.val
        return features(batch) if features is not None else batch


@dataclass
class ValidationBatch:
    """One validation batch's outputs, read when the epoch ends (then gathered from every process)."""

    uids: list[str]
    logits: np.ndarray
    targets: np.ndarray
    loss: float

    @classmethod
    def read(cls, uids: list[str], logits: Tensor, targets: Tensor, loss: Tensor) -> ValidationBatch:
        return cls(uids, logits.float().cpu().numpy(), targets.float().cpu().numpy(), float(loss))


class ClassifierModule(pl.LightningModule):
    """Training and validation steps around a :class:`Classifier`."""

    loss_label = "train"  # a loss that is not finite, in the error (here and StepLog's)
    divergence_hint = "check --dataset_std / --learning_rate"

    def __init__(self, model: Classifier, heads: list[HeadSpec], config: TrainConfig, steps_per_epoch: int,
                 class_weights: ClassWeights | None = None, seed: int | None = None,
                 adapt_groups: list[tuple[str | None, Iterable[dict]]] | None = None,
                 uid_groups: dict[str, str] | None = None, features: DeviceFeatures | None = None,
                 weighted_mean: bool = True, compile_mode: str = "none"):
        super().__init__()
        self.model = model
        # --compile: the training steps' forward and backward through torch.compile (held outside the module's
        # submodules, as the validation copy: the checkpoints and the optimiser see the model's own weights)
        self.compiled: list[Callable[[Tensor, Tensor | None], Tensor]] = [] if compile_mode == "none" else [
            torch.compile(model, mode=None if compile_mode == "default" else compile_mode)]
        # reduce-overhead's CUDA graphs that inductor did not capture, said at the end of the epoch they ran in
        self.graph_skips = CudaGraphSkips() if compile_mode == "reduce-overhead" else None
        self.heads = heads
        self.config = config
        self.binary_loss = resolve_loss(config.loss, heads)
        self.regression_loss = resolve_regression_loss(config.loss, heads)
        self.class_weights = class_weights
        self.weighted_mean = weighted_mean  # False: the class-weighted loss of runs of an earlier config version
        # --labeling_method sample draws from its own seeded generator: the same seed gives the same draws
        self.seed = torch.initial_seed() if seed is None else seed
        self.label_generator = torch.Generator().manual_seed(self.seed)
        self.steps_per_epoch = max(1, steps_per_epoch)
        # this process's validation batches of the current epoch (uids, logits, targets, loss: on the device until it
        # ends), gathered from all processes then
        self.validation_outputs: list[tuple[list[str], Tensor, Tensor, Tensor]] = []
        # --adapt_bn: validation scores a copy of the model whose BatchNorm statistics are those of the
        # validation split, or of the group of each batch (uid_groups); the training model's are never touched
        self.adapt_groups = adapt_groups
        self.uid_groups = uid_groups
        # held outside the module's submodules: never in a checkpoint, the optimiser or a DDP wrapper
        self.validation_copy: list[Classifier] = []
        self.group_statistics: dict[str | None, list[dict[str, Tensor]]] = {}
        self.loaded_group: str | None = None
        self.device_features = features or DeviceFeatures()
        self.epoch_clips = 0  # this epoch's training clips and learning rate per step
        self.epoch_rates: list[float] = []

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return self.device_features(batch, self.trainer.training)

    def forward(self, inputs: Tensor, lengths: Tensor | None) -> Tensor:
        return self.model(inputs, lengths)

    def _step(self, batch: dict, stage: str) -> tuple[Tensor, Tensor]:
        model = self.model
        if stage == "val" and self.validation_copy:
            model = self.validation_copy[0]
            group = self.uid_groups[batch["uid"][0]] if self.uid_groups else None
            if group != self.loaded_group:
                load_batchnorm_state(model, self.group_statistics[group])
                self.loaded_group = group
        if stage == "train" and self.compiled:
            logits = self.compiled[0](batch["inputs"], batch_lengths(batch))
        else:
            logits = model.forward_batch(batch)
        return logits, self.compute_loss(logits, batch["targets"], training=stage == "train")

    def compute_loss(self, logits: Tensor, targets: Tensor, training: bool) -> Tensor:
        """The loss of a batch; soft heads draw their classes only in training (``sample``): in validation the
        vote distribution itself is the target, which is the expected value of the sampled loss."""
        labeling = self.config.labeling_method
        if labeling == "sample" and not training:
            labeling = "distribution"
        return classification_loss(logits, targets, self.heads, self.binary_loss,
                                   regression_loss=self.regression_loss, labeling=labeling,
                                   class_weights=self.class_weights, generator=self.label_generator,
                                   weighted_mean=self.weighted_mean)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # Lightning restores the module modes it saw before validation, which can switch a frozen
        # backbone back to training mode (dropout, BatchNorm statistics); keep it in eval mode
        if self.model.backbone_in_eval:
            self.model.backbone.eval()
        # the step's dropout and label draws: those a run straight through draws, also when it was resumed here
        self.label_generator.manual_seed(seed_step(self, self.seed, batch_idx))

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path:  # resumed: the rates given now, not the restored state's
            rates_as_configured(self.trainer, self.config)
        if self.graph_skips is not None:
            self.graph_skips.start()
        if self.trainer.world_size > 1:  # every process was seeded alike (the steps' draws are seeded per process)
            pl.seed_everything(self.seed + self.global_rank, workers=True, verbose=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the epoch's clips and rates so far: a run resumed inside the epoch logs the whole epoch's
        checkpoint[EPOCH_SO_FAR] = {"clips": self.epoch_clips, "rates": list(self.epoch_rates)}
        set_frozen_aside(checkpoint, self)  # written once beside the checkpoints, not into every one

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        so_far = checkpoint.get(EPOCH_SO_FAR, {})  # none in a checkpoint of an earlier release
        self.epoch_clips, self.epoch_rates = int(so_far.get("clips", 0)), list(so_far.get("rates", []))

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        _, loss = self._step(batch, "train")
        clips = len(batch["uid"])
        # the epoch mean over all processes, reduced when the epoch ends; each step's loss goes to the StepLog,
        # which logs (and checks) it without waiting for the device at every step
        self.log(TRAIN_LOSS_COLUMN, loss, on_step=False, on_epoch=True, batch_size=clips, sync_dist=True)
        # counted on the host and logged when the epoch ends: a number logged here would be copied to the device
        # at every step, and that copy waits for the device
        self.epoch_clips += clips
        self.epoch_rates.append(float(self.trainer.optimizers[0].param_groups[0]["lr"]))
        return step_output(loss)

    def on_train_epoch_start(self) -> None:
        draw_epoch(self.trainer, self.current_epoch)
        self.epoch_clips, self.epoch_rates = 0, []

    def teardown(self, stage: str) -> None:  # also after a failed fit
        if self.graph_skips is not None:
            self.graph_skips.stop()

    def on_train_epoch_end(self) -> None:
        if self.graph_skips is not None and (news := self.graph_skips.news(self.device)) and self.global_rank == 0:
            log.warning(news)
        # the epoch's training clips summed over processes (logs/metrics.csv, metrics.json); Lightning reduces it
        # where it reduces every logged value (a collective of our own here could interleave with the ones rank
        # 0's progress bar starts)
        if not self.epoch_rates:  # no step: an epoch a run of --training_steps resumed at its end, trained before
            return
        self.log(TRAIN_CLIPS, float(self.epoch_clips), reduce_fx="sum", sync_dist=True)
        self.log(LR_COLUMN, sum(self.epoch_rates) / len(self.epoch_rates))  # the epoch's mean, for the report

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits, loss = self._step(batch, "val")
        # read when the epoch ends: a value read here would make the host wait for the device at every batch
        self.validation_outputs.append((list(batch["uid"]), logits.detach(), batch["targets"].detach(), loss.detach()))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.validation_outputs = []
        if self.adapt_groups:
            # after the callbacks' hooks: with --ema the copy holds the averaged weights
            self.validation_copy = [copy.deepcopy(self.model)]
            self.group_statistics = {}
            for group, batches in self.adapt_groups:
                estimate_batchnorm(self.validation_copy[0], batches, self.device)
                self.group_statistics[group] = batchnorm_state(self.validation_copy[0])
                self.loaded_group = group

    def on_validation_epoch_end(self) -> None:
        """Log the validation loss and the ``--monitor`` metric over the whole validation set: the batches of
        all processes gathered, padding repeats dropped, so every process logs the same values (the best
        checkpoint and early stopping agree) and every clip counts once."""
        read = [ValidationBatch.read(*outputs) for outputs in self.validation_outputs]
        batches = unique_batches(all_gather_objects(read))
        self.validation_outputs = []
        self.validation_copy = []
        self.group_statistics = {}
        if not batches:
            return
        for batch in batches:  # every process has the same batches: all of them stop here alike
            if not math.isfinite(batch.loss):
                raise FloatingPointError(f"val loss is {batch.loss} (uids {batch.uids[:4]}...): {self.divergence_hint}")
        sizes = np.array([len(b.uids) for b in batches], dtype=np.float64)
        # the mean of the batch losses weighted by batch size: one process's epoch mean, as Lightning logs it
        loss = float(np.dot([b.loss for b in batches], sizes) / sizes.sum())
        # the values are the same in every process already; sync_dist only keeps Lightning from warning
        self.log(VAL_LOSS_COLUMN, loss, prog_bar=True, sync_dist=True)
        monitor = self.config.monitor
        if monitor == "loss":
            return
        logits = np.concatenate([b.logits for b in batches])
        targets = np.concatenate([b.targets for b in batches])
        metrics = compute_metrics(scores_from_logits(logits, self.heads, self.config.loss), targets, self.heads)
        value = monitor_value(metrics, monitor)
        if value is None:
            if not self.trainer.sanity_checking:  # (counted from 1, as the progress lines and metrics.json count)
                notes = metrics.get("notes", [])
                why = [note for note in notes if monitor in note] or notes
                log.warning("epoch %d: validation %s is undefined (%s); this epoch cannot be the best",
                            self.current_epoch + 1, monitor, "; ".join(why) or "no rows")
            value = worst_value(monitor)
        self.log(monitor_key(monitor), value, prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> OptimizerConfig | OptimizerLRSchedulerConfig:
        return optimizers(self.model.parameters(), self.config, self.steps_per_epoch)


def run_length(cfg: TrainConfig) -> tuple[int, int]:
    """Lightning's ``max_epochs, max_steps``: ``--training_steps`` optimiser steps when given, else ``--epochs``."""
    if cfg.training_steps:
        return -1, cfg.training_steps
    return cfg.epochs, -1


def trains(cfg: TrainConfig) -> bool:
    """False for a run asked for no training step (``--epochs 0`` without ``--training_steps``)."""
    return cfg.training_steps > 0 or cfg.epochs > 0


def warmup_flat_linear(warmup: int, total_steps: int, flat_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over ``warmup`` steps (``(step + 1) / (warmup + 1)``: the first
    step trains, where the seeds' ``step / warmup`` gave it a learning rate of 0), flat for ``flat_ratio`` of
    ``total_steps``, then linear decay to 0 at ``total_steps``."""
    warmup = min(warmup, total_steps - 1)
    flat_end = min(total_steps, warmup + round(flat_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if step < flat_end:
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - flat_end))

    return factor


def draw_epoch(trainer: pl.Trainer, epoch: int) -> None:
    """The training batches of ``epoch`` (the epoch the module's draws are seeded by): Lightning names the pass to
    the samplers by its count of epochs begun, which a run of --training_steps resumed at an epoch's end counts one
    ahead (it would skip an epoch's batches)."""
    _set_sampler_epoch(trainer.train_dataloader, epoch)


def seed_step(module: pl.LightningModule, seed: int, batch_idx: int) -> int:
    """Seed the global generators (dropout, masks) for training batch ``batch_idx`` of the module's epoch and
    process, from the run's ``seed`` (:func:`~audiotune.data.draws.step_seed`); returns the seed. Lightning numbers
    the batches of an epoch a run resumed inside from where it stopped, so such a run draws as one straight
    through."""
    step = step_seed(seed, module.current_epoch, batch_idx, module.global_rank)
    torch.manual_seed(step)
    return step


def rates_as_configured(trainer: pl.Trainer, cfg: TrainConfig) -> None:
    """A resumed run's learning rate and weight decay as ``cfg`` gives them: the optimiser and schedule state that
    Lightning restores from the checkpoint hold the ones the run was made with, so a change that ``--resume
    --allow_changes`` records would otherwise not train. The schedule goes on at its step with the new base rate
    (the one-cycle schedule's rates come from --max_lr, which a resumed run keeps)."""
    schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            if cfg.optim == "adamw":
                group["weight_decay"] = cfg.weight_decay
            if not schedulers:
                group["lr"] = cfg.learning_rate
    for scheduler in schedulers:
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            scheduler.base_lrs = [cfg.learning_rate] * len(scheduler.base_lrs)
            for group, factor in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas, strict=True):
                group["initial_lr"] = cfg.learning_rate
                group["lr"] = cfg.learning_rate * factor(scheduler.last_epoch)
            scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def fused_update(params: Sequence[torch.Tensor]) -> bool:
    """Whether Adam/AdamW update ``params`` in one fused kernel: when they are all on CUDA (the same arithmetic as
    the default multi-tensor update, in a few kernel launches instead of several per parameter group)."""
    return bool(params) and all(p.device.type == "cuda" for p in params)


def optimizers(parameters: Iterable[torch.nn.Parameter], cfg: TrainConfig,
               steps_per_epoch: int) -> OptimizerConfig | OptimizerLRSchedulerConfig:
    """Adam/AdamW over the trainable parameters (fused on CUDA: :func:`fused_update`), with the schedule stepped
    per batch."""
    params = [p for p in parameters if p.requires_grad]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    fused = fused_update(params) or None  # None: torch's own choice (multi-tensor) elsewhere
    if cfg.optim == "adamw":
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused)
    else:
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, fused=fused)
    # optimiser steps, not batches: one step per --accumulate_grad_batches batches (and one for an epoch's rest);
    # at least one, so that a run of no step (-e 0) still builds its schedule (OneCycleLR refuses 0 steps)
    total_steps = max(1, cfg.training_steps
                      or max(1, math.ceil(steps_per_epoch / cfg.accumulate_grad_batches)) * cfg.epochs)
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)
    if cfg.scheduler == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.max_lr, total_steps=total_steps)
    elif cfg.scheduler == "cosine":
        warmup = min(warmup, total_steps - 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    elif cfg.scheduler == "linear":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                      warmup_flat_linear(warmup, total_steps, cfg.flat_ratio))
    else:
        return {"optimizer": optimizer}
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
