"""The one place a Lightning ``Trainer`` is built: train, pretrain and probe differ only in the arguments.

A fit into a run directory reports its progress through :mod:`audiotune.progress` (each training epoch, each
validation pass), logs to ``logs/metrics.csv`` (also to ``logs/tensorboard`` with ``--logger tensorboard``), keeps
``checkpoints/last.ckpt`` (and, when a metric is monitored, ``checkpoints/best.ckpt``) written complete or not at
all, runs on the config's accelerator, devices, strategy and nodes, and leaves the sharding of batches to
audiotune's own loaders. A fit without a run directory (probe's heads on cached states) writes nothing and runs
in this process on one device.
"""
from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Sequence
from numbers import Number
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

from audiotune.config import RuntimeConfig, TrainConfig
from audiotune.engine.checkpoint_io import AtomicCheckpointIO, RunCheckpoint, latest_checkpoint
from audiotune.engine.device import MixedOrFull, float32_products, lightning_precision
from audiotune.engine.distributed import trainer_devices
from audiotune.engine.module import run_length
from audiotune.engine.pace import EpochPace
from audiotune.engine.step_log import StepLog, step_rows
from audiotune.interrupts import raise_if_terminated
from audiotune.outputs import (
    BEST_CHECKPOINT,
    BEST_CHECKPOINTS,
    CHECKPOINT_DIR,
    EARLIER_LOG_FILE,
    LOG_DIR,
    LOG_FILE,
    TENSORBOARD_DIR,
    write_csv,
)
from audiotune.progress import Progress


