"""Frame pseudo-labels as ``audiotune cluster`` writes them and ``pretrain --objective ptapt`` reads them.

A parquet file with one row per clip and cluster count: ``uid``, ``k``, ``labels`` (the cluster of each frame,
in frame order), and under the schema metadata key ``audiotune`` a JSON object saying how the frames were made
(:class:`FramesMade`, and more of each writer's own).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audiotune.outputs import PARQUET_METADATA_KEY as METADATA_KEY

SCHEMA = pa.schema([("uid", pa.string()), ("k", pa.int32()), ("labels", pa.list_(pa.int32()))])


@dataclass(frozen=True)
class FramesMade:
    """How the frames of a pseudo-label file were made: what every writer records under the metadata key (with
    more of its own) and what readers rely on. ``encoder``: the run or checkpoint that made them (``run``: a run
    directory), ``layer`` its hidden state (None: the seed's own choice), a frame every ``hop_samples`` samples at
    ``sample_rate``, one label sequence per count of ``num_clusters``."""

    encoder: str
    run: bool
    model: str
    layer: int | None
    sample_rate: int
    hop_samples: int | None
    num_clusters: list[int]

    def record(self, **more: Any) -> dict[str, Any]:
        """The metadata to write: these fields, then ``more``."""
        return {**dataclasses.asdict(self), **more}

    @classmethod
    def from_record(cls, meta: dict[str, Any], path: str) -> FramesMade:
        """The fields of written metadata; an error naming the file and the fields it lacks."""
        names = [spec.name for spec in dataclasses.fields(cls)]
        missing = [name for name in names if name not in meta]
        if missing:
            raise ValueError(f"--pseudo_labels {path}: its cluster metadata lacks {', '.join(missing)} (not written "
                             "by `audiotune cluster`)")
        return cls(**{name: meta[name] for name in names})


@dataclass
class PseudoLabels:
    """Frame labels read from ``audiotune cluster`` output: ``labels[uid][k]`` is an int64 array per frame."""

    path: str
    meta: dict[str, Any]
    labels: dict[str, dict[int, np.ndarray]]

    @property
    def made(self) -> FramesMade:
        return FramesMade.from_record(self.meta, self.path)

    @property
    def num_clusters(self) -> list[int]:
        return [int(k) for k in self.made.num_clusters]


def check_cluster_counts(num_clusters: list[int]) -> None:
    """``--num_clusters``: one or more cluster counts, each at least 2 and named once (a table holds one row per clip
    and K)."""
    if not num_clusters or any(k < 2 for k in num_clusters):
        raise ValueError(f"--num_clusters {num_clusters}: give one or more cluster counts, each >= 2")
    if len(set(num_clusters)) != len(num_clusters):
        raise ValueError(f"--num_clusters {num_clusters}: each K once")


def read_pseudo_labels(path: str) -> PseudoLabels:
    """The labels of a parquet file ``audiotune cluster`` wrote (errors name the file and the problem)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"--pseudo_labels {path}: cannot be read as parquet ({err})") from err
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    missing = [c for c in ("uid", "k", "labels") if c not in table.column_names]
    if raw is None or missing:
        raise ValueError(f"--pseudo_labels {path}: not written by `audiotune cluster` (no "
                         f"{'columns ' + str(missing) if missing else 'cluster metadata'})")
    meta = json.loads(raw)
    FramesMade.from_record(meta, str(path))
    labels: dict[str, dict[int, np.ndarray]] = {}
    for uid, k, values in zip(table.column("uid").to_pylist(), table.column("k").to_pylist(),
                              table.column("labels").to_numpy(zero_copy_only=False)):
        sequence = np.asarray(values, dtype=np.int64)
        if len(sequence) and (sequence.min() < 0 or sequence.max() >= k):
            raise ValueError(f"--pseudo_labels {path}: uid {uid}, K={k}: labels outside 0..{k - 1}")
        labels.setdefault(uid, {})[int(k)] = sequence
    return PseudoLabels(str(path), meta, labels)
