"""Reports end to end: a regression run and a cross-validation through the command line, and every page opened
in headless Chromium (rendered, no console message, every clip decoded by the browser)."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import (
    HF_TINY,
    SMALL_ECAPA,
    detected_and_aligned_taps,
    make_uid_dataset,
    read_report,
    save_hf_checkpoint,
    small_train_args,
    tone,
)

from audiotune.cli import main

pytestmark = pytest.mark.slow

# the page loads every clip and says, on the console, whether the browser decoded it
PROBE = """<script>document.querySelectorAll('audio').forEach(function (a) {
  a.addEventListener('loadedmetadata', function () { console.log('AUDIO-OK ' + a.duration.toFixed(3)); });
  a.addEventListener('error', function () { console.log('AUDIO-ERROR'); }); a.load(); });</script>"""


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uid dataset with a regression target ``f0`` (the tone's pitch), trained one epoch."""
    ds = make_uid_dataset(tmp_path_factory.mktemp("regression"))
    for name in ("train", "val", "test"):
        table = pd.read_csv(ds["split"] / f"{name}.csv")
        table["f0"] = [300.0 + 500 * (pitch == "high") + 7 * k for k, pitch in enumerate(table["pitch"])]
        table.to_csv(ds["split"] / f"{name}.csv", index=False)
    labels = ds["root"] / "f0.txt"
    labels.write_text("f0:regression\n")
    run = ds["root"] / "run"
    assert main(small_train_args({**ds, "labels": labels}, run)) == 0
    return {**ds, "run": run}


