"""The report page of a layer probe: the metric per hidden state with the best layer marked (the learned weighted
sum beside it), the learned layer weights, and the probe table with the best layer's row marked."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

import pandas as pd

from audiotune.outputs import SCORED_SPLITS
from audiotune.report import charts
from audiotune.report.html import cell, details, figure, note, page, section, table
from audiotune.report.html import charts as chart_row

# the metrics a probe writes, in the order one is chosen to pick the best layer, and whether larger is better
PROBE_METRICS = (("accuracy", True), ("uar", True), ("macro_f1", True), ("mean_auc", True), ("ccc", True),
                 ("mae", False))
WEIGHTED = "weighted"  # the probe table's row of the learned weighted sum of every hidden state


def _values(table: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(table[column], errors="coerce") if column in table else pd.Series(dtype=float)


def probe_metric(table: pd.DataFrame) -> tuple[str, str, bool]:
    """(split, metric, larger is better) that picks the best layer: validation when it was scored, else test; the
    first metric of :data:`PROBE_METRICS` with a value."""
    for split in SCORED_SPLITS:
        for metric, larger in PROBE_METRICS:
            if _values(table, f"{split}_{metric}").notna().any():
                return split, metric, larger
    return "", "", True


def layer_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of single hidden states, with their index as a number (``layer_index``)."""
    index = pd.to_numeric(table["layer"], errors="coerce")
    return table[index.notna()].assign(layer_index=index[index.notna()].astype(int))


def best_layer(table: pd.DataFrame) -> tuple[int | None, float | None]:
    """The hidden state with the best value of :func:`probe_metric` (the first of equals), and that value."""
    split, metric, larger = probe_metric(table)
    layers = layer_rows(table)
    values = _values(layers, f"{split}_{metric}")
    if not metric or values.notna().sum() == 0:
        return None, None
    position = values.idxmax() if larger else values.idxmin()
    return int(layers.loc[position, "layer_index"]), float(values[position])


@dataclass
class ProbeReport:
    """A probe folder read back: ``table`` is probe.csv (``layer`` 0..N-1 and ``weighted``, ``SPLIT_METRIC``
    columns); ``layer_weights`` the weighted sum's weights; ``cache`` the feature cache's counts."""

    title: str
    source: str
    table: pd.DataFrame
    config_yaml: str = ""
    layer_weights: list[float] | None = None
    cache: dict = field(default_factory=dict)
    weighted_sum: str = ""  # why the weighted sum was not probed, where it was not


def _weighted_value(table: pd.DataFrame, column: str) -> float | None:
    rows = table[table["layer"].astype(str) == WEIGHTED]
    value = _values(rows, column)
    return float(value.iloc[0]) if len(value) and pd.notna(value.iloc[0]) else None


def _overview(report: ProbeReport) -> str:
    split, metric, larger = probe_metric(report.table)
    layer, value = best_layer(report.table)
    layers = layer_rows(report.table)
    facts: list[list] = [["hidden states probed", len(layers)]]
    if layer is not None:
        facts += [[f"best layer (by {split} {metric}, {'higher' if larger else 'lower'} is better)", layer],
                  [f"its {split} {metric}", value]]
        weighted = _weighted_value(report.table, f"{split}_{metric}")
        if weighted is not None:
            facts.append([f"learned weighted sum: {split} {metric}", weighted])
    facts += [[f"feature cache: {k}", v] for k, v in report.cache.items() if k in ("encoded", "reused")]
    body = table([], facts, text_columns=1)
    return body + ("" if layer is not None else note("no layer has a score: nothing to compare"))


def _curves(report: ProbeReport) -> str:
    layers = layer_rows(report.table)
    chosen_split, chosen, _ = probe_metric(report.table)
    figures = []
    for metric, larger in sorted(PROBE_METRICS, key=lambda m: m[0] != chosen):
        scored = [s for s in SCORED_SPLITS if _values(layers, f"{s}_{metric}").notna().any()]
        if not scored:
            continue
        series: dict[str, tuple[list[float], list[float]]] = {}
        for split in scored:
            series[split] = (layers["layer_index"].astype(float).tolist(),
                             _values(layers, f"{split}_{metric}").astype(float).tolist())
            weighted = _weighted_value(report.table, f"{split}_{metric}")
            if weighted is not None:
                ends = [float(layers["layer_index"].min()), float(layers["layer_index"].max())]
                series[f"weighted sum ({split})"] = (ends, [weighted, weighted])
        split = chosen_split if chosen_split in scored else scored[0]
        scores = _values(layers, f"{split}_{metric}")
        best = int(layers.loc[scores.idxmax() if larger else scores.idxmin(), "layer_index"])
        svg = charts.line_chart(series, "hidden state", metric, best, f"best: {best}")
        figures.append(figure(svg, f"{metric} per hidden state (dashed: the best by {split} {metric})"))
    return chart_row(figures) if figures else note("no metric in the probe table")


def _weights(report: ProbeReport) -> str:
    weights = report.layer_weights
    if not weights:
        return note(f"no learned layer weights: the weighted sum was {report.weighted_sum}" if report.weighted_sum
                    else "no learned layer weights (probe.json missing or without them)")
    svg = charts.bars([str(k) for k in range(len(weights))], weights, "weight", mean=1.0 / len(weights))
    return chart_row([figure(svg, "weight of each hidden state in the weighted sum (dashed: uniform)")])


def _table(report: ProbeReport) -> str:
    best, _ = best_layer(report.table)
    columns = list(report.table.columns)
    header = "<tr>" + "".join(f'<th{" class=text" if k == 0 else ""}>{escape(str(c))}</th>'
                              for k, c in enumerate(columns)) + "</tr>"
    rows = []
    for _, row in report.table.iterrows():
        marked = best is not None and str(row["layer"]) == str(best)
        cells = "".join(f'<td{" class=text" if k == 0 else ""}>{cell(_number(row[c]))}</td>'
                        for k, c in enumerate(columns))
        rows.append(f'<tr class="best" style="font-weight:bold">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
    return f"<table>{header}{''.join(rows)}</table>" + note("Bold: the best layer.")


def _number(value: object) -> object:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if not (isinstance(value, float) and math.isnan(value)) else None
    return value


def render_probe(report: ProbeReport) -> str:
    """The whole HTML page of a layer probe."""
    sections = [
        section("overview", "Overview", _overview(report)),
        section("layers", "Metric per hidden state", _curves(report)),
        section("weights", "Learned layer weights", _weights(report)),
        section("table", "Probe table", _table(report)),
        section("config", "Config", details("config.yaml (the whole resolved config of the probe)",
                                            f"<pre>{escape(report.config_yaml)}</pre>") if report.config_yaml
                else note("no config.yaml")),
    ]
    return page(report.title, report.source, sections)
