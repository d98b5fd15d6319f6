"""Where a run's features are computed (``--features_on``), and the shared inference loop computing them on the
model's device: the same logits as the workers' features."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import OnDevice, tone

from audiotune.config import HeadSpec, RunConfig, check_config
from audiotune.data.batch_features import batch_lengths
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


def _scoring(tmp_path: Path, place: str, features: str = "fbank",
             setup: Callable[[RunConfig], None] | None = None) -> tuple:
    """A small model, a loader of 5 clips in batches of 4 on the CPU, and their config (changed by ``setup``)."""
    rows = []
    for k, seconds in enumerate([0.5, 0.9, 1.3, 0.45, 0.7]):
        path = tmp_path / f"c{k}.wav"
        sf.write(path, tone(200 + 90 * k, seconds, 16000, seed=k), 16000)
        rows.append({"uid": f"c{k}", "path": str(path)})
    config = config_on(place, features)
    config.features.n_mfcc, config.features.n_mels, config.train.batch_size = 20, 40, 4
    config.model.options.update(SMALL_ECAPA)
    config.heads = [HeadSpec("pitch", "categorical", ["pitch"], ["a", "b", "c"])]
    if setup is not None:
        setup(config)
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


def _queued_on_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches moved to the model's device stand for ones on an accelerator (:class:`OnDevice`), and each result is
    read back only where the loop waits for it (:func:`~audiotune.engine.device.to_host`'s copy, consumed later)."""
    move = inference.move_batch

    def moved(batch: dict, device: torch.device) -> dict:
        return {key: value.as_subclass(OnDevice) if isinstance(value, torch.Tensor) else value
                for key, value in move(batch, device).items()}

    def to_host(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
        assert isinstance(tensor, OnDevice)  # computed from the batch on the device

        def landed() -> torch.Tensor:
            with OnDevice.read_back():
                return tensor.detach().float().cpu().as_subclass(torch.Tensor)

        return landed

    monkeypatch.setattr(inference, "move_batch", moved)
    monkeypatch.setattr(inference, "to_host", to_host)


# what evaluate (logits), the feature cache (every state pooled) and extract (each embedding type) compute per batch
SCORING_STEPS = {
    "logits": lambda model, batch: model.forward_batch(batch),
    **{f"cache {mode}": (lambda mode: lambda model, batch: model.pooled_states(batch["inputs"], batch_lengths(batch),
                                                                              mode))(mode)
       for mode in ("mean", "sum", "max")},
    **{f"{kind} {pooling}": (lambda kind, layer, pooling: lambda model, batch: model.extract_embedding(
        batch["inputs"], batch_lengths(batch), kind, layer, pooling))(kind, layer, pooling)
       for kind, layer, pooling in [("pt", -1, "mean"), ("pt", 0, "sum"), ("pt", None, "max"), ("wt", None, "mean"),
                                    ("st", None, None), ("ft", None, "mean"), ("ft", None, "sum")]},
}


def _every_head_input(config: RunConfig) -> None:
    """A weighted sum, a shared dense layer and a frame activation: every embedding type has something to read."""
    config.classifier.weighted, config.classifier.shared_dense = True, True
    config.classifier.frame_activation, config.classifier.pool_drop_last = "relu", True


@pytest.mark.parametrize("place", ["workers", "device"])
def test_scoring_a_batch_reads_nothing_back_from_the_device(tmp_path: Path, place: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """ECAPA-TDNN scores, pools and embeds each batch without waiting for the device (features in the workers or
    on the device): only each result's copy is read back, after the next batch is queued."""
    model, loader, config = _scoring(tmp_path, place, setup=_every_head_input)
    expected = {name: [out for _, out in inference.iterate_batches(model, loader, config, step)]
                for name, step in SCORING_STEPS.items()}
    _queued_on_device(monkeypatch)
    for name, step in SCORING_STEPS.items():
        got = [out for _, out in inference.iterate_batches(model, loader, config, step)]
        assert all(torch.equal(a, b) for a, b in zip(got, expected[name], strict=True)), name


def test_a_pretrained_encoder_scores_long_clips_window_by_window_without_reading_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hf_checkpoints: dict[str, Path]) -> None:
    """A Hugging Face encoder (standing for one on a GPU: its outputs on the device) over clips longer than
    --max_window: the windows' frames and masks, their pooling and every embedding stay on the device."""
    def encoder(config: RunConfig) -> None:
        config.model.model, config.model.checkpoint = "hf", str(hf_checkpoints["w2v_layer"])
        config.features.features = None  # the model's own: waveforms
        config.model.options["max_window"] = 0.3  # the clips (0.45 to 1.3 s) are encoded in 2 to 5 windows
        _every_head_input(config)

    model, loader, config = _scoring(tmp_path, "workers", setup=encoder)
    expected = {name: [out for _, out in inference.iterate_batches(model, loader, config, step)]
                for name, step in SCORING_STEPS.items()}
    forward = model.backbone.model.forward

    def on_device(*args: object, **kwargs: object) -> object:
        def plain(value: object) -> object:
            return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value
        out = forward(*map(plain, args), **{key: plain(value) for key, value in kwargs.items()})
        for key, value in out.items():
            out[key] = value.as_subclass(OnDevice) if isinstance(value, torch.Tensor) else \
                tuple(state.as_subclass(OnDevice) for state in value)
        return out

    monkeypatch.setattr(model.backbone.model, "forward", on_device)
    _queued_on_device(monkeypatch)
    for name, step in SCORING_STEPS.items():
        got = [out for _, out in inference.iterate_batches(model, loader, config, step)]
        assert all(torch.equal(a, b) for a, b in zip(got, expected[name], strict=True)), name
