"""The clips a run learnt from, recorded in its run directory (``clips_read.csv``), so that a later check (cv's: no
fold scored on clips its encoder was pretrained on, :mod:`.cv_encoders`) reads what was read, not what the tables say
today.

``train`` and ``pretrain`` write the rows of their train and val parts as they read them (after skipped audio and
dropped rows): ``stage`` (the command), ``run`` (its directory), ``split``, ``uid``, ``path`` (absolute, or a URL),
``offset`` and ``duration`` (empty: the whole file). The runs their inputs came from count too, and their rows are
copied in: the run that wrote the encoder a run starts from (``RUN/encoder``, ``RUN/model.safetensors``), and for
frame pseudo-labels (P-TAPT's ``--pseudo_labels``) the run whose frames ``audiotune cluster --run`` clustered (P-TAPT's
stage 1: a classifier trained on the labels of its clips) and the clips k-means was fitted on (stage ``cluster``,
from the labels' ``.fit_rows.csv``; ``run`` names the labels file). A run written before this record has its rows
rebuilt from its config (``-d``, ``-i``, from the working directory its command.json records): what its tables say
now.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from audiotune import storage
from audiotune.config import load_config
from audiotune.data.errors import DataError
from audiotune.data.layout import attach_paths, read_splits
from audiotune.data.pseudo_labels import METADATA_KEY, FramesMade
from audiotune.outputs import (
    CLIPS_READ_FILE,
    CLUSTER_FIT_ROWS_SUFFIX,
    COMMAND_FILE,
    CONFIG_FILE,
    command_history,
    run_dir_of,
    sidecar,
    write_csv,
)

log = logging.getLogger(__name__)

COLUMNS = ["stage", "run", "split", "uid", "path", "offset", "duration"]
LEARNT_FROM = ("train", "val")  # the parts whose clips a run's weights learnt from (val: which weights are kept)


def _column(table: pd.DataFrame, name: str) -> list[float]:
    values = pd.to_numeric(table[name], errors="coerce") if name in table else pd.Series(math.nan, table.index)
    return values.astype(float).tolist()


def clip_rows(tables: Mapping[str, pd.DataFrame], stage: str, run_dir: str | Path,
              splits: Sequence[str] = LEARNT_FROM) -> pd.DataFrame:
    """The record's rows of the ``splits`` of ``tables`` (uid index, ``path``; train and val unless named) that
    command ``stage`` read for ``run_dir`` (its run directory, or the file it wrote; a staging place names its
    remote one)."""
    frames, run = [], storage.remote_name(str(Path(run_dir).resolve()))
    for split in splits:
        table = tables.get(split)
        if table is None:
            continue
        paths = [p if storage.is_remote(p) else os.path.abspath(p) for p in table["path"].astype(str)]
        frames.append(pd.DataFrame({"stage": stage, "run": run, "split": split,
                                    "uid": table.index.astype(str), "path": paths,
                                    "offset": _column(table, "offset"), "duration": _column(table, "duration")}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def write_clips_read(run_dir: Path, tables: Mapping[str, pd.DataFrame], stage: str,
                     inputs: Mapping[str, str]) -> Path:
    """Write ``run_dir``'s record: its own rows (:func:`clip_rows`) and those of the runs its ``inputs`` (``{option:
    path}``) came from (:func:`input_runs`)."""
    rows = [clip_rows(tables, stage, run_dir)]
    for option, run in input_runs(inputs):
        try:
            rows.append(run_rows(run)[0])
        except (ValueError, OSError) as err:  # a config or table that cannot be read (DataError among them)
            log.warning("--%s comes from run %s, whose clips cannot be read (%s): %s lists this run's clips only",
                        option, storage.remote_name(str(run)), err, CLIPS_READ_FILE)
    for path in inputs.values():
        fitted = fitted_rows(path)
        if fitted is not None:
            rows.append(fitted)
    return write_csv(pd.concat(rows, ignore_index=True).drop_duplicates(), run_dir / CLIPS_READ_FILE, index=False)


def find_run(path: str) -> Path | None:
    """The run directory (one with config.yaml) that is ``path`` or holds it (``RUN/encoder``,
    ``RUN/model.safetensors``), or None. Of a remote run (``path`` a URL, or a local copy of one) its config,
    record and command.json are read from local copies."""
    url = storage.remote_name(str(path))
    if storage.is_remote(url):
        for folder in (url.rstrip("/"), storage.parent(url)):
            if storage.isfile(storage.join(folder, CONFIG_FILE)):
                local = Path(storage.local_copy(storage.join(folder, CONFIG_FILE))).parent
                for name in (CLIPS_READ_FILE, COMMAND_FILE):
                    if storage.isfile(storage.join(folder, name)):
                        storage.local_copy(storage.join(folder, name))
                    else:  # a copy of a file since removed there says nothing of the run now
                        (local / name).unlink(missing_ok=True)
                return local
        return None
    if not os.path.exists(path):
        return None
    place = Path(path).resolve()
    return next((folder for folder in (place, place.parent) if (folder / CONFIG_FILE).is_file()), None)


def labels_meta(path: str) -> dict | None:
    """What ``audiotune cluster`` recorded in the pseudo-labels at ``path``, or None (not pseudo-labels)."""
    if not str(path).endswith(".parquet") or not os.path.isfile(path):
        return None
    try:
        stored = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
        return json.loads(stored) if stored else None
    except (OSError, ValueError):
        return None


def labels_run(path: str) -> str | None:
    """The run whose frames ``audiotune cluster --run`` clustered into the pseudo-labels at ``path``, or None (not
    pseudo-labels, or clustered from an encoder that no run trained)."""
    meta = labels_meta(path)
    try:
        made = FramesMade.from_record(meta, path) if meta is not None else None
    except ValueError:  # not written by `audiotune cluster`
        return None
    return run_dir_of(str(made.encoder)) if made is not None and made.run and made.encoder else None


def fitted_rows(path: str) -> pd.DataFrame | None:
    """The clips k-means was fitted on for the pseudo-labels at ``path`` (the ``.fit_rows.csv`` beside them), or
    None (not pseudo-labels); labels of an earlier cluster, which listed uids only, are a warning."""
    meta = labels_meta(path)
    if meta is None:
        return None
    listed = sidecar(path, CLUSTER_FIT_ROWS_SUFFIX)
    table = pd.read_csv(listed) if listed.is_file() else None
    fitted = meta.get("fit_clips")
    problem = "is missing" if table is None else "lists uids only" if not set(COLUMNS) <= set(table.columns) else \
        f"lists {len(table)} clips, the labels were fitted on {fitted}: another clustering's" \
        if isinstance(fitted, int) and len(table) != fitted else None
    if table is None or problem is not None:
        log.warning("%s: the clips k-means was fitted on are not listed with their paths (%s %s; cluster them "
                    "again): %s leaves them out", path, listed.name, problem, CLIPS_READ_FILE)
        return None
    return table[COLUMNS]


def input_runs(inputs: Mapping[str, str]) -> list[tuple[str, Path]]:
    """(option, run directory) of each run that one of ``inputs`` (``{option: path}``) came from: the run holding
    an encoder, or the run clustered into pseudo-labels; one that cannot be found is a warning."""
    found = []
    for option, path in inputs.items():
        clustered = labels_run(path)
        run = find_run(clustered) if clustered else find_run(path)
        if clustered and run is None:
            log.warning("--%s %s: clustered from run %s, which is not found: %s cannot list the clips it trained on",
                        option, path, clustered, CLIPS_READ_FILE)
        if run is not None:
            found.append((option, run))
    return found


def _absolute(path: str, cwd: str | None, what: str) -> str:
    if not path or storage.is_remote(path) or os.path.isabs(path):
        return path
    if cwd is None:
        raise DataError(f"{what} {path} is relative and the run records no working directory")
    return os.path.join(cwd, path)


def rebuilt_rows(run_dir: Path) -> pd.DataFrame:
    """The rows a run written before the record read, from its config: its source's train and val parts (all of it
    when it has no train part), each with its audio ``path``; DataError when the source cannot be read."""
    config = load_config(run_dir / CONFIG_FILE)
    history = command_history(run_dir)
    cwd = str(history[-1]["cwd"]) if history and history[-1].get("cwd") else None
    root = _absolute(config.data.data_split_root, cwd, "-d")
    prefix = _absolute(config.data.prefix, cwd, "-i")
    tables = read_splits(root, prefix, config.data.na_values)
    if "train" not in tables:
        tables = {"train": pd.concat(list(tables.values()))}
    tables = {name: attach_paths(table, prefix, config.data.study, name)[0] for name, table in tables.items()}
    return clip_rows(tables, "pretrain" if config.model.objective else "train", run_dir)


def run_rows(run_dir: Path) -> tuple[pd.DataFrame, bool]:
    """The clips the run in ``run_dir`` learnt from and whether it recorded them (False: rebuilt from its config,
    :func:`rebuilt_rows`); DataError for a record that cannot be read or a source that cannot be read any more."""
    record = run_dir / CLIPS_READ_FILE
    if not record.is_file():
        return rebuilt_rows(run_dir), False
    try:
        table = pd.read_csv(record, dtype={"stage": str, "run": str, "split": str, "uid": str, "path": str})
    except (OSError, ValueError) as err:
        raise DataError(f"{record}: cannot be read ({err})") from err
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise DataError(f"{record}: not a record of the clips a run read (no column {', '.join(missing)})")
    return table, True
