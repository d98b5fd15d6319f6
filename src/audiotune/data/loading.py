"""From prepared tables to batches: datasets, the samplers a run's options choose, collation and loaders.

Every rule about which sampler a run uses is here, once:

- :func:`check_sampler_options`: the training sampler options that exclude each other, checked by a command
  before it reads or writes anything;
- :func:`training_batches`: the one choice of a run's training batches (``--group_batches``, else length buckets
  of ``--bucket_sampler`` / ``--dynamic_batch``, else ``--batch_size`` slices of each epoch's order, shuffled or
  class-balanced by ``--balance``), each process's share under DDP;
- :func:`scoring_batches`: rows sorted by length, so little of a batch is padding; any mix of lengths in a batch
  for models whose padding is exact (the backbone's :class:`~audiotune.data.samplers.PaddingRule`), else lengths
  within the rule's tolerance (and the log says so); within groups when asked; each process's share padded with
  repeats under DDP.

The samplers themselves are in :mod:`audiotune.data.samplers`; how many workers a loader has, and whether the
audio store is used, in :mod:`audiotune.data.loader_plan` (from the device the engine gives and the data).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from audiotune import storage
from audiotune.config import RunConfig
from audiotune.data.audio_store import AudioStore
from audiotune.data.balance import class_groups
from audiotune.data.batch_features import BatchFeatures
from audiotune.data.dataset import AudioDataset, Collator
from audiotune.data.draws import DrawnBatches, TrainingLoader
from audiotune.data.input_spec import InputSpec
from audiotune.data.loader_plan import LoaderSettings, loader_settings, use_audio_store
from audiotune.data.passes import Passes, StreamingLoader, TrainingStream
from audiotune.data.prepare import PreparedData
from audiotune.data.samplers import (
    EXACT_PADDING,
    BalancedSampler,
    BucketBatchSampler,
    DealtBatches,
    EpochShuffle,
    FixedBatches,
    GroupBatchSampler,
    LengthSortedBatches,
    PaddingRule,
    TrainingBatches,
)

log = logging.getLogger(__name__)


def uses_bucket_sampler(config: RunConfig) -> bool:
    """Whether training batches come from :func:`bucket_sampler` (``--bucket_sampler`` or ``--dynamic_batch``)."""
    return config.train.bucket_sampler or config.train.dynamic_batch > 0


def check_sampler_options(config: RunConfig) -> None:
    """A ValueError when training sampler options that exclude each other are combined: ``--balance`` draws its
    own epochs, ``--group_batches`` its own batches, length buckets (``--bucket_sampler``, ``--dynamic_batch``)
    their own batches. Needs nothing but the config: call it before anything is read or written."""
    train = config.train
    if train.balance != "none" and uses_bucket_sampler(config):
        raise ValueError(f"--balance {train.balance} draws its own epochs: it cannot be combined with "
                         "--bucket_sampler or --dynamic_batch")
    if train.group_batches and (train.balance != "none" or uses_bucket_sampler(config)):
        raise ValueError(f"--group_batches {train.group_batches} draws its own batches: it cannot be combined with "
                         "--balance, --bucket_sampler or --dynamic_batch")


def balanced_sampler(config: RunConfig, prepared: PreparedData) -> BalancedSampler | None:
    """The class-balanced epochs of ``--balance`` over the training split (None: plain shuffled epochs)."""
    if config.train.balance == "none":
        return None
    groups = class_groups(prepared.targets["train"], prepared.heads, f"--balance {config.train.balance}")
    return BalancedSampler(groups, config.train.balance, config.data.seed)


def bucket_sampler(config: RunConfig, table: pd.DataFrame, rate: int) -> BucketBatchSampler:
    """The length-bucketed batches of a training table (``--bucket_sampler``, ``--dynamic_batch``); lengths
    are the prepared clips' samples at ``rate``, capped at ``--max_seconds`` when pretraining crops to it."""
    cfg = config.train
    lengths = table["num_samples"].to_numpy()
    if cfg.max_seconds > 0:
        lengths = np.minimum(lengths, round(cfg.max_seconds * rate))
    return BucketBatchSampler(lengths.tolist(), cfg.batch_size, cfg.num_buckets,
                              max_samples=round(cfg.dynamic_batch * rate), drop_last=len(table) > cfg.batch_size,
                              seed=config.data.seed)


