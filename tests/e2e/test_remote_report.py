"""The report of a run whose audio is in a bucket: each wrong clip is linked to its object with the segment's start
and end, not downloaded or embedded (Cloud Storage emulated on loopback)."""
from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pandas as pd
from conftest import BUCKET, read_report

from audiotune.cli import main


def test_remote_clips_are_linked_to_their_objects_with_start_and_end(trained_run: dict, gcs, tmp_path: Path) -> None:
    run, fs = trained_run["run"], gcs.fs()
    uids = sorted(pd.read_parquet(run / "predictions.parquet").query("split == 'test'")["uid"])
    sources = {uid: trained_run["prefix"] / uid / "waveform.wav" for uid in uids}
    for uid, source in sources.items():
        fs.put(str(source), f"{BUCKET}/audio/{uid}.wav")
    table = trained_run["table"].loc[uids].reset_index()
    table = table.assign(path=[f"gs://{BUCKET}/audio/{uid}.wav" for uid in uids], offset=0.1, duration=0.4)
    table.to_csv(tmp_path / "remote.csv", index=False)
    out = tmp_path / "remote.html"
    assert main(["report", str(run), "-d", str(tmp_path / "remote.csv"), "-o", str(out)]) == 0
    text = out.read_text()
    cards = re.findall(r'<div class="clip" data-uid="([^"]+)">(.*?)</div>', text)
    assert cards and read_report(out)["audio"] == 0 and "<img" not in text.split('<section id="clips">')[1]
    for uid, card in cards:
        link = re.search(r'<a class="source" href="([^"]+)"', card).group(1)
        url, _, fragment = link.partition("#")
        assert fragment == "t=0.100,0.500" and f"gs://{BUCKET}/audio/{uid}.wav, 0.10 s to 0.50 s</a>" in card
        with urllib.request.urlopen(url) as response:  # the link serves the object itself
            assert response.read() == sources[uid].read_bytes()
        assert "remote audio: linked to its source" in card
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # nothing was downloaded to play


def test_the_page_of_a_run_in_a_bucket_names_the_bucket_s_folder(trained_run: dict, gcs, tmp_path: Path) -> None:
    """`report gs://.../run` reads a local copy of the run: its page names the run by its URL (as does the page
    written back beside it), never this machine's cache, and plays the clips as the local run's page does."""
    fs = gcs.fs()
    for path in trained_run["run"].rglob("*"):
        if path.is_file():
            fs.put(str(path), f"{BUCKET}/runs/r/{path.relative_to(trained_run['run'])}")
    out = tmp_path / "page.html"
    assert main(["report", f"gs://{BUCKET}/runs/r", "-o", str(out)]) == 0
    assert main(["report", f"gs://{BUCKET}/runs/r"]) == 0
    local = read_report(trained_run["run"] / "report.html")
    for text in (out.read_text(), fs.cat(f"{BUCKET}/runs/r/report.html").decode()):
        header = re.search(r"<header>(.*?)</header>", text).group(1)
        assert header == f"<h1>run: r</h1><p>gs://{BUCKET}/runs/r</p>"
        assert text.count("<audio") == local["audio"] > 0
