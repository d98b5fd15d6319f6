"""WhisperBackbone on a tiny offline Whisper checkpoint (d_model 32, 2 layers, 16 mel bins, a 1-s window of
50 positions): its log-mel front end and hidden states against transformers' own, batch independence,
windows, a frozen run through the command line with the feature cache and probe, and ONNX export."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_uid_dataset, tone

from audiotune.cli import main
from audiotune.config import RunConfig
from audiotune.models.backbones import (
    SupportsFeatureProjectionFreeze,
    build_backbone,
    input_spec,
    reads_option,
    resolve_config,
)
from audiotune.models.backbones.whisper import WhisperBackbone, WhisperOptions, front_end_settings
from audiotune.outputs import INPUT_SPEC_FILE

RATE, HOP, N_FFT, MELS, POSITIONS = 16000, 160, 400, 16, 50
WINDOW = 2 * POSITIONS * HOP  # samples of the stock encoder's input: 1 s
TINY = {"d_model": 32, "encoder_layers": 2, "decoder_layers": 1, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_mel_bins": MELS,
        "max_source_positions": POSITIONS, "max_target_positions": 16, "vocab_size": 100, "pad_token_id": 0,
        "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 3}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ``WhisperForConditionalGeneration`` (encoder keys under ``model.encoder.``, as openai/whisper-*)
    with its feature extractor, saved as a hub id's directory."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("whisper") / "tiny"
    transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**TINY)).save_pretrained(directory)
    transformers.WhisperFeatureExtractor(feature_size=MELS, sampling_rate=RATE, hop_length=HOP, chunk_length=1,
                                         n_fft=N_FFT).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def backbone(checkpoint: Path) -> WhisperBackbone:
    return WhisperBackbone(WhisperOptions(str(checkpoint))).eval()


@pytest.fixture(scope="module")
def stock(checkpoint: Path) -> tuple:
    """transformers' own extractor and encoder of the same checkpoint."""
    import transformers

    model = transformers.WhisperForConditionalGeneration.from_pretrained(checkpoint).eval()
    return transformers.WhisperFeatureExtractor.from_pretrained(checkpoint), model.model.encoder


def clip(samples: int, seed: int) -> torch.Tensor:
    """A tone with noise, ``samples`` long."""
    t = torch.arange(samples) / RATE
    noise = torch.randn(samples, generator=torch.Generator().manual_seed(seed))
    return 0.3 * torch.sin(2 * math.pi * (250 + 60 * seed) * t) + 0.05 * noise


def batch(*clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(c) for c in clips])
    out = torch.zeros(len(clips), int(lengths.max()))
    for row, c in enumerate(clips):
        out[row, :len(c)] = c
    return out, lengths


def stock_features(extractor, wave: torch.Tensor) -> torch.Tensor:
    """The extractor's log-mel of one clip, padded (or cropped) to the 1-s window."""
    return torch.from_numpy(extractor(wave.numpy(), sampling_rate=RATE, return_tensors="np").input_features)


def test_counts_and_settings(backbone: WhisperBackbone, checkpoint: Path) -> None:
    assert backbone.padding.exact
    assert (backbone.embedding_dim, backbone.num_layers, backbone.num_hidden_states) == (32, 2, 3)
    assert backbone.frame_hop == 2 * HOP and backbone.window == WINDOW
    assert type(backbone.model).__name__ == "WhisperEncoder"  # the decoder is never built
    assert front_end_settings(str(checkpoint)) == {"sampling_rate": RATE, "hop_length": HOP, "n_fft": N_FFT,
                                                   "num_mel_bins": MELS, "window_samples": WINDOW}
    # the mel filters and window come from preprocessor_config.json: no weights of their own
    assert not any(key.startswith(("mel_filters", "stft_window")) for key in backbone.state_dict())


