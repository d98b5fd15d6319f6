"""``audiotune pretrain``: self-supervised pretraining with the objectives a backbone supplies.

The engine knows no objective: it asks the backbone (:class:`SupportsPretraining`) for its objectives, lets
it build what they need, trains ``pretrain_loss`` with Lightning (validation loss picks the kept weights) and
lets it write its outputs. No labels are needed: a manifest or split of audio is enough.

- SSAST (``pretrain_joint``, ``pretrain_mpc``, ``pretrain_mpg``): ``model.safetensors`` for `audiotune train
  --model ssast --pretrained_mdl_path` and ``ssast_original.pth`` with the original ``module.`` keys.
- Hugging Face wav2vec2 (``tapt``): ``encoder/`` in ``save_pretrained`` layout for ``--model hf -c``.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.types import OptimizerConfig, OptimizerLRSchedulerConfig
from torch import Tensor

from audiotune.config import RunConfig, check_config, save_config
from audiotune.data.layout import read_splits
from audiotune.data.prepare import prepare_eval_data
from audiotune.engine.checkpoint_io import AtomicCheckpointIO
from audiotune.engine.device import parse_devices
from audiotune.engine.inference import make_dataset, make_loader, uses_bucket_sampler
from audiotune.engine.module import optimizers, run_length
from audiotune.models.backbones import SupportsPretraining, build_backbone, resolve_config
from audiotune.models.checkpoint import CONFIG_FILE
from audiotune.outputs import OwnedRunDir, own_run_dir, write_csv, write_json
from audiotune.report.plots import plot_training_curves


class PretrainModule(pl.LightningModule):
    """Trains a backbone's own self-supervised ``objective`` (see :class:`SupportsPretraining`)."""

    def __init__(self, backbone: SupportsPretraining, objective: str, config: RunConfig, steps_per_epoch: int):
        super().__init__()
        assert isinstance(backbone, torch.nn.Module)
        self.backbone = backbone
        self.objective = objective
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.rng = random.Random(config.data.seed)

    def _losses(self, batch: dict, rng: random.Random) -> dict[str, Tensor]:
        backbone = self.backbone
        assert isinstance(backbone, SupportsPretraining)
        return backbone.pretrain_loss(batch, self.objective, step=self.global_step, rng=rng)

    def _log(self, losses: dict[str, Tensor], stage: str, batch_size: int) -> None:
        for name, value in losses.items():
            per_step = stage == "train" and name in ("loss", "temperature")
            self.log(f"{stage}_{name}", value, on_step=per_step, on_epoch=True, prog_bar=name in ("loss", "acc"),
                     batch_size=batch_size)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        losses = self._losses(batch, self.rng)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"pretraining loss is {losses['loss'].item()} (uids {batch['uid'][:4]}...)")
        self._log(losses, "train", len(batch["uid"]))
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # the same masks every epoch, so validation accuracy and MSE are comparable across epochs
        self._log(self._losses(batch, random.Random(self.config.data.seed + batch_idx)), "val", len(batch["uid"]))

    def configure_optimizers(self) -> OptimizerConfig | OptimizerLRSchedulerConfig:
        assert isinstance(self.backbone, torch.nn.Module)
        return optimizers(self.backbone.parameters(), self.config.train, self.steps_per_epoch)


