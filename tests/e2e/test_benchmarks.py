"""The scoring and device-feature benchmarks run at tiny sizes on the CPU, so they keep working as the code moves
(each compares two sides that must agree: the same logits, the same features)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import tone

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_mixed_length_scoring_scores_both_sides_with_the_same_logits(tmp_path: Path) -> None:
    for index in range(12):
        sf.write(tmp_path / f"clip{index}.wav", tone(200 + 40 * index, 0.3 + 0.03 * index, 8000, seed=index), 8000)
    out = run_benchmark("mixed_length_scoring.py", "--data", str(tmp_path), "--clips", "12", "--repeats", "1",
                        "-bs", "4", "--per_clip", "--json", str(tmp_path / "result.json"))
    assert "own lengths / one length" in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["clips"] == 12 and result["max_abs_logit_difference_vs_alone"] < 1e-4


@pytest.mark.slow
def test_features_on_the_device_benchmark_finds_the_workers_features() -> None:
    out = run_benchmark("features_on.py", "--clips", "8", "--epochs", "1", "--repeats", "1", "--workers", "0",
                        "--batch_size", "4", "--channels", "16")
    assert "features, device vs workers: max |diff|" in out and "| 0 | device |" in out
