"""The summary of a cross-validation's runs (``cv_runs.csv``, ``cv_summary.json`` / ``.csv``, the confusion
matrices summed over runs, the ensemble of each fold's repeats).

Statistics (``values[f, r]``: the metric of fold f, repeat r): ``mean`` over all runs; ``fold_std`` /
``fold_median`` over the folds' means across repeats; ``run_std`` / ``run_median`` over the repeats' means across
folds (what the speech-emotion recipe reported); ``ci95``: Student-t 95 % interval of the mean, the folds as the
independent units, clipped to the values the metric can take (with few, spread folds it reaches past them).
``per_fold`` / ``per_fold_std``: each fold's mean and standard deviation over its repeats (the emotion seed's
table gave each held-out session so, as mean +- std over its runs). Standard deviations are sample ones (ddof 1); a
statistic that needs two values and has one is None. A metric
undefined in some run (one class in a fold, ...) is averaged over the runs that define it (``n_runs``: how many).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from audiotune.config import HeadSpec, load_config
from audiotune.data.folds import Fold, natural_key
from audiotune.engine.evaluate import prediction_table
from audiotune.engine.metrics import METRIC_RANGES, compute_metrics
from audiotune.engine.selection import monitor_value
from audiotune.outputs import (
    CONFIG_FILE,
    CV_RUNS_TABLE,
    CV_SUMMARY_FILE,
    CV_SUMMARY_TABLE,
    ENSEMBLE_PREDICTIONS_FILE,
    EPOCHS_RUN,
    METRICS_FILE,
    PLOT_DIR,
    PREDICTIONS_FILE,
    SCORED_SPLITS,
    confusion_plot,
    repeat_dir,
    score_column,
    target_column,
    write_csv,
    write_json,
    write_parquet,
)
from audiotune.report.plots import plot_confusion_matrix

log = logging.getLogger(__name__)

METRIC_KEYS = tuple(METRIC_RANGES)
STATISTICS = ("mean", "fold_std", "fold_median", "run_std", "run_median", "ci95", "n_runs")


def run_directory(exp_dir: Path, fold: Fold, repeat: int) -> Path:
    return exp_dir / fold.name / repeat_dir(repeat + 1)


def finished_metrics(run_dir: Path) -> dict | None:
    """The metrics of a run that finished (its metrics.json has the keys training writes last), else None."""
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) and EPOCHS_RUN in metrics else None


def _sample_std(values: np.ndarray) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarise(values: np.ndarray, bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict:
    """The statistics of one metric from its (folds, repeats) matrix; NaN marks a run where it is undefined;
    ``bounds``: the values the metric can take, which its interval is clipped to."""
    defined = ~np.isnan(values)
    if not defined.any():
        return {name: None for name in STATISTICS} | {"n_runs": 0}
    with np.errstate(invalid="ignore"):
        fold_means = np.array([row[~np.isnan(row)].mean() for row in values if (~np.isnan(row)).any()])
        run_means = np.array([col[~np.isnan(col)].mean() for col in values.T if (~np.isnan(col)).any()])
    mean = float(values[defined].mean())
    fold_std = _sample_std(fold_means)
    ci95 = None
    if fold_std is not None:  # Student's t over the folds' means, around their mean (the mean over runs when
        # every run has the metric; where some do not, the folds weigh alike, as in the interval's width)
        centre = float(fold_means.mean())
        half = float(scipy_stats.t.ppf(0.975, len(fold_means) - 1)) * fold_std / math.sqrt(len(fold_means))
        ci95 = [max(centre - half, bounds[0]), min(centre + half, bounds[1])]
    return {"mean": mean, "fold_std": fold_std, "fold_median": float(np.median(fold_means)),
            "run_std": _sample_std(run_means), "run_median": float(np.median(run_means)), "ci95": ci95,
            "n_runs": int(defined.sum())}


def _runs_table(results: list[tuple[Fold, int, int, dict]]) -> pd.DataFrame:
    rows = []
    for fold, repeat, seed, metrics in results:
        for split in SCORED_SPLITS:
            if split in metrics:
                row = {"fold": fold.name, "run": repeat + 1, "seed": seed, "split": split,
                       "n": metrics[split].get("n"), "test_groups": " ".join(fold.info.get("test_groups", []))}
                row.update({key: monitor_value(metrics[split], key) for key in METRIC_KEYS})
                rows.append(row)
    table = pd.DataFrame(rows)
    defined = [key for key in METRIC_KEYS if key in table and table[key].notna().any()]
    return table[[c for c in table.columns if c not in METRIC_KEYS or c in defined]]


def _summed_confusion(results: list[tuple[Fold, int, int, dict]], split: str) -> dict[str, dict]:
    """Each head's confusion matrices summed over the runs, cell by class name: runs whose folds trained on other
    classes (each run's head has the classes of its own training rows) add their counts to the same classes, the
    classes in the order the runs first name them."""
    counts: dict[str, dict[tuple[object, object], int]] = {}
    classes: dict[str, list[object]] = {}
    for _, _, _, metrics in results:
        for head, values in metrics.get(split, {}).get("heads", {}).items():
            if "confusion_matrix" not in values:
                continue
            names = list(values["classes"])
            known = classes.setdefault(head, [])
            known += [name for name in names if name not in known]
            cells = counts.setdefault(head, {})
            for truth, row in zip(names, values["confusion_matrix"]):
                for predicted, count in zip(names, row):
                    cells[truth, predicted] = cells.get((truth, predicted), 0) + int(count)
    return {head: {"classes": names, "matrix": [[counts[head].get((truth, predicted), 0) for predicted in names]
                                                for truth in names]}
            for head, names in classes.items()}


def _head_sections(results: list[tuple[Fold, int, int, dict]], folds: list[Fold], repeats: int) -> dict:
    """``heads`` (each head's statistics per split, for several heads: the top-level metrics are their means) and
    ``notes`` (a mean over heads that averages other heads in some runs than in others: a head undefined there)."""
    fold_index = {fold.name: k for k, fold in enumerate(folds)}
    values: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    averaged: dict[tuple[str, str], set[tuple[str, ...]]] = {}
    for fold, repeat, _, metrics in results:
        for split in SCORED_SPLITS:
            heads = metrics.get(split, {}).get("heads", {})
            for key in METRIC_KEYS:
                defined = tuple(head for head, scores in heads.items() if scores.get(key) is not None)
                if any(key in scores for scores in heads.values()):
                    averaged.setdefault((split, key), set()).add(defined)
            for head, scores in heads.items():
                for key in METRIC_KEYS:
                    if key in scores:
                        matrix = values.setdefault(split, {}).setdefault(head, {}).setdefault(
                            key, np.full((len(folds), repeats), np.nan))
                        matrix[fold_index[fold.name], repeat] = np.nan if scores[key] is None else scores[key]
    heads_of = {split: list(per_head) for split, per_head in values.items()}
    if max(map(len, heads_of.values()), default=0) < 2:
        return {}
    notes = [f"{split} {key}: the mean over heads is of other heads in some runs than in others "
             f"({'; '.join(sorted(', '.join(heads) or 'none' for heads in sets))}: a head's value is undefined in "
             "some runs); each head's own statistics are under heads"
             for (split, key), sets in averaged.items() if len(sets) > 1]
    return {"heads": {split: {head: {key: summarise(matrix, METRIC_RANGES[key]) for key, matrix in keys.items()
                                     if not np.isnan(matrix).all()}
                              for head, keys in per_head.items()}
                      for split, per_head in values.items()},
            "notes": notes}


def _per_fold(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """{fold: {metric: value}} of a table indexed by fold, the folds in natural order (NaN: None)."""
    return {fold: {k: (None if pd.isna(v) else float(v)) for k, v in values.items()}
            for fold, values in table.sort_index(key=lambda i: i.map(natural_key)).to_dict(orient="index").items()}


def summary(results: list[tuple[Fold, int, int, dict]], folds: list[Fold], repeats: int) -> dict:
    """cv_summary.json content from every run's metrics."""
    table = _runs_table(results)
    fold_index = {fold.name: k for k, fold in enumerate(folds)}
    out: dict = {"folds": len(folds), "repeats": repeats, "runs": len(results),
                 "validation": {fold.name: fold.info.get("validation") for fold in folds}, "statistics": {},
                 "per_fold": {}, "per_fold_std": {}, "confusion_matrix": {},
                 **_head_sections(results, folds, repeats)}
    for split in SCORED_SPLITS:
        rows = table[table["split"] == split]
        if rows.empty:
            continue
        out["statistics"][split] = {}
        for key in METRIC_KEYS:
            if key not in rows:
                continue
            values = np.full((len(folds), repeats), np.nan)
            for _, row in rows.iterrows():
                values[fold_index[row["fold"]], row["run"] - 1] = np.nan if pd.isna(row[key]) else row[key]
            out["statistics"][split][key] = summarise(values, METRIC_RANGES[key])
        metrics = [k for k in METRIC_KEYS if k in rows]
        by_fold = rows.groupby("fold", sort=False)[metrics]
        out["per_fold"][split] = _per_fold(by_fold.mean())
        out["per_fold_std"][split] = _per_fold(by_fold.std(ddof=1))  # over each fold's repeats; one repeat: None
        out["confusion_matrix"][split] = _summed_confusion(results, split)
    return out


def _read_predictions(run_dir: Path) -> pd.DataFrame:
    path = run_dir / PREDICTIONS_FILE
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: the run's predictions cannot be read ({err})") from err


def _aligned(part: pd.DataFrame, uids: list[str], where: Path, split: str) -> pd.DataFrame:
    """``part`` in the clip order ``uids``; other clips than those are an error."""
    if part["uid"].tolist() == uids:
        return part
    if len(set(uids)) == len(uids) and sorted(part["uid"]) == sorted(uids):
        return part.set_index("uid").loc[uids].reset_index()
    raise ValueError(f"{where}: scores other {split} clips than the fold's first run; its repeats cannot be "
                     "averaged")


def fold_ensemble(exp_dir: Path, fold: Fold, repeats: int) -> tuple[dict, pd.DataFrame]:
    """Score a fold with the mean of its repeats' scores (class probabilities, regression values): the metrics
    of each split and the averaged prediction table."""
    run_dirs = [run_directory(exp_dir, fold, repeat) for repeat in range(repeats)]
    heads: list[HeadSpec] = load_config(run_dirs[0] / CONFIG_FILE).heads
    for run_dir in run_dirs[1:]:
        if load_config(run_dir / CONFIG_FILE).heads != heads:
            raise ValueError(f"{run_dir / CONFIG_FILE}: other heads or classes than {run_dirs[0] / CONFIG_FILE}; "
                             "the fold's repeats cannot be averaged")
    names = [name for head in heads for name in head.output_names]
    score_columns, target_columns = [score_column(n) for n in names], [target_column(n) for n in names]
    tables = [_read_predictions(run_dir) for run_dir in run_dirs]
    metrics, averaged = {}, []
    for split in SCORED_SPLITS:
        parts = [table[table["split"] == split] for table in tables]
        if parts[0].empty:
            continue
        uids = parts[0]["uid"].tolist()
        parts = [_aligned(part, uids, run_dir / PREDICTIONS_FILE, split) for part, run_dir in zip(parts, run_dirs)]
        scores = np.mean([part[score_columns].to_numpy(float) for part in parts], axis=0)
        targets = parts[0][target_columns].to_numpy(float)
        metrics[split] = compute_metrics(scores, targets, heads)
        averaged.append(prediction_table(uids, split, scores, targets, heads))
    return metrics, pd.concat(averaged, ignore_index=True)


def ensemble_summary(exp_dir: Path, folds: list[Fold], repeats: int) -> dict:
    """Each fold scored by its averaged repeats (``fold_ensemble``; written to fold_K/ensemble_predictions.parquet),
    then the statistics over folds of those scores."""
    fold_metrics, tables = {}, {}
    for fold in folds:
        fold_metrics[fold.name], tables[fold.name] = fold_ensemble(exp_dir, fold, repeats)
    for name, table in tables.items():  # only once every fold could be scored
        write_parquet(table, exp_dir / name / ENSEMBLE_PREDICTIONS_FILE, index=False)
    out: dict = {"runs_averaged": repeats, "statistics": {}, "per_fold": {}, "confusion_matrix": {},
                 **_head_sections([(fold, 0, 0, fold_metrics[fold.name]) for fold in folds], folds, 1)}
    for split in SCORED_SPLITS:
        present = [fold for fold in folds if split in fold_metrics[fold.name]]
        if not present:
            continue
        per_fold = {fold.name: {key: monitor_value(fold_metrics[fold.name][split], key) for key in METRIC_KEYS}
                    for fold in present}
        defined = [key for key in METRIC_KEYS if any(v[key] is not None for v in per_fold.values())]
        out["statistics"][split] = {
            key: summarise(np.array([[np.nan if v[key] is None else v[key]] for v in per_fold.values()]),
                           METRIC_RANGES[key])
            for key in defined}
        out["per_fold"][split] = {name: {key: values[key] for key in defined} for name, values in per_fold.items()}
        out["confusion_matrix"][split] = _summed_confusion(
            [(fold, 0, 0, fold_metrics[fold.name]) for fold in present], split)
    return out


def summary_table(result: dict) -> pd.DataFrame:
    rows = []
    sections = [("runs", result)] + ([("ensemble", result["ensemble"])] if "statistics" in result.get("ensemble", {})
                                     else [])
    for scores, section in sections:
        # the means over heads (head empty), then each head's own
        statistics = [("", section["statistics"])] + [(head, {split: keys})
                                                       for split, heads in section.get("heads", {}).items()
                                                       for head, keys in heads.items()]
        for head, per_split in statistics:
            for split, metrics in per_split.items():
                for metric, values in metrics.items():
                    ci = values["ci95"] or [None, None]
                    rows.append({"scores": scores, "split": split, "head": head, "metric": metric,
                                 **{k: values[k] for k in STATISTICS if k != "ci95"}, "ci95_low": ci[0],
                                 "ci95_high": ci[1]})
    return pd.DataFrame(rows)


def _plot_confusions(exp_dir: Path, matrices: dict[str, dict], prefix: str, what: str) -> None:
    for split, heads in matrices.items():
        for head, entry in heads.items():
            plot_confusion_matrix(entry["matrix"], entry["classes"],
                                  exp_dir / PLOT_DIR / confusion_plot(f"{prefix}{split}", head),
                                  f"{head} ({split}, {what})")


def write_outputs(exp_dir: Path, results: list[tuple[Fold, int, int, dict]], folds: list[Fold],
                   repeats: int) -> dict:
    result = summary(results, folds, repeats)
    if repeats > 1:
        try:
            result["ensemble"] = ensemble_summary(exp_dir, folds, repeats)
        except (OSError, ValueError) as err:  # the runs' own summary still stands
            log.warning("no ensemble scores: %s", err)
            result["ensemble"] = {"error": str(err)}
    write_csv(_runs_table(results), exp_dir / CV_RUNS_TABLE, index=False)
    write_csv(summary_table(result), exp_dir / CV_SUMMARY_TABLE, index=False)
    _plot_confusions(exp_dir, result["confusion_matrix"], "", f"summed over {len(results)} runs")
    if "confusion_matrix" in result.get("ensemble", {}):
        _plot_confusions(exp_dir, result["ensemble"]["confusion_matrix"], "ensemble_",
                         f"{repeats} runs averaged per fold, summed over {len(folds)} folds")
    write_json(exp_dir / CV_SUMMARY_FILE, result)
    return result

