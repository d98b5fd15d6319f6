"""Where a run's features are computed (``--features_on``), and the shared inference loop computing them on the
model's device: the same logits as the workers' features."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import tone

from audiotune.config import HeadSpec, RunConfig, check_config
from audiotune.data.checked_audio import scan_audio
from audiotune.data.input_spec import InputSpec
from audiotune.data.loading import make_dataset, make_loader
from audiotune.engine import inference
from audiotune.engine.inference import features_on_device, predict
from audiotune.models.backbones import input_spec
from audiotune.models.checkpoint import build_classifier

SMALL_ECAPA = {"channels": [16, 16, 48], "kernel_sizes": [5, 3, 1], "dilations": [1, 2, 1], "attention_channels": 8,
               "se_channels": 8, "res2net_scale": 2, "lin_neurons": 8}


def config_on(place: str, features: str = "fbank", accelerator: str = "cpu", rate: int = 16000) -> RunConfig:
    config = RunConfig()
    config.runtime.features_on, config.runtime.accelerator = place, accelerator
    config.features.features, config.features.num_mel_bins = features, 24
    config.audio.resample_rate = rate
    return config


def test_auto_computes_features_in_the_workers_on_the_cpu() -> None:
    spec = input_spec(config_on("auto"))
    assert not features_on_device(config_on("auto"), spec)
    assert features_on_device(config_on("device"), spec)  # the device path runs on the CPU too, when asked
    assert not features_on_device(config_on("workers"), spec)
    # nothing to compute for waveform inputs
    assert not features_on_device(config_on("device"), InputSpec(features="waveform"))


def test_a_config_files_unknown_place_is_refused() -> None:
    config = config_on("gpu")  # as a config.yaml can hold it: argparse never saw it
    with pytest.raises(ValueError, match="--features_on gpu: choose one of auto, device, workers"):
        check_config(config)
    check_config(config_on("device"))


def test_one_rate_per_file_keeps_features_in_the_workers_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    inference._say_once.cache_clear()
    config = config_on("device", features="mfcc", rate=0)
    assert not features_on_device(config, input_spec(config))
    assert not features_on_device(config, input_spec(config))
    said = [record for record in caplog.records if "--resample_rate 0" in record.getMessage()]
    assert len(said) == 1 and "data workers compute the mfcc features" in said[0].getMessage()


def _scoring(tmp_path: Path, place: str, features: str = "fbank") -> tuple:
    """A small model, a loader of 5 clips in batches of 4 on the CPU, and their config."""
    rows = []
    for k, seconds in enumerate([0.5, 0.9, 1.3, 0.45, 0.7]):
        path = tmp_path / f"c{k}.wav"
        sf.write(path, tone(200 + 90 * k, seconds, 16000, seed=k), 16000)
        rows.append({"uid": f"c{k}", "path": str(path)})
    config = config_on(place, features)
    config.features.n_mfcc, config.features.n_mels, config.train.batch_size = 20, 40, 4
    config.model.options.update(SMALL_ECAPA)
    config.heads = [HeadSpec("pitch", "categorical", ["pitch"], ["a", "b", "c"])]
    inputs = input_spec(config)
    table, _ = scan_audio(pd.DataFrame(rows).set_index("uid"), inputs.audio(), "x")
    torch.manual_seed(0)
    model = build_classifier(config)
    on_device = features_on_device(config, inputs)
    dataset = make_dataset(config, inputs, table, np.zeros((len(table), 3), np.float32), on_device=on_device)
    return model, make_loader(config, dataset, table, False, model.backbone.padding, device=torch.device("cpu")), config


@pytest.mark.parametrize("features", ["fbank", "mfcc"])
def test_a_scoring_pass_gives_the_same_logits_either_way(tmp_path: Path, features: str) -> None:
    results = {}
    for place in ("workers", "device"):
        model, loader, config = _scoring(tmp_path, place, features)
        assert ("waveforms" in next(iter(loader))) == (place == "device")
        results[place] = predict(model, loader, config)
    assert results["device"][0] == results["workers"][0]
    np.testing.assert_allclose(results["device"][1], results["workers"][1], atol=1e-4, rtol=0)


def test_a_check_runs_before_each_batch_and_can_stop_the_pass(tmp_path: Path) -> None:
    model, loader, config = _scoring(tmp_path, "workers")
    calls = []
    predict(model, loader, config, check=lambda: calls.append(len(calls)))
    assert len(calls) == len(loader) == 2

    def stop() -> None:
        raise RuntimeError("another process failed")

    with pytest.raises(RuntimeError, match="another process failed"):
        predict(model, loader, config, check=stop)


def test_each_result_comes_back_once_the_next_batchs_step_is_queued(tmp_path: Path) -> None:
    """The device computes batch k + 1 while the caller writes batch k's results: step k + 1 is called before
    result k is yielded; results come as float32 on the CPU, with the loader's own (CPU) batch."""
    model, loader, config = _scoring(tmp_path, "workers")
    events: list[str] = []

    def step(classifier, batch: dict) -> torch.Tensor:  # noqa: ANN001
        events.append(f"step {batch['uid'][0]}")
        return classifier.forward_batch(batch).to(torch.bfloat16)

    results = []
    for batch, result in inference.iterate_batches(model, loader, config, step):
        events.append(f"yield {batch['uid'][0]}")
        assert result.dtype == torch.float32 and result.device.type == "cpu"
        assert batch["targets"].device.type == "cpu"
        results.append(result)
    first, second = (batch["uid"][0] for batch in loader)
    assert events == [f"step {first}", f"step {second}", f"yield {first}", f"yield {second}"]
    np.testing.assert_allclose(np.concatenate(results), predict(model, loader, config)[1], atol=1e-2)
