"""The report page of one run (training or evaluation): overview, config, metrics per head and split, per-class
scores, confusion matrices, training curves, regression scatter plots, a breakdown by a column, wrong clips."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from audiotune.outputs import (
    KEPT_WEIGHTS,
    LR_COLUMN,
    ONE_TABLE,
    PREDICTIONS_FILE,
    PRETRAIN_FACTS,
    PRETRAIN_OBJECTIVE,
    PRETRAIN_OUTPUTS,
    RUN_FACTS,
    TRAIN_LOSS_COLUMN,
    VAL_LOSS_COLUMN,
    predicted_column,
    score_column,
    target_column,
    true_column,
)
from audiotune.report import charts
from audiotune.report.clips import Clip, clips_section
from audiotune.report.html import charts as chart_row
from audiotune.report.html import commands, details, figure, note, page, section, table

HOVER_CLIPS = 12  # clips named in a confusion cell's hover text


@dataclass
class RunReport:
    """Everything the page shows, read from a run directory: ``heads`` as in config.yaml (name, kind, columns,
    classes); ``log`` the per-step training log; ``kept_epoch`` counted from 1; ``groups`` the ``group_by``
    value of each uid; ``clips`` the wrong clips of ``split`` with their audio; ``commands`` (a folder's name, the
    command lines recorded in it) for this directory and, for an evaluation, the run it scored."""

    title: str
    source: str
    config_yaml: str
    metrics: dict
    heads: list[dict]
    predictions: pd.DataFrame | None = None
    log: pd.DataFrame | None = None
    kept_epoch: int | None = None
    group_by: str = ""
    groups: pd.Series | None = None
    split: str = ""
    clips: list[Clip] = field(default_factory=list)
    clips_per_class: int = 5
    max_clip_bytes: int = 96_000
    clips_missing: str = ""
    groups_missing: str = ""
    notes: list[str] = field(default_factory=list)
    commands: list[tuple[str, list[dict]]] = field(default_factory=list)
    left_out: dict[str, dict[str, int]] = field(default_factory=dict)  # list file -> {split: rows it names}


def _splits(metrics: dict) -> list[str]:
    """The scored sections of ``metrics``, without the copy an evaluation of one CSV keeps under ONE_TABLE."""
    scored = [split for split, value in metrics.items() if isinstance(value, dict) and "heads" in value]
    return [split for split in scored if split != ONE_TABLE] or scored


def _sections(metrics: dict) -> list[tuple[str, str, dict]]:
    """``(label, split, metrics)`` of each scored section: every split's, and after it, where windows were scored
    together per recording, its recordings' (labelled "SPLIT, recordings")."""
    sections = []
    for split in _splits(metrics):
        sections.append((split, split, metrics[split]))
        recording = metrics[split].get("recording")
        if isinstance(recording, dict) and "heads" in recording:
            sections.append((f"{split}, recordings", split, recording))
    return sections


def _unscored(metrics: dict) -> str:
    """Why a directory has no scored split: no metrics at all, or a pretraining run, which learns without labels."""
    if not metrics:
        return "no metrics.json: nothing was scored"
    if PRETRAIN_OBJECTIVE in metrics:
        written = ", ".join(map(str, metrics.get(PRETRAIN_OUTPUTS) or [])) or "nothing"
        return (f"a pretraining run ({metrics[PRETRAIN_OBJECTIVE]}): it learns without labels, so no split is scored; "
                f"its losses are under Training curves, and it wrote {written} (fine-tune or extract from it)")
    return "metrics.json scores no split"


def _left_out(report: RunReport, split: str) -> str:
    """The rows of ``split`` the command left out, by the list naming them (bad audio skipped, rows dropped)."""
    return ", ".join(f"{counts[split]} ({name})" for name, counts in report.left_out.items() if counts.get(split))


def _overview(report: RunReport) -> str:
    sections = _sections(report.metrics)
    rows = [[label, values.get("n")] for label, _, values in sections]
    if any(_left_out(report, split) for _, split, _ in sections):  # the scores are of the clips scored only
        rows = [[*row, _left_out(report, split) if label == split else ""]
                for row, (label, split, _) in zip(rows, sections)]
    # (a split's section is no fact, whatever its name: an evaluated validation.csv is the section "validation")
    facts = [(key, ", ".join(map(str, value)) if isinstance(value, list) else value)
             for key in (*PRETRAIN_FACTS, *RUN_FACTS)
             if (value := report.metrics.get(key)) is not None and not isinstance(value, dict)]
    header = ["split", "clips scored", "rows left out (listed in)"][:len(rows[0]) if rows else 2]
    body = table(header, rows) if rows else note(_unscored(report.metrics))
    body += table([], facts, text_columns=2) if facts else ""
    return body + "".join(note(text) for text in report.notes + [f"{label}: {text}" for label, _, values in sections
                                                                  for text in values.get("notes", [])])


