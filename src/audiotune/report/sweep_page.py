"""The report page of a sweep: the best trial, the objective of every trial in the order they ran (and the
best so far), the parameters of every trial side by side (parallel coordinates), and the trials table."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from audiotune.report import charts
from audiotune.report.html import charts as chart_row
from audiotune.report.html import commands, figure, note, page, section, table


@dataclass
class SweepReport:
    """A sweep's folder read back: ``summary`` is sweep_summary.json, ``trials`` sweep_trials.csv; ``commands``
    (a folder's name, the command lines recorded in it)."""

    title: str
    source: str
    summary: dict
    trials: pd.DataFrame | None = None
    commands: list[tuple[str, list[dict]]] = field(default_factory=list)


def _overview(summary: dict) -> str:
    best = summary.get("best") or {}
    counts = summary.get("trials") or {}
    facts = [["metric", summary.get("metric")], ["goal", summary.get("goal")],
             *[[f"trials {state}", count] for state, count in counts.items()]]
    if best:
        facts += [["best trial", best.get("trial")], ["best value", best.get("value")],
                  *[[f"best {name}", value] for name, value in (best.get("params") or {}).items()]]
    return table([], facts, text_columns=2) + ("" if best else note("no trial has finished yet"))


def _objective(trials: pd.DataFrame, goal: str) -> str:
    scored = trials[pd.to_numeric(trials["value"], errors="coerce").notna()].sort_values("trial")
    if scored.empty:
        return note("no trial has a value yet")
    values = scored["value"].astype(float)
    best = values.cummax() if goal == "maximize" else values.cummin()
    series = {"trial": (scored["trial"].tolist(), values.tolist()), "best so far": (scored["trial"].tolist(),
                                                                                    best.tolist())}
    return chart_row([figure(charts.line_chart(series, "trial", "objective"), "objective per trial")])


def _parameters(trials: pd.DataFrame) -> str:
    params = [c for c in trials.columns if c.startswith("param_")]
    scored = trials[pd.to_numeric(trials["value"], errors="coerce").notna()]
    if not params or scored.empty:
        return note("no finished trial with parameters")
    values = scored["value"].astype(float).tolist()
    rows: list[list[float | str]] = [[*(v if isinstance(v, str) else float(v) for v in row[params]), value]
                                     for (_, row), value in zip(scored.iterrows(), values)]
    names = [f"trial {int(t)}: {v:.4g}" for t, v in zip(scored["trial"], values)]
    svg = charts.parallel_coordinates([p.removeprefix("param_") for p in params] + ["objective"], rows, values, names)
    return chart_row([figure(svg, "each line a trial; darker: a larger objective")])


def render_sweep(report: SweepReport) -> str:
    """The whole HTML page of a sweep."""
    trials = report.trials
    goal = str(report.summary.get("goal", "minimize"))
    shown = None if trials is None else trials.astype(object).where(trials.notna(), None)
    sections = [
        section("overview", "Overview", _overview(report.summary) + commands(report.commands)),
        section("objective", "Objective over the trials",
                note("no sweep_trials.csv") if trials is None else _objective(trials, goal)),
        section("parameters", "Parameters of every trial",
                note("no sweep_trials.csv") if trials is None else _parameters(trials)),
        section("trials", "Every trial", note("no sweep_trials.csv") if shown is None else
                note("sweep_trials.csv lists no trial yet") if shown.empty else
                table(list(shown.columns), shown.values.tolist())),
    ]
    return page(report.title, report.source, sections)