def group_sampler(config: RunConfig, table: pd.DataFrame) -> GroupBatchSampler:
    """The one-group batches of ``--group_batches COLUMN`` over a training table (a clear error when the table
    lacks the column or a row has no value in it)."""
    column = config.train.group_batches
    if column not in table.columns:
        raise ValueError(f"--group_batches {column}: the training table has no such column (it has "
                         f"{', '.join(map(str, table.columns))})")
    if table[column].isna().any():
        raise ValueError(f"--group_batches {column}: {int(table[column].isna().sum())} training rows have no "
                         f"{column} (e.g. uid {table.index[table[column].isna()][0]})")
    return GroupBatchSampler(table[column].tolist(), config.train.batch_size, config.data.seed)


def epoch_batches(config: RunConfig, rows: int, sampler: BalancedSampler | None = None, num_replicas: int = 1,
                  rank: int = 0) -> TrainingBatches:
    """Process ``rank``'s ``--batch_size`` slices of each epoch's order of ``rows`` rows: shuffled, or drawn by
    ``sampler`` (class-balanced epochs)."""
    order = sampler if sampler is not None else EpochShuffle(rows, config.data.seed)
    return TrainingBatches(order, config.train.batch_size, num_replicas, rank)


def training_batches(config: RunConfig, table: pd.DataFrame, rate: int, sampler: BalancedSampler | None = None,
                     num_replicas: int = 1, rank: int = 0) -> Sampler[list[int]]:
    """The training batches of process ``rank`` of ``num_replicas``: one-group batches (``--group_batches``) or
    length buckets (``--bucket_sampler``, ``--dynamic_batch``; clip lengths in samples at ``rate``) dealt out
    whole, else :func:`epoch_batches`;
    ``set_epoch`` gives each epoch its own order, the same in every process, and each row the seed of its clip's
    draws in that epoch (:class:`~audiotune.data.draws.DrawnBatches`). The options were checked by
    :func:`check_sampler_options`."""
    batches: Sampler[list[int]]
    if config.train.group_batches:
        batches = DealtBatches(group_sampler(config, table), num_replicas, rank, pad=False)
    elif uses_bucket_sampler(config):
        batches = DealtBatches(bucket_sampler(config, table, rate), num_replicas, rank, pad=False)
    else:
        batches = epoch_batches(config, len(table), sampler, num_replicas, rank)
    return DrawnBatches(batches, config.data.seed)


def scoring_batches(config: RunConfig, table: pd.DataFrame | None, rows: int,
                    padding: PaddingRule = EXACT_PADDING, groups: list[np.ndarray] | None = None,
                    num_replicas: int = 1, rank: int = 0) -> Sampler[list[int]]:
    """Batches of ``--batch_size`` of the ``rows`` rows sorted by the table's ``num_samples`` (in table order
    without a table): any mix of lengths when the model's
    ``padding`` is exact, else lengths within ``padding.tolerance`` (logged); ``groups`` (row positions) keeps
    every batch within one group, group after group. With ``num_replicas`` processes, process ``rank``'s share
    padded with repeats."""
    batches: Sampler[list[int]]
    if not padding.exact:
        log.warning("scoring batches hold clips sorted by length, the longest at most %g%% longer than the "
                    "shortest: %s", 100 * padding.tolerance, padding.reason or "padding changes the model's result")
    if groups is not None:
        assert table is not None  # groups are row positions of a table
        batches = FixedBatches([[int(group_rows[i]) for i in batch] for group_rows in groups
                                for batch in _ordered_batches(config, table.iloc[group_rows], len(group_rows),
                                                              padding)])
    else:
        batches = _ordered_batches(config, table, rows, padding)
    if num_replicas > 1:
        batches = DealtBatches(batches, num_replicas, rank, pad=True)
    return batches


def _ordered_batches(config: RunConfig, table: pd.DataFrame | None, count: int,
                     padding: PaddingRule) -> Sampler[list[int]]:
    """Batches of ``count`` rows sorted by the table's lengths (within ``padding``'s tolerance where it is not
    exact); in order without a table or lengths that matter."""
    if table is not None:
        tolerance = math.inf if padding.exact else padding.tolerance
        return LengthSortedBatches(table["num_samples"].tolist(), config.train.batch_size, tolerance)
    return BatchSampler(SequentialSampler(range(count)), config.train.batch_size, drop_last=False)