@pytest.fixture(scope="module")
def cv_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two subject-disjoint folds x two repeats of a small ECAPA-TDNN on three speakers' tones."""
    root = tmp_path_factory.mktemp("cv")
    rows = []
    for s, subject in enumerate(("ann", "bob", "cat")):
        for k in range(4):
            path = root / f"{subject}{k}.wav"
            sf.write(path, tone(300 + 500 * (k % 2), 0.5, 16000, seed=10 * s + k), 16000)
            rows.append({"uid": f"{subject}{k}", "path": str(path), "subject": subject,
                         "pitch": ["low", "high"][k % 2]})
    pd.DataFrame(rows).to_csv(root / "table.csv", index=False)
    (root / "labels.txt").write_text("pitch\n")
    out = root / "exp"
    assert main(["cv", "-d", str(root / "table.csv"), "-l", str(root / "labels.txt"), "-o", str(out), "--folds", "2",
                 "--val_group", "none", "--repeats", "2", "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "1",
                 "-bs", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layer probe of a tiny wav2vec2 (3 hidden states) on the uid dataset; its page written when it ended."""
    import torch
    import transformers

    ds = make_uid_dataset(tmp_path_factory.mktemp("probe"))
    torch.manual_seed(0)
    checkpoint = save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)),
                                    ds["root"] / "w2v")
    out = ds["root"] / "probe"
    assert main(["probe", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
                 "--model", "hf", "-c", str(checkpoint), "-e", "1", "-bs", "4"]) == 0
    return out


def test_probe_writes_its_page_with_the_layer_curve_and_table(probe_run: Path, tmp_path: Path) -> None:
    page = read_report(probe_run / "report.html")
    assert page["sections"] == ["overview", "layers", "weights", "table", "config"]
    text = (probe_run / "report.html").read_text()
    table = pd.read_csv(probe_run / "probe.csv", dtype={"layer": str})
    layers = text.split('<section id="layers">')[1].split("</section>")[0]
    accuracy = layers.split("</svg>")[0]
    assert 'aria-label="accuracy"' in accuracy and accuracy.count('class="kept"') == 1
    assert accuracy.count("<circle") == 2 * (len(table) - 1) + 2 * 2  # val and test per layer, 2 weighted-sum ends
    values = pd.to_numeric(table["val_accuracy"][table["layer"] != "weighted"])
    assert f"best: {int(table['layer'][values.idxmax()])}<" in accuracy
    assert text.split('<section id="table">')[1].count("<tr") == 1 + len(table)
    weights = json.loads((probe_run / "probe.json").read_text())["layer_weights"]
    assert text.split('<section id="weights">')[1].split("</section>")[0].count('class="bar"') == len(weights) == 3
    assert main(["report", str(probe_run), "-o", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").read_text() == text


def test_regression_report_scatters_every_clip_and_plays_the_largest_errors(regression_run: dict) -> None:
    run = regression_run["run"]
    page = read_report(run / "report.html")
    assert page["sections"] == ["overview", "config", "metrics", "per-class", "confusion", "curves", "scatter",
                                "groups", "clips"]
    text = (run / "report.html").read_text()
    scatter = text.split('<section id="scatter">')[1].split("</section>")[0]
    assert scatter.count("<svg") == 2 and scatter.count("<circle") == 8  # val and test, 4 clips each
    assert "no categorical or soft head" in text and "f0 MAE" in text and ">ccc<" in text
    predictions = pd.read_parquet(run / "predictions.parquet")
    test = predictions[predictions["split"] == "test"].set_index("uid")
    worst = (test["score:f0"] - test["target:f0"]).abs().sort_values(ascending=False, kind="stable")
    assert [uid for uid, _, _ in page["clips"]] == list(worst.index)  # all 4 test clips, largest error first
    for uid, samples, rate in page["clips"]:
        source = regression_run["prefix"] / uid / "waveform.wav"
        assert rate == 16000 and len(samples) == sf.info(str(source)).frames * 2


def test_cv_report_has_folds_means_summed_confusion_and_the_ensemble(cv_experiment: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    page = read_report(cv_experiment / "report.html")  # written when cv ended
    assert page["sections"] == ["overview", "statistics", "folds", "confusion", "ensemble", "runs", "clips"]
    text = (cv_experiment / "report.html").read_text()
    summary = json.loads((cv_experiment / "cv_summary.json").read_text())
    folds = text.split('<section id="folds">')[1].split("</section>")[0]
    assert folds.count('class="bar"') == 2 * len(summary["per_fold"])  # one bar per fold and split
    summed = summary["confusion_matrix"]["test"]["pitch"]["matrix"]
    confusion = text.split('<section id="confusion">')[1].split("</section>")[0]
    counts = [int(v) for v in re.findall(r'fill="#[0f]{3}">(\d+)</text>', confusion.split("<svg")[1])]
    assert counts == [v for row in summed for v in row] and sum(counts) == 2 * 12  # 2 repeats x every clip
    assert "2 runs averaged per fold" in text
    runs = text.split('<section id="runs">')[1]
    assert runs.count("<tr>") == 1 + len(pd.read_csv(cv_experiment / "cv_runs.csv"))
    assert main(["report", str(cv_experiment), "-o", str(cv_experiment / "again.html")]) == 0
    assert (cv_experiment / "again.html").read_text() == text


def test_cv_report_plays_the_most_confidently_wrong_clips_over_the_folds(cv_experiment: Path) -> None:
    page = read_report(cv_experiment / "report.html")
    # every fold's test clips scored by its two repeats averaged: the wrong ones, most confident first per class
    scored = pd.concat([pd.read_parquet(fold / "ensemble_predictions.parquet").query("split == 'test'")
                        for fold in sorted(cv_experiment.glob("fold_*"))])
    wrong = scored[scored["true:pitch"] != scored["predicted:pitch"]]
    expected = []
    [head] = yaml.safe_load((cv_experiment / "fold_1" / "run_1" / "config.yaml").read_text())["heads"]
    for truth in head["classes"]:  # in the order of the head's classes
        part = wrong[wrong["true:pitch"] == truth]
        confidence = [row[f"score:pitch={row['predicted:pitch']}"] for _, row in part.iterrows()]
        expected += list(part["uid"].iloc[sorted(range(len(part)), key=lambda k: -confidence[k])[:5]])
    assert expected and [uid for uid, _, _ in page["clips"]] == expected
    for uid, samples, rate in page["clips"]:  # each clip read from its fold's table, as the fold's runs read it
        assert rate == 16000 and len(samples) == sf.info(str(cv_experiment.parent / f"{uid}.wav")).frames
    text = (cv_experiment / "report.html").read_text()
    assert "The 5 most confidently wrong clips of the test split" in text
    overview = text.split('<section id="overview">')[1].split("</section>")[0]
    assert "this cross-validation: the command line that wrote it" in overview and "audiotune cv -d" in overview
    [command] = json.loads((cv_experiment / "fold_2" / "run_2" / "command.json").read_text())
    assert command["argv"][:2] == ["audiotune", "cv"]  # each fold's run records the cv that trained it
    one = cv_experiment / "one.html"
    assert main(["report", str(cv_experiment), "-o", str(one), "--clips", "1"]) == 0
    assert len(read_report(one)["clips"]) == min(1, len(wrong[wrong["true:pitch"] == "high"])) + \
        min(1, len(wrong[wrong["true:pitch"] == "low"]))


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        pytest.skip("needs Chromium for the browser test (Debian: apt-get install chromium; .ci/run installs it)")
    return found


def browse(page: Path, screenshot: Path) -> list[str]:
    """Open a copy of ``page`` with the clip probe in headless Chromium; its console messages."""
    probed = screenshot.with_suffix(".html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                             "--v=0", "--virtual-time-budget=15000", "--window-size=1200,2000",
                             f"--screenshot={screenshot}", probed.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert screenshot.is_file(), result.stderr[-2000:]
    return re.findall(r':CONSOLE[^\]]*\] "([^"]*)"', result.stderr)


def not_blank(screenshot: Path) -> bool:
    from PIL import Image

    image = Image.open(io.BytesIO(screenshot.read_bytes())).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 16)
    return colours is None or len(colours) > 20


def test_every_page_renders_in_chromium_and_the_browser_plays_every_clip(
        trained_run: dict, regression_run: dict, cv_experiment: Path, probe_run: Path, tmp_path: Path) -> None:
    chromium()
    pages = {"run": trained_run["run"] / "report.html", "regression": regression_run["run"] / "report.html",
             "cv": cv_experiment / "report.html", "probe": probe_run / "report.html"}
    taps = detected_and_aligned_taps(tmp_path, plots=False)
    pages.update(detect=taps / "taps.report.html", align=taps / "segments.report.html")
    assert main(["report", str(trained_run["run"]), "-o", str(tmp_path / "linked.html"), "--clip_kb", "3"]) == 0
    pages["linked"] = tmp_path / "linked.html"  # clips over the cap: their sources linked, not embedded
    keep = os.environ.get("AUDIOTUNE_SCREENSHOTS")  # a folder to keep the screenshots in (docs/report.png: "run")
    for name, page in pages.items():
        messages = browse(page, tmp_path / f"{name}.png")
        audio = read_report(page)["audio"]
        assert messages == ["AUDIO-OK " + m.split()[1] for m in messages] and len(messages) == audio, name
        assert not_blank(tmp_path / f"{name}.png"), name
        if keep:
            shutil.copyfile(tmp_path / f"{name}.png", Path(keep) / f"{name}.png")
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('broken')</script></body></html>")
    assert browse(bad, tmp_path / "bad.png") == ["broken"]  # a console message is seen
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    browse(blank, tmp_path / "blank.png")
    assert not not_blank(tmp_path / "blank.png")
