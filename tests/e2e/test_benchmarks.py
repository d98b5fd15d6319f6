"""The scoring, device-feature and clip-norm benchmarks run at tiny sizes on the CPU, so they keep working as the
code moves (each compares what must agree: the same logits, the same features, a clip's output as alone)."""
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


@pytest.mark.slow
def test_the_clip_norm_benchmark_finds_each_clip_as_alone_and_the_group_norm_moved_by_the_padding(
        tmp_path: Path) -> None:
    out = run_benchmark("clip_norm.py", "--batch", "3", "--seconds", "0.3", "--repeats", "1", "--json",
                        str(tmp_path / "result.json"))
    assert "max|diff| vs alone" in out
    rows = {(row["side"], row["dtype"]): row for row in json.loads((tmp_path / "result.json").read_text())["rows"]}
    assert set(rows) == {(side, dtype) for side in ("GroupNorm", "ClipGroupNorm") for dtype in ("float32", "bfloat16")}
    assert all(rows["ClipGroupNorm", dtype]["max_diff_vs_alone"] < 1e-4 for dtype in ("float32", "bfloat16"))
    assert rows["GroupNorm", "float32"]["max_diff_vs_alone"] > 1e-2  # the padding in every clip's statistics
    assert all(row["ms"] > 0 and row["peak_mb"] >= 0 for row in rows.values())
