"""Loader settings and the audio store's auto rule, from the device, the CPUs and the data."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import tone

from audiotune.config import RunConfig
from audiotune.data import loader_plan
from audiotune.data.audio import AudioSpec
from audiotune.data.input_spec import InputSpec
from audiotune.data.loader_plan import (
    InputCost,
    auto_workers,
    input_cost,
    loader_settings,
    training_passes,
    use_audio_store,
)
from audiotune.data.loading import make_dataset, make_loader
from audiotune.data.passes import StreamingLoader

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)  # a device object; nothing runs on it
LONG = 3600.0  # seconds of audio: a split long enough for workers
WAV_AT_RATE, RESAMPLED = InputCost(seconds=LONG), InputCost(resampled=True, seconds=LONG)
COMPRESSED = InputCost(compressed=True, seconds=LONG)


@pytest.mark.parametrize(("accelerator", "cpus", "cost", "workers"), [
    (True, 16, COMPRESSED, 8),  # an accelerator: every CPU but one decodes, at most 8
    (True, 16, WAV_AT_RATE, 4),  # PCM WAV at the model's rate: reading is cheap, at most 4
    (True, 4, RESAMPLED, 3),
    (True, 1, COMPRESSED, 0),  # one CPU: it drives the device and prepares the data itself
    (False, 2, RESAMPLED, 1),  # the CPU: the model's threads keep half
    (False, 2, WAV_AT_RATE, 0),
    (False, 16, COMPRESSED, 4),
    (False, 16, WAV_AT_RATE, 2),
    (True, 16, InputCost(compressed=True, seconds=60.0), 0),  # one minute of audio: a worker's start costs more
])
def test_auto_workers_follow_the_device_the_cpus_and_the_data(accelerator: bool, cpus: int, cost: InputCost,
                                                             workers: int) -> None:
    assert auto_workers(accelerator, cpus, cost) == workers


def pretend_cpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """This process may use ``count`` CPUs and its data is an hour of compressed audio."""
    monkeypatch.setattr(loader_plan, "usable_cpus", lambda: count)
    monkeypatch.setattr(loader_plan, "input_cost", lambda table, spec: COMPRESSED)


@pytest.fixture()
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cpus(monkeypatch, 8)


def test_settings_for_an_accelerator_and_for_the_cpu(eight_cpus: None) -> None:
    config, spec = RunConfig(), AudioSpec()
    gpu = loader_settings(config, CUDA, None, spec, passes=5)
    assert (gpu.num_workers, gpu.pin_memory, gpu.prefetch_factor, gpu.streamed) == (7, True, 4, True)
    cpu = loader_settings(config, CPU, None, spec, passes=1)
    assert (cpu.num_workers, cpu.pin_memory, cpu.prefetch_factor, cpu.streamed) == (4, False, 2, False)
    shared = loader_settings(config, CUDA, None, spec, passes=5, processes=4)  # 4 DDP processes share 8 CPUs
    assert shared.num_workers == 1


def test_an_explicit_worker_count_is_honoured(eight_cpus: None) -> None:
    config = RunConfig()
    config.runtime.num_workers = 0
    settings = loader_settings(config, CUDA, None, AudioSpec(), passes=5)
    assert (settings.num_workers, settings.prefetch_factor, settings.streamed) == (0, None, False)
    config.runtime.num_workers = 3
    assert loader_settings(config, CPU, None, AudioSpec()).num_workers == 3


def test_the_choice_is_logged_once(eight_cpus: None, caplog: pytest.LogCaptureFixture) -> None:
    loader_plan._LOGGED.clear()
    config = RunConfig()
    with caplog.at_level(logging.INFO, logger=loader_plan.__name__):
        for _ in range(3):
            loader_settings(config, CPU, None, AudioSpec(), passes=2)
    lines = [r.getMessage() for r in caplog.records if "data loader" in r.getMessage()]
    assert lines == ["data loader on cpu: 4 worker(s) (auto: 8 CPU(s) for this process, cpu, compressed inputs, "
                     "60.0 min of audio (0.0 MiB prepared)), 2 batches prefetched per worker, workers running "
                     "on from one pass into the next"]


def test_make_loader_applies_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cpus(monkeypatch, 4)
    table, config = pd.DataFrame({"path": ["a.wav"], "num_samples": [16000]}, index=["a"]), RunConfig()
    config.runtime.audio_cache = False
    dataset = make_dataset(config, InputSpec(features="waveform"), table, np.zeros((1, 0), np.float32))
    loader = make_loader(config, dataset, table, train=False, device=CPU, passes=3)  # never iterated
    assert isinstance(loader, StreamingLoader)
    assert (loader.num_workers, loader.prefetch_factor, loader.passes.total, loader.passes.ordered) == (2, 2, 3, False)
    once = make_loader(config, dataset, table, train=False, device=CPU, passes=1)
    assert not isinstance(once, StreamingLoader) and once.num_workers == 2


def write_table(folder: Path, kind: str, rate: int, count: int = 3, seconds: float = 1.0) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"clip{i}.{'ogg' if kind == 'OGG' else kind.lower()}"
        sf.write(path, tone(300 + 50 * i, seconds, rate), rate, format=kind)
        paths.append(str(path))
    return pd.DataFrame({"path": paths, "num_samples": [int(16000 * seconds)] * count},
                        index=pd.Index([f"c{i}" for i in range(count)], name="uid"))


@pytest.mark.parametrize(("kind", "rate", "compressed", "resampled"), [
    ("WAV", 16000, False, False), ("WAV", 8000, False, True), ("OGG", 16000, True, False),
    ("FLAC", 16000, True, False), ("FLAC", 44100, True, True),
])
def test_input_cost_reads_the_format_and_rate_of_the_files(tmp_path: Path, kind: str, rate: int, compressed: bool,
                                                          resampled: bool) -> None:
    cost = input_cost(write_table(tmp_path, kind, rate), AudioSpec())
    assert (cost.compressed, cost.resampled) == (compressed, resampled)
    assert cost.seconds == pytest.approx(3.0) and cost.bytes == 3 * 16000 * 4
    assert not input_cost(write_table(tmp_path / "keep", kind, rate), AudioSpec(resample_rate=0)).resampled


def test_training_passes_count_epochs_or_the_epochs_a_step_budget_takes() -> None:
    config = RunConfig()
    config.train.epochs = 7
    assert training_passes(config, 100) == 7
    config.train.training_steps, config.train.batch_size, config.train.accumulate_grad_batches = 30, 10, 2
    assert training_passes(config, 100) == 6  # 60 batches of 10 rows: 6 passes over 100 rows


@pytest.mark.parametrize(("kind", "rate", "passes", "budget", "used", "reason"), [
    ("OGG", 16000, 3, 20.0, True, "read 3 times, compressed inputs"),
    ("WAV", 44100, 2, 20.0, True, "read 2 times, resampled inputs"),
    ("OGG", 16000, 1, 20.0, False, "read once"),
    ("WAV", 16000, 5, 20.0, False, "nothing to save: PCM WAV at the model's rate"),
    ("OGG", 16000, 5, 1e-6, False, "exceeds the budget"),
])
def test_the_store_is_used_automatically_where_it_pays(tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str,
                                                      rate: int, passes: int, budget: float, used: bool,
                                                      reason: str) -> None:
    loader_plan._LOGGED.clear()
    config = RunConfig()
    config.runtime.audio_cache_gb, config.runtime.cache_dir = budget, str(tmp_path / "cache")
    table = write_table(tmp_path / "audio", kind, rate)
    with caplog.at_level(logging.INFO, logger=loader_plan.__name__):
        dataset = make_dataset(config, InputSpec(features="waveform"), table, np.zeros((3, 0), np.float32),
                               train=True, passes=passes)
    assert (dataset.store is not None) == used
    lines = [r.getMessage() for r in caplog.records if "audio store" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"audio store {'on' if used else 'off'} for 3 clips") \
        and reason in lines[0]
    dataset[0]
    assert any((tmp_path / "cache").rglob("*.safetensors")) == used


@pytest.mark.parametrize("forced", [True, False])
def test_true_and_false_force_the_store(tmp_path: Path, forced: bool) -> None:
    config = RunConfig()
    config.runtime.audio_cache = forced
    for kind, rate, passes in (("WAV", 16000, 5), ("OGG", 44100, 1)):
        table = write_table(tmp_path / f"{kind}{rate}", kind, rate)
        assert use_audio_store(config, table, AudioSpec(), passes, tmp_path) is forced
