"""The encoder each fold of ``audiotune cv`` starts from, and the check that no fold is scored on clips its encoder
was pretrained on.

An encoder path holding ``{fold}`` (``-c 'runs/tapt_{fold}/encoder'``, SSAST's ``--pretrained_mdl_path``: every
input path the model section and the chosen backbone declare) names one encoder per fold: ``{fold}`` becomes the
fold's name (``fold_1``, ``fold_2``, ..., the folders cv writes its runs to), as the speech-emotion recipe pretrained
one TAPT / P-TAPT encoder per held-out session on that fold's Train part only. Every fold's path must exist before
anything is written.

A remote path (``gs://``) holding the placeholder is left whole by the command's staging and copied per fold here.

An encoder written by ``audiotune pretrain`` has the clips its run read in its run directory (``clips_read.csv``,
:mod:`.clips_read`: its train and val rows, and those of the runs its inputs came from, as P-TAPT's stage-1
classifier); of a run written before that record, its config's data (``-d``, ``-i``, from the working directory its
command.json records) is read again. A fold whose test clips (same audio file, overlapping span) are among them would
be scored on what its encoder was pretrained on: an error naming the fold, the encoder and how many, unless
``--allow_overlap``; a pretraining source that cannot be read any more is an error too, rather than a guess.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from pathlib import Path

import pandas as pd

from audiotune import storage
from audiotune.config import RunConfig, load_config
from audiotune.data.errors import DataError, refuse
from audiotune.data.folds import FOLD_PLACEHOLDER, Fold
from audiotune.data.layout import attach_paths
from audiotune.engine.clips_read import find_run, run_rows
from audiotune.engine.resume import refuse_inactive_of_runs
from audiotune.models.backbones import options_classes
from audiotune.outputs import CLIPS_READ_FILE, CONFIG_FILE, CV_CONFIG_FILE
from audiotune.storage import Role

log = logging.getLogger(__name__)


def _is_input(spec: dataclasses.Field) -> bool:
    return spec.metadata.get("role") is Role.INPUT


def encoder_paths(config: RunConfig) -> dict[str, str]:
    """``{option: path}`` of the encoder's input paths that are set: the model section's (``--checkpoint``) and
    the chosen backbone's own (SSAST's ``--pretrained_mdl_path``), as their options declare them."""
    paths = {spec.name: getattr(config.model, spec.name) for spec in dataclasses.fields(config.model)
             if _is_input(spec)}
    own = options_classes().get(config.model.model)
    if own is not None:
        paths |= {spec.name: config.model.options.get(spec.name) for spec in dataclasses.fields(own) if _is_input(spec)}
    return {name: str(value) for name, value in paths.items() if value}


def fold_paths(config: RunConfig) -> list[str]:
    """The encoder path options of ``config`` that hold the placeholder: an encoder per fold."""
    return [name for name, path in encoder_paths(config).items() if FOLD_PLACEHOLDER in path]


def _set_path(config: RunConfig, name: str, path: str) -> None:
    if hasattr(config.model, name):
        setattr(config.model, name, path)
    else:
        config.model.options[name] = path


def fold_config(config: RunConfig, fold: str) -> RunConfig:
    """A copy of ``config`` whose encoder paths name ``fold`` where they hold the placeholder."""
    out = copy.deepcopy(config)
    for name, path in encoder_paths(config).items():
        if FOLD_PLACEHOLDER in path:
            _set_path(out, name, path.replace(FOLD_PLACEHOLDER, fold))
    return out


def _found(config: RunConfig, name: str) -> bool:
    """Whether encoder path ``name`` of ``config`` exists; a remote one (``gs://``, left whole by the command's
    staging while it held the placeholder) is read from a local copy from now on, as staging copies other inputs
    (the run's config.yaml records its URL)."""
    path = encoder_paths(config)[name]
    if not storage.is_remote(path):
        return storage.isfile(path) or storage.isdir(path)
    try:
        _set_path(config, name, storage.local_copy(path))
    except FileNotFoundError:
        return False
    return True


def fold_configs(config: RunConfig, folds: list[Fold]) -> dict[str, RunConfig]:
    """Each fold's run config (its encoder paths' placeholder filled in, remote ones copied); every fold's encoder
    must exist (one error naming each missing one), be one its runs can start from (as they resolve it: per fold
    where the paths hold the placeholder) and not have been pretrained on the fold's test clips
    (:func:`check_pretraining`), before anything is written."""
    per_fold = fold_paths(config)
    made = storage.isfile(storage.join(config.exp_dir, CV_CONFIG_FILE))  # a rerun: goes on as it was made
    configs = {fold.name: fold_config(config, fold.name) for fold in folds}
    given = {fold: encoder_paths(configs[fold]) for fold in configs}  # as named, before remote ones are copied
    missing = [f"{fold}: --{name} {given[fold][name]}" for fold in configs for name in per_fold
               if not _found(configs[fold], name)]
    refuse(missing, f"of the folds' encoders not found ({FOLD_PLACEHOLDER} is each fold's name)")
    for fold in folds if per_fold else ():  # (one encoder for all: the command checked it before reading the folds)
        refuse_inactive_of_runs(configs[fold.name], made)  # as each run would
        fold.info["encoder"] = {name: given[fold.name][name] for name in per_fold}
    check_pretraining(configs, folds, config.data.allow_overlap)
    return configs


def pretrain_run(path: str) -> Path | None:
    """The run directory of ``audiotune pretrain`` that wrote the encoder at ``path`` (the folder itself or the one
    holding it: ``RUN/encoder``, ``RUN/model.safetensors``; local or remote, :func:`find_run`), or None."""
    run = find_run(path)
    try:
        return run if run is not None and load_config(run / CONFIG_FILE).model.objective else None
    except (OSError, ValueError):
        return None


def _spans(table: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(audio file, start, end) of every row; a row without offset or duration spans its file to the end."""
    offsets = pd.to_numeric(table["offset"], errors="coerce") if "offset" in table else pd.Series(0.0, table.index)
    durations = pd.to_numeric(table["duration"], errors="coerce") if "duration" in table else \
        pd.Series(math.nan, table.index)
    spans = []
    for path, offset, duration in zip(table["path"].astype(str), offsets, durations):
        start = 0.0 if pd.isna(offset) else float(offset)
        place = path if storage.is_remote(path) else os.path.realpath(path)
        spans.append((place, start, math.inf if pd.isna(duration) else start + float(duration)))
    return spans


def shared_clips(test: pd.DataFrame, pretrained: pd.DataFrame) -> int:
    """How many rows of ``test`` (with ``path``) hear audio among the ``pretrained`` rows: the same file and an
    overlapping span."""
    seen: dict[str, list[tuple[float, float]]] = {}
    for place, start, end in _spans(pretrained):
        seen.setdefault(place, []).append((start, end))
    return sum(any(start < other_end and other_start < end for other_start, other_end in seen.get(place, ()))
               for place, start, end in _spans(test))


def _leak(rows: pd.DataFrame, test: pd.DataFrame) -> tuple[int, str]:
    """How many ``test`` rows the pretraining ``rows`` heard, and which runs other than the pretraining run read them
    (the runs its inputs came from, as P-TAPT's stage-1 classifier)."""
    shared = shared_clips(test, rows)
    own = rows["run"].iloc[0] if len(rows) else ""  # the run's own rows come first (it may have moved since)
    others = [f"{count} by {run} ({stage})" for (run, stage), part in rows.groupby(["run", "stage"], sort=True)
              if run != own and (count := shared_clips(test, part))]
    return shared, f" (read {', '.join(others)})" if others else ""


def check_pretraining(configs: dict[str, RunConfig], folds: list[Fold], allow: bool) -> None:
    """No fold's encoder was pretrained (by ``audiotune pretrain``, or the runs its inputs came from) on any of the
    fold's test clips, as the run's record of the clips it read says (a run written before it: its config's data as
    read now): one error naming each such fold, its encoder and how many, unless ``allow`` (then a warning; folds.json
    records it)."""
    problems: list[str] = []
    read: dict[Path, tuple[pd.DataFrame, bool]] = {}  # each pretraining run's rows, read once
    for fold in folds:
        config = configs[fold.name]
        for name, path in encoder_paths(config).items():
            run_dir = pretrain_run(path)
            if run_dir is None:
                continue
            shown, where = storage.remote_name(path), storage.remote_name(str(run_dir))
            test, _ = attach_paths(fold.tables["test"], config.data.prefix, config.data.study, "test")
            try:
                rows, _ = read[run_dir] if run_dir in read else read.setdefault(run_dir, run_rows(run_dir))
            except (DataError, OSError) as err:
                old = "" if (run_dir / CLIPS_READ_FILE).is_file() else \
                    f" (it was written before runs recorded {CLIPS_READ_FILE}: its config's data was read again)"
                problems.append(f"{fold.name}: --{name} {shown} was pretrained by `audiotune pretrain` ({where}) on "
                                f"data that cannot be read now, so whether it heard this fold's test clips cannot be "
                                f"told{old}: {err}")
                continue
            shared, through = _leak(rows, test)
            if shared:
                problems.append(f"{fold.name}: --{name} {shown} was pretrained ({where}) on {shared} of this fold's "
                                f"{len(test)} test clips{through}")
                fold.info["encoder_pretrained_on_test_clips"] = shared
    if not problems:
        return
    if not allow:
        raise DataError("a fold would be scored on clips its encoder was pretrained on (inflated test scores):\n  "
                        + "\n  ".join(problems) + f"\n(pretrain one encoder per fold on its training part and name "
                        f"it with {FOLD_PLACEHOLDER}, e.g. -c 'runs/tapt_{FOLD_PLACEHOLDER}/encoder'; or pass "
                        "--allow_overlap to score them anyway)")
    for problem in problems:
        log.warning("%s (--allow_overlap)", problem)
