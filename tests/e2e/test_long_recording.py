"""A 20-minute 8-channel 48 kHz recording with events: segment → train (interleave) → evaluate → extract,
each command in its own process with its peak resident memory measured."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import SMALL_ECAPA

RATE, CHANNELS, MINUTES = 48000, 8, 20
PEAK_RSS_LIMIT = 1.2e9  # bytes; the recording alone is 0.92 GB as PCM16 and 1.84 GB as float32
CHUNK_SECONDS = 10


def tap(freq: float, rate: int) -> np.ndarray:
    """A damped tone burst of 60 ms."""
    t = np.arange(int(0.06 * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * np.exp(-t / 0.012)).astype(np.float32)


def write_recording(path: Path, events: pd.DataFrame) -> None:
    """Noise on 8 channels with each event's burst added: low taps loud on channels 0-3, high on 4-7."""
    rng = np.random.default_rng(0)
    chunk = CHUNK_SECONDS * RATE
    noise = (0.01 * rng.standard_normal((chunk, CHANNELS))).astype(np.float32)
    bursts = {"low": tap(700, RATE), "high": tap(2600, RATE)}
    gains = {"low": np.array([0.8] * 4 + [0.2] * 4, np.float32), "high": np.array([0.2] * 4 + [0.8] * 4, np.float32)}
    with sf.SoundFile(path, "w", RATE, CHANNELS, subtype="PCM_16") as handle:
        for start in range(0, MINUTES * 60 * RATE, chunk):
            block = noise.copy()
            inside = events[(events.time * RATE >= start) & (events.time * RATE < start + chunk - RATE)]
            for event in inside.itertuples():
                at = int(event.time * RATE) - start
                burst = bursts[event.label]
                block[at:at + len(burst)] += burst[:, None] * gains[event.label]
            handle.write(block)


# VmHWM belongs to the process's own address space, which starts afresh at exec; ru_maxrss would also count
# the pages of the (large) test process that forked it
MEASURED_MAIN = """
import sys
from audiotune.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM"))
print("PEAK_RSS_KB", peak)
sys.exit(code)
"""


def run_measured(args: list[str], cwd: Path) -> tuple[int, int, str]:
    """Run ``audiotune ARGS`` in a fresh process; returns its exit code, peak RSS in bytes and output."""
    done = subprocess.run([sys.executable, "-c", MEASURED_MAIN, *args], cwd=cwd, capture_output=True, text=True)
    output = done.stdout + done.stderr
    peaks = [int(line.split()[1]) * 1024 for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
    return done.returncode, peaks[-1] if peaks else -1, output


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from /proc (Linux)")
def test_segments_of_a_long_multichannel_recording_stay_within_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    times = np.sort(rng.choice(np.arange(2, MINUTES * 60 - 12, 4.0), size=96, replace=False) + rng.uniform(0, 1, 96))
    events = pd.DataFrame({"path": "recording.wav", "time": times.round(4),
                           "label": rng.permutation(["low", "high"] * 48)})
    write_recording(tmp_path / "recording.wav", events)
    assert sf.info(str(tmp_path / "recording.wav")).duration == MINUTES * 60
    events["part"] = ["train"] * 64 + ["val"] * 16 + ["test"] * 16
    events.to_csv(tmp_path / "events.csv", index=False)
    (tmp_path / "labels.txt").write_text("label\n")

    peaks = {}
    code, peaks["segment"], out = run_measured(["segment", "events.csv", "--before", "0.02", "--after", "0.1",
                                                "--out", "segments.csv"], tmp_path)
    assert code == 0, out
    segments = pd.read_csv(tmp_path / "segments.csv")
    assert len(segments) == 96 and np.allclose(segments["duration"], 0.12)
    split = tmp_path / "split"
    split.mkdir()
    for part in ("train", "val", "test"):
        rows = segments[segments["part"] == part].copy()
        rows["path"] = "../" + rows["path"]
        rows.to_csv(split / f"{part}.csv", index=False)

    code, peaks["train"], out = run_measured(
        ["train", "-d", "split", "-l", "labels.txt", "-o", "run", "--model", "ecapa_tdnn", *SMALL_ECAPA,
         "-e", "3", "-bs", "16", "-lr", "3e-3", "--channel_mode", "interleave", "--clip_length", "0"], tmp_path)
    assert code == 0, out
    config_text = (tmp_path / "run" / "config.yaml").read_text()
    assert "channel_mode: interleave" in config_text
    code, peaks["evaluate"], out = run_measured(["evaluate", "--run", "run", "-d", "split/test.csv",
                                                 "-o", "evaluated"], tmp_path)
    assert code == 0, out
    metrics = json.loads((tmp_path / "evaluated" / "metrics.json").read_text())["data"]
    assert metrics["n"] == 16
    code, peaks["extract"], out = run_measured(["extract", "--run", "run", "-d", "segments.csv",
                                                "--out", "embeddings.parquet"], tmp_path)
    assert code == 0, out
    embeddings = pd.read_parquet(tmp_path / "embeddings.parquet")
    assert len(embeddings) == 96 and embeddings["uid"].is_unique
    print("peak RSS (MB):", {name: round(peak / 1e6) for name, peak in peaks.items()})
    for name, peak in peaks.items():
        assert 0 < peak < PEAK_RSS_LIMIT, f"audiotune {name} peaked at {peak / 1e9:.2f} GB"
