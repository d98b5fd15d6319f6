"""The report page of a cross-validation: every run, the folds side by side (table and bars), means with their
95 % intervals, the confusion matrices summed over the folds, the repeats averaged per fold (ensemble) and the
clips it got wrong over the folds."""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

import pandas as pd

from audiotune.config.sections import MONITORS
from audiotune.report import charts
from audiotune.report.clips import Clip, clips_section
from audiotune.report.html import charts as chart_row
from audiotune.report.html import commands, details, figure, note, page, section, table


@dataclass
class ExperimentReport:
    """A cross-validation's experiment directory read back: ``summary`` is cv_summary.json, ``runs`` cv_runs.csv;
    ``clips`` the most confidently wrong clips of ``split`` over the folds, with their audio; ``commands`` (a
    folder's name, the command lines recorded in it)."""

    title: str
    source: str
    summary: dict
    runs: pd.DataFrame | None = None
    config_yaml: str = ""
    split: str = ""
    clips: list[Clip] = field(default_factory=list)
    clips_per_class: int = 5
    max_clip_bytes: int = 96_000
    clips_missing: str = ""
    commands: list[tuple[str, list[dict]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _statistics(section: dict) -> str:
    """The statistics of a summary's section: the means over heads, then (several heads) each head's own."""
    rows = []
    per_head = [("mean over heads" if section.get("heads") else "", section.get("statistics", {}))]
    per_head += [(head, {split: metrics}) for split, heads in section.get("heads", {}).items()
                 for head, metrics in heads.items()]
    for head, statistics in per_head:
        for split, metrics in statistics.items():
            for metric, values in metrics.items():
                ci = values.get("ci95") or [None, None]
                rows.append([split, head, metric, values.get("mean"), values.get("fold_std"), ci[0], ci[1],
                             values.get("n_runs")])
    if not rows:
        return note("no statistics")
    return "".join(note(text) for text in section.get("notes", [])) + table(
        ["split", "head", "metric", "mean", "std over folds", "95% CI low", "95% CI high", "runs"], rows,
        text_columns=3)


def _headline(per_fold: dict) -> str | None:
    scored = {k for values in per_fold.values() for k, v in values.items() if v is not None}
    # the first metric that can pick a run's best epoch (loss aside) which the folds scored
    return next((k for k in MONITORS if k in scored), next(iter(sorted(scored)), None))


def _folds(summary: dict, statistics: dict, what: str) -> str:
    parts = []
    for split, per_fold in summary.get("per_fold", {}).items():
        metrics = sorted({k for values in per_fold.values() for k in values})
        parts.append(f"<h3>{escape(split)} ({escape(what)})</h3>" + table(
            ["fold", *metrics], [[fold, *(values.get(k) for k in metrics)] for fold, values in per_fold.items()]))
        metric = _headline(per_fold)
        if metric is None:
            continue
        overall = statistics.get(split, {}).get(metric, {})
        ci = overall.get("ci95") or [None, None]
        svg = charts.bars(list(per_fold), [v.get(metric) if v.get(metric) is not None else float("nan")
                                          for v in per_fold.values()], metric, mean=overall.get("mean"))
        caption = f"{metric} per fold ({split}); dashed: the mean {overall.get('mean', float('nan')):.4g}"
        if ci[0] is not None:
            caption += f", 95% CI {ci[0]:.4g} .. {ci[1]:.4g}"
        parts.append(chart_row([figure(svg, caption)]))
    return "".join(parts) or note("no per-fold scores")


def _confusions(matrices: dict, what: str) -> str:
    parts = []
    for split, heads in matrices.items():
        for head, entry in heads.items():
            classes = [str(c) for c in entry["classes"]]
            parts.append(f"<h3>{escape(head)} ({escape(split)}, {escape(what)})</h3>" + chart_row([
                figure(charts.heatmap(entry["matrix"], classes, False), "counts"),
                figure(charts.heatmap(entry["matrix"], classes, True), "row-normalised (recall)")]))
    return "".join(parts) or note("no categorical or soft head: no confusion matrix")


def _ensemble(summary: dict) -> str:
    ensemble = summary.get("ensemble")
    if not ensemble:
        return note("one run per fold (--repeats 1): no ensemble")
    if "error" in ensemble:
        return note(f"no ensemble scores: {ensemble['error']}")
    what = f"{summary.get('repeats')} runs averaged per fold"
    return (note(f"Each fold scored by its {summary.get('repeats')} runs' averaged scores.")
            + _statistics(ensemble) + _folds(ensemble, ensemble.get("statistics", {}), what)
            + _confusions(ensemble.get("confusion_matrix", {}), f"{what}, summed over the folds"))


def render_experiment(report: ExperimentReport) -> str:
    """The whole HTML page of a cross-validation."""
    summary = report.summary
    overview = "".join(note(text) for text in report.notes)
    overview += table([], [["folds", summary.get("folds")], ["repeats per fold", summary.get("repeats")],
                           ["runs", summary.get("runs")]], text_columns=2)
    validation = summary.get("validation") or {}
    if validation:
        overview += table(["fold", "validation"], list(validation.items()), text_columns=2)
    if report.config_yaml:
        overview += details("cv_config.yaml (the folds and the options of every run)",
                            f"<pre>{escape(report.config_yaml)}</pre>")
    overview += commands(report.commands)
    runs = note("no cv_runs.csv") if report.runs is None else table(
        list(report.runs.columns), report.runs.astype(object).where(report.runs.notna(), None).values.tolist(),
        text_columns=1)
    summed = f"summed over {summary.get('runs')} runs"
    sections = [
        section("overview", "Overview", overview),
        section("statistics", "Means over folds with 95% intervals", _statistics(summary)),
        section("folds", "Per fold", _folds(summary, summary.get("statistics", {}), "mean of each fold's runs")),
        section("confusion", "Confusion matrices summed over the folds",
                _confusions(summary.get("confusion_matrix", {}), summed)),
        section("ensemble", "Ensemble: each fold's runs averaged", _ensemble(summary)),
        section("runs", "Every run", runs),
        section("clips", "Clips it got wrong, over the folds", clips_section(
            report.clips, report.split, report.clips_per_class, report.max_clip_bytes, report.clips_missing)),
    ]
    return page(report.title, report.source, sections)
