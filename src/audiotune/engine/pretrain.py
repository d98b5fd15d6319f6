"""``audiotune pretrain``: self-supervised pretraining with the objectives a backbone supplies.

The engine knows no objective: it asks the backbone's class (:class:`SupportsPretraining`) for the objectives
the config's options allow (before the backbone is built: a bad choice is refused at once), lets the backbone
build what they need, trains ``pretrain_loss`` with Lightning (validation loss picks the kept weights; with
``--keep last`` or without validation, the last are kept) and lets it write its outputs. No labels are needed:
a manifest or split of audio is enough.

- SSAST (``pretrain_joint``, ``pretrain_mpc``, ``pretrain_mpg``): ``model.safetensors`` for `audiotune train
  --model ssast --pretrained_mdl_path` and ``ssast_original.pth`` with the original ``module.`` keys.
- Hugging Face wav2vec2 (``tapt``): ``encoder/`` in ``save_pretrained`` layout for ``--model hf -c``.

Every run records the clips it read (``clips_read.csv``, :mod:`.clips_read`), which ``cv`` checks its folds'
test clips against.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerConfig, OptimizerLRSchedulerConfig
from torch import Tensor

from audiotune.config import VALIDATION_DRAW_VERSION, RunConfig, Stage, check_config, save_config
from audiotune.data.errors import refuse
from audiotune.data.input_spec import InputSpec
from audiotune.data.layout import read_splits, split_file
from audiotune.data.loader_plan import training_passes
from audiotune.data.loading import check_sampler_options, make_dataset, make_loader
from audiotune.data.prepare import prepare_eval_data
from audiotune.data.splits import draw_validation, share_count
from audiotune.engine.checkpoint_io import read_checkpoint
from audiotune.engine.clips_read import write_clips_read
from audiotune.engine.cv_encoders import encoder_paths
from audiotune.engine.distributed import (
    all_gather_objects,
    check_launch,
    ending_process_group,
    trainer_devices,
    unique_batches,
    unused_parameter_hint,
)
from audiotune.engine.inference import features_on_device, inference_device
from audiotune.engine.module import DeviceFeatures, draw_epoch, optimizers, rates_as_configured, seed_step, trains
from audiotune.engine.pace import pace_summary
from audiotune.engine.records import recorded_paths
from audiotune.engine.resume import checkpoint_to_resume, record_changes, resumed_changes
from audiotune.engine.step_log import step_output
from audiotune.engine.trainer import build_trainer, earlier_log, epochs_run, merge_logs
from audiotune.launch import launched_rank_zero
from audiotune.models.backbones import (
    SupportsPretraining,
    backbone_class,
    build_backbone,
    input_spec,
    resolve_config,
)
from audiotune.models.option_checks import refuse_inactive
from audiotune.outputs import (
    BEST_VAL_LOSS,
    CONFIG_FILE,
    EPOCHS_RUN,
    INPUT_SPEC_FILE,
    KEPT_WEIGHTS,
    LOG_DIR,
    LOG_FILE,
    MASKED_ACCURACY_PLOT,
    METRICS_FILE,
    PLOT_DIR,
    PRETRAIN_OBJECTIVE,
    PRETRAIN_OUTPUTS,
    STEPS_RUN,
    TRAINING_CURVES_PLOT,
    VAL_LOSS_COLUMN,
    VALIDATION_FILE,
    OwnedRunDir,
    own_run_dir,
    write_csv,
    write_json,
)
from audiotune.report.plots import plot_training_curves

STEP_LOGGED = ("loss", "temperature")  # the values logged every step (train_NAME_step), the rest every epoch


@dataclass
class ValidationLosses:
    """One validation batch's losses, read when the epoch ends (then gathered from every process)."""

    uids: list[str]
    losses: dict[str, float]

    @classmethod
    def read(cls, uids: list[str], losses: dict[str, Tensor]) -> ValidationLosses:
        return cls(uids, {name: float(value) for name, value in losses.items()})


