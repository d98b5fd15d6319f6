"""The sweep page: every finished trial on the objective chart and the parallel coordinates, the best trial."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pandas as pd

from audiotune.report.charts import parallel_coordinates
from audiotune.report.sweep_page import SweepReport, render_sweep

SVG = "{http://www.w3.org/2000/svg}"
TRIALS = pd.DataFrame({"trial": [0, 1, 2, 3], "state": ["complete", "complete", "pruned", "fail"],
                       "value": [0.9, 0.7, 1.2, None], "param_learning_rate": [1e-3, 3e-4, 1e-2, 5e-4],
                       "param_pooling_mode": ["mean", "max", "mean", "max"], "run_dir": ["trial_0", "trial_1",
                                                                                         "trial_2", "trial_3"]})
SUMMARY = {"metric": "val_loss", "goal": "minimize", "trials": {"complete": 2, "pruned": 1, "fail": 1},
           "best": {"trial": 1, "value": 0.7, "params": {"learning_rate": 3e-4, "pooling_mode": "max"}}}


def test_the_sweep_page_shows_every_scored_trial_and_the_best() -> None:
    page = render_sweep(SweepReport("sweep: s", "/sweeps/s", SUMMARY, TRIALS))
    for anchor in ("overview", "objective", "parameters", "trials"):
        assert f'<section id="{anchor}">' in page
    assert "best pooling_mode</td><td class=text>max" in page
    objective = page.split('<section id="objective">')[1].split("</section>")[0]
    root = ET.fromstring(objective[objective.index("<svg"):objective.index("</svg>") + 6])
    assert [len(p.get("points").split()) for p in root.findall(f"{SVG}polyline")] == [3, 3]  # the failed one: none
    parameters = page.split('<section id="parameters">')[1].split("</section>")[0]
    assert parameters.count('class="trial"') == 3 and "trial 1: 0.7" in parameters
    assert page.split('<section id="trials">')[1].count("<tr>") == 1 + len(TRIALS)


def test_parallel_coordinates_place_numbers_by_value_and_text_by_level() -> None:
    svg = parallel_coordinates(["lr", "pooling"], [[0.1, "max"], [0.3, "mean"], [0.2, "max"]], [1.0, 2.0, 3.0])
    lines = ET.fromstring(svg).findall(f"{SVG}polyline")
    ys = [[float(p.split(",")[1]) for p in line.get("points").split()] for line in lines]
    assert ys[1][0] < ys[2][0] < ys[0][0]  # a larger learning rate higher up
    assert ys[0][1] == ys[2][1] != ys[1][1]  # the same pooling mode on the same level
    assert lines[0].get("stroke") != lines[2].get("stroke")


def test_a_sweep_without_trials_table_says_so() -> None:
    page = render_sweep(SweepReport("sweep: s", "/s", {"metric": "val_uar", "goal": "maximize", "trials": {},
                                                       "best": None}))
    assert "no trial has finished yet" in page and page.count("no sweep_trials.csv") == 3


def test_a_trials_table_without_rows_is_said_not_drawn_empty() -> None:
    trials = pd.DataFrame(columns=["trial", "state", "value", "param_learning_rate", "run_dir", "error"])
    page = render_sweep(SweepReport("sweep: s", "/s", {"metric": "val_loss", "goal": "minimize"}, trials))
    section = page.split('<section id="trials">')[1].split("</section>")[0]
    assert "<table" not in section and "sweep_trials.csv lists no trial yet" in section
