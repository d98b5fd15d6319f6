"""Score splits with a trained classifier: metrics.json, predictions.parquet and plots."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from audiotune import storage
from audiotune.config import HeadSpec, RunConfig, check_config
from audiotune.data.loading import adaptation_loader, make_dataset, make_loader
from audiotune.data.prepare import PreparedData, prepare_eval_data
from audiotune.data.segments import RECORDING_COLUMN
from audiotune.engine.adapt import OFF, adaptation_groups, adapted_batchnorm, check_adaptable, check_adaptation
from audiotune.engine.aggregate import (
    AGGREGATE_MODES,
    MODES,
    check_aggregation,
    check_recording_targets,
    recording_scores,
    table_recordings,
)
from audiotune.engine.cache import CachedDataset, cache_blocker, cached_datasets, cached_loader
from audiotune.engine.inference import features_on_device, inference_device, override_scoring, predict
from audiotune.engine.metrics import compute_metrics, head_slices, scores_from_logits
from audiotune.engine.shard_parts import POSITION, in_input_order, part_schema, part_writer
from audiotune.engine.shards import (
    Shard,
    gathered_parts,
    heed_others,
    quiet_followers,
    scoring_runtime,
    shared_scan,
    start_processes,
    together,
)
from audiotune.models.backbones import input_spec
from audiotune.models.checkpoint import load_run, resolve_run_dir, run_config
from audiotune.models.classifier import Classifier
from audiotune.outputs import (
    CONFIG_FILE,
    EVALUATE_DIR,
    EVALUATION_FILE,
    METRICS_FILE,
    ONE_TABLE,
    PLOT_DIR,
    PREDICTIONS_FILE,
    RECORDING_PREDICTIONS_FILE,
    check_folder_kind,
    check_output_path,
    confusion_plot,
    own_run_dir,
    predicted_column,
    roc_plot,
    scatter_plot,
    score_column,
    target_column,
    true_column,
    write_json,
    write_parquet,
)
from audiotune.report.plots import plot_confusion_matrix, plot_roc, plot_scatter


def prediction_table(uids: list[str], split: str, scores: np.ndarray, targets: np.ndarray,
                     heads: list[HeadSpec]) -> pd.DataFrame:
    """One row per clip: a score and a target column per output (:func:`~audiotune.outputs.score_column`,
    ``score:OUTPUT``; regression: values in the targets' units; NaN where a row has no target), plus predicted and
    true class of each categorical or soft head
    (true class empty for an unlabelled row; for a soft head, the class with most votes)."""
    names = [name for head in heads for name in head.output_names]
    table = pd.DataFrame({"uid": uids, "split": split})
    for j, name in enumerate(names):
        table[score_column(name)] = scores[:, j]
        table[target_column(name)] = targets[:, j]
    for head, cols in zip(heads, head_slices(heads)):
        if head.is_distribution:
            classes = np.asarray(head.classes, dtype=object)
            block = targets[:, cols]
            labelled = ~np.isnan(block).any(axis=1)
            table[predicted_column(head.name)] = classes[scores[:, cols].argmax(1)]
            table[true_column(head.name)] = np.where(labelled, classes[np.nan_to_num(block, nan=0.0).argmax(1)], None)
    return table


def _plots(metrics: dict, scores: np.ndarray, targets: np.ndarray, heads: list[HeadSpec], split: str,
           plot_dir: Path) -> None:
    """Confusion matrix per categorical or soft head, ROC per binary head, scatter per regression column;
    each on its head's labelled rows."""
    for head, cols in zip(heads, head_slices(heads)):
        head_scores, head_targets = scores[:, cols], targets[:, cols]
        if head.is_distribution:
            head_metrics = metrics["heads"][head.name]
            plot_confusion_matrix(head_metrics["confusion_matrix"], head.classes,
                                  plot_dir / confusion_plot(split, head.name), f"{head.name} ({split})")
        elif head.kind == "regression":
            for j, column in enumerate(head.columns):
                labelled = ~np.isnan(head_targets[:, j])
                plot_scatter(head_targets[labelled, j], head_scores[labelled, j],
                             plot_dir / scatter_plot(split, column),
                             f"{column} ({split}, n={int(labelled.sum())})", column)
        else:
            labelled = {c: ~np.isnan(head_targets[:, j]) for j, c in enumerate(head.columns)}
            truth = {c: head_targets[labelled[c], j].astype(int) for j, c in enumerate(head.columns)}
            score = {c: head_scores[labelled[c], j] for j, c in enumerate(head.columns)}
            plot_roc(truth, score, plot_dir / roc_plot(split, head.name), f"{head.name} ({split})")


def _adapted_predictions(model: Classifier, config: RunConfig, table: pd.DataFrame, targets: np.ndarray,
                         groups: list[tuple[str | None, np.ndarray]], adapt_batch_size: int,
                         check: Callable[[], None] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """uids, logits and targets of every row, each group scored with BatchNorm statistics of its own clips in
    batches of ``adapt_batch_size`` (``check`` before each batch scored: see
    :func:`~audiotune.engine.inference.iterate_batches`)."""
    uids: list[str] = []
    logits, labels = [], []
    device = inference_device(config)
    inputs = input_spec(config)
    for group, rows in groups:
        part = table.iloc[rows]
        dataset = make_dataset(config, inputs, part, targets[rows], on_device=features_on_device(config, inputs))
        with adapted_batchnorm(model, adaptation_loader(config, dataset, adapt_batch_size, device=device), device):
            loader = make_loader(config, dataset, part, False, model.backbone.padding, device=device)
            group_uids, group_logits, group_targets = predict(model, loader, config,
                                                              f"evaluate {group or 'split'}", check)
        uids += group_uids
        logits.append(group_logits)
        labels.append(group_targets)
    return uids, np.concatenate(logits), np.concatenate(labels)


def _in_table_order(table: pd.DataFrame, uids: list, logits: np.ndarray, targets: np.ndarray
                    ) -> tuple[list, np.ndarray, np.ndarray]:
    """Scored rows in the order of the input table (batching by length or by speaker changes it)."""
    rank = {str(uid): position for position, uid in enumerate(table.index)}
    order = sorted(range(len(uids)), key=lambda i: rank.get(str(uids[i]), len(rank)))
    return [uids[i] for i in order], logits[order], targets[order]


Scored = dict[str, tuple[list[str], np.ndarray, np.ndarray]]  # split: uids, logits and targets of its rows


def score_splits(model: Classifier, config: RunConfig, prepared: PreparedData, splits: list[str],
                 cached: dict[str, CachedDataset] | None = None, shard: Shard = Shard(),
                 adapt_batch_size: int | None = None) -> Scored:
    """uids, logits and targets of ``shard``'s rows of each split (one process: all of them), in table order.

    With a frozen backbone the rows are read from the feature cache (``cached``, or built here); with
    ``--adapt_bn`` a process scores whole adaptation groups (each adapted on all of its clips, in batches of
    ``adapt_batch_size``: the run's training batch size, default the config's)."""
    padding, inputs = model.backbone.padding, input_spec(config)
    adapt = config.train.adapt_bn
    if adapt != OFF:
        check_adaptable(model)
    blocks = {s: shard.rows(len(prepared.tables[s])) if adapt == OFF else slice(None) for s in splits}
    tables = {s: prepared.tables[s].iloc[blocks[s]] for s in splits}
    targets = {s: prepared.targets[s][blocks[s]] for s in splits}
    check = heed_others(shard)
    if cached is None and cache_blocker(config) is None:
        cached = cached_datasets(model, config, {s: table for s, table in tables.items() if len(table)}, targets,
                                 check=check)
    scored: Scored = {}
    for split in splits:
        table = tables[split]
        if adapt != OFF:
            groups = adaptation_groups(table, adapt, split)
            mine = groups[shard.rows(len(groups))]
            if mine:
                scored[split] = _in_table_order(table, *_adapted_predictions(
                    model, config, table, targets[split], mine, adapt_batch_size or config.train.batch_size, check))
            continue
        if table.empty:
            continue  # more processes than rows: this one has none of this split
        if cached is not None:
            loader = cached_loader(config, cached[split], False)
        else:
            dataset = make_dataset(config, inputs, table, targets[split], on_device=features_on_device(config, inputs))
            loader = make_loader(config, dataset, table, False, padding, device=inference_device(config))
        scored[split] = _in_table_order(table, *predict(model, loader, config, f"evaluate {split}", check))
    return scored


def evaluate_prepared(model: Classifier, config: RunConfig, prepared: PreparedData, out_dir: str | Path,
                      splits: list[str] | None = None, cached: dict[str, CachedDataset] | None = None,
                      aggregate: str = "mean", write_metrics: bool = True) -> dict:
    """Score the given splits, write metrics.json, predictions.parquet and plots under ``out_dir``.

    ``write_metrics=False`` leaves metrics.json to the caller (training writes it once, complete, at the end).
    With a frozen backbone the splits are read from the feature cache (``cached``, or built here). The model
    runs on the device of ``config.runtime.accelerator``/``devices`` (and stays there). See
    :func:`write_evaluation`.
    """
    splits = splits or list(prepared.tables)
    scored = score_splits(model, config, prepared, splits, cached)
    return write_evaluation(config, prepared, scored, out_dir, aggregate, write_metrics)


def write_evaluation(config: RunConfig, prepared: PreparedData, scored: Scored, out_dir: str | Path,
                     aggregate: str = "mean", write_metrics: bool = True) -> dict:
    """Metrics over all scored rows of each split, predictions.parquet and plots under ``out_dir``; metrics.json
    unless ``write_metrics`` is False.

    When a split's rows are windows of recordings (a ``recording`` column), each recording is also scored from
    its windows' scores (``aggregate``: mean or max; none skips it): a ``recording`` section in its metrics and
    predictions_recording.parquet.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    adapt = config.train.adapt_bn
    all_metrics, tables, recording_tables = {}, [], []
    for split, (uids, logits, targets) in scored.items():
        table = prepared.tables[split]
        scores = scores_from_logits(logits, config.heads, config.train.loss)
        metrics = compute_metrics(scores, targets, config.heads)
        if adapt != OFF:
            groups = adaptation_groups(table, adapt, split)
            metrics["batchnorm_adapted"] = {"on": adapt, "groups": len(groups), "clips": len(uids)}
        all_metrics[split] = metrics
        tables.append(prediction_table(uids, split, scores, targets, config.heads))
        _plots(metrics, scores, targets, config.heads, split, out_dir / PLOT_DIR)
        recordings = table_recordings(table)
        if recordings is not None and aggregate != "none":
            names, rec_scores, rec_targets = recording_scores(recordings.loc[uids].tolist(), scores, targets,
                                                              config.heads, aggregate)
            metrics["recording"] = {"aggregate": aggregate, **compute_metrics(rec_scores, rec_targets, config.heads)}
            recording_tables.append(prediction_table(names, split, rec_scores, rec_targets, config.heads)
                                    .rename(columns={"uid": RECORDING_COLUMN}))
    if write_metrics:
        write_json(out_dir / METRICS_FILE, all_metrics)
    write_parquet(pd.concat(tables, ignore_index=True), out_dir / PREDICTIONS_FILE, index=False)
    if recording_tables:
        write_parquet(pd.concat(recording_tables, ignore_index=True), out_dir / RECORDING_PREDICTIONS_FILE,
                      index=False)
    return all_metrics


def evaluate_run(run: str, data_split_root: str, exp_dir: str | None = None, on_error: str | None = None,
                 batch_size: int | None = None, num_workers: int | Literal["auto"] | None = None,
                 accelerator: str | None = None, devices: str | None = None, precision: str | None = None,
                 aggregate: str | None = None, adapt_bn: str | None = None, data: dict[str, Any] | None = None,
                 num_nodes: int | None = None) -> dict:
    """``audiotune evaluate``: rebuild the model from its run directory and score a CSV or split directory,
    on ``accelerator``/``devices`` in ``precision``, with or without ``--adapt_bn``, uid-layout audio under
    ``data`` ``prefix``/``study`` (default: the run's own settings).

    Several devices (or ``num_nodes``) run one process per device, each scoring its share of the rows
    (:mod:`audiotune.engine.shards`); rank 0 writes every output, metrics over all rows, and returns them, the
    others return an empty dict. ``aggregate``: how windows of one recording are scored together (None: mean, where
    rows are windows; mean or max asked of tables without windows is an error)."""
    if aggregate is not None and aggregate not in AGGREGATE_MODES:
        raise ValueError(f"--aggregate {aggregate}: choose one of {AGGREGATE_MODES}")
    quiet_followers()
    # the run's config alone says what the processes run on; each builds the model once they have started
    runtime = scoring_runtime(run_config(run), accelerator, devices, precision, num_nodes)
    out_dir = Path(exp_dir) if exp_dir else resolve_run_dir(run) / EVALUATE_DIR
    # where the folder ends up (a bucket's, for a staging folder) is what must hold no run
    place = storage.final_place(out_dir)

    def holds(name: str) -> bool:
        return storage.isfile(storage.join(place, name))

    if holds(CONFIG_FILE):
        raise ValueError(f"-o {place}: is a training run directory, whose predictions and metrics evaluate would "
                         f"replace; write the evaluation elsewhere (default: RUN/{EVALUATE_DIR})")
    check_output_path(out_dir / METRICS_FILE)  # a file in its way or no permission: refused before any work
    check_folder_kind(place, "evaluate", holds=holds)  # an experiment folder, or one holding runs, too
    shard = start_processes(runtime)
    with together(shard):
        config, model = load_run(run)
        config.runtime = runtime
        trained_batch_size = config.train.batch_size  # --adapt_bn's batches: those the run trained in
        override_scoring(config, data, batch_size, num_workers, on_error)
        if adapt_bn is not None:
            config.train.adapt_bn = adapt_bn
        check_config(config)
        if config.train.adapt_bn != OFF:
            check_adaptable(model)
        prepared = prepare_eval_data(config, input_spec(config), data_split_root, scan=shared_scan(shard))
        check_recording_targets(prepared.tables, prepared.targets, config.heads)
        check_aggregation(prepared.tables, aggregate, data_split_root)
        aggregate = aggregate or MODES[0]
        check_adaptation(config.train.adapt_bn, prepared.tables)
        section = prepared.name_one_table(data_split_root)
        splits = list(prepared.tables)
        with gathered_parts(shard, out_dir, lambda path: _write_scores(
                path, prepared, score_splits(model, config, prepared, splits, shard=shard,
                                             adapt_batch_size=trained_batch_size))) as parts:
            if not shard.writes:
                return {}  # rank 0 writes the scores of every process
            scored = _read_scores(parts)
        # made (and the last evaluation replaced) once every row is scored: a process killed before leaves none
        with own_run_dir(out_dir, overwrite=True, command="evaluate") as owned:
            owned.start()
            run_dir = resolve_run_dir(run)
            write_json(out_dir / EVALUATION_FILE, {"run": _absolute(run_dir), **_relative(run_dir, out_dir),
                                                   "data_split_root": _absolute(data_split_root), "data": data or {}})
            prepared.write_reports(out_dir)
            metrics = write_evaluation(config, prepared, scored, out_dir, aggregate, write_metrics=False)
            # earlier releases called the section of one CSV "data": kept beside it for the readers of that name
            write_json(out_dir / METRICS_FILE, {**metrics, **({ONE_TABLE: metrics[section]} if section else {})})
            return metrics


def _relative(run_dir: str | Path, out_dir: Path) -> dict[str, str]:
    """Where the run is seen from the evaluation folder (``run_relative``), for a local pair copied or moved
    together; nothing for a run or folder in a bucket (or a local copy of one, or a folder on its way there)."""
    if storage.is_remote(_absolute(run_dir)) or storage.is_remote(_absolute(out_dir)):
        return {}
    return {"run_relative": os.path.relpath(Path(run_dir).resolve(), out_dir.resolve())}


def _absolute(path: str | Path) -> str:
    """A local path made absolute (a report may be written from another folder), and named by its URL where it is
    this machine's copy of a bucket's (:func:`~audiotune.storage.remote_name`); a URL as it is."""
    return str(path) if storage.is_remote(str(path)) else storage.remote_name(str(Path(path).resolve()))


SCORE_SCHEMA = pa.schema([("split", pa.string()), ("uid", pa.string()), ("logits", pa.list_(pa.float32())),
                          ("targets", pa.list_(pa.float32()))])


def _write_scores(path: Path, prepared: PreparedData, scored: Scored) -> None:
    """One process's scored rows as a part (:func:`audiotune.engine.shard_parts.part_writer`), each with its place in
    the input: split after split, in table order."""
    with part_writer(path, SCORE_SCHEMA) as writer:
        offset = 0
        for split, table in prepared.tables.items():
            if split in scored:
                uids, logits, targets = scored[split]
                place = {str(uid): offset + i for i, uid in enumerate(table.index)}
                writer.write_table(pa.table({
                    POSITION: [place[uid] for uid in uids], "split": [split] * len(uids), "uid": uids,
                    "logits": pa.array(list(logits.astype(np.float32)), type=pa.list_(pa.float32())),
                    "targets": pa.array(list(targets.astype(np.float32)), type=pa.list_(pa.float32())),
                }, schema=part_schema(SCORE_SCHEMA)))
            offset += len(table)


def _read_scores(parts: list[Path]) -> Scored:
    """The scored rows of every part, each split's in input order."""
    table, order = in_input_order(parts)
    rows = table.take(order).to_pandas()
    return {str(split): (group["uid"].tolist(), np.stack(group["logits"].tolist()).astype(np.float32),
                         np.stack(group["targets"].tolist()).astype(np.float32))
            for split, group in rows.groupby("split", sort=False)}
