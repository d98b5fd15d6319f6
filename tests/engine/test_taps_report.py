"""The pages of `taps detect` and `taps align`: their counts, a row per recording and the timelines of --plot."""
from __future__ import annotations

import base64
import json
import re
import shutil
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


def _parts(text: str) -> dict:
    """What a taps page shows: its header, the overview and per-recording tables, the timelines' captions and
    images."""
    timelines = _section(text, "timelines")
    return {"header": text.split("<header>")[1].split("</header>")[0], "overview": _section(text, "overview"),
            "recordings": _section(text, "recordings"), "captions": re.findall("<figcaption>([^<]*)<", timelines),
            "images": _images(timelines)}


@pytest.mark.parametrize("table", ["taps.csv", "segments.csv"])
def test_report_draws_a_deleted_taps_page_again(taps_run: Path, table: str, capsys: pytest.CaptureFixture) -> None:
    page = taps_run / table.replace(".csv", ".report.html")
    written = page.read_text()
    page.unlink()
    assert main(["report", str(taps_run / table)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {page}"
    assert _parts(page.read_text()) == _parts(written) and len(_parts(written)["images"]) == 2
    assert page.read_text() == written


def test_an_alignment_page_with_segments_skipped_and_its_taps_table_elsewhere(taps_run: Path, tmp_path: Path) -> None:
    """The matches too near a file's edge (OUT.skipped.csv) and the off-key ones kept are drawn again, and the taps
    table's recordings are found from another folder; an older summary (no taps_table) there is refused."""
    data = taps_run.parent / "data"
    out = tmp_path / "aligned" / "segments.csv"
    assert main(["taps", "align", str(taps_run / "taps.csv"), "--touch_log",
                 str(data / "02.neonode" / "session_nnode.csv"), "--keys", str(data / "keys.csv"), "--out", str(out),
                 "--before", "1.5", "--keep_none"]) == 0
    assert len(pd.read_csv(tmp_path / "aligned" / "segments.skipped.csv")) > 0
    page = out.with_name("segments.report.html")
    written = page.read_text()
    page.unlink()
    assert main(["report", str(out), "-o", str(tmp_path / "again.html")]) == 0 and not page.exists()
    assert _parts((tmp_path / "again.html").read_text()) == _parts(written)
    summary_path = out.with_name("segments.report.json")
    summary = json.loads(summary_path.read_text())
    summary.pop("taps_table")  # as `taps align` wrote it before it recorded its taps table
    summary_path.write_text(json.dumps(summary))
    assert main(["report", str(out)]) == 2 and not page.exists()


def test_bad_taps_tables_are_one_line_errors(taps_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def error(*argv: str) -> str:
        assert main(["report", *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    nope = tmp_path / "nope.csv"
    assert error(str(nope)) == f"audiotune report: error: {nope}: not found; report a folder: a run, an evaluation, " \
                               "a cross-validation, a sweep or a probe, or the table of `audiotune taps detect` or " \
                               "`taps align`"
    keys = taps_run.parent / "data" / "keys.csv"
    assert f"{keys}: a file, and not the table of `audiotune taps detect` or `taps align`" in error(str(keys))
    assert "--clips 3: an option of a run's page" in error(str(taps_run / "taps.csv"), "--clips", "3")
    old = tmp_path / "old"  # a taps table of before detect wrote its summary
    old.mkdir()
    shutil.copy(taps_run / "taps.csv", old / "taps.csv")
    recreate = f"re-create it with `audiotune taps detect RECORDINGS --out {old / 'taps.csv'}`"
    assert recreate in error(str(old / "taps.csv"))
    shutil.copy(taps_run / "taps.report.json", old / "taps.report.json")  # its recordings are not in tmp_path/data
    missing = sorted(str(tmp_path / "data" / "01.acoustic" / p.name)
                     for p in (taps_run.parent / "data" / "01.acoustic").glob("*.wav"))
    assert error(str(old / "taps.csv")).startswith(f"audiotune report: error: {', '.join(missing)}: not found: "
                                                   f"recordings of {old / 'taps.csv'}")
    assert sorted(p.name for p in old.iterdir()) == ["taps.csv", "taps.report.json"]  # no page written
