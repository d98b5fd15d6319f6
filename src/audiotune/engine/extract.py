"""``audiotune extract`` and ``audiotune stats``: embeddings streamed to parquet, feature statistics."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from audiotune import storage
from audiotune.config import RunConfig, check_config
from audiotune.data.batch_features import batch_lengths
from audiotune.data.errors import DataError
from audiotune.data.layout import read_splits
from audiotune.data.loading import make_dataset, make_loader
from audiotune.data.prepare import prepare_eval_data
from audiotune.engine.inference import features_on_device, inference_device, iterate_batches, override_scoring
from audiotune.engine.shard_parts import POSITION, part_schema, part_writer, write_in_input_order
from audiotune.engine.shards import (
    gathered_parts,
    heed_others,
    quiet_followers,
    scoring_runtime,
    shared_scan,
    start_processes,
    together,
)
from audiotune.models.backbones import SupportsTokenPooling, input_spec
from audiotune.models.checkpoint import run_config
from audiotune.models.classifier import EMBEDDING_TYPES, Classifier
from audiotune.models.encoder import check_embedding, embedder_config, load_embedder
from audiotune.outputs import (
    ONE_TABLE,
    PARQUET_METADATA_KEY,
    check_output_path,
    invocation,
    skip_list,
    write_with_skip_list,
)
from audiotune.progress import track

log = logging.getLogger(__name__)


EMBEDDING_SCHEMA = pa.schema([("uid", pa.string()), ("split", pa.string()), ("embedding", pa.list_(pa.float32()))])


def _schema(path: str) -> pa.Schema:
    """The schema of the parquet file at ``path`` (local, or in a bucket: read by range)."""
    with storage.open_input(path) as stream:
        return pq.read_schema(stream)


def _recorded(schema: pa.Schema) -> dict[str, Any] | None:
    """What :func:`embeddings_made` recorded in an embeddings file's ``schema`` (None: written without it)."""
    stored = (schema.metadata or {}).get(PARQUET_METADATA_KEY)
    return json.loads(stored) if stored else None


def _earlier_embeddings(out: str) -> dict[str, Any] | None:
    """An existing ``--out`` (where it ends up: a bucket's object for a staged one) is replaced only when it holds
    embeddings (an earlier extract's): a run's predictions, or any other table, is refused before any work.
    Returns what the earlier embeddings record of how they were made, if anything."""
    if not storage.isfile(out):
        return None
    try:
        schema = _schema(out)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise ValueError(f"--out {out}: exists and is not a parquet table of embeddings ({err}); extract replaces "
                         "only its own outputs: choose another --out") from err
    if not set(EMBEDDING_SCHEMA.names) <= set(schema.names):
        raise ValueError(f"--out {out}: holds another table (columns {sorted(schema.names)}), not embeddings; "
                         "extract replaces only its own outputs: choose another --out")
    try:
        return _recorded(schema)
    except ValueError:  # a record that is not JSON: none to compare
        return None