def test_the_cache_key_changes_with_the_extractor_settings(checkpoint: Path, backbone: WhisperBackbone,
                                                           tmp_path: Path) -> None:
    """The extractor's settings are no weights: a checkpoint whose preprocessor_config.json was edited in place
    (same weights) encodes other features, so its cached features are not reused."""
    from audiotune.engine.cache import encoder_digest

    copy = tmp_path / "edited"
    shutil.copytree(checkpoint, copy)
    assert encoder_digest(WhisperBackbone(WhisperOptions(str(copy)))) == encoder_digest(backbone)
    extractor = json.loads((copy / "preprocessor_config.json").read_text())
    (copy / "preprocessor_config.json").write_text(json.dumps({**extractor, "hop_length": HOP // 2}))
    edited = WhisperBackbone(WhisperOptions(str(copy)))
    assert edited.state_dict().keys() == backbone.state_dict().keys()
    assert all(torch.equal(edited.state_dict()[k], v) for k, v in backbone.state_dict().items())
    assert edited.front_end_settings["hop_length"] == HOP // 2
    assert encoder_digest(edited) != encoder_digest(backbone)


def test_log_mel_equals_the_feature_extractor(backbone: WhisperBackbone, stock: tuple) -> None:
    """A full-window clip, and a shorter one the extractor pads to the window: equal on the clip's frames."""
    extractor, _ = stock
    for wave in (clip(WINDOW, 1), clip(8037, 2)):
        mel, frames = backbone.log_mel(*batch(wave))
        assert int(frames) == math.ceil(len(wave) / HOP) == mel.shape[2]
        torch.testing.assert_close(mel, stock_features(extractor, wave)[..., :mel.shape[2]], atol=1e-5, rtol=0)


def test_hidden_states_equal_transformers_on_a_full_window(backbone: WhisperBackbone, stock: tuple) -> None:
    extractor, encoder = stock
    wave = clip(WINDOW, 3)
    with torch.no_grad():
        states, mask = backbone.hidden_states(*batch(wave))
        out = encoder(stock_features(extractor, wave), output_hidden_states=True)
    assert mask.shape == (1, POSITIONS) and mask.all()
    assert len(states) == len(out.hidden_states) == 3
    for mine, theirs in zip(states, out.hidden_states):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(states[-1], out.last_hidden_state, atol=1e-5, rtol=0)


def test_stock_padding_changes_short_clips(backbone: WhisperBackbone, stock: tuple) -> None:
    """The stock encoder attends to the padding of its 30-s (here 1-s) input: a short clip's frames differ."""
    extractor, encoder = stock
    wave = clip(8000, 4)
    with torch.no_grad():
        states, mask = backbone.hidden_states(*batch(wave))
        out = encoder(stock_features(extractor, wave), output_hidden_states=True)
    frames = int(mask.sum())
    assert frames == 25
    gaps = [float((mine[0] - theirs[0, :frames]).abs().max() / theirs[0, :frames].abs().max())
            for mine, theirs in zip(states, out.hidden_states)]
    # state 0 differs only where conv2 sees the padding (the last frame); the layers spread the attention to it
    assert 1e-4 < gaps[0] and all(gap > 1e-3 for gap in gaps[1:])
    assert torch.allclose(states[0][0, :-1], out.hidden_states[0][0, :frames - 1], atol=1e-5)


def test_a_clip_does_not_depend_on_its_batch(backbone: WhisperBackbone) -> None:
    short, other, long = clip(6037, 5), clip(8000, 6), clip(2 * WINDOW + 3000, 7)
    with torch.no_grad():
        alone, alone_mask = backbone.hidden_states(*batch(short))
        batched, mask = backbone.hidden_states(*batch(long, short, other))
    frames = backbone.frame_lengths(torch.tensor([WINDOW, 6037, 8000]))
    assert frames.tolist() == [50, 19, 25]
    assert mask.sum(1).tolist() == [50 + 50 + 10, 19, 25] and alone_mask.sum().item() == 19
    assert mask.shape[1] == batched[0].shape[1] == 110
    for a, b in zip(alone, batched):
        torch.testing.assert_close(b[1, :19], a[0], atol=1e-5, rtol=0)
    assert all(torch.isfinite(s).all() for s in batched)


def test_windows_are_encoded_as_clips_of_their_own(backbone: WhisperBackbone, stock: tuple,
                                                   checkpoint: Path) -> None:
    """A 2.3-s clip: two full windows (each exactly what the stock encoder gives that second) and a 0.3-s one."""
    extractor, encoder = stock
    wave = clip(2 * WINDOW + 4800, 8)
    with torch.no_grad():
        states, mask = backbone.hidden_states(*batch(wave))
        assert mask.sum().item() == 50 + 50 + 15
        for k in range(2):
            out = encoder(stock_features(extractor, wave[k * WINDOW:(k + 1) * WINDOW]), output_hidden_states=True)
            torch.testing.assert_close(states[-1][0, 50 * k:50 * (k + 1)], out.last_hidden_state[0], atol=1e-5,
                                       rtol=0)
        tail, _ = backbone.hidden_states(*batch(wave[2 * WINDOW:]))
        torch.testing.assert_close(states[-1][0, 100:], tail[-1][0], atol=1e-5, rtol=0)
        # shorter windows from a config's max_window, in steps of whole frames
        halves = WhisperBackbone(WhisperOptions(str(checkpoint), max_window=0.5)).eval()
        assert halves.window == WINDOW // 2
        halved, halved_mask = halves.hidden_states(*batch(wave))
        assert halved_mask.sum().item() == 4 * 25 + 15
    with pytest.raises(ValueError, match="--max_window 1.5: Whisper encodes windows of 0.02 to 1 seconds"):
        WhisperBackbone(WhisperOptions(str(checkpoint), max_window=1.5), pretrained=False)


def test_resolve_build_load_and_export_config(checkpoint: Path, backbone: WhisperBackbone, tmp_path: Path) -> None:
    config = RunConfig()
    config.model.model, config.model.checkpoint, config.audio.resample_rate = "whisper", str(checkpoint), 8000
    resolve_config(config)
    inputs = input_spec(config)
    assert inputs.features == "waveform" and inputs.waveform_norm is False
    assert config.model.freeze is True and inputs.resample_rate == RATE and config.audio.resample_rate == 8000
    assert config.model.options["max_window"] == 1.0 and inputs.min_samples == N_FFT
    reference = backbone.state_dict()
    built = build_backbone(config)
    assert isinstance(built, WhisperBackbone)
    assert all(torch.equal(v, reference[k]) for k, v in built.state_dict().items())
    fresh = build_backbone(config, pretrained=False)
    assert fresh.state_dict().keys() == reference.keys()
    assert not torch.equal(fresh.state_dict()["model.conv1.weight"], reference["model.conv1.weight"])
    fresh.load_pretrained(str(checkpoint))
    assert all(torch.equal(v, reference[k]) for k, v in fresh.state_dict().items())
    # what a run directory stores rebuilds the same front end and architecture offline
    backbone.export_config(tmp_path / "encoder")
    rebuilt = WhisperBackbone(WhisperOptions(str(tmp_path / "encoder")), pretrained=False)
    assert torch.equal(rebuilt.mel_filters, backbone.mel_filters) and rebuilt.window == backbone.window
    config.model.options["max_window"] = 2.0
    with pytest.raises(ValueError, match="encodes at most 1 seconds"):
        resolve_config(config)
    not_whisper = tmp_path / "w2v"
    import transformers
    transformers.Wav2Vec2Config(hidden_size=32).save_pretrained(not_whisper)
    config.model.checkpoint, config.model.options["max_window"] = str(not_whisper), 0.0
    with pytest.raises(ValueError, match="a wav2vec2 model, not Whisper"):
        resolve_config(config)


def test_freeze_feature_encoder(checkpoint: Path) -> None:
    backbone = WhisperBackbone(WhisperOptions(str(checkpoint)), pretrained=False)
    backbone.freeze_feature_encoder()
    frozen = {id(p) for p in [*backbone.model.conv1.parameters(), *backbone.model.conv2.parameters(),
                              backbone.model.embed_positions.weight]}  # the positions never train (as in HF)
    assert len(frozen) == 5
    assert all(p.requires_grad is (id(p) not in frozen) for p in backbone.parameters())
    # its second convolution already outputs the encoder's width: no projection to freeze, no flag for one
    assert not isinstance(backbone, SupportsFeatureProjectionFreeze)
    assert not reads_option("whisper", "model.freeze_feature_projection")


def test_training_mode_keeps_every_layer_and_takes_gradients(checkpoint: Path) -> None:
    backbone = WhisperBackbone(WhisperOptions(str(checkpoint))).train()
    states, _ = backbone.hidden_states(*batch(clip(7000, 9), clip(5000, 10)))
    assert len(states) == 3
    states[-1].sum().backward()
    assert backbone.model.conv1.weight.grad is not None


def test_bf16_autocast_keeps_the_front_end_in_float32(backbone: WhisperBackbone) -> None:
    waves, lengths = batch(clip(9000, 11), clip(4000, 12))
    with torch.no_grad():
        reference, mask = backbone.hidden_states(waves, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            states, _ = backbone.hidden_states(waves, lengths)
    for a, b in zip(states, reference):
        assert torch.isfinite(a).all()
        assert (a.float() - b)[mask].abs().max() <= 0.05 * b[mask].abs().max()


# ---------------------------------------------------------------------------------------------- command line

@pytest.fixture(scope="module")
def frozen_run(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One frozen training run on a generated dataset (0.6-0.75-s clips), its cache filled."""
    ds = make_uid_dataset(tmp_path_factory.mktemp("whisper_run"))
    run = ds["root"] / "run"
    args = ["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "--model", "whisper",
            "-c", str(checkpoint), "-e", "2", "-bs", "4", "--clf_bottleneck", "8", "--seed", "1", "--cache_dir",
            str(ds["root"] / "cache")]
    assert main([*args, "-o", str(run)]) == 0
    return {**ds, "run": run, "args": args}


@pytest.mark.slow
def test_frozen_run_uses_the_feature_cache_then_hits_it(frozen_run: dict) -> None:
    first = json.loads((frozen_run["run"] / "metrics.json").read_text())
    assert first["feature_cache"]["used"] and first["feature_cache"]["encoded"] == 24
    assert first["test"]["n"] == 4
    config = (frozen_run["run"] / "config.yaml").read_text()
    assert "features: null" in config and "freeze: true" in config and "max_window: 1.0" in config  # as given
    read = json.loads((frozen_run["run"] / INPUT_SPEC_FILE).read_text())  # what the model read
    assert (read["features"], read["waveform_norm"], read["resample_rate"]) == ("waveform", False, RATE)
    again = frozen_run["root"] / "again"
    assert main([*frozen_run["args"], "-o", str(again), "--final_dropout", "0.1"]) == 0
    second = json.loads((again / "metrics.json").read_text())
    assert second["feature_cache"]["encoded"] == 0 and second["feature_cache"]["reused"] == 24


@pytest.mark.slow
def test_extract_rebuilds_offline_and_probe_covers_every_layer(frozen_run: dict, checkpoint: Path,
                                                                tmp_path: Path) -> None:
    test_csv = frozen_run["split"] / "test.csv"
    moved = tmp_path / "moved"
    shutil.move(str(checkpoint), moved)  # the run rebuilds from its own encoder/ folder
    try:
        layers = []
        for layer in ("0", "-1"):
            out = tmp_path / f"pt{layer}.parquet"
            assert main(["extract", "--run", str(frozen_run["run"]), "-d", str(test_csv), "--out", str(out),
                         "--embedding_type", "pt", "--layer", layer]) == 0
            layers.append(np.stack(pd.read_parquet(out).sort_values("uid")["embedding"].to_numpy()))
    finally:
        shutil.move(str(moved), checkpoint)
    assert layers[0].shape == (4, 32) and np.isfinite(layers[0]).all() and not np.allclose(*layers)
    probe = tmp_path / "probe"
    assert main(["probe", "-i", str(frozen_run["prefix"]), "-d", str(frozen_run["split"]), "-l",
                 str(frozen_run["labels"]), "-o", str(probe), "--model", "whisper", "-c", str(checkpoint), "-e", "2",
                 "-bs", "4", "--clf_bottleneck", "8", "--cache_dir", str(frozen_run["root"] / "cache")]) == 0
    table = pd.read_csv(probe / "probe.csv")
    assert table["layer"].astype(str).tolist() == ["0", "1", "2", "weighted"]
    assert table["val_accuracy"].notna().all()
    assert json.loads((probe / "probe.json").read_text())["feature_cache"]["encoded"] == 0


def test_max_window_is_an_option_of_whisper_and_hf_only(capsys: pytest.CaptureFixture) -> None:
    """Both backbones declare --max_window: one flag, shown with either, refused with any other backbone."""
    from audiotune.cli import build_parser, config_from_args

    parse = build_parser().parse_args
    assert config_from_args(parse(["train", "--model", "whisper", "--max_window", "0.5"])).model.options == \
        {"max_window": 0.5}
    with pytest.raises(ValueError, match=r"--max_window \(--model hf, whisper\)"):
        config_from_args(parse(["train", "--model", "ecapa_tdnn", "--max_window", "0.5"]))


@pytest.mark.slow
def test_onnx_export_reproduces_each_clip_of_a_padded_batch(frozen_run: dict, tmp_path: Path) -> None:
    """torch.stft and the masks go through the dynamo exporter; one padded batch gives each clip its own result."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from audiotune.engine.export import export_run
    from audiotune.models.checkpoint import load_run

    out = tmp_path / "whisper.onnx"
    described = export_run(frozen_run["run"], "onnx", out)
    assert described["preprocessing"]["in_graph_backbone"]["n_fft"] == N_FFT
    assert described["max_samples"] == WINDOW and described["min_samples"] == N_FFT
    assert described["equal_length_batches"] is False
    assert max(described["verified"]["max_abs_difference"].values()) < 1e-4
    _, model = load_run(frozen_run["run"])
    two = [torch.from_numpy(tone(300, 0.45, RATE, seed=3)), torch.from_numpy(tone(800, 0.9, RATE, seed=4))]
    with torch.no_grad():
        want = [torch.cat(parts).numpy() for parts in zip(*(
            model.forward_with_embeddings(*batch(wave), "mean") for wave in two))]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    waves, lengths = batch(*two)
    got = session.run(None, {"waveforms": waves.numpy(), "lengths": lengths.numpy()})
    # outputs: logits, ft embedding, pooled; forward_with_embeddings: logits, pooled, ft
    for name, a, b in zip(("logits", "embedding_ft", "embedding_pooled"), got, (want[0], want[2], want[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.slow
def test_an_exported_model_gives_a_clip_longer_than_its_window_nan_and_scores_the_others(frozen_run: dict,
                                                                                        tmp_path: Path) -> None:
    """The graph holds one window (1 s here): a batch with a longer clip failed whole (the position embeddings do
    not reach past one window); the long clip gets NaN, a clip within it its score as alone."""
    from audiotune.engine.export import export_run

    out = tmp_path / "m.pt"
    export_run(frozen_run["run"], "torchscript", out)
    graph = torch.jit.load(str(out))
    short, long = clip(8000, 1), clip(17600, 2)
    alone = graph(short[None], torch.tensor([8000]))[0]
    waves = torch.zeros(2, 17600)
    waves[0, :8000], waves[1] = short, long
    logits = graph(waves, torch.tensor([8000, 17600]))[0]
    assert torch.isnan(logits[1]).all()
    torch.testing.assert_close(logits[0], alone[0], atol=1e-5, rtol=0)
