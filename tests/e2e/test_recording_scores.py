"""Windows of recordings through the whole pipeline: segment → train → evaluate with recording-level scores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import SMALL_ECAPA, tone

from audiotune.cli import main


@pytest.fixture()
def windowed(tmp_path: Path) -> dict:
    """Twelve 2-s recordings (low or high tone, two channels) cut into 0.5-s windows, split by recording."""
    rows = []
    for i in range(12):
        high = i % 2
        name = f"rec{i:02d}.wav"
        sf.write(tmp_path / name, tone(300 + 900 * high, 2.0, 16000, seed=i, channels=2), 16000)
        rows.append({"uid": f"r{i:02d}", "path": name, "pitch": ["low", "high"][high],
                     "part": "train" if i < 8 else ("val" if i < 10 else "test")})
    pd.DataFrame(rows).to_csv(tmp_path / "recordings.csv", index=False)
    assert main(["segment", str(tmp_path / "recordings.csv"), "--window", "0.5", "--hop", "0.25",
                 "--out", str(tmp_path / "windows.csv")]) == 0
    windows = pd.read_csv(tmp_path / "windows.csv")
    assert len(windows) == 12 * 7 and set(windows["recording"]) == {r["uid"] for r in rows}
    for part in ("train", "val", "test"):
        windows[windows["part"] == part].to_csv(tmp_path / f"{part}.csv", index=False)
    split = tmp_path / "split"
    split.mkdir()
    for part in ("train", "val", "test"):
        table = pd.read_csv(tmp_path / f"{part}.csv")
        table["path"] = "../" + table["path"]
        table.to_csv(split / f"{part}.csv", index=False)
    (tmp_path / "labels.txt").write_text("pitch\n")
    out = tmp_path / "run"
    assert main(["train", "-d", str(split), "-l", str(tmp_path / "labels.txt"), "-o", str(out), "--model",
                 "ecapa_tdnn", *SMALL_ECAPA, "-e", "2", "-bs", "8", "--channel_mode", "maxabs"]) == 0
    return {"root": tmp_path, "split": split, "run": out}


@pytest.mark.slow
def test_recordings_are_scored_from_their_windows(windowed: dict) -> None:
    metrics = json.loads((windowed["run"] / "metrics.json").read_text())
    assert metrics["test"]["n"] == 14 and metrics["test"]["recording"]["n"] == 2
    assert metrics["test"]["recording"]["aggregate"] == "mean"
    windows = pd.read_parquet(windowed["run"] / "predictions.parquet").query("split == 'test'")
    recordings = pd.read_parquet(windowed["run"] / "predictions_recording.parquet").query("split == 'test'")
    table = pd.read_csv(windowed["split"] / "test.csv").set_index("uid")
    windows["recording"] = table.loc[windows["uid"], "recording"].to_numpy()
    by_hand = windows.groupby("recording")["score:pitch=high"].mean()
    got = recordings.set_index("recording")["score:pitch=high"]
    np.testing.assert_allclose(got.loc[by_hand.index], by_hand, atol=1e-6)


@pytest.mark.slow
def test_evaluate_aggregates_by_mean_max_or_not_at_all(windowed: dict) -> None:
    results = {}
    for mode in ("mean", "max", "none"):
        out = windowed["root"] / f"eval_{mode}"
        assert main(["evaluate", "--run", str(windowed["run"]), "-d", str(windowed["split"] / "test.csv"),
                     "-o", str(out), "--aggregate", mode]) == 0
        results[mode] = json.loads((out / "metrics.json").read_text())["data"]
        assert (out / "predictions_recording.parquet").is_file() == (mode != "none")
    assert "recording" not in results["none"]
    assert results["max"]["recording"]["aggregate"] == "max" and results["max"]["recording"]["n"] == 2
    mean_scores = pd.read_parquet(windowed["root"] / "eval_mean" / "predictions_recording.parquet")
    max_scores = pd.read_parquet(windowed["root"] / "eval_max" / "predictions_recording.parquet")
    assert not np.allclose(mean_scores["score:pitch=high"], max_scores["score:pitch=high"])


@pytest.mark.slow
def test_windows_of_one_recording_must_share_their_label(windowed: dict, capsys: pytest.CaptureFixture) -> None:
    table = pd.read_csv(windowed["split"] / "test.csv")
    table.loc[0, "pitch"] = "high" if table.loc[0, "pitch"] == "low" else "low"
    bad = windowed["root"] / "bad.csv"
    table["path"] = table["path"].str.replace("../", "", regex=False)
    table.to_csv(bad, index=False)
    assert main(["evaluate", "--run", str(windowed["run"]), "-d", str(bad), "-o",
                 str(windowed["root"] / "eval_bad")]) == 2
    assert "bad.csv: head 'pitch': the windows of 1 recording(s) disagree" in capsys.readouterr().err
    assert not (windowed["root"] / "eval_bad" / "metrics.json").exists()