def extract_embeddings(run: str | None, data_split_root: str, out: str, embedding_type: str = "ft",
                       layer: int | None = None, pooling: str | None = None, batch_size: int | None = None,
                       num_workers: int | Literal["auto"] | None = None, on_error: str | None = None,
                       accelerator: str | None = None, devices: str | None = None, precision: str | None = None,
                       data: dict[str, Any] | None = None, num_nodes: int | None = None,
                       encoder: RunConfig | None = None, clip_seconds: float | None = None) -> Path | None:
    """Write ``uid`` + ``split`` + ``embedding`` rows to a parquet file in input order (split after split, each in
    its table's order); batches are written aside as they come and merged memory-mapped (memory stays flat).

    The model runs on ``accelerator``/``devices`` in ``precision``; several devices (or ``num_nodes``) run one
    process per device, each on its share of the rows (:mod:`audiotune.engine.shards`): rank 0 writes the file
    and returns its path, the others return None. uid-layout audio is found under ``data`` ``prefix``/``study``
    (default: the run's own settings). Without ``run``, the pretrained encoder ``encoder`` describes is embedded
    with (:func:`~audiotune.models.encoder.load_embedder`). ``clip_seconds``: the crop of every clip embedded,
    over the run's scored crop (0: whole clips; -1: the run's training crop).
    """
    if embedding_type not in EMBEDDING_TYPES:
        raise ValueError(f"--embedding_type {embedding_type}: choose one of {EMBEDDING_TYPES}")
    if layer is not None and embedding_type != "pt":  # the seeds ignored it there; here it would feed the heads
        raise ValueError(f"--layer {layer}: chooses the hidden state of pt embeddings; {embedding_type} embeddings "
                         "read what the run's heads read (its own --layer or weighted sum): leave --layer out, or "
                         "add --embedding_type pt")
    out_path = Path(out)
    if out_path.suffix != ".parquet":
        raise ValueError(f"--out {out}: embeddings are written as parquet; give a path ending in .parquet")
    check_output_path(out_path)
    earlier = _earlier_embeddings(storage.final_path(out_path))  # (a staged --out: the bucket's object)
    quiet_followers()
    # the run's config alone says what the processes run on; each builds the model once they have started
    runtime = scoring_runtime((encoder or RunConfig()) if run is None else run_config(run), accelerator, devices,
                              precision, num_nodes)
    shard = start_processes(runtime)
    with together(shard):
        # the table and its audio are checked before the model loads (slow for a large encoder)
        config = embedder_config(run, encoder)
        config.runtime = runtime
        override_scoring(config, data, batch_size, num_workers, on_error)
        if clip_seconds is not None:
            config.audio.eval_clip_length = clip_seconds
        check_config(config)
        check_embedding(config, run, embedding_type, pooling)
        inputs = input_spec(config)
        prepared = prepare_eval_data(config, inputs, data_split_root, targets_needed=False, scan=shared_scan(shard),
                                     listed_in=skip_list(out_path).name)
        prepared.name_one_table(data_split_root)  # its split column says test for test.csv, as evaluate's
        _, model = load_embedder(run, encoder, embedding_type, pooling)  # its config: the one read above
        num_states = model.backbone.num_hidden_states
        if layer is not None and not -num_states <= layer < num_states:
            raise ValueError(f"--layer {layer}: the run's backbone has hidden states 0..{num_states - 1} (-1: the "
                             "last)")
        padding = model.backbone.padding

        def embed(classifier: Classifier, batch: dict) -> torch.Tensor:
            return classifier.extract_embedding(batch["inputs"], batch_lengths(batch), embedding_type, layer, pooling)

        def write_part(path: Path) -> None:  # this process's rows of each split, with their places in the input
            with part_writer(path, EMBEDDING_SCHEMA) as writer:
                offset, check = 0, heed_others(shard)
                for split, table in prepared.tables.items():
                    rows = shard.rows(len(table))
                    part = table.iloc[rows]
                    place = {str(uid): offset + rows.start + i for i, uid in enumerate(part.index)}
                    offset += len(table)
                    if not len(part):
                        continue
                    dataset = make_dataset(config, inputs, part, prepared.targets[split][rows],
                                           on_device=features_on_device(config, inputs))
                    loader = make_loader(config, dataset, part, False, padding, device=inference_device(config))
                    for batch, emb in iterate_batches(model, loader, config, embed, f"extract {split}", check):
                        vectors = emb.numpy()
                        writer.write_table(pa.table({
                            POSITION: [place[str(uid)] for uid in batch["uid"]], "uid": batch["uid"],
                            "split": [split] * len(vectors),
                            "embedding": pa.array(list(vectors), type=pa.list_(pa.float32())),
                        }, schema=part_schema(EMBEDDING_SCHEMA)))

        made = embeddings_made(config, model, run, embedding_type, layer, pooling)
        with gathered_parts(shard, out_path, write_part) as parts:
            if not shard.writes:
                return None  # rank 0 writes the rows of every process
            listed = write_with_skip_list(out_path, prepared.skipped, lambda path: write_in_input_order(
                parts, path, {PARQUET_METADATA_KEY: json.dumps(made).encode()}))
        if earlier is not None and _what(earlier) != _what(made):
            log.warning("%s: replaced embeddings of %s with those of %s", out_path, _what(earlier), _what(made))
        say_skipped(prepared.skipped, listed)
    return out_path


def embeddings_made(config: RunConfig, model: torch.nn.Module, run: str | None, embedding_type: str,
                    layer: int | None, pooling: str | None) -> dict[str, Any]:
    """How the embeddings of ``model`` were made, as their file's schema metadata says it: the type, the hidden
    state (a layer; ``weighted``: the learned sum; ``mean``: every state's, for an encoder without a run), how
    frames were pooled and (``ft``) the heads merged, the encoder (the run, by where it is, or the checkpoint), the
    crop of every clip in seconds (0: whole clips) and the command."""
    learnt = getattr(model, "layer_weights", None) is not None  # (an encoder without a run has none: wt averages)
    weighted = {"pt": False, "wt": True}.get(embedding_type, learnt)
    own = config.classifier
    frames = own.pooling_mode if embedding_type == "ft" or pooling is None else pooling
    backbone = getattr(model, "backbone", None)  # a backbone with special tokens: the ones pooled (SSAST's cls)
    tokens = (frames if frames in backbone.token_pools else backbone.pooled_tokens) \
        if isinstance(backbone, SupportsTokenPooling) else None
    return {"embedding_type": embedding_type,
            "layer": ("weighted" if learnt else "mean") if weighted else own.layer if layer is None else layer,
            "frame_pooling": frames, "tokens": tokens,
            "heads_merged_by": (pooling or "mean") if embedding_type == "ft" else None,
            "encoder": storage.remote_name(os.path.abspath(run)) if run else config.model.checkpoint,
            "run": bool(run), "model": config.model.model, "clip_seconds": input_spec(config).eval_clip_length,
            "command": invocation()["command_line"]}