class PassProgress(ProgressBar):
    """Lightning's progress bar, drawn by :class:`~audiotune.progress.Progress`: one report per training epoch
    (with the latest step values ``steps`` has read) and per validation or test pass; the sanity check before
    training stays quiet."""

    def __init__(self, steps: StepLog) -> None:
        super().__init__()
        self.enabled = True
        self.passes: dict[str, Progress] = {}
        self.steps = steps

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def _start(self, kind: str, total: float, label: str) -> None:
        self._end(kind)
        if self.enabled and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.passes[kind] = Progress(int(total) if math.isfinite(total) else None, label)

    def _end(self, kind: str) -> None:
        progress = self.passes.pop(kind, None)
        if progress is not None:
            progress.close()

    def _note(self, trainer: pl.Trainer, pl_module: pl.LightningModule, kind: str = "train") -> str:
        """The values beside a pass: training's without the validation values (those of the epoch before: the
        validation line has them), the latest step's while it runs and the epoch's means once done; validation's
        its own epoch's."""
        shown = {key: value for key, value in self.get_metrics(trainer, pl_module).items()
                 if key.startswith("val_") == (kind == "eval")}
        if kind == "train":
            shown.update(self.steps.latest)
        elif kind == "train done":
            shown.update(self.steps.epoch_means or self.steps.latest)
        return ", ".join(f"{key} {value:.4g}" for key, value in shown.items()
                         if isinstance(value, Number) and key != "v_num")

    def _end_train(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "train" in self.passes:
            self.passes["train"].update(0, self._note(trainer, pl_module, "train done"))
        self._end("train")

    def _epoch(self, trainer: pl.Trainer) -> str:
        last = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        return f"epoch {trainer.current_epoch + 1}{last}"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("train", self.total_train_batches, f"train {self._epoch(trainer)}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if "train" in self.passes:
            self.passes["train"].update(1, self._note(trainer, pl_module))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_train(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        training = self.passes.get("train")
        if training is not None and training.total is not None and training.count >= training.total:
            self._end_train(trainer, pl_module)  # the epoch's batches are done: its line comes before validation's
        self._start("eval", self.total_val_batches, f"validation {self._epoch(trainer)}")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = sum(trainer.num_test_batches) if trainer.num_test_batches else math.inf
        self._start("eval", total, "test")

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "eval" in self.passes:
            self.passes["eval"].update()

    on_test_batch_end = on_validation_batch_end

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "eval" in self.passes:
            self.passes["eval"].update(0, self._note(trainer, pl_module, "eval"))
        self._end("eval")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end("eval")


def epochs_run(trainer: pl.Trainer) -> int:
    """The epochs in which the run trained, a resumed run's earlier ones included: those Lightning started. Its
    ``current_epoch`` counts the epochs it finished, and a run resumed from a checkpoint written after its last step
    (a command stopped while writing its outputs) finishes none: an epoch that --training_steps ended inside, or
    the last epoch whose end the checkpoint was written at, went uncounted."""
    started: Any = trainer.fit_loop.epoch_progress.current  # a tracker of started epochs (typed as its base)
    return int(started.started)


def trainer_precision(runtime: RuntimeConfig) -> MixedOrFull:
    """Lightning's ``precision`` for ``--precision`` (see :func:`~audiotune.engine.device.lightning_precision`)."""
    return lightning_precision(runtime.precision)


def earlier_log(run_dir: Path, resuming: bool) -> pd.DataFrame | None:
    """The epochs a resumed run logged before (None: not resuming, or nothing logged), read before Lightning's CSV
    logger starts its file afresh; :func:`merge_logs` puts them back. They are kept in EARLIER_LOG_FILE until then,
    so a resumed run stopped again keeps them: resumed once more, it reads them there, before those it logged
    since."""
    if not resuming:
        return None
    logs = run_dir / LOG_DIR
    parts = [pd.read_csv(path) for path in (logs / EARLIER_LOG_FILE, logs / LOG_FILE) if path.is_file()]
    if not parts:
        return None
    earlier = parts[0] if len(parts) == 1 else _in_front(parts[0], parts[1])
    write_csv(earlier, logs / EARLIER_LOG_FILE, index=False)
    return earlier


def _in_front(earlier: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """``earlier``'s epochs before the first of ``current`` (and the steps of that epoch before ``current``'s
    first, where the run resumed inside it), then ``current``'s."""
    if not len(current):
        return earlier
    first_epoch = current["epoch"].min()
    kept = earlier["epoch"] < first_epoch
    if "step" in earlier and "step" in current:
        first_step = current.loc[current["epoch"] == first_epoch, "step"].min()
        kept |= (earlier["epoch"] == first_epoch) & (earlier["step"] < first_step) & step_rows(earlier)
    return pd.concat([earlier[kept], current], ignore_index=True)


def merge_logs(earlier: pd.DataFrame, run_dir: Path) -> None:
    """The run's log with the earlier epochs (:func:`earlier_log`) in front of those logged since (a resumed run
    that had nothing left to train logged none: its log is the earlier one)."""
    logs = run_dir / LOG_DIR
    current = pd.read_csv(logs / LOG_FILE) if (logs / LOG_FILE).is_file() else earlier.iloc[0:0]
    write_csv(_in_front(earlier, current), logs / LOG_FILE, index=False)
    (logs / EARLIER_LOG_FILE).unlink(missing_ok=True)


def run_loggers(runtime: RuntimeConfig, run_dir: Path) -> list[Logger]:
    """The CSV log (``logs/metrics.csv``: what the report, the curves plot and a resumed run read) and, with
    ``--logger tensorboard``, TensorBoard's event files in ``logs/tensorboard`` (``tensorboard --logdir``)."""
    loggers: list[Logger] = [CSVLogger(run_dir, name=LOG_DIR, version="")]
    if runtime.logger == "tensorboard":
        loggers.append(TensorBoardLogger(run_dir / LOG_DIR, name=TENSORBOARD_DIR, version="", default_hp_metric=False))
    return loggers


class ValidateLastStep(pl.Callback):
    """A run of ``--training_steps`` that ends inside an epoch validates after its last step, as every epoch ends:
    Lightning validates at an epoch's end (or every ``val_check_interval`` batches) only, so the steps after the
    last validation could never be the best checkpoint's, nor be in ``last.ckpt``. Asking the Trainer to stop at
    the last step (as early stopping does) makes it validate there, then checkpoint."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class SigtermAsBefore(pl.Callback):
    """Keeps the SIGTERM handler this process had before the fit. Lightning puts its own first for every fit, and
    under DDP it makes a collective call inside the handler (rank 0 broadcasts that SIGTERM came), wherever the signal
    finds the process: the others are then in another collective or in none, and the run hangs until the process
    group times out. The handler before the fit (a command's: SIGTERM raised where the process runs, as Ctrl-C, see
    :mod:`audiotune.interrupts`) stops each process without one; the default one ends it.

    Lightning's "SIGTERM came" flag is set by its handler only, so with the handler gone it stays false, and its
    training loop's broadcast of that flag from rank 0 before every DDP step (a collective, then a read back to
    the host: a wait for the device's queued work each step) is skipped as well.

    Each batch first checks that no SIGTERM came whose exception was dropped on its way
    (:func:`~audiotune.interrupts.raise_if_terminated`): the fit then stops there, as where it was raised."""

    def __init__(self) -> None:
        self.handler = signal.getsignal(signal.SIGTERM)

    def _restore(self) -> None:
        if self.handler is not None:  # None: set outside Python, nothing to put back
            with contextlib.suppress(ValueError):  # not the main thread, where handlers are set
                signal.signal(signal.SIGTERM, self.handler)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()  # Lightning has put its handler in by now

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()
        loop = trainer.fit_loop.epoch_loop
        if hasattr(loop, "_broadcast_sigterm_tensor"):  # Lightning 2.6: called per step when world_size > 1
            loop._broadcast_sigterm_tensor = _no_sigterm_flag  # type: ignore[method-assign]

    def on_train_batch_start(self, *args: Any) -> None:
        raise_if_terminated()

    def on_validation_batch_start(self, *args: Any) -> None:
        raise_if_terminated()

    def on_test_batch_start(self, *args: Any) -> None:
        raise_if_terminated()

    def on_predict_batch_start(self, *args: Any) -> None:
        raise_if_terminated()


def _no_sigterm_flag() -> None:
    """Nothing to broadcast: the flag Lightning's handler would set is never set (see :class:`SigtermAsBefore`)."""


class Float32Products(pl.Callback):
    """``--precision tf32`` while a fit runs (:func:`~audiotune.engine.device.float32_products`): from its setup,
    once its device is known, to its teardown, failed fits included."""

    def __init__(self, precision: str) -> None:
        self.precision, self.context = precision, contextlib.ExitStack()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.context.enter_context(float32_products(trainer.strategy.root_device, self.precision))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.context.close()


def build_trainer(train: TrainConfig, runtime: RuntimeConfig, run_dir: Path | None, *,
                  best_by: tuple[str, str] | None = None, callbacks: Sequence[pl.Callback] = (),
                  devices: int | list[int] | None = None, default_root_dir: Path | None = None,
                  deterministic: bool | None = None) -> tuple[pl.Trainer, ModelCheckpoint | None]:
    """A Trainer for ``train``'s schedule on ``runtime``'s accelerator in its precision; returns it and its
    best-epoch checkpoint (or None).

    ``run_dir``: the run directory the fit writes. The Trainer runs on ``runtime``'s accelerator, devices,
    strategy and nodes (:func:`~audiotune.engine.distributed.trainer_devices`) for ``--epochs`` or
    ``--training_steps`` (:func:`~audiotune.engine.module.run_length`), sums the gradients of
    ``--accumulate_grad_batches`` batches per optimiser step, clips gradients at ``--grad_clip``,
    logs every step to ``run_dir/logs/metrics.csv`` (and TensorBoard: :func:`run_loggers`; the per-step values
    read from the device a few dozen steps at a time, :class:`~audiotune.engine.step_log.StepLog`; each epoch's
    seconds and peak device memory, :class:`~audiotune.engine.pace.EpochPace`), replaces
    ``checkpoints/last.ckpt`` every epoch and, with ``best_by`` (a logged metric and ``"min"`` or ``"max"``),
    keeps the best epoch in ``checkpoints/best.ckpt``
    (the ``--save_top_k`` best in ``checkpoints/best-epoch=NN.ckpt``);
    checkpoints are written atomically and Lightning's distributed sampler is off (each process's loaders
    take their own share of the batches, see :mod:`audiotune.engine.distributed`).

    ``run_dir`` None: a quiet fit of the same length, accumulation and clipping in this process on ``devices`` of
    ``runtime``'s accelerator, with no logger, checkpoint or progress bar (``best_by`` must be None).

    ``callbacks`` come after the checkpoint callbacks; Lightning runs every checkpoint callback after all
    others, in the order given. ``default_root_dir`` and ``deterministic`` are passed on when given.
    """
    extra: dict[str, Any] = {"accumulate_grad_batches": train.accumulate_grad_batches}
    if default_root_dir is not None:
        extra["default_root_dir"] = default_root_dir
    if deterministic is not None:
        # False too is passed on: Lightning then turns torch's deterministic algorithms off explicitly
        extra["deterministic"] = deterministic
    if run_dir is None:
        if best_by is not None or devices is None:
            raise ValueError("a fit without a run directory keeps no best checkpoint and needs its devices")
        max_epochs, max_steps = run_length(train)
        trainer = pl.Trainer(max_epochs=max_epochs, max_steps=max_steps, accelerator=runtime.accelerator,
                             devices=devices, precision=trainer_precision(runtime),
                             gradient_clip_val=train.grad_clip or None,
                             callbacks=[StepLog(), SigtermAsBefore(), Float32Products(runtime.precision),
                                        *callbacks],
                             logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             **extra)
        return trainer, None
    if devices is not None:
        raise ValueError("a fit into a run directory runs on the config's devices")
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    checkpoints: list[pl.Callback] = [latest_checkpoint(checkpoint_dir)]
    best = None
    if best_by is not None:
        metric, mode = best_by
        top_k = train.save_top_k
        best = RunCheckpoint(dirpath=checkpoint_dir, filename=Path(BEST_CHECKPOINT).stem if top_k == 1 else
                             BEST_CHECKPOINTS, monitor=metric, save_top_k=top_k, mode=mode,
                             enable_version_counter=False)
        checkpoints.insert(0, best)  # before last.ckpt: see latest_checkpoint
    max_epochs, max_steps = run_length(train)
    trainer = pl.Trainer(
        max_epochs=max_epochs, max_steps=max_steps,
        **trainer_devices(runtime),
        precision=trainer_precision(runtime),
        gradient_clip_val=train.grad_clip or None,
        callbacks=[*checkpoints, steps := StepLog(), PassProgress(steps), SigtermAsBefore(), EpochPace(),
                   Float32Products(runtime.precision), ValidateLastStep(), *callbacks],
        logger=run_loggers(runtime, run_dir),
        log_every_n_steps=1,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # each process's loaders take their own share (engine/distributed.py)
        **extra,
    )
    return trainer, best
