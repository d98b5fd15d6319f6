"""``audiotune cluster``: k-means pseudo-labels for every frame of every clip (the targets of P-TAPT).

1. The encoder (a hub id or directory with ``-c``, or a trained run's fine-tuned encoder with ``--run``) reads
   every clip whole; the frames of hidden state ``--layer`` are the features. A run's frames are those its heads
   read: after its ``--frame_activation`` (ReLU for the seed emotion system's fine-tuning, whose clustering read
   its model's ReLU'd output); every frame is labelled, also with ``--pool_drop_last``. An encoder's frames are
   its hidden states as they are, or after ``--frame_activation`` (``relu``: the seed's cluster.py on a wav2vec2
   checkpoint, its iterative pseudo-labelling, clustered the ReLU of the last hidden state).
2. The clips k-means is fitted on are the training split's (``--fit_on train``, the default: no validation or
   test clip shapes the clusters, as the seed system fitted on its label file's Train part) or every clip
   given (``--fit_on all``). Each of them offers a random ``--sample_ratio`` of its frames to one preallocated
   (``--max_frames``, D) float32 buffer by reservoir sampling: the buffer's memory is fixed before the first
   clip, and the sample is uniform over all offered frames whatever the order of the clips (the seed system
   filled its buffer from the first clips and then stopped).
3. For each K of ``--num_clusters``: faiss k-means (``--niter`` iterations, on the GPU when faiss has one)
   on that sample.
4. A second pass over every clip of every split assigns each frame to its nearest centroid, on the encoder's
   device (P-TAPT needs targets for every clip it pretrains on).

Output: a parquet file with one row per clip and K: ``uid``, ``k``, ``labels`` (one cluster per frame). Its
schema metadata (key ``audiotune``) and ``OUT_STEM.clusters.json`` hold how the frames were made (encoder,
layer, frame activation, sample rate, samples per frame) and the cluster usage per K: clusters used, empty
clusters, the largest cluster's share, usage perplexity, k-means objective, and which clips k-means was fitted
on (``fit_on``, ``fit_splits``, ``fit_clips``); ``OUT_STEM.fit_rows.csv`` lists those clips (uid, split).
``pretrain --objective ptapt`` checks the frame rate and every clip's frame count against its own encoder
before training.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from audiotune import storage
from audiotune.atomic import atomic_path
from audiotune.config import RunConfig, check_config
from audiotune.config.sections import AUDIO_ROOT
from audiotune.data.batch_features import batch_lengths
from audiotune.data.loading import batch_features, make_dataset, make_loader
from audiotune.data.prepare import prepare_eval_data
from audiotune.data.pseudo_labels import METADATA_KEY, SCHEMA, FramesMade, check_cluster_counts
from audiotune.engine.clips_read import clip_rows
from audiotune.engine.device import autocast
from audiotune.engine.extract import say_skipped
from audiotune.engine.inference import features_on_device, inference_device, on_device, override_data
from audiotune.models.backbones import Backbone, build_backbone, input_spec, resolve_config
from audiotune.models.checkpoint import load_run
from audiotune.models.heads import ACTIVATIONS
from audiotune.outputs import (
    CLUSTER_FIT_ROWS_SUFFIX,
    CLUSTER_STATS_SUFFIX,
    check_output_path,
    frame_label_sidecars,
    sidecar,
    skip_list,
    write_csv,
    write_json,
)
from audiotune.progress import track

log = logging.getLogger(__name__)

POINTS_PER_CENTROID = 256  # default buffer: faiss's own cap on the points k-means uses per centroid
FIT_ON = ("train", "all")  # the clips k-means is fitted on: the training split's, or every clip given


@dataclass
class ClusterOptions:
    """What ``audiotune cluster`` computes (see the module docstring)."""

    num_clusters: list[int] = field(default_factory=lambda: [64, 512, 4096])  # the seed's IEMOCAP recipe
    layer: int = -1
    sample_ratio: float = 0.2
    max_frames: int = 0  # 0: 256 x max(num_clusters)
    niter: int = 20
    seed: int = 0
    fit_on: str = "train"

    def check(self) -> None:
        check_cluster_counts(self.num_clusters)
        if not 0 < self.sample_ratio <= 1:
            raise ValueError(f"--sample_ratio {self.sample_ratio}: the share of each clip's frames offered to the "
                             "k-means sample, in (0, 1]")
        if self.fit_on not in FIT_ON:
            raise ValueError(f"--fit_on {self.fit_on!r}: choose one of {', '.join(FIT_ON)}")
        if self.max_frames < 0 or self.niter < 1:
            raise ValueError(f"--max_frames {self.max_frames} / --niter {self.niter}: must be >= 0 / >= 1")

    @property
    def buffer_rows(self) -> int:
        return self.max_frames or POINTS_PER_CENTROID * max(self.num_clusters)


def stats_path(out: Path) -> Path:
    """Where the cluster statistics of ``out`` are written: beside it, named after it."""
    return sidecar(out, CLUSTER_STATS_SUFFIX)


def fit_rows_path(out: Path) -> Path:
    """Where the clips k-means was fitted on are listed: beside ``out``, named after it."""
    return sidecar(out, CLUSTER_FIT_ROWS_SUFFIX)


def fitted_splits(tables: dict, fit_on: str, source: str) -> list[str]:
    """The splits whose clips k-means is fitted on; ``--fit_on train`` of a source without a training split is
    an error naming it."""
    if fit_on == "all":
        return list(tables)
    if "train" not in tables:
        has = "no splits (one table or a folder of audio)" if list(tables) == ["data"] else \
            f"the splits {', '.join(tables)}"
        raise ValueError(f"{source}: --fit_on train fits k-means on the training split, and this source has {has}; "
                         "give a split directory or a JSON split file with a train part, or --fit_on all to fit "
                         "on every clip given")
    return ["train"]


class Reservoir:
    """A fixed (rows, dim) float32 buffer holding a uniform sample of every row offered to it."""

    def __init__(self, rows: int, dim: int, rng: np.random.Generator) -> None:
        self.buffer = np.empty((rows, dim), dtype=np.float32)
        self.seen = 0
        self.rng = rng

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes

    def offer(self, rows: np.ndarray) -> None:
        capacity = len(self.buffer)
        free = max(0, min(capacity - self.seen, len(rows)))
        if free:
            self.buffer[self.seen:self.seen + free] = rows[:free]
        rest = rows[free:]
        if len(rest):  # Algorithm R: row number i (0-based, over all offers) replaces slot j ~ U[0, i] if j < capacity
            numbers = self.seen + free + np.arange(len(rest))
            slots = (self.rng.random(len(rest)) * (numbers + 1)).astype(np.int64)
            keep = slots < capacity
            self.buffer[slots[keep]] = rest[keep]  # numpy keeps the last of repeated slots, as a sequential pass would
        self.seen += len(rows)

    def sample(self) -> np.ndarray:
        return self.buffer[:min(self.seen, len(self.buffer))]


# (inputs, lengths) -> every hidden state (B, T, D) and the mask (B, T) of real frames
StatesOf = Callable[[Tensor, Tensor | None], tuple[list[Tensor], Tensor]]


def _encoder(config: RunConfig, run: str | None,
             data: dict[str, Any] | None) -> tuple[RunConfig, Backbone, StatesOf]:
    """The config to read the data with, the encoder, and how it makes frames: a run's as its heads read them
    (after its ``--frame_activation``, :meth:`~audiotune.models.classifier.Classifier.frame_states`), a
    checkpoint's as its hidden states after ``--frame_activation`` (none: as they are). With a run, ``data``: the
    options of where uid-layout audio lives that the command gave (the others are the run's, as evaluate and
    extract read them)."""
    if run:
        run_config, model = load_run(run)
        # the command's table, batch and runtime settings; the run's model and audio settings, and where its
        # audio lives unless the command says
        audio_root = {name: getattr(run_config.data, name) for name in AUDIO_ROOT}
        run_config.train.batch_size = config.train.batch_size
        run_config.runtime = config.runtime
        run_config.data = config.data
        override_data(run_config, {**audio_root, **(data or {})})
        run_config.train.debug = False
        return run_config, model.backbone, model.frame_states
    resolve_config(config)
    backbone = build_backbone(config, pretrained=True)
    if config.classifier.frame_activation == "none":
        return config, backbone, backbone.hidden_states
    activation = ACTIVATIONS[config.classifier.frame_activation]()

    def activated(inputs: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], Tensor]:
        states, mask = backbone.hidden_states(inputs, lengths)
        return [activation(state) for state in states], mask

    return config, backbone, activated


def _frames(states_of: StatesOf, batch: dict, layer: int) -> tuple[Tensor, list[int]]:
    """The batch's (frames, D) features of hidden state ``layer``, clip after clip, on the device, and each clip's
    frame count (the mask read back once a batch, not once a clip)."""
    states, mask = states_of(batch["inputs"], batch_lengths(batch))
    return states[layer].float()[mask], mask.sum(1).tolist()


def _assign(frames: Tensor, centroids: Tensor, norms: Tensor) -> Tensor:
    """Nearest centroid (squared L2) of each row of ``frames``, in float32 whatever autocast the encoder runs under (a
    bfloat16 product rounds the distances enough to send some frames to another centroid)."""
    with torch.autocast(frames.device.type, enabled=False):
        distances = norms[None, :] - 2.0 * frames @ centroids.T  # + |x|^2, the same for every centroid
    return distances.argmin(dim=1)


def _kmeans(sample: np.ndarray, k: int, options: ClusterOptions) -> tuple[np.ndarray, float]:
    import faiss

    if len(sample) < k:
        more = "raise --max_frames" if len(sample) >= options.buffer_rows else \
            f"raise --sample_ratio (now {options.sample_ratio:g})" if options.sample_ratio < 1 else \
            "it holds every frame of the clips: give more audio, or a smaller K"
        raise ValueError(f"--num_clusters {k}: k-means needs at least {k} sampled frames, the sample has "
                         f"{len(sample)}; {more}")
    if len(sample) < 39 * k:
        log.warning("K=%d: %d sampled frames (fewer than 39 per cluster); the clusters are poorly estimated",
                    k, len(sample))
    kmeans = faiss.Kmeans(sample.shape[1], k, niter=options.niter, seed=options.seed, verbose=False,
                          max_points_per_centroid=max(1, math.ceil(len(sample) / k)),  # use the whole sample
                          gpu=faiss.get_num_gpus() > 0)
    kmeans.train(np.ascontiguousarray(sample))
    trained: Any = kmeans  # centroids and obj are set by train()
    objective = list(trained.obj)
    return trained.centroids.astype(np.float32), float(objective[-1]) if objective else float("nan")


def _usage(counts: np.ndarray) -> dict[str, Any]:
    total = int(counts.sum())
    share = counts / max(total, 1)
    used = share[share > 0]
    empty = np.flatnonzero(counts == 0)
    return {"frames": total, "clusters_used": int((counts > 0).sum()), "empty_clusters": int(len(empty)),
            "empty_cluster_ids": empty[:50].tolist(), "largest_share": float(share.max()) if total else 0.0,
            "usage_perplexity": float(np.exp(-(used * np.log(used)).sum())) if total else 0.0}


def cluster(config: RunConfig, options: ClusterOptions, out: str, run: str | None = None,
            data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the frame labels of every clip of ``config.data.data_split_root`` for each K; returns the statistics.
    With a ``run``, ``data`` holds the options of where uid-layout audio lives the command gave (else the run's)."""
    options.check()
    out_path = Path(out)
    if out_path.suffix != ".parquet":
        raise ValueError(f"--out {out}: frame labels are written as parquet; give a path ending in .parquet")
    check_output_path(out_path)
    check_output_path(stats_path(out_path))
    check_output_path(fit_rows_path(out_path))
    check_config(config)
    config, backbone, states_of = _encoder(config, run, data)
    inputs = input_spec(config).whole_clips()  # every frame of every clip
    states = backbone.num_hidden_states
    if not -states <= options.layer < states:
        raise ValueError(f"--layer {options.layer}: the encoder has hidden states 0..{states - 1} (-1: the last)")
    device = inference_device(config)
    prepared = prepare_eval_data(config, inputs, config.data.data_split_root, targets_needed=False,
                                 listed_in=skip_list(out_path).name)
    loaders = {split: make_loader(config, make_dataset(config, inputs, table, prepared.targets[split],
                                                       on_device=features_on_device(config, inputs)),
                                  table, False, backbone.padding, device=inference_device(config))
               for split, table in prepared.tables.items()}
    uids = [uid for table in prepared.tables.values() for uid in table.index]
    if len(set(uids)) != len(uids):
        raise ValueError(f"{config.data.data_split_root}: a uid appears in more than one split; the labels are "
                         "keyed by uid")
    fit_splits = fitted_splits(prepared.tables, options.fit_on, config.data.data_split_root)
    fit_rows = clip_rows(prepared.tables, "cluster", out_path, fit_splits)  # as a run's clips_read.csv lists them
    log.info("k-means fitted on %d clip(s) of %s (--fit_on %s); every clip of %s is labelled", len(fit_rows),
             ", ".join(fit_splits), options.fit_on, ", ".join(prepared.tables))
    rng = np.random.default_rng(options.seed)
    reservoir = Reservoir(options.buffer_rows, backbone.embedding_dim, rng)
    log.info("k-means sample buffer: %d frames x %d dims float32 = %.1f MiB", options.buffer_rows,
             backbone.embedding_dim, reservoir.nbytes / 2 ** 20)
    backbone.to(device).eval()
    with torch.inference_mode(), autocast(device, config.runtime.precision):
        for split in fit_splits:  # pass 1: the sample, from the clips k-means is fitted on
            for batch in track(loaders[split], f"cluster sample {split}"):
                frames, sizes = _frames(states_of, on_device(batch, device, batch_features(loaders[split])),
                                        options.layer)
                for features in np.split(frames.cpu().numpy(), np.cumsum(sizes)[:-1]):  # clip by clip, as drawn
                    reservoir.offer(features[rng.random(len(features)) < options.sample_ratio])
    sample = reservoir.sample()
    fitted = {k: _kmeans(sample, k, options) for k in options.num_clusters}
    centroids = {k: torch.from_numpy(c).to(device) for k, (c, _) in fitted.items()}
    norms = {k: (c * c).sum(dim=1) for k, c in centroids.items()}
    counts = {k: np.zeros(k, dtype=np.int64) for k in options.num_clusters}
    made = FramesMade(
        # a run by where it is (its URL, not a local copy's), found again from anywhere (pretrain's clips_read.csv)
        encoder=storage.remote_name(os.path.abspath(run)) if run else config.model.checkpoint, run=bool(run),
        model=config.model.model, layer=options.layer, sample_rate=inputs.resample_rate,
        hop_samples=backbone.frame_hop, num_clusters=list(options.num_clusters))
    meta: dict[str, Any] = made.record(
        frame_activation=config.classifier.frame_activation, sample_ratio=options.sample_ratio, seed=options.seed,
        niter=options.niter, clips=len(uids), fit_on=options.fit_on, fit_splits=fit_splits, fit_clips=len(fit_rows),
        frames_offered=reservoir.seen, sample_frames=len(sample), buffer_frames=options.buffer_rows,
        buffer_mib=round(reservoir.nbytes / 2 ** 20, 1))
    schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(meta).encode()})
    with atomic_path(out_path) as partial, pq.ParquetWriter(partial, schema) as writer:
        with torch.inference_mode(), autocast(device, config.runtime.precision):
            for split, loader in loaders.items():  # pass 2: every frame of every clip assigned
                for batch in track(loader, f"cluster assign {split}"):
                    stacked, sizes = _frames(states_of, on_device(batch, device, batch_features(loader)),
                                             options.layer)
                    rows: dict[str, list] = {"uid": [], "k": [], "labels": []}
                    for k in options.num_clusters:
                        assigned = _assign(stacked, centroids[k], norms[k]).cpu().numpy().astype(np.int32)
                        counts[k] += np.bincount(assigned, minlength=k)
                        for uid, labels in zip(batch["uid"], np.split(assigned, np.cumsum(sizes)[:-1])):
                            rows["uid"].append(uid)
                            rows["k"].append(k)
                            rows["labels"].append(labels)
                    writer.write_table(pa.table(rows, schema=schema))
        # the earlier labels' files beside them go before the new labels take their place: a process killed
        # between the two leaves none that belongs to other labels
        for earlier in frame_label_sidecars(out_path):
            earlier.unlink(missing_ok=True)
    meta["clusters"] = {str(k): {"kmeans_objective": fitted[k][1], **_usage(counts[k])} for k in options.num_clusters}
    write_json(stats_path(out_path), meta)
    write_csv(fit_rows, fit_rows_path(out_path), index=False)
    listed = write_csv(prepared.skipped, skip_list(out_path), index=False) if len(prepared.skipped) else None
    say_skipped(prepared.skipped, listed)
    return meta