class PretrainModule(pl.LightningModule):
    """Trains a backbone's own self-supervised ``objective`` (see :class:`SupportsPretraining`)."""

    loss_label = "pretraining"  # a loss that is not finite, in StepLog's error

    def __init__(self, backbone: SupportsPretraining, objective: str, config: RunConfig, steps_per_epoch: int,
                 features: DeviceFeatures | None = None):
        super().__init__()
        assert isinstance(backbone, torch.nn.Module)
        self.backbone = backbone
        self.objective = objective
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.rng = random.Random(config.data.seed)
        # this process's validation losses of the epoch (on the device until it ends), gathered from all processes then
        self.validation_outputs: list[tuple[list[str], dict[str, Tensor]]] = []
        self.device_features = features or DeviceFeatures()

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return self.device_features(batch, self.trainer.training)

    def _losses(self, batch: dict, rng: random.Random) -> dict[str, Tensor]:
        backbone = self.backbone
        assert isinstance(backbone, SupportsPretraining)
        return backbone.pretrain_loss(batch, self.objective, step=self.global_step, rng=rng)

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path:  # resumed: the rates given now, not the restored state's
            rates_as_configured(self.trainer, self.config.train)
        if self.trainer.world_size > 1:  # every process was seeded alike (the steps' draws are seeded per process)
            pl.seed_everything(self.config.data.seed + self.global_rank, workers=True, verbose=False)

    def on_train_epoch_start(self) -> None:
        draw_epoch(self.trainer, self.current_epoch)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # the step's masks, crops and dropout: those a run straight through draws, also when it was resumed here
        self.rng = random.Random(seed_step(self, self.config.data.seed, batch_idx))

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        losses = self._losses(batch, self.rng)
        for name, value in losses.items():
            # epoch means over all processes, reduced when the epoch ends; the loss and the temperature of each
            # step go to the StepLog, which logs (and checks) them without waiting for the device at every step
            self.log(f"train_{name}_epoch" if name in STEP_LOGGED else f"train_{name}", value, on_step=False,
                     on_epoch=True, prog_bar=name == "acc", batch_size=len(batch["uid"]), sync_dist=True)
        return step_output(losses["loss"], **{name: value for name, value in losses.items()
                                              if name in STEP_LOGGED and name != "loss"})

    def on_validation_epoch_start(self) -> None:
        self.validation_outputs = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # the same masks every epoch, so validation accuracy and MSE are comparable across epochs (under DDP the
        # batch's index among all processes' batches picks them, as in one process)
        world, rank = self.trainer.world_size, self.global_rank
        losses = self._losses(batch, random.Random(self.config.data.seed + batch_idx * world + rank))
        self.validation_outputs.append((list(batch["uid"]), {k: v.detach() for k, v in losses.items()}))

    def on_validation_epoch_end(self) -> None:
        """Each validation loss over the whole validation set: every process's batches gathered, padding
        repeats dropped, the batch means weighted by batch size; the same values in every process."""
        read = [ValidationLosses.read(uids, losses) for uids, losses in self.validation_outputs]
        batches = unique_batches(all_gather_objects(read))
        self.validation_outputs = []
        sizes = np.array([len(b.uids) for b in batches], dtype=np.float64)
        for name in batches[0].losses if batches else ():
            value = float(np.dot([b.losses[name] for b in batches], sizes) / sizes.sum())
            self.log(f"val_{name}", value, prog_bar=name in ("loss", "acc"), sync_dist=True)

    def configure_optimizers(self) -> OptimizerConfig | OptimizerLRSchedulerConfig:
        assert isinstance(self.backbone, torch.nn.Module)
        return optimizers(self.backbone.parameters(), self.config.train, self.steps_per_epoch)