def _tables(config: RunConfig, exp_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """train / val tables of audio; without a val split, 10% of the rows (seeded) validate."""
    prepared = prepare_eval_data(config, config.data.data_split_root, targets_needed=False)
    prepared.write_reports(exp_dir)
    tables = dict(prepared.tables)
    if "train" not in tables:
        tables = {"train": pd.concat(list(tables.values()))}
    if "val" not in tables:
        train = tables["train"]
        if len(train) < 2:
            raise ValueError(f"{config.data.data_split_root}: pretraining needs at least 2 clips")
        order = np.random.default_rng(config.data.seed).permutation(len(train))
        cut = max(1, len(train) // 10)
        tables = {"train": train.iloc[order[cut:]], "val": train.iloc[order[:cut]]}
        write_csv(tables["val"], exp_dir / "validation.csv", index_label="uid")
    return tables, {name: np.zeros((len(t), 0), np.float32) for name, t in tables.items()}


def pretrain(config: RunConfig) -> dict:
    """Pretrain, keep the best-validation weights, write them in our and the original layout."""
    check_config(config)
    with own_run_dir(config.exp_dir, resume=config.train.resume, overwrite=config.train.overwrite,
                     command="pretrain") as owned:
        return _pretrain(config, owned)


def _objective(config: RunConfig, backbone: object) -> str:
    if not isinstance(backbone, SupportsPretraining):
        raise ValueError(f"--model {config.model.model} has no self-supervised objective (pretraining backbones: "
                         "ssast, hf)")
    objectives = backbone.pretrain_objectives()
    objective = config.model.objective or objectives[0]
    if objective not in objectives:
        raise ValueError(f"--objective {objective}: --model {config.model.model} pretrains with {list(objectives)}")
    return objective


def _pretrain(config: RunConfig, owned: OwnedRunDir) -> dict:
    exp_dir = owned.path
    if config.model.freeze is None:
        config.model.freeze = False  # pretraining trains the encoder
    resolve_config(config)
    pl.seed_everything(config.data.seed, workers=True, verbose=False)
    read_splits(config.data.data_split_root, config.data.prefix)  # a clear error for a bad path before anything else
    backbone = build_backbone(config, pretrained=True)
    objective = _objective(config, backbone)
    config.model.objective = objective
    assert isinstance(backbone, SupportsPretraining)
    backbone.start_pretraining(objective, config)
    resume = exp_dir / "checkpoints" / "last.ckpt" if config.train.resume else None
    if resume is not None and not resume.is_file():
        stopped = (exp_dir / "config.yaml").is_file()
        raise FileNotFoundError(f"{resume}: --resume needs the last checkpoint of an earlier run in --exp_dir"
                                + ("; this run stopped before writing one: start it again with --overwrite"
                                   if stopped else ""))
    owned.start()
    tables, targets = _tables(config, exp_dir)
    save_config(config, exp_dir / CONFIG_FILE)
    train_loader = make_loader(config, make_dataset(config, tables["train"], targets["train"], train=True),
                               tables["train"], train=True, equal_length=False)
    val_loader = make_loader(config, make_dataset(config, tables["val"], targets["val"]), tables["val"], False,
                             False)
    module = PretrainModule(backbone, objective, config, len(train_loader))
    best = ModelCheckpoint(dirpath=exp_dir / "checkpoints", filename="best", monitor="val_loss", mode="min",
                           save_top_k=1, save_last=True, enable_version_counter=False)
    steps = config.train.training_steps
    max_epochs, max_steps = run_length(config.train)
    trainer = pl.Trainer(max_epochs=max_epochs, max_steps=max_steps, accelerator=config.train.accelerator,
                         devices=parse_devices(config.train.devices),
                         precision="bf16-mixed" if config.train.precision == "bf16" else "32-true",
                         gradient_clip_val=config.train.grad_clip or None, callbacks=[best],
                         logger=CSVLogger(exp_dir, name="logs", version=""),
                         # a step budget shorter than an epoch still validates (and keeps a best) at its end
                         val_check_interval=min(steps, len(train_loader)) if steps else None,
                         log_every_n_steps=1, enable_model_summary=False, plugins=[AtomicCheckpointIO()],
                         use_distributed_sampler=not uses_bucket_sampler(config))
    module.train()  # from_pretrained hands models over in eval mode; Lightning keeps each module's mode
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
    if best.best_model_path and Path(best.best_model_path).is_file():
        module.load_state_dict(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"])
    written = backbone.save_pretrained_outputs(exp_dir)
    log = pd.read_csv(exp_dir / "logs" / "metrics.csv")
    per_epoch = log.groupby("epoch").last()
    history = {column: per_epoch[column].dropna().tolist() for column in per_epoch.columns
               if column.startswith("val_") or column.endswith("_epoch")}
    plot_training_curves(exp_dir / "logs" / "metrics.csv", exp_dir / "plots" / "training_curves.png")
    if "train_acc_epoch" in log.columns or "train_acc" in log.columns:
        plot_training_curves(exp_dir / "logs" / "metrics.csv", exp_dir / "plots" / "masked_accuracy.png",
                             ("train_acc", "val_acc"), "masked-patch accuracy")
    metrics = {"objective": objective, "task": objective, "epochs_run": trainer.current_epoch,
               "steps_run": trainer.global_step, "history": history,
               "best_val_loss": float(best.best_model_score) if best.best_model_score is not None else None,
               "outputs": [str(Path(p).relative_to(exp_dir)) for p in written]}
    write_json(exp_dir / "metrics.json", metrics)
    return metrics
