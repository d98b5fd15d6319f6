"""Batched inference over a prepared table: data loaders and the no-grad loop shared by evaluate, extract,
the feature cache and probe, on the device the run config names."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler

from audiotune import storage
from audiotune.config import RunConfig
from audiotune.data.audio_store import AudioStore
from audiotune.data.balance import BalancedSampler
from audiotune.data.dataset import AudioDataset, Collator, EqualLengthBatchSampler
from audiotune.data.prepare import audio_spec, scoring_spec
from audiotune.data.sampler import BucketBatchSampler, GroupBatchSampler
from audiotune.engine.device import autocast, move_batch, parse_devices, pins_memory, resolve_device
from audiotune.engine.distributed import DealtBatches, EpochShuffle, TrainingBatches, launched_local_rank
from audiotune.models.classifier import Classifier

# what one inference step computes from the model and a batch already on the device
InferenceStep = Callable[[Classifier, dict], torch.Tensor]
PRECISIONS = ("32", "bf16")


def inference_device(config: RunConfig) -> torch.device:
    """The device of ``config.runtime.accelerator`` / ``config.runtime.devices`` (ValueError if it is missing).

    Inside a multi-GPU (DDP) run each process keeps the GPU Lightning gave it, and before Lightning starts
    (the feature cache) takes the one Lightning will give it: its local rank's device.
    """
    device = resolve_device(config.runtime.accelerator, config.runtime.devices)
    if device.type == "cuda" and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    local_rank = launched_local_rank()
    if device.type == "cuda" and local_rank > 0:
        devices = parse_devices(config.runtime.devices)
        return torch.device("cuda", devices[local_rank] if isinstance(devices, list) else local_rank)
    return device


def override_device(config: RunConfig, accelerator: str | None = None, devices: str | None = None,
                    precision: str | None = None) -> torch.device:
    """Apply command-line ``--accelerator/--devices/--precision`` over a loaded run's config; returns the
    device, so a missing accelerator is an error before the command writes anything."""
    if precision is not None:
        if precision not in PRECISIONS:
            raise ValueError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        config.runtime.precision = precision
    if accelerator is not None:
        config.runtime.accelerator = accelerator
    if devices is not None:
        config.runtime.devices = str(devices)
    return inference_device(config)


def training_crop(config: RunConfig) -> RunConfig:
    """A copy of ``config`` whose scored clips are cropped as its training clips (to encode training data
    through the scoring path, as the feature cache does)."""
    copy = dataclasses.replace(config, audio=dataclasses.replace(config.audio))
    copy.audio.eval_clip_length = -1.0
    return copy


def make_dataset(config: RunConfig, table: pd.DataFrame, targets: np.ndarray, train: bool = False) -> AudioDataset:
    """The dataset of a table with the run's audio and feature settings: augmentation and the training crop
    if ``train``, else the scoring crop (:func:`~audiotune.data.prepare.scoring_spec`)."""
    spec = audio_spec(config) if train else scoring_spec(config)
    store = AudioStore(storage.cache_root(config.runtime.cache_dir), spec) if config.runtime.audio_cache else None
    return AudioDataset(table, targets, spec, config.features, config.augment, config.data.mixup, train=train,
                        store=store, min_samples=config.audio.min_samples)


class FixedBatches(Sampler[list[int]]):
    """A batch sampler over a fixed list of batches."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches

    def __len__(self) -> int:
        return len(self.batches)


def collator(config: RunConfig, dataset: AudioDataset) -> Collator:
    """How ``config``'s batches are padded: with zeros, or with one frame of silence (``--pad silence``)."""
    silent = config.features.pad == "silence"
    return Collator(config.features.target_length,
                    dataset.extract.silence(config.audio.resample_rate or 16000) if silent else None)


def make_loader(config: RunConfig, dataset: AudioDataset, table: pd.DataFrame, train: bool,
                equal_length: bool, sampler: BalancedSampler | None = None, num_replicas: int = 1,
                rank: int = 0, groups: list[np.ndarray] | None = None) -> DataLoader:
    """Shuffled padded batches for training (or the rows ``sampler`` draws, e.g. class-balanced epochs); for
    inference, equal-length batches when the model needs them.

    With ``num_replicas`` processes (DDP), the batches of process ``rank``: its share of each epoch's training
    batches, or of the inference batches padded with repeats (see :mod:`audiotune.engine.distributed`).
    For inference, ``groups`` (row positions) keeps every batch within one group, group after group.
    """
    # every loader owns its generator: iterating one never draws from the global RNG (dropout's), so
    # how many inference passes ran before training cannot change a run
    workers = config.runtime.num_workers
    common: dict[str, Any] = {"num_workers": workers, "collate_fn": collator(config, dataset),
                              "persistent_workers": workers > 0,
                              "pin_memory": pins_memory(inference_device(config)),
                              "generator": torch.Generator().manual_seed(config.data.seed)}
    if train:
        return DataLoader(dataset, batch_sampler=training_batches(config, table, sampler, num_replicas, rank),
                          **common)
    batches: Sampler[list[int]]
    if groups is not None:
        batches = FixedBatches([[int(rows[i]) for i in batch] for rows in groups
                                for batch in _inference_batches(config, table.iloc[rows], len(rows), equal_length)])
    else:
        batches = _inference_batches(config, table, len(dataset), equal_length)
    if num_replicas > 1:
        batches = DealtBatches(batches, num_replicas, rank, pad=True)
    return DataLoader(dataset, batch_sampler=batches, **common)