def make_dataset(config: RunConfig, inputs: InputSpec, table: pd.DataFrame, targets: np.ndarray,
                 train: bool = False, passes: int = 1, on_device: bool = False) -> AudioDataset:
    """The dataset of a table prepared as the model reads it (``inputs``): augmentation and the training crop
    if ``train``, else the scoring crop; read ``passes`` times (the audio store's auto rule weighs it);
    ``on_device`` (the engine's choice, ``--features_on``): its loaders give waveforms, whose features
    :func:`batch_features` computes after the transfer."""
    spec, root = inputs.audio(train), storage.cache_root(config.runtime.cache_dir)
    store = AudioStore(root, spec) if use_audio_store(config, table, spec, passes, root) else None
    return AudioDataset(table, targets, inputs, config.augment, config.data.mixup, train=train, store=store,
                        on_device=on_device)


def collator(dataset: AudioDataset) -> Collator:
    """How a dataset's batches are padded: with zeros, or with the pad frame ``--pad`` names; features, padding and
    ``target_length`` after the transfer for a dataset whose features are computed on the device."""
    inputs = dataset.inputs
    frame = dataset.extract.pad_frame(inputs.rate_or_default)
    if dataset.on_device:
        return Collator(features=BatchFeatures(inputs, dataset.train, frame))
    return Collator(inputs.target_length, frame)


def batch_features(loader: Iterable[dict]) -> BatchFeatures | None:
    """What turns ``loader``'s batches into model inputs once they are on the model's device (None: its batches
    hold model inputs already)."""
    if isinstance(loader, DataLoader) and isinstance(loader.collate_fn, Collator):
        return loader.collate_fn.features
    return None


def make_loader(config: RunConfig, dataset: AudioDataset, table: pd.DataFrame | None, train: bool,
                padding: PaddingRule = EXACT_PADDING, *, device: torch.device, passes: int = 1,
                sampler: BalancedSampler | None = None, num_replicas: int = 1, rank: int = 0,
                groups: list[np.ndarray] | None = None) -> DataLoader:
    """The loader of :func:`training_batches` (``train``; ``sampler``: e.g. class-balanced epochs) or of
    :func:`scoring_batches` (the model's ``padding``, ``groups``), for process ``rank`` of ``num_replicas``; its batches
    are padded by :func:`collator`; workers, prefetching and pinning suit ``device`` and the data read ``passes``
    times (:func:`~audiotune.data.loader_plan.loader_settings`), the workers running on from one pass into the
    next when there are several (:mod:`audiotune.data.passes`)."""
    if train:
        batches = training_batches(config, table, dataset.inputs.rate_or_default, sampler, num_replicas, rank)
    else:
        # inputs padded or cropped to one length (target_length) batch exactly whatever the clips
        padding = EXACT_PADDING if dataset.inputs.target_length else padding
        batches = scoring_batches(config, table, len(dataset), padding, groups, num_replicas, rank)
    local_processes = math.ceil(num_replicas / max(config.runtime.num_nodes, 1))
    settings = loader_settings(config, device, table, dataset.audio, passes, local_processes)
    return seeded_loader(config, dataset, batches, collator(dataset), settings, passes)


def adaptation_loader(config: RunConfig, dataset: AudioDataset, batch_size: int, *,
                      device: torch.device) -> DataLoader:
    """The batches ``--adapt_bn`` estimates BatchNorm statistics on: ``batch_size`` clips (the run's training
    batch size, whatever batch size scores them) in table order, zero-padded to the longest as training batches
    are (whatever the model needs for scoring)."""
    settings = loader_settings(config, device, None, dataset.audio)  # one pass over one group: no workers
    batches = BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last=False)
    return seeded_loader(config, dataset, batches, collator(dataset), settings)


def seeded_loader(config: RunConfig, dataset: Dataset, batches: Sampler[list[int]], collate: Any,
                  settings: LoaderSettings, passes: int = 1) -> DataLoader:
    """A loader of ``batches`` read as ``settings`` say, that owns its random generator, seeded by ``--seed``;
    streamed over ``passes`` passes when the settings say so. Training batches (:class:`DrawnBatches`) give each
    pass its own order and resume inside an epoch (:class:`~audiotune.data.draws.ResumesInsideEpoch`)."""
    # iterating it never draws from the global RNG (dropout's), so how many inference passes ran before
    # training cannot change a run
    options = {"collate_fn": collate, "generator": torch.Generator().manual_seed(config.data.seed),
               **settings.options()}
    if isinstance(batches, DrawnBatches):  # training
        if settings.streamed:
            return TrainingStream(dataset, Passes(batches, passes, ordered=True), batches, **options)
        return TrainingLoader(dataset, batches, **options)
    if settings.streamed:
        return StreamingLoader(dataset, Passes(batches, passes, ordered=False), **options)
    return DataLoader(dataset, batch_sampler=batches, **options)