def _tables(config: RunConfig, inputs: InputSpec, exp_dir: Path,
            writes: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """train / val tables of audio as the model reads it; without a val split, 10% of the rows (or --val_share;
    seeded, drawn as train draws them) validate, or none with ``--val_size 0`` (and no --val_share): every clip trains.
    The reports (skipped rows, the drawn validation rows) are written when ``writes``."""
    prepared = prepare_eval_data(config, inputs, config.data.data_split_root, targets_needed=False)
    if writes:
        prepared.write_reports(exp_dir)
    tables = dict(prepared.tables)
    if "train" not in tables:
        tables = {"train": pd.concat(list(tables.values()))}
    if "val" not in tables and config.data.val_size == 0 and config.train.val_share == 0:
        tables = {"train": tables["train"]}  # no validation: the last weights are kept
    elif "val" not in tables:
        train = tables["train"]
        if len(train) < 2:
            raise ValueError(f"{config.data.data_split_root}: pretraining needs at least 2 clips")
        share = config.train.val_share
        if config.version >= VALIDATION_DRAW_VERSION:  # train's draw: the same rows for the same table and seed
            count = share_count(train, share) if share > 0 else max(1, len(train) // 10)
            kept, val = draw_validation(train, count, config.data.seed, group="",
                                        source=train.attrs.get("source", split_file("train")))
            tables = {"train": kept, "val": val}
        else:
            order = np.random.default_rng(config.data.seed).permutation(len(train))
            cut = min(max(1, round(share * len(train)) if share > 0 else len(train) // 10), len(train) - 1)
            tables = {"train": train.iloc[order[cut:]], "val": train.iloc[order[:cut]]}
        if writes:
            write_csv(tables["val"], exp_dir / VALIDATION_FILE, index_label="uid")
    return tables, {name: np.zeros((len(t), 0), np.float32) for name, t in tables.items()}


def pretrain(config: RunConfig) -> dict:
    """Pretrain, keep the best-validation weights (with ``--keep last`` or without validation, the last), write
    them in our and the original layout.

    Under DDP rank 0 owns the run directory and writes every output; the other processes train their share
    of the batches, write nothing and return an empty dict.
    """
    check_pretraining(config)
    trainer_devices(config.runtime)  # a strategy audiotune cannot run is an error before anything is read
    inference_device(config)  # so is a missing accelerator, or a precision it cannot run
    with own_run_dir(config.exp_dir, resume=config.train.resume, overwrite=config.train.overwrite,
                     command="pretrain", follower=not launched_rank_zero()) as owned:
        return _pretrain(config, owned)


def check_pretraining(config: RunConfig) -> str:
    """What pretraining refuses of its options alone, before anything is read, written or asked of a device (a
    cloud job's command is checked so before it is submitted); returns the objective: the one ``config`` names, or
    its backbone's first (the backbone's class declares its objectives and what each needs)."""
    check_config(config)
    check_sampler_options(config)
    if not trains(config.train):
        raise ValueError("--epochs 0: pretraining needs at least one epoch (or --training_steps N); nothing to "
                         "pretrain")
    if config.model.freeze:
        raise ValueError("--freeze true: pretraining trains the encoder (a frozen one would learn nothing); leave "
                         "--freeze out")
    backbone = backbone_class(config.model.model)
    if not issubclass(backbone, SupportsPretraining):
        raise ValueError(f"--model {config.model.model} has no self-supervised objective")
    objectives = backbone.pretrain_objectives(config)
    objective = config.model.objective or objectives[0]
    if objective not in objectives:
        raise ValueError(f"--objective {objective}: --model {config.model.model} pretrains with {list(objectives)}")
    problems = backbone.objective_problems(objective, config)
    if problems:
        raise ValueError(" / ".join(problems))
    return objective


def _pretrain(config: RunConfig, owned: OwnedRunDir) -> dict:
    exp_dir = owned.path
    config.model.freeze = False  # pretraining trains the encoder
    objective = config.model.objective = check_pretraining(config)  # settled first: the backbone resolves with it
    resolve_config(config)
    # with the objective settled, the options of another one are refused before the checkpoint is loaded
    refuse_inactive(config, Stage.PRETRAIN)
    pl.seed_everything(config.data.seed, workers=True, verbose=False)
    read_splits(config.data.data_split_root, config.data.prefix)  # a clear error for a bad path before anything else
    backbone = build_backbone(config, pretrained=True)
    inputs = input_spec(config)
    assert isinstance(backbone, SupportsPretraining)
    backbone.start_pretraining(objective, config)
    resume = checkpoint_to_resume(exp_dir) if config.train.resume else None
    changes = resumed_changes(exp_dir, config) if resume is not None else {}
    owned.start()
    tables, targets = _tables(config, inputs, exp_dir, owned.writes)
    refuse([problem for table in tables.values() for problem in backbone.clip_problems(list(map(str, table.index)))],
           "clip(s) the objective cannot learn from", "(cluster the table that is pretrained on, or leave them out)")
    if owned.writes:
        if changes:
            record_changes(exp_dir, changes)
        save_config(recorded_paths(config, exp_dir), exp_dir / CONFIG_FILE)
        write_json(exp_dir / INPUT_SPEC_FILE, inputs.to_dict())
        write_clips_read(exp_dir, tables, "pretrain", encoder_paths(config))  # P-TAPT's: its stage 1's too
    earlier = earlier_log(exp_dir, resume is not None) if owned.writes else None
    steps = config.train.training_steps
    # a step budget shorter than an epoch still validates (and keeps a best) at its end; set once the
    # loader's length (this process's share) is known
    validating = "val" in tables
    trainer, best = build_trainer(config.train, config.runtime, exp_dir,
                                  best_by=(VAL_LOSS_COLUMN, "min") if validating else None)
    check_launch(trainer.is_global_zero, owned.writes)
    replicas, rank, device = trainer.world_size, trainer.global_rank, inference_device(config)
    passes = training_passes(config, len(tables["train"]))
    on_device = features_on_device(config, inputs)
    train_loader = make_loader(config, make_dataset(config, inputs, tables["train"], targets["train"], train=True,
                                                    passes=passes, on_device=on_device),
                               tables["train"], train=True, device=device, passes=passes, num_replicas=replicas,
                               rank=rank)
    val_loader = make_loader(config, make_dataset(config, inputs, tables["val"], targets["val"], passes=passes,
                                                  on_device=on_device),
                             tables["val"], False, device=device, passes=passes, num_replicas=replicas,
                             rank=rank) if validating else None
    if steps and validating:
        trainer.val_check_interval = min(steps, len(train_loader))
    module = PretrainModule(backbone, objective, config, len(train_loader),
                            DeviceFeatures.of(train_loader, val_loader))
    module.train()  # from_pretrained hands models over in eval mode; Lightning keeps each module's mode
    # the machines meet, then the run's last collective calls; rank 0 goes on alone
    with unused_parameter_hint(), ending_process_group(config.runtime.num_nodes):
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
    if not owned.writes:
        return {}  # rank 0 writes the outputs
    if earlier is not None:
        merge_logs(earlier, exp_dir)
    kept = "last epoch (--keep last)" if validating and config.train.keep == "last" else "last epoch"
    if config.train.keep == "best" and best is not None and best.best_model_path and \
            Path(best.best_model_path).is_file():
        module.load_state_dict(read_checkpoint(best.best_model_path)["state_dict"])
        kept = f"best validation loss ({Path(best.best_model_path).name})"
    written = backbone.save_pretrained_outputs(exp_dir)
    log_csv = exp_dir / LOG_DIR / LOG_FILE
    log = pd.read_csv(log_csv) if log_csv.is_file() else pd.DataFrame({"epoch": []})  # no step run: none logged
    per_epoch = log.groupby("epoch").last()
    history = {column: per_epoch[column].dropna().tolist() for column in per_epoch.columns
               if column.startswith("val_") or column.endswith("_epoch")}
    if log_csv.is_file():
        plot_training_curves(log_csv, exp_dir / PLOT_DIR / TRAINING_CURVES_PLOT)
    if "train_acc_epoch" in log.columns or "train_acc" in log.columns:
        plot_training_curves(log_csv, exp_dir / PLOT_DIR / MASKED_ACCURACY_PLOT,
                             ("train_acc", "val_acc"), "masked-patch accuracy")
    metrics = {PRETRAIN_OBJECTIVE: objective, "task": objective, EPOCHS_RUN: epochs_run(trainer),
               STEPS_RUN: trainer.global_step, "history": history,
               BEST_VAL_LOSS: float(best.best_model_score) if best and best.best_model_score is not None else None,
               KEPT_WEIGHTS: kept,
               PRETRAIN_OUTPUTS: [str(Path(p).relative_to(exp_dir)) for p in written], **pace_summary(log)}
    write_json(exp_dir / METRICS_FILE, metrics)
    return metrics
