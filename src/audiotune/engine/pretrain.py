"""``audiotune pretrain``: self-supervised SSAST pretraining (masked patch classification / generation / joint).

No labels are needed: a manifest or split of audio is enough. Training can continue from any SSAST
checkpoint (``--pretrained_mdl_path``, original or our own). The run directory gets ``model.safetensors``
(original key names, no prefix) for `audiotune train --model ssast --pretrained_mdl_path`, and
``ssast_original.pth`` with the original ``module.`` keys for the original code.
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
from audiotune.engine.inference import make_dataset, make_loader
from audiotune.engine.module import optimizers
from audiotune.models.backbones import Backbone, SupportsPretraining, build_backbone, resolve_config
from audiotune.models.checkpoint import CONFIG_FILE, MODEL_FILE
from audiotune.outputs import OwnedRunDir, atomic_path, own_run_dir, write_csv, write_json
from audiotune.report.plots import plot_training_curves

PRETRAIN_TASKS = ("pretrain_mpc", "pretrain_mpg", "pretrain_joint")
ORIGINAL_FILE = "ssast_original.pth"


class PretrainModule(pl.LightningModule):
    """Masked-patch objectives of a backbone that has ``pretrain_loss`` (SSAST)."""

    def __init__(self, backbone: Backbone, config: RunConfig, steps_per_epoch: int):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.rng = random.Random(config.data.seed)

    def _losses(self, batch: dict, rng: random.Random) -> dict[str, Tensor]:
        m = self.config.model
        backbone = self.backbone
        assert isinstance(backbone, SupportsPretraining)  # pretrain() accepts only such backbones
        return backbone.pretrain_loss(batch["inputs"], task=m.task, mask_patch=m.mask_patch,
                                      cluster_factor=m.cluster_factor, rng=rng)

    def _log(self, losses: dict[str, Tensor], stage: str, batch_size: int) -> None:
        for name, value in losses.items():
            self.log(f"{stage}_{name}", value, on_step=stage == "train" and name == "loss", on_epoch=True,
                     prog_bar=name in ("loss", "acc"), batch_size=batch_size)

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


def save_original_layout(backbone: SupportsPretraining, path: Path) -> None:
    """The SSAST weights with the original DataParallel key names (``module.v...``), tensors only."""
    state = {f"module.{k}": v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    with atomic_path(path) as partial:
        torch.save(state, partial)


def pretrain(config: RunConfig) -> dict:
    """Pretrain, keep the best-validation weights, write them in our and the original layout."""
    check_config(config)
    with own_run_dir(config.exp_dir, resume=config.train.resume, overwrite=config.train.overwrite,
                     command="pretrain") as owned:
        return _pretrain(config, owned)


def _pretrain(config: RunConfig, owned: OwnedRunDir) -> dict:
    from safetensors.torch import save_file

    if config.model.task not in PRETRAIN_TASKS:
        raise ValueError(f"--task {config.model.task}: pretraining takes one of {PRETRAIN_TASKS}")
    exp_dir = owned.path
    resolve_config(config)
    pl.seed_everything(config.data.seed, workers=True, verbose=False)
    read_splits(config.data.data_split_root)  # a clear error for a bad path before anything else
    owned.start()
    tables, targets = _tables(config, exp_dir)
    save_config(config, exp_dir / CONFIG_FILE)
    backbone = build_backbone(config, pretrained=True)
    if not isinstance(backbone, SupportsPretraining):
        raise ValueError(f"--model {config.model.model} has no self-supervised objective here (use --model ssast)")
    train_loader = make_loader(config, make_dataset(config, tables["train"], targets["train"], train=True),
                               tables["train"], train=True, equal_length=False)
    val_loader = make_loader(config, make_dataset(config, tables["val"], targets["val"]), tables["val"], False,
                             False)
    module = PretrainModule(backbone, config, len(train_loader))
    best = ModelCheckpoint(dirpath=exp_dir / "checkpoints", filename="best", monitor="val_loss", mode="min",
                           save_top_k=1, save_last=True, enable_version_counter=False)
    trainer = pl.Trainer(max_epochs=config.train.epochs, accelerator=config.train.accelerator,
                         devices=parse_devices(config.train.devices),
                         precision="bf16-mixed" if config.train.precision == "bf16" else "32-true",
                         callbacks=[best], logger=CSVLogger(exp_dir, name="logs", version=""),
                         log_every_n_steps=1, enable_model_summary=False, plugins=[AtomicCheckpointIO()])
    resume = exp_dir / "checkpoints" / "last.ckpt" if config.train.resume else None
    if resume is not None and not resume.is_file():
        stopped = (exp_dir / "config.yaml").is_file()
        raise FileNotFoundError(f"{resume}: --resume needs the last checkpoint of an earlier run in --exp_dir"
                                + ("; this run stopped before writing one: start it again with --overwrite"
                                   if stopped else ""))
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
    if best.best_model_path and Path(best.best_model_path).is_file():
        module.load_state_dict(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"])
    with atomic_path(exp_dir / MODEL_FILE) as partial:
        save_file({k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}, str(partial))
    save_original_layout(backbone, exp_dir / ORIGINAL_FILE)
    log = pd.read_csv(exp_dir / "logs" / "metrics.csv")
    per_epoch = log.groupby("epoch").last()
    history = {column: per_epoch[column].dropna().tolist() for column in per_epoch.columns
               if column.startswith("val_") or column.endswith("_epoch")}
    plot_training_curves(exp_dir / "logs" / "metrics.csv", exp_dir / "plots" / "training_curves.png")
    plot_training_curves(exp_dir / "logs" / "metrics.csv", exp_dir / "plots" / "masked_accuracy.png",
                         ("train_acc", "val_acc"), "masked-patch accuracy")
    metrics = {"task": config.model.task, "epochs_run": trainer.current_epoch, "history": history,
               "best_val_loss": float(best.best_model_score) if best.best_model_score is not None else None}
    write_json(exp_dir / "metrics.json", metrics)
    return metrics
