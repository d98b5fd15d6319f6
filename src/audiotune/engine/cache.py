"""Frozen-feature cache: encode each clip once, train heads for every epoch from pooled hidden states.

An entry holds one clip's pooled hidden states, (num_hidden_states, D), for one pooling mode. Its key
joins three fingerprints, so changing any of them makes a new entry instead of reusing a stale one:
- the encoder: a digest of every backbone tensor (names, shapes, dtypes, values) and of the front-end settings it
  reads beside them (Whisper's extractor);
- the preprocessing: audio and feature settings, the window, pooling and precision;
- the audio: a digest of the file's bytes and the span (offset, duration, channels) a row reads of it.
Entries are safetensors files under ``CACHE_DIR/<encoder+preprocessing>/<audio digest>.safetensors``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch.utils.data import DataLoader, Dataset

from audiotune import partials, storage
from audiotune.config import RunConfig
from audiotune.data.audio import table_spans
from audiotune.data.audio_store import CHECKSUM, checksum, keyed_settings, segment_key
from audiotune.data.batch_features import batch_lengths
from audiotune.data.draws import DrawnBatches
from audiotune.data.input_spec import InputSpec
from audiotune.data.loader_plan import LoaderSettings
from audiotune.data.loading import (
    epoch_batches,
    make_dataset,
    make_loader,
    scoring_batches,
    seeded_loader,
    uses_bucket_sampler,
)
from audiotune.data.samplers import BalancedSampler
from audiotune.engine.adapt import OFF as ADAPT_OFF
from audiotune.engine.inference import features_on_device, inference_device, iterate_batches, loader_pins_memory
from audiotune.models.backbones import Backbone, input_spec
from audiotune.models.classifier import Classifier

log = logging.getLogger(__name__)


def cache_blocker(config: RunConfig) -> str | None:
    """Why the cache cannot be used for this run, or None when it can."""
    if not config.runtime.cache:
        return "--cache False"
    if not config.model.freeze:
        return "the backbone is trained (no --freeze)"
    if config.model.frozen_train_mode:
        return "--frozen_train_mode: the frozen encoder's features change every training pass"
    if config.train.adapt_bn != ADAPT_OFF:
        return "--adapt_bn re-estimates the encoder's BatchNorm statistics on each scored split"
    if config.augment.active or config.data.mixup:
        return "waveform augmentation or mixup changes the encoder input every epoch"
    inputs = input_spec(config)
    if inputs.features != "waveform" and (inputs.freqm or inputs.timem or inputs.noise):
        return "SpecAugment changes the encoder input every epoch"
    if inputs.features == "fbank" and inputs.vtlp:
        return "VTLP changes the encoder input every epoch"
    if config.train.group_batches or uses_bucket_sampler(config):
        return ("--group_batches, --bucket_sampler and --dynamic_batch batch clips by their groups or lengths, which "
                "the cache's pooled states do not keep")
    if config.classifier.weighted and config.classifier.layer_weights == "softmax" and \
            config.classifier.pooling_mode == "max":
        return ("max pooling of a softmax-weighted sum is not the weighted sum of max-pooled states (--layer_weights "
                "raw weighs the pooled states)")
    return None


def cache_root(config: RunConfig) -> Path:
    """The cache folder: --cache_dir, else $AUDIOTUNE_CACHE, else ~/.cache/audiotune."""
    return storage.cache_root(config.runtime.cache_dir)


def encoder_digest(backbone: Backbone) -> str:
    """Digest of every parameter and buffer of the backbone, of its architecture beyond them (a transformers
    config's activation, norms, heads) and of the front-end settings it reads beside them."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(backbone.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d buffers (num_batches_tracked) too
        digest.update(f"{name}:{tuple(tensor.shape)}:{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    if backbone.architecture:
        digest.update(json.dumps(backbone.architecture, sort_keys=True, default=str).encode())
    if backbone.front_end_settings:  # none: the digest of earlier releases
        digest.update(json.dumps(backbone.front_end_settings, sort_keys=True).encode())
    return digest.hexdigest()


def preprocessing_digest(config: RunConfig, inputs: InputSpec, pooling: str) -> str:
    """Digest of everything between the file and the pooled states, except the weights: the model's input
    (without the training-only spectrogram augmentations, which block the cache), its options, the pooling."""
    settings = {
        "model": config.model.model, "options": config.model.options,
        "input": keyed_settings({k: v for k, v in inputs.to_dict().items() if k not in ("freqm", "timem", "noise")}),
        "pooling": pooling, "precision": config.runtime.precision,
    }
    frames = {"activation": config.classifier.frame_activation, "drop_last": config.classifier.pool_drop_last}
    if frames != {"activation": "none", "drop_last": False}:  # the frames pooled (digests of earlier runs kept)
        settings["frames"] = frames
    return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=16).hexdigest()


def cache_folder(model: Classifier, config: RunConfig, pooling: str | None = None) -> Path:
    """The folder of this encoder + preprocessing (digesting the weights once per call: do it once per run)."""
    pooling = pooling or config.classifier.pooling_mode
    digest = preprocessing_digest(config, input_spec(config), pooling)
    return cache_root(config) / f"{encoder_digest(model.backbone)}-{digest}"


def encode_to_cache(model: Classifier, config: RunConfig, inputs: InputSpec, table: pd.DataFrame, folder: Path,
                    pooling: str | None = None, check: Callable[[], None] | None = None) -> tuple[list[str], int]:
    """Encode the clips of ``table`` not cached in ``folder`` yet, read as scored clips of ``inputs``; returns
    each row's entry name and how many clips were encoded now (the others were found in the cache). ``check``
    runs before each batch (see :func:`~audiotune.engine.inference.iterate_batches`)."""
    pooling = pooling or config.classifier.pooling_mode
    folder.mkdir(parents=True, exist_ok=True)
    # a segment's entry is keyed by its file's content and its span: segments of one file never collide
    names = [segment_key(path, span) for path, span in zip(table["path"], table_spans(table))]
    shape = (model.backbone.num_hidden_states, model.backbone.embedding_dim)
    missing = [i for i, name in enumerate(names) if not entry_holds(entry_path(folder, name), shape)]
    broken = [names[i] for i in missing if entry_path(folder, names[i]).exists()]
    if broken:
        log.warning("feature cache %s: %d entr%s unreadable or of another shape than %s (e.g. %s): encoding %s again",
                    folder, len(broken), "y" if len(broken) == 1 else "ies", shape, entry_path(folder, broken[0]).name,
                    "it" if len(broken) == 1 else "them")
    if missing:
        subset = table.iloc[missing]
        dataset = make_dataset(config, inputs, subset, np.zeros((len(subset), 0), np.float32),
                               on_device=features_on_device(config, inputs))
        loader = make_loader(config, dataset, subset, train=False, padding=model.backbone.padding,
                             device=inference_device(config))
        row_of = {uid: missing[k] for k, uid in enumerate(subset.index)}

        def pool(classifier: Classifier, batch: dict) -> torch.Tensor:
            return classifier.pooled_states(batch["inputs"], batch_lengths(batch), pooling)

        for batch, pooled in iterate_batches(model, loader, config, pool, "feature cache", check):
            for uid, states in zip(batch["uid"], pooled):
                write_entry(entry_path(folder, names[row_of[uid]]), states)
    return names, len(missing)


def entry_path(folder: Path, name: str) -> Path:
    """The file of cache entry ``name`` in ``folder``."""
    return folder / f"{name}.safetensors"


FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")  # what a safetensors header calls the states' float types


def entry_holds(path: Path, shape: tuple[int, int]) -> bool:
    """Whether the entry at ``path`` is complete and holds pooled states of ``shape`` (reading its header only: a
    truncated, emptied or foreign file is not an entry, and is encoded again)."""
    if not path.is_file():
        return False
    try:  # opening checks that the header's tensors cover the whole file
        with safe_open(str(path), framework="pt") as handle:
            if list(handle.keys()) != ["pooled"]:
                return False
            pooled = handle.get_slice("pooled")
            if tuple(pooled.get_shape()) != shape or pooled.get_dtype() not in FLOAT_DTYPES:
                return False
            kept = (handle.metadata() or {}).get(CHECKSUM)  # (entries of earlier releases have none)
            return kept is None or kept == checksum(_as_bytes(handle.get_tensor("pooled")))
    except (SafetensorError, OSError):
        return False


def _as_bytes(states: torch.Tensor) -> np.ndarray:
    return states.contiguous().view(torch.uint8).numpy()


def write_entry(target: Path, states: torch.Tensor) -> None:
    """Write one entry atomically under a name of its own: a killed run never leaves a truncated entry, and
    processes filling one cache at once (DDP ranks, parallel runs) never write into each other's file; the
    same key holds the same states, so whichever rename lands last is right."""
    try:
        with partials.partial_place(target, crowded=True) as partial:
            states = states.contiguous()  # written into the partial: its lock holds it
            partial.write_bytes(save({"pooled": states}, metadata={CHECKSUM: checksum(_as_bytes(states))}))
            os.replace(partial, target)
    except (OSError, SafetensorError) as err:  # a full disk, a quota, a read-only folder
        raise OSError(f"{target}: the feature cache cannot be written ({str(err).strip() or type(err).__name__}); "
                      "free space there, give another --cache_dir, or --cache False (the clips encoded every "
                      "epoch)") from None


class CachedDataset(Dataset):
    """Rows of a table served from cache entries: ``pooled`` (num_hidden_states, D) and targets."""

    def __init__(self, table: pd.DataFrame, targets: np.ndarray, folder: Path, names: list[str]):
        self.uids = [str(u) for u in table.index]
        self.files = [entry_path(folder, name) for name in names]
        self.targets = torch.as_tensor(targets, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.uids)

    def __getitem__(self, index: int) -> dict:
        try:
            pooled = load_file(str(self.files[index]))["pooled"]
        except (SafetensorError, OSError, KeyError) as error:  # changed on disk after it was checked
            raise ValueError(f"feature cache entry {self.files[index]} of row {self.uids[index]} cannot be read "
                             f"({error}): delete it and run again, or use --cache False") from error
        return {"uid": self.uids[index], "pooled": pooled, "targets": self.targets[index]}


def collate_cached(items: list[dict]) -> dict:
    """Stack cached items into a batch."""
    return {"uid": [item["uid"] for item in items], "pooled": torch.stack([item["pooled"] for item in items]),
            "targets": torch.stack([item["targets"] for item in items])}


def cached_loader(config: RunConfig, dataset: CachedDataset, train: bool, sampler: BalancedSampler | None = None,
                  num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """Batches of cached states, shuffled (or drawn by ``sampler``) and sized exactly as the uncached training
    loader's; with ``num_replicas`` processes, process ``rank``'s share (as :func:`make_loader`)."""
    batches = DrawnBatches(epoch_batches(config, len(dataset), sampler, num_replicas, rank), config.data.seed) \
        if train else scoring_batches(config, None, len(dataset), num_replicas=num_replicas, rank=rank)
    return seeded_loader(config, dataset, batches, collate_cached,
                         LoaderSettings(0, loader_pins_memory(config), None, streamed=False))


def cached_datasets(model: Classifier, config: RunConfig, tables: dict[str, pd.DataFrame],
                    targets: dict[str, np.ndarray], stats: dict | None = None,
                    check: Callable[[], None] | None = None) -> dict[str, CachedDataset]:
    """Encode what is missing and serve every table from the cache; counts go into ``stats``; ``check`` runs
    before each batch encoded."""
    weights = encoder_digest(model.backbone)  # once: it reads every weight
    inputs = input_spec(config)
    result = {}
    for split, table in tables.items():
        # training clips are cropped as in training, the others as they are scored (--eval_clip_length)
        split_inputs = inputs.training_crop() if split == "train" else inputs.scoring_crop()
        digest = preprocessing_digest(config, split_inputs, config.classifier.pooling_mode)
        folder = cache_root(config) / f"{weights}-{digest}"
        names, encoded = encode_to_cache(model, config, split_inputs, table, folder, check=check)
        if stats is not None:
            stats.setdefault("folders", {})[split] = str(folder)
            stats["encoded"] = stats.get("encoded", 0) + encoded
            stats["reused"] = stats.get("reused", 0) + len(names) - encoded
        result[split] = CachedDataset(table, targets[split], folder, names)
    return result
