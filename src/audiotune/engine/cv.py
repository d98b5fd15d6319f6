"""``audiotune cv``: every fold × every repeat as an ordinary run directory, then one summary.

Layout of ``EXP_DIR``::

    folds.json                 how each fold was made (source, validation, rows, groups)
    cv_config.yaml             the run config every fold starts from, plus the fold options
    fold_K/train.csv ...       the fold's split (paths relative to the folder)
    fold_K/run_R/              `audiotune train` run directory, seed = --seed + R - 1
    cv_runs.csv                one row per run and split: every metric
    cv_summary.json / .csv     per split and metric: mean, fold_std, fold_median, run_std, run_median, ci95
    plots/confusion_SPLIT_HEAD.png   confusion matrix summed over all runs
    fold_K/ensemble_predictions.parquet   with several repeats: the fold's clips scored by the mean of its runs'
                                          scores, whose statistics are the summary's ``ensemble`` section

A run whose ``metrics.json`` is complete is kept; one that stopped part-way resumes from its last checkpoint, so
a killed ``cv`` started again carries on where it stopped (with more ``--repeats``: adds the new repeats). Runs of
a frozen encoder share the feature cache: each clip is encoded once for the whole cross-validation.

The summary's statistics: :mod:`audiotune.engine.cv_summary`.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import yaml

from audiotune.config import RunConfig, config_to_dict
from audiotune.data.folds import (
    FoldOptions,
    build_folds,
    check_fold_files,
    fold_files,
    resolved_val_group,
    source_kind,
)
from audiotune.data.json_splits import json_label_groups
from audiotune.data.labels import read_label_file
from audiotune.data.prepare import check_head_options, check_labels, check_no_validation
from audiotune.engine.cv_encoders import fold_configs
from audiotune.engine.cv_summary import finished_metrics, run_directory, write_outputs
from audiotune.engine.distributed import trainer_devices
from audiotune.engine.inference import inference_device
from audiotune.engine.records import check_settings_record, compared_settings
from audiotune.engine.train import check_training, continue_or_start, train
from audiotune.launch import launched_rank_zero
from audiotune.outputs import (
    CV_CONFIG_FILE,
    CV_FOLDS_FILE,
    CV_LABELS_FILE,
    METRICS_FILE,
    OwnedRunDir,
    own_run_dir,
    write_bytes,
)

log = logging.getLogger(__name__)

def _check_cv_config(exp_dir: Path, record: dict) -> None:
    """An experiment directory belongs to one cross-validation: a rerun must ask for the same one, or for more
    repeats of it (its finished runs are kept and the new repeats added)."""
    path = exp_dir / CV_CONFIG_FILE
    earlier, asked = compared_settings(path, record)  # as check_settings_record compares them
    if (isinstance(earlier, dict) and isinstance(earlier.get("repeats"), int)
            and earlier["repeats"] < record["repeats"] and {**earlier, "repeats": record["repeats"]} == asked):
        log.warning("%s: %d repeat(s) per fold instead of %d: finished runs are kept, the new ones added",
                    exp_dir, record["repeats"], earlier["repeats"])
        return
    check_settings_record(path, record, "a cross-validation", "resume it (or add repeats)")


def _cv_record(config: RunConfig, source: str, options: FoldOptions, repeats: int) -> dict:
    base = config_to_dict(config)
    base.pop("exp_dir")
    base.pop("heads")
    base["data"].pop("data_split_root")
    return {"source": str(source), "folds": asdict(options), "repeats": repeats, "config": base}


def _run_one(config: RunConfig, fold_dir: Path, run_dir: Path, seed: int) -> dict:
    run_config = copy.deepcopy(config)
    run_config.data.data_split_root = str(fold_dir)
    run_config.data.seed = seed
    run_config.exp_dir = str(run_dir)
    run_config.heads = []
    return train(continue_or_start(run_config))


def check_cv(config: RunConfig, repeats: int) -> None:
    """What cross-validation refuses of its options alone, before anything is read, written or asked of a device
    (a cloud job's command is checked so before it is submitted)."""
    if repeats < 1:
        raise ValueError(f"--repeats {repeats}: need at least 1")
    if config.train.resume:
        raise ValueError("cv resumes by itself: run the same command again, without --resume")
    if config.train.overwrite:
        raise ValueError("cv keeps finished runs and resumes the others: to start over, use a new --exp_dir")
    check_training(config)


def cross_validate(config: RunConfig, source: str, options: FoldOptions, repeats: int = 1) -> dict:
    """Train every fold ``repeats`` times (seeds ``seed .. seed + repeats - 1``) and summarise; returns the summary.

    Every fold is built and checked before anything is written; an existing experiment directory must hold
    the same cross-validation (same folds and settings), whose finished runs are kept.

    Under DDP every process walks the same runs; rank 0 writes the runs' outputs and the summary, the others
    train their share of each run and return an empty dict.
    """
    check_cv(config, repeats)
    trainer_devices(config.runtime)  # as is a strategy audiotune cannot run, or nodes no launcher started
    inference_device(config)  # a missing accelerator, or a precision it cannot run, is an error before any write
    with own_run_dir(config.exp_dir, resume=True, command="cv",  # one cv per directory at a time
                     follower=not launched_rank_zero(), experiment=CV_CONFIG_FILE) as owned:
        return _cross_validate(config, source, options, repeats, owned)


def _cross_validate(config: RunConfig, source: str, options: FoldOptions, repeats: int, owned: OwnedRunDir) -> dict:
    exp_dir = owned.path
    # recorded resolved: `auto` of an experiment started before it existed was `next`
    options = replace(options, val_group=resolved_val_group(options.val_group, source_kind(source)))
    folds = build_folds(source, options, config.data.seed, config.data.val_size)
    unvalidated = [fold for fold in folds if "val" not in fold.tables]
    if unvalidated:  # --val_group none, or JSON split files with an empty Val: those runs keep their last epoch
        check_no_validation(config, f"{unvalidated[0].name} ({unvalidated[0].info['source']})")
        config.data.val_size = 0
    files = fold_files(folds, exp_dir)
    groups = read_label_file(config.data.label_txt) if config.data.label_txt else None
    if not config.data.label_txt and source_kind(source) == "json":  # the JSON files' own labels
        groups = json_label_groups({f"{fold.name}/{k}": t for fold in folds for k, t in fold.tables.items()},
                                   source, options.json_label)
        config.data.label_txt = str(exp_dir / CV_LABELS_FILE)
        files[exp_dir / CV_LABELS_FILE] = "".join(
            ",".join(g.columns) + (f":{g.kind}" if g.kind else "") + "\n" for g in groups).encode()
    check_fold_files(files, exp_dir)
    # a rerun of a folder made with one that does nothing goes on: its runs that start read it at its default
    if groups and not (exp_dir / CV_CONFIG_FILE).is_file():
        check_head_options(config, groups, config.data.label_txt)
    for fold in folds:  # every fold's labels, before the first run trains
        if groups:
            check_labels(fold.tables, groups, config.data.na_values, fold.name)
    configs = fold_configs(config, folds)  # each fold's encoder: found, and not pretrained on the fold's test clips
    record = _cv_record(config, source, options, repeats)
    _check_cv_config(exp_dir, record)
    owned.start()
    # the fold tables are the runs' inputs: under DDP a process whose EXP_DIR lacks them (its own staging folder
    # of a gs:// experiment, or a start before rank 0 wrote them) writes the same bytes, atomically
    for path, data in files.items():
        if not path.is_file():
            write_bytes(path, data)
    if owned.writes:
        write_bytes(exp_dir / CV_CONFIG_FILE, yaml.safe_dump(record, sort_keys=False))
        write_bytes(exp_dir / CV_FOLDS_FILE, json.dumps({fold.name: fold.info for fold in folds}, indent=2))

    results = []
    for fold in folds:
        for repeat in range(repeats):
            run_dir, seed = run_directory(exp_dir, fold, repeat), config.data.seed + repeat
            metrics = finished_metrics(run_dir)
            if metrics is None:
                if owned.writes:
                    log.warning("%s run %d/%d (seed %d)", fold.name, repeat + 1, repeats, seed)
                _run_one(configs[fold.name], exp_dir / fold.name, run_dir, seed)
                if not owned.writes:
                    continue  # rank 0 scores and writes the run
                metrics = finished_metrics(run_dir)
                if metrics is None:
                    raise RuntimeError(f"{run_dir}: the run ended without a complete {METRICS_FILE}")
            results.append((fold, repeat, seed, metrics))
    return write_outputs(exp_dir, results, folds, repeats) if owned.writes else {}
