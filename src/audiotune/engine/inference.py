"""Batched inference over a prepared table: data loaders and the no-grad loop shared by evaluate and extract."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from audiotune.config import RunConfig
from audiotune.data.dataset import AudioDataset, Collator, EqualLengthBatchSampler
from audiotune.data.prepare import audio_spec


def make_dataset(config: RunConfig, table: pd.DataFrame, targets: np.ndarray, train: bool = False) -> AudioDataset:
    """The dataset of a table with the run's audio and feature settings (augmentation only if ``train``)."""
    return AudioDataset(table, targets, audio_spec(config), config.features, config.augment,
                        config.data.mixup, train=train)


def make_loader(config: RunConfig, dataset: AudioDataset, table: pd.DataFrame, train: bool,
                equal_length: bool) -> DataLoader:
    """Shuffled padded batches for training; for inference, equal-length batches when the model needs them."""
    cfg = config.train
    # every loader owns its generator: iterating one never draws from the global RNG (dropout's), so
    # how many inference passes ran before training cannot change a run
    common = {"num_workers": cfg.num_workers, "collate_fn": Collator(config.features.target_length),
              "persistent_workers": cfg.num_workers > 0,
              "generator": torch.Generator().manual_seed(config.data.seed)}
    if equal_length and not train and not config.features.target_length:
        sampler = EqualLengthBatchSampler(table["num_samples"].tolist(), cfg.batch_size)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=train,
                      drop_last=train and len(dataset) > cfg.batch_size, **common)


def autocast(config: RunConfig) -> contextlib.AbstractContextManager:
    """bf16 autocast on the CPU when ``--precision bf16``, else nothing."""
    if config.train.precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def iterate_batches(model: torch.nn.Module, loader: DataLoader,
                    config: RunConfig | None = None) -> Iterator[tuple[dict, torch.Tensor]]:
    """Yield ``(batch, logits)`` in eval mode without gradients (bf16 if the config asks)."""
    model.eval()
    with torch.inference_mode(), autocast(config) if config else contextlib.nullcontext():
        for batch in loader:
            yield batch, model.forward_batch(batch)


def predict(model: torch.nn.Module, loader: DataLoader,
            config: RunConfig | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """uids, logits and targets of every row, in loader order."""
    uids, logits, targets = [], [], []
    for batch, out in iterate_batches(model, loader, config):
        uids += batch["uid"]
        logits.append(out.float().cpu().numpy())
        targets.append(batch["targets"].cpu().numpy())
    return uids, np.concatenate(logits), np.concatenate(targets)
