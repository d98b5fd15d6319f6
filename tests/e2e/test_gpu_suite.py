"""``benchmarks/gpu_suite.py --smoke``: the GPU suite's code at tiny sizes on the CPU, as a user runs it."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("kaldi_native_fbank")  # benchmarks/data_pipeline.py, whose helpers the suite reuses

ROOT = Path(__file__).resolve().parents[2]


def suite(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--smoke", "--device", "cpu",
                           "--json", str(out), *extra], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(out.read_text())


def finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.slow
def test_smoke_run_fills_every_part_with_finite_figures(tmp_path: Path) -> None:
    done, result = suite(tmp_path / "suite.json")
    rows = result["rows"]
    assert not [row for row in rows if row.get("error")], done.stdout[-3000:]
    by_part = {part: [row for row in rows if row["part"] == part] for part in "abcd"}
    # a: 2 encoders x 2 precisions x (forward only, plain loop, audiotune extract)
    assert len(by_part["a"]) == 12 and {r["unit"] for r in by_part["a"]} == {"audio-s/s"}
    assert len(by_part["b"]) == 5  # audio store off / on x workers 0 / 2, and compiled with the store and 2
    assert by_part["b"][-1]["case"].endswith("--compile reduce-overhead")
    assert [r["case"].rsplit(", ", 1)[1] for r in by_part["c"]] == ["cache cold", "cache warm", "no cache"]
    assert len(by_part["d"]) == 1 and "encoder trained" in by_part["d"][0]["note"]
    for row in rows:
        assert finite(row["rate"]) and row["rate"] > 0 and finite(row["peak_mib"]) and row["peak_mib"] > 0, row
        assert finite(row["wall_s"]), row
    assert all("x plain loop" in r["note"] and "of forward-only" in r["note"]
               for r in by_part["a"] if r["case"].endswith("audiotune extract"))
    for row in by_part["a"] + by_part["d"]:
        assert finite(row["tflops"]) and 0 < row["of_peak"] < 1, row
    assert all(row["gpu_util"] is None for row in by_part["b"])  # no GPU: nothing sampled, nothing made up
    # the run's own log of its pace beside the suite's clock (no device memory on the CPU)
    assert all(" clips/s, device peak None MiB" in row["note"] for row in by_part["b"] + by_part["d"])
    cold, warm, _ = by_part["c"]
    assert "encoded 100, reused 0" in cold["note"] and "encoded 0, reused 100" in warm["note"]
    assert warm["rate"] > cold["rate"]  # the warm cache encodes nothing
    assert result["environment"]["device"] == "cpu" and result["mode"] == "smoke"
    assert "device cpu" in done.stdout and "torch" in done.stdout and "rows in" in done.stdout


@pytest.mark.slow
def test_a_part_out_of_time_keeps_its_row_and_the_suite_goes_on(tmp_path: Path) -> None:
    done, result = suite(tmp_path / "suite.json", "--parts", "c", "a", "--budget_scale", "0.005")
    assert [(row["part"], row["case"]) for row in result["rows"]] == [
        ("c", "frozen fine-tuning, feature cache (stopped)"), ("a", "extraction (stopped)")]
    assert all("OutOfTime: out of its" in row["error"] for row in result["rows"])
    assert "ERROR OutOfTime" in done.stdout


@pytest.mark.slow
def test_part_d_compiled_masked_and_with_cudnns_algorithm_timing(tmp_path: Path) -> None:
    """``--tune_compile`` compiles part d's training steps and ``--tune_masks`` masks their spans (its row says so);
    ``--cudnn_benchmark`` is recorded with the environment, which every part runs in."""
    done, result = suite(tmp_path / "suite.json", "--parts", "d", "--tune_compile", "default", "--cudnn_benchmark",
                         "--tune_masks", "0.05", "--budget_scale", "2")
    (row,) = result["rows"]
    assert not row.get("error") and row["case"].endswith("full fine-tuning, bf16, --compile default, masked spans "
                                                         "0.05"), row
    assert "steps compiled: default" in row["note"]  # what the run's config asked for
    assert "encoder trained" in row["note"]  # full fine-tuning: the encoder's weights train (not --freeze's default)
    assert "masked spans: time 0.05, channels 0.05" in row["note"]  # as the run's config has them
    assert finite(row["rate"]) and row["rate"] > 0
    assert result["environment"]["cudnn_benchmark"] is True and "cudnn_benchmark True" in done.stdout


@pytest.mark.slow
def test_extraction_at_tf32(tmp_path: Path) -> None:
    """``--precisions tf32``: part a's three rows per encoder at ``--precision tf32``, against its own peak."""
    _, result = suite(tmp_path / "suite.json", "--parts", "a", "--precisions", "tf32")
    rows = result["rows"]
    assert [row["case"].split(", ")[0] for row in rows] == ["wav2vec2-base (tiny) tf32"] * 3 + ["AST (tiny) tf32"] * 3
    assert all(not row.get("error") and finite(row["rate"]) and 0 < row["of_peak"] < 1 for row in rows), rows
    assert set(result["peak_flops_per_s"]) == {"fp32", "bf16", "tf32"}


def test_utilisation_samples_the_gpu_cuda_runs_on_when_cuda_visible_devices_hides_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML numbers every GPU of the machine, CUDA only the visible ones: with CUDA_VISIBLE_DEVICES=2,3 the suite's
    cuda:1 is NVML's GPU 3, whose utilisation is sampled (not GPU 1's, which another job may be using)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_parts

    handles: list[int] = []
    nvml = SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda index: handles.append(index),
                           nvmlDeviceGetUtilizationRates=lambda handle: SimpleNamespace(gpu=50))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    sampled = gpu_parts.Utilisation(torch.device("cuda", 1))
    assert sampled.source == "NVML" and handles == [3]
