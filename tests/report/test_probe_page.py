"""The probe page: the metric per hidden state with the best layer marked, the weighted sum beside it, the table."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pandas as pd

from audiotune.report.probe_page import ProbeReport, best_layer, probe_metric, render_probe

SVG = "{http://www.w3.org/2000/svg}"
TABLE = pd.DataFrame({"layer": ["0", "1", "2", "3", "weighted"],
                      "val_accuracy": [0.5, 0.7, 0.9, 0.6, 0.8], "val_uar": [0.5, 0.6, 0.9, 0.6, 0.8],
                      "test_accuracy": [0.4, 0.8, 0.7, 0.5, 0.75], "test_uar": [0.4, 0.8, 0.7, 0.5, 0.75]})


def _section(page: str, anchor: str) -> str:
    return page.split(f'<section id="{anchor}">')[1].split("</section>")[0]


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(part[:part.index("</svg>") + 6]) for part in ("<svg" + p for p in html.split("<svg")[1:])]


def test_the_best_layer_is_marked_on_the_curve_and_in_the_table() -> None:
    page = render_probe(ProbeReport("layer probe: p", "/runs/p", TABLE, "model: {}\n", [0.1, 0.2, 0.6, 0.1]))
    assert [s for s in ("overview", "layers", "weights", "table", "config") if f'<section id="{s}">' in page] == \
        ["overview", "layers", "weights", "table", "config"]
    assert "best layer (by val accuracy, higher is better)</td><td>2<" in _section(page, "overview")
    accuracy = _svgs(_section(page, "layers"))[0]
    assert accuracy.get("aria-label") == "accuracy"
    lines = accuracy.findall(f"{SVG}polyline")
    assert [len(p.get("points").split()) for p in lines] == [4, 2, 4, 2]  # val, its weighted sum, test, its sum
    layer_x = [float(p.split(",")[0]) for p in lines[0].get("points").split()]
    kept = accuracy.find(f"{SVG}line[@class='kept']")
    assert float(kept.get("x1")) == layer_x[2] and any(t.text == "best: 2" for t in accuracy.iter(f"{SVG}text"))
    weighted_y = {p.split(",")[1] for p in lines[1].get("points").split()}
    assert len(weighted_y) == 1  # a level line at the weighted sum's value
    assert _section(page, "weights").count('class="bar"') == 4
    table = _section(page, "table")
    assert table.count("<tr") == 1 + len(TABLE) and table.count('class="best"') == 1
    assert '<tr class="best" style="font-weight:bold"><td class=text>2</td>' in table


def test_lower_is_better_for_mae_and_test_picks_when_there_is_no_validation() -> None:
    regression = pd.DataFrame({"layer": ["0", "1", "2", "weighted"], "test_mae": [3.0, 1.5, 2.0, 1.8]})
    assert probe_metric(regression) == ("test", "mae", False)
    assert best_layer(regression) == (1, 1.5)
    page = render_probe(ProbeReport("p", "/p", regression))
    assert "best layer (by test mae, lower is better)</td><td>1<" in page
    assert "no learned layer weights" in _section(page, "weights") and "no config.yaml" in page
    assert probe_metric(TABLE.assign(val_accuracy=None, val_uar=None))[0:2] == ("test", "accuracy")


def test_a_table_without_scores_says_so() -> None:
    empty = pd.DataFrame({"layer": ["0", "1", "weighted"], "val_accuracy": [None, None, None]})
    page = render_probe(ProbeReport("p", "/p", empty))
    assert best_layer(empty) == (None, None)
    assert "no layer has a score" in page and "no metric in the probe table" in page