def _inference_batches(config: RunConfig, table: pd.DataFrame, count: int, equal_length: bool) -> Sampler[list[int]]:
    """Inference batches of ``count`` rows in order; equal-length ones (by the table's lengths) when asked."""
    if equal_length and not config.features.target_length:
        return EqualLengthBatchSampler(table["num_samples"].tolist(), config.train.batch_size)
    return BatchSampler(SequentialSampler(range(count)), config.train.batch_size, drop_last=False)


def adaptation_loader(config: RunConfig, dataset: AudioDataset) -> DataLoader:
    """The batches ``--adapt_bn`` estimates BatchNorm statistics on: ``--batch_size`` clips in table order,
    zero-padded to the longest as training batches are (whatever the model needs for scoring)."""
    return DataLoader(dataset, batch_sampler=BatchSampler(SequentialSampler(range(len(dataset))),
                                                          config.train.batch_size, drop_last=False),
                      num_workers=config.runtime.num_workers, collate_fn=collator(config, dataset),
                      pin_memory=pins_memory(inference_device(config)),
                      generator=torch.Generator().manual_seed(config.data.seed))  # never the global RNG


def training_batches(config: RunConfig, table: pd.DataFrame, sampler: BalancedSampler | None = None,
                     num_replicas: int = 1, rank: int = 0) -> Sampler[list[int]]:
    """The training batches of process ``rank`` of ``num_replicas``: length buckets (``--bucket_sampler``,
    ``--dynamic_batch``) dealt out whole, else ``--batch_size`` slices of the epoch's order (shuffled, or drawn
    by ``sampler``); ``set_epoch`` gives each epoch its own order, the same in every process."""
    if config.train.group_batches:
        column = config.train.group_batches
        if sampler is not None or uses_bucket_sampler(config):
            raise ValueError(f"--group_batches {column} draws its own batches: it cannot be combined with "
                             "--balance, --bucket_sampler or --dynamic_batch")
        if column not in table.columns:
            raise ValueError(f"--group_batches {column}: the training table has no such column (it has "
                             f"{', '.join(map(str, table.columns))})")
        if table[column].isna().any():
            raise ValueError(f"--group_batches {column}: {int(table[column].isna().sum())} training rows have no "
                             f"{column} (e.g. uid {table.index[table[column].isna()][0]})")
        groups = GroupBatchSampler(table[column].tolist(), config.train.batch_size, config.data.seed)
        return DealtBatches(groups, num_replicas, rank, pad=False)
    if uses_bucket_sampler(config):
        return DealtBatches(bucket_sampler(config, table), num_replicas, rank, pad=False)
    order = sampler if sampler is not None else EpochShuffle(len(table), config.data.seed)
    return TrainingBatches(order, config.train.batch_size, num_replicas, rank)


def bucket_sampler(config: RunConfig, table: pd.DataFrame) -> BucketBatchSampler:
    """The length-bucketed batches of a training table (``--bucket_sampler``, ``--dynamic_batch``); lengths
    are the prepared clips', capped at ``--max_seconds`` when pretraining crops to it."""
    cfg = config.train
    rate = config.audio.resample_rate or 16000
    lengths = table["num_samples"].to_numpy()
    if cfg.max_seconds > 0:
        lengths = np.minimum(lengths, round(cfg.max_seconds * rate))
    return BucketBatchSampler(lengths.tolist(), cfg.batch_size, cfg.num_buckets,
                              max_samples=round(cfg.dynamic_batch * rate), drop_last=len(table) > cfg.batch_size,
                              seed=config.data.seed)


def uses_bucket_sampler(config: RunConfig) -> bool:
    """Whether training batches come from :func:`bucket_sampler`."""
    return config.train.bucket_sampler or config.train.dynamic_batch > 0


def _logits(model: Classifier, batch: dict) -> torch.Tensor:
    return model.forward_batch(batch)


def iterate_batches(model: Classifier, loader: DataLoader, config: RunConfig | None = None,
                    step: InferenceStep = _logits) -> Iterator[tuple[dict, torch.Tensor]]:
    """Yield ``(batch, step(model, batch))`` in eval mode without gradients, on the config's device.

    The model moves to that device once and each batch per step; bf16 autocast on that device when the
    config asks. Without a config the model stays where it is. Yielded tensors are on the device.
    """
    device = inference_device(config) if config else next(
        (p.device for p in model.parameters()), torch.get_default_device())
    precision = config.runtime.precision if config else "32"
    model.to(device).eval()
    with torch.inference_mode(), autocast(device, precision):
        for batch in loader:
            batch = move_batch(batch, device)
            yield batch, step(model, batch)


def predict(model: Classifier, loader: DataLoader,
            config: RunConfig | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """uids, logits and targets of every row, in loader order (as float32 numpy on the CPU)."""
    uids, logits, targets = [], [], []
    for batch, out in iterate_batches(model, loader, config):
        uids += batch["uid"]
        logits.append(out.float().cpu().numpy())
        targets.append(batch["targets"].float().cpu().numpy())
    return uids, np.concatenate(logits), np.concatenate(targets)
