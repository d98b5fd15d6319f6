"""The pages of `taps detect` and `taps align`: their counts, a row per recording and the timelines of --plot."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import detected_and_aligned_taps, read_report

from audiotune.cli import main

pytestmark = pytest.mark.slow  # each test reads the pages of a whole detect + align run


@pytest.fixture(scope="module")
def taps_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic 8-channel recordings detected and aligned, with their plots."""
    return detected_and_aligned_taps(tmp_path_factory.mktemp("taps"))


def _section(text: str, anchor: str) -> str:
    return text.split(f'<section id="{anchor}">')[1].split("</section>")[0]


def _fact(text: str, name: str) -> str:
    return re.search(f"<td class=text>{re.escape(name)}</td><td>([^<]*)</td>", text).group(1)


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(uri) for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_the_detection_page_counts_the_taps_and_shows_the_plots(taps_run: Path) -> None:
    text = (taps_run / "taps.report.html").read_text()
    assert read_report(taps_run / "taps.report.html")["sections"] == ["overview", "recordings", "timelines"]
    taps = pd.read_csv(taps_run / "taps.csv")
    assert _fact(text, "taps detected") == str(len(taps)) and _fact(text, "recordings") == "2"
    rows = re.findall(r"<tr><td class=text>([^<]+)</td><td>(\d+)</td>", _section(text, "recordings"))
    assert dict((name, int(n)) for name, n in rows) == taps["path"].map(lambda p: Path(p).name).value_counts().to_dict()
    plots = sorted((taps_run / "plots").glob("*_taps.png"))
    assert _images(_section(text, "timelines")) == [p.read_bytes() for p in plots]  # the --plot figures, inline


def test_the_alignment_page_has_the_latency_and_the_matches(taps_run: Path) -> None:
    text = (taps_run / "segments.report.html").read_text()
    report = json.loads((taps_run / "segments.report.json").read_text())
    assert _fact(text, "latency") == f"{report['latency'] * 1000:+.1f} ms (estimated)"
    for name, key in (("taps matched to a touch", "matched"), ("unmatched taps", "unmatched_taps"),
                      ("unmatched touches", "unmatched_touches"), ("segments written", "segments")):
        assert _fact(text, name) == str(report[key]), name
    assert report["unmatched_touches"] > 0  # the spurious touches
    recordings = _section(text, "recordings")
    assert recordings.count("<tr>") == 1 + len(report["recordings"])
    for row in report["recordings"]:
        assert f"<td class=text>{Path(row['path']).name}</td><td>{row['taps']}</td><td>{row['touches']}</td>" \
               f"<td>{row['matched']}</td>" in recordings
    plots = sorted((taps_run / "plots").glob("*_align.png"))
    assert _images(_section(text, "timelines")) == [p.read_bytes() for p in plots]


def test_report_false_writes_no_page(taps_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["taps", "detect", *map(str, sorted((taps_run.parent / "data" / "01.acoustic").glob("*.wav"))),
                 "--out", str(tmp_path / "taps.csv"), "--report", "False"]) == 0
    assert (tmp_path / "taps.csv").is_file() and not (tmp_path / "taps.report.html").exists()
    assert "report:" not in capsys.readouterr().out
