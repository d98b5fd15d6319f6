"""The inline SVG charts: what they draw follows the data."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from audiotune.report.charts import axis_labels, bars, heatmap, line_chart, scatter

SVG = "{http://www.w3.org/2000/svg}"


def test_heatmap_counts_shares_and_hover_clips() -> None:
    counts = [[3, 1], [0, 4]]
    svg = heatmap(counts, ["cat", "dog"], normalised=False, cell_notes={(0, 1): "clip7"})
    cells = ET.fromstring(svg).findall(f"{SVG}g")
    assert len(cells) == 4
    assert [c.find(f"{SVG}text").text for c in cells] == ["3", "1", "0", "4"]
    assert "true cat, predicted dog: 1 (25%)\nclip7" == cells[1].find(f"{SVG}title").text
    shares = heatmap(counts, ["cat", "dog"], normalised=True)
    assert [c.find(f"{SVG}text").text for c in ET.fromstring(shares).findall(f"{SVG}g")] == \
        ["0.75", "0.25", "0.00", "1.00"]


def test_line_chart_draws_each_series_and_marks_the_kept_epoch() -> None:
    svg = line_chart({"train": ([1, 2, 3], [1.0, 0.5, 0.25]), "val": ([1, 2, 3], [1.2, 0.9, float("nan")])},
                     "epoch", "loss", mark_x=2)
    root = ET.fromstring(svg)
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert len(root.findall(f"{SVG}circle")) == 5  # the NaN point is left out
    kept = root.find(f"{SVG}line[@class='kept']")
    assert kept is not None
    unmarked = ET.fromstring(line_chart({"train": ([1, 2, 3], [1.0, 0.5, 0.25])}, "epoch", "loss"))
    assert unmarked.find(f"{SVG}line[@class='kept']") is None


def test_scatter_has_one_point_per_clip_and_tick_labels_that_differ() -> None:
    svg = scatter([1.0, 1.001, 1.002], [1.0005, 1.001, 1.0015], "f0", ["a", "b", "c"])
    root = ET.fromstring(svg)
    assert len(root.findall(f"{SVG}circle")) == 3
    assert root.find(f"{SVG}circle/{SVG}title").text.startswith("a: true 1")
    y_ticks = [t.text for t in root.findall(f"{SVG}text[@text-anchor='end']")]
    assert len(y_ticks) >= 3 and len(set(y_ticks)) == len(y_ticks)  # a narrow range keeps distinct labels


def test_ticks_are_round_numbers() -> None:
    svg = line_chart({"loss": ([1, 2, 3, 4, 5, 6], [1.6, 1.3, 1.1, 0.95, 0.9, 0.84])}, "epoch", "loss")
    labels = [t.text for t in ET.fromstring(svg).findall(f"{SVG}text")]
    assert {"2", "4", "6", "1.0", "1.2", "1.4", "1.6"} <= set(labels)


def test_bars_leave_out_missing_values_and_draw_the_mean() -> None:
    svg = bars(["fold_1", "fold_2", "fold_3"], [0.5, float("nan"), 0.9], "uar", mean=0.7)
    root = ET.fromstring(svg)
    heights = [float(r.get("height")) for r in root.findall(f"{SVG}rect[@class='bar']")]
    assert len(heights) == 2 and heights[1] > heights[0]
    assert root.find(f"{SVG}line/{SVG}title").text == "mean 0.7"


def test_class_names_cut_for_an_axis_never_read_alike() -> None:
    """Two long names that begin alike were one label ("very long cl") on both axes of a confusion matrix."""
    assert axis_labels(["no", "yes", "twelve chars"]) == ["no", "yes", "twelve chars"]
    assert axis_labels(["a", "a much longer name"]) == ["a", "a much long…"]
    names = ["<b>a&b</b>", "very long class name alpha", "very long class name beta"]
    labels = axis_labels(names)
    assert len(set(labels)) == 3 and labels[1].startswith("2 ") and labels[2].startswith("3 ")
    assert all(len(label) <= 12 for label in labels)
    drawn = ET.fromstring(heatmap([[1, 0, 0], [0, 1, 0], [0, 0, 1]], names, False))
    texts = [t.text for t in drawn.iter(f"{SVG}text")]
    assert len({t for t in texts if t and t.startswith(("2 ", "3 "))}) == 2