def embeddings_meta(path: str | Path) -> dict[str, Any] | None:
    """What :func:`embeddings_made` recorded in the embeddings file at ``path`` (local or in a bucket); None
    without it (none there, or written by an earlier release)."""
    try:
        return _recorded(_schema(str(path))) if storage.isfile(path) else None
    except (OSError, ValueError, pa.ArrowException):
        return None


def _what(made: dict[str, Any]) -> str:
    return f"{made.get('embedding_type')} of layer {made.get('layer')} ({made.get('frame_pooling')}-pooled) of " \
           f"{made.get('encoder')}"


def say_skipped(skipped: pd.DataFrame, listed: Path | None) -> None:
    """A warning of the rows left out of an output, where ``listed`` lists them (:func:`write_with_skip_list`)."""
    if listed is not None:
        log.warning("%d row(s) skipped; listed in %s", len(skipped), listed)


def measured_split(tables: dict[str, pd.DataFrame], split: str | None, data_split_root: str | Path) -> str:
    """The split of ``tables`` (read from ``data_split_root``) that ``split`` names; None: train, else the one table
    there is (one CSV's rows, an audio folder's clips). A name the tables do not have is an error naming theirs."""
    root = str(data_split_root)
    if split is None:
        if "train" in tables:
            return "train"
        if len(tables) == 1:
            return next(iter(tables))
        raise DataError(f"--split: {root} has no train split; choose one of its splits: {', '.join(tables)}")
    if split in tables:
        return split
    if list(tables) == [ONE_TABLE]:
        what = "one table, whose rows" if root.lower().endswith(".csv") else "a folder of audio files, whose clips"
        raise DataError(f"--split {split}: {root} is {what} are named {ONE_TABLE} (leave --split out, or give "
                        f"--split {ONE_TABLE})")
    raise DataError(f"--split {split}: {root} has no split {split} (its splits: {', '.join(tables)})")


def feature_stats(config: RunConfig, data_split_root: str, split: str | None = None,
                  out: str | Path | None = None) -> tuple[dict, pd.DataFrame]:
    """Mean and std of the (unnormalised) input features over a split (see :func:`measured_split`; only its
    audio is read); std 0 is an error.

    Returns the statistics and the rows left out of them (bad audio with ``--on_error skip``), which the command
    lists beside ``out`` (without it, on its error output)."""
    device = inference_device(config)
    inputs = dataclasses.replace(input_spec(config), dataset_mean=None, dataset_std=None)
    tables = read_splits(data_split_root, config.data.prefix, config.data.na_values)
    name = measured_split(tables, split, data_split_root)
    # only the split measured is checked: bad audio in another one is not this command's concern
    prepared = prepare_eval_data(config, inputs, data_split_root, targets_needed=False,
                                 listed_in=skip_list(out).name if out else "the command's error output",
                                 tables={name: tables[name]})
    table = prepared.tables[name]
    dataset = make_dataset(config, inputs, table, prepared.targets[name])
    # float64 sums, except on MPS, which has no float64
    dtype = torch.float32 if device.type == "mps" else torch.float64
    value_sum = torch.zeros((), dtype=dtype, device=device)
    square_sum = torch.zeros((), dtype=dtype, device=device)
    count = 0
    for index in track(range(len(dataset)), f"stats {name}", unit="clip"):
        feats = dataset[index]["inputs"].to(device, non_blocking=True).to(dtype)
        value_sum += feats.sum()
        square_sum += (feats * feats).sum()
        count += feats.numel()
    # the sums leave the device once, at the end
    mean, mean_square = float(value_sum.cpu()) / count, float(square_sum.cpu()) / count
    std = math.sqrt(max(mean_square - mean * mean, 0.0))
    if not np.isfinite(std) or std == 0:
        raise ValueError(f"{data_split_root} ({name}): feature std is {std}; the audio has no variation")
    skipped = prepared.skipped  # of the one split read
    return ({"split": name, "clips": len(dataset), "frames": count // dataset.extract.num_bins,
             "skipped": len(skipped), "dataset_mean": mean, "dataset_std": std}, skipped)