def _scalars(values: dict) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k != "n" and (v is None or isinstance(v, (int, float)))
            and not isinstance(v, bool)}


def _metrics(report: RunReport) -> str:
    rows, keys = [], []
    for split, _, scores in _sections(report.metrics):
        aucs = scores.get("auc") or {}
        for head, values in scores["heads"].items():
            columns = values.get("columns", {})
            # (a head of one column: its row is the head's)
            entries = [(head, values, None)] + [(f"{head} / {c}", v, c) for c, v in columns.items()
                                                if len(columns) > 1 or _scalars(v) != _scalars(values)]
            for name, entry, column in entries:
                scalars = _scalars(entry) | ({"auc": aucs[column]} if column in aucs else {})
                keys += [k for k in scalars if k not in keys]
                rows.append((split, name, entry.get("n"), scalars))
    if not rows:
        return note(_unscored(report.metrics))
    return table(["split", "head", "n", *keys], [[s, h, n, *(v.get(k) for k in keys)] for s, h, n, v in rows],
                 text_columns=2)


def _per_class(report: RunReport) -> str:
    parts = []
    for split, _, scores in _sections(report.metrics):
        for head, values in scores["heads"].items():
            if "per_class" in values:
                rows = [[c, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support")]
                        for c, v in values["per_class"].items()]
                parts.append(f"<h3>{escape(head)} ({escape(split)})</h3>"
                             + table(["class", "precision", "recall", "F1", "support"], rows))
    return "".join(parts) or note("no categorical or soft head: no per-class scores")


def _cell_clips(report: RunReport, split: str, head: str, classes: list[str]) -> dict[tuple[int, int], str]:
    rows = report.predictions
    if rows is None or true_column(head) not in rows:
        return {}
    rows = rows[(rows["split"] == split) & rows[true_column(head)].notna()]
    index = {c: k for k, c in enumerate(classes)}
    notes = {}
    for (truth, predicted), part in rows.groupby([true_column(head), predicted_column(head)]):
        if truth in index and predicted in index:
            uids = part["uid"].astype(str).tolist()
            notes[(index[truth], index[predicted])] = ", ".join(uids[:HOVER_CLIPS]) + \
                (f" … (+{len(uids) - HOVER_CLIPS})" if len(uids) > HOVER_CLIPS else "")
    return notes


def _confusion(report: RunReport) -> str:
    parts = []
    for split, scored, scores in _sections(report.metrics):
        for head, values in scores["heads"].items():
            if "confusion_matrix" not in values:
                continue
            classes = [str(c) for c in values["classes"]]
            hover = _cell_clips(report, split, head, classes) if split == scored else {}  # clips, not recordings
            parts.append(f"<h3>{escape(head)} ({escape(split)}, n={values.get('n')})</h3>" + chart_row([
                figure(charts.heatmap(values["confusion_matrix"], classes, False, hover), "counts"),
                figure(charts.heatmap(values["confusion_matrix"], classes, True, hover), "row-normalised (recall)")]))
    if not parts:
        return note("no categorical or soft head: no confusion matrix")
    return "".join(parts) + note("Hover a cell for its clips." if report.predictions is not None else
                                 f"No {PREDICTIONS_FILE} here: no clips per cell.")


def _epoch_series(log: pd.DataFrame, column: str) -> tuple[list[float], list[float]]:
    series = log[["epoch", column]].dropna().groupby("epoch")[column].last()
    return [float(e) + 1 for e in series.index], [float(v) for v in series.to_numpy()]


def _curves(report: RunReport) -> str:
    log = report.log
    if log is None or "epoch" not in log:
        return note("no training log in this directory (an evaluation, or a run trained without one)")
    groups = {
        "loss": [c for c in log.columns if c in (TRAIN_LOSS_COLUMN, VAL_LOSS_COLUMN)],
        "monitored metric": [c for c in log.columns if c.startswith("val_") and c != VAL_LOSS_COLUMN],
        "learning rate": [c for c in log.columns if c == LR_COLUMN or c.startswith((f"{LR_COLUMN}-", f"{LR_COLUMN}_"))],
    }
    figures, missing = [], []
    for name, columns in groups.items():
        series = {c.replace("_epoch", ""): _epoch_series(log, c) for c in columns}
        series = {k: v for k, v in series.items() if v[0]}
        if not series:
            missing.append(name)
            continue
        figures.append(figure(charts.line_chart(series, "epoch", name, report.kept_epoch), name))
    monitor = (report.metrics.get("selection") or {}).get("monitor")
    if monitor == VAL_LOSS_COLUMN and "monitored metric" in missing:
        missing.remove("monitored metric")  # it is the validation loss, drawn with the losses
    weights = report.metrics.get(KEPT_WEIGHTS)
    kept = f"Dashed line: the kept epoch ({report.kept_epoch}" + (f", best {monitor})." if monitor else ").") \
        if report.kept_epoch else f"Weights kept: {weights}." if weights else "The last epoch is kept."
    return chart_row(figures) + note(kept) + (note(f"not logged by this run: {', '.join(missing)}") if missing else "")


def _scatter(report: RunReport) -> str:
    heads = [h for h in report.heads if h["kind"] == "regression"]
    if not heads:
        return note("no regression head")
    if report.predictions is None:
        return note("no predictions.parquet: no scatter plots")
    figures, unlabelled = [], []
    for split in report.predictions["split"].unique():
        rows = report.predictions[report.predictions["split"] == split]
        for column in (c for h in heads for c in h["columns"]):
            if target_column(column) not in rows or score_column(column) not in rows:
                unlabelled.append(f"{column} ({split})")
                continue
            part = rows[rows[target_column(column)].notna()]
            if part.empty:  # an empty frame would read as a plot of nothing
                unlabelled.append(f"{column} ({split})")
                continue
            figures.append(figure(charts.scatter(part[target_column(column)], part[score_column(column)], column,
                                                 part["uid"].astype(str).tolist()),
                                  f"{column} ({split}, n={len(part)})"))
    missing = note(f"no row with a true value, so no plot: {', '.join(unlabelled)}") if unlabelled else ""
    return (chart_row(figures) if figures else "") + missing


def _uar(truth: pd.Series, predicted: pd.Series) -> float:
    return float(np.mean([(predicted[truth == c] == c).mean() for c in truth.unique()]))


def group_table(rows: pd.DataFrame, heads: list[dict], groups: pd.Series) -> tuple[list[str], list[list]]:
    """Per group value: clips and, per head, accuracy and UAR (binary: accuracy per column; regression: MAE);
    worst first by the first head's first score."""
    keyed = rows.assign(group=rows["uid"].astype(str).map(groups))
    header, table_rows = ["group", "n"], []
    for head in heads:
        if head["kind"] in ("categorical", "soft"):
            header += [f"{head['name']} accuracy", f"{head['name']} UAR"]
        else:
            header += [f"{c} {'MAE' if head['kind'] == 'regression' else 'accuracy'}" for c in head["columns"]]
    for value, part in keyed.groupby("group", dropna=False):
        row: list[Any] = [value if isinstance(value, str) or not pd.isna(value) else "(none)", len(part)]
        for head in heads:
            if head["kind"] in ("categorical", "soft"):
                labelled = part[part[true_column(head["name"])].notna()]
                truth, predicted = labelled[true_column(head["name"])], labelled[predicted_column(head["name"])]
                row += [float((truth == predicted).mean()) if len(labelled) else None,
                        _uar(truth, predicted) if len(labelled) else None]
            for column in head["columns"] if head["kind"] in ("binary", "regression") else []:
                labelled = part[part[target_column(column)].notna()]
                score, target = labelled[score_column(column)], labelled[target_column(column)]
                row.append(None if labelled.empty else float((score - target).abs().mean())
                           if head["kind"] == "regression" else float(((score >= 0.5) == (target >= 0.5)).mean()))
        table_rows.append(row)
    lower_is_worse = not (heads and heads[0]["kind"] == "regression")
    def worst(row: list) -> float:
        value = row[2] if len(row) > 2 and row[2] is not None else math.nan
        return math.inf if math.isnan(value) else (value if lower_is_worse else -value)
    return header, sorted(table_rows, key=worst)


def _breakdown(report: RunReport) -> str:
    if report.predictions is None:
        return note("no predictions.parquet: no breakdown")
    if report.groups is None:
        return note(report.groups_missing or "no column to break the scores down by (`audiotune report FOLDER "
                    "--group_by COLUMN`)")
    rows = report.predictions[report.predictions["split"] == report.split]
    header, rows_out = group_table(rows, report.heads, report.groups)
    return note(f"The {report.split} split by '{report.group_by}', worst first.") + table(header, rows_out)


def render_run(report: RunReport) -> str:
    """The whole HTML page of a run."""
    no_predictions = "no predictions.parquet in this directory: no clips to show"
    sections = [
        section("overview", "Overview", _overview(report)),
        section("config", "Config", (details("config.yaml (the whole resolved config of the run)",
                                             f"<pre>{escape(report.config_yaml)}</pre>") if report.config_yaml
                                     else note("no config.yaml")) + commands(report.commands)),
        section("metrics", "Metrics per head and split", _metrics(report)),
        section("per-class", "Per-class precision, recall, F1", _per_class(report)),
        section("confusion", "Confusion matrices", _confusion(report)),
        section("curves", "Training curves", _curves(report)),
        section("scatter", "Regression: predicted against true", _scatter(report)),
        section("groups", "Breakdown by group", _breakdown(report)),
        section("clips", "Clips it got wrong", clips_section(
            report.clips, report.split, report.clips_per_class, report.max_clip_bytes,
            no_predictions if report.predictions is None else report.clips_missing)),
    ]
    return page(report.title, report.source, sections)
