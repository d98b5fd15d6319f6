"""--model ast on a tiny offline Audio Spectrogram Transformer checkpoint (transformers' ASTModel).

The checkpoint is an ``ASTForAudioClassification`` (as MIT/ast-finetuned-audioset-10-10-0.4593) with an
``ASTFeatureExtractor`` saved beside it, loaded through the same ``from_pretrained`` path a hub id takes.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_uid_dataset, tone
from safetensors.torch import load_file

from audiotune.cli import main
from audiotune.config import RunConfig
from audiotune.data.dataset import Collator, FeatureExtractor
from audiotune.data.features import kaldi_fbank
from audiotune.models.backbones import (
    SupportsAttention,
    SupportsExportConfig,
    build_backbone,
    input_spec,
    resolve_config,
)
from audiotune.models.backbones.ast import ASTBackbone
from audiotune.models.classifier import masked_pool
from audiotune.outputs import INPUT_SPEC_FILE

transformers = pytest.importorskip("transformers")

RATE = 16000
BINS, FRAMES = 16, 64  # mel bins x frames the tiny model reads (0.655 s of audio fills the frames)
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "num_mel_bins": BINS, "max_length": FRAMES, "patch_size": 8, "frequency_stride": 4, "time_stride": 4}
GRID = (3, 15)  # (16 - 8) // 4 + 1 patch rows, (64 - 8) // 4 + 1 patch columns
MEAN, STD = -5.0, 3.0  # the tiny extractor's normalisation (not the AudioSet defaults)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification checkpoint (head included) with random class tokens and position embeddings."""
    folder = tmp_path_factory.mktemp("ast") / "tiny-ast"
    torch.manual_seed(0)
    model = transformers.ASTForAudioClassification(transformers.ASTConfig(**TINY, num_labels=3))
    embeddings = model.audio_spectrogram_transformer.embeddings
    with torch.no_grad():  # initialised to zero: randomise them, so that positions and class tokens matter
        for tensor in (embeddings.cls_token, embeddings.distillation_token, embeddings.position_embeddings):
            tensor.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    transformers.ASTFeatureExtractor(sampling_rate=RATE, num_mel_bins=BINS, max_length=FRAMES, mean=MEAN,
                                     std=STD).save_pretrained(folder)
    return folder


def resolved(checkpoint: Path, **features: object) -> RunConfig:
    config = RunConfig()
    config.model.model, config.model.checkpoint = "ast", str(checkpoint)
    for name, value in features.items():
        setattr(config.features, name, value)
    return resolve_config(config)


@pytest.fixture(scope="module")
def config(checkpoint: Path) -> RunConfig:
    return resolved(checkpoint)


@pytest.fixture(scope="module")
def backbone(config: RunConfig) -> ASTBackbone:
    built = build_backbone(config)
    assert isinstance(built, ASTBackbone)
    return built.eval()


def pipeline_batch(config: RunConfig, clips: list[np.ndarray], pad_frame: torch.Tensor | None = None) -> dict:
    """What the data pipeline feeds the model: each clip's features alone, then the collator."""
    inputs = input_spec(config)
    extract = FeatureExtractor(inputs)
    items = []
    for clip in clips:
        feats = extract(clip, RATE)
        items.append({"uid": "clip", "inputs": feats, "length": feats.shape[0], "targets": torch.zeros(1)})
    return Collator(inputs.target_length, pad_frame)(items)


def extractor_inputs(checkpoint: Path, clips: list[np.ndarray]) -> torch.Tensor:
    """transformers' own ASTFeatureExtractor output for the clips."""
    extractor = transformers.AutoFeatureExtractor.from_pretrained(checkpoint)
    values = extractor(clips, sampling_rate=RATE, return_tensors="np")["input_values"]
    return torch.from_numpy(np.asarray(values))


def test_resolution_follows_the_checkpoints_extractor(checkpoint: Path, config: RunConfig, tmp_path: Path) -> None:
    f = input_spec(config)
    assert (f.features, f.num_mel_bins, f.target_length, f.dataset_mean, f.dataset_std) == ("fbank", BINS, FRAMES,
                                                                                          MEAN, STD)
    assert f.resample_rate == RATE and config.model.freeze is True and f.min_samples == 400
    # the user's options stay as given: the config says what was asked, the spec what the model reads
    f = config.features
    assert (f.num_mel_bins, f.target_length, f.dataset_mean) == (None, 0, None)
    own = input_spec(resolved(checkpoint, dataset_mean=-7.0, dataset_std=5.0))  # a new dataset's statistics are kept
    assert (own.dataset_mean, own.dataset_std) == (-7.0, 5.0)
    with pytest.raises(ValueError, match="reads 16 mel bins"):
        resolved(checkpoint, num_mel_bins=128)
    with pytest.raises(ValueError, match="exactly 64 frames"):
        resolved(checkpoint, target_length=1024)
    with pytest.raises(ValueError, match="Kaldi fbank"):
        resolved(checkpoint, features="mfcc")
    transformers.Wav2Vec2Config(hidden_size=32).save_pretrained(tmp_path / "w2v")
    with pytest.raises(ValueError, match="not an Audio Spectrogram Transformer"):
        resolved(tmp_path / "w2v")


def test_hidden_states_are_transformers_own(checkpoint: Path, backbone: ASTBackbone) -> None:
    """Full-length input: state 0 and the layers equal ASTModel's hidden_states, the last its last_hidden_state;
    the weights are the classification checkpoint's encoder, without the head."""
    assert type(backbone.model).__name__ == "ASTModel"
    assert (backbone.embedding_dim, backbone.num_layers, backbone.num_hidden_states) == (32, 2, 3)
    inputs = torch.randn(2, FRAMES, BINS, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([FRAMES, FRAMES])
    reference = transformers.ASTForAudioClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        states, mask = backbone.hidden_states(inputs, lengths)
        theirs = reference.audio_spectrogram_transformer(inputs, output_hidden_states=True)
    assert len(states) == len(theirs.hidden_states) == 3
    assert all(s.shape == (2, 2 + GRID[0] * GRID[1], 32) for s in states)
    for mine, hf in zip(states[:-1], theirs.hidden_states[:-1]):
        torch.testing.assert_close(mine, hf)
    torch.testing.assert_close(states[-1], theirs.last_hidden_state)  # final LayerNorm included
    assert not torch.allclose(states[-1], theirs.hidden_states[-1])
    assert mask[:, 2:].all() and not mask[:, :2].any()


def test_front_end_and_states_match_the_feature_extractor(checkpoint: Path, config: RunConfig,
                                                          backbone: ASTBackbone) -> None:
    """Waveforms -> audiotune's fbank, collator and padding vs ASTFeatureExtractor -> ASTModel, for a clip padded
    (0.4 s: 38 of 64 frames) and one cropped (0.9 s: 88 frames).

    Measured: kaldi_fbank in float64 equals the extractor (numpy float64 path) to 1e-6 (same settings); in float32,
    as the pipeline runs it, normalised inputs differ by < 1e-5 here (up to ~1e-4 for 128 bins: float32
    rounding in the quietest bins), hidden states by < 1e-4."""
    clips = [tone(300, 0.4, RATE, seed=1), tone(800, 0.9, RATE, seed=2)]
    theirs = extractor_inputs(checkpoint, clips)
    assert theirs.shape == (2, FRAMES, BINS)
    batch = pipeline_batch(config, clips)
    assert batch["lengths"].tolist() == [38, FRAMES]
    mine = backbone.model_inputs(batch["inputs"], batch["lengths"])
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)
    pad = (0.0 - MEAN) / (2 * STD)  # the extractor pads log-mel 0 before normalising
    assert torch.equal(mine[0, 38:], torch.full((FRAMES - 38, BINS), pad))
    exact = (kaldi_fbank(torch.from_numpy(clips[1]).double(), RATE, num_mel_bins=BINS)[:FRAMES] - MEAN) / (2 * STD)
    torch.testing.assert_close(exact.float(), theirs[1], atol=1e-5, rtol=0)
    reference = transformers.ASTModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        states, _ = backbone.hidden_states(batch["inputs"], batch["lengths"])
        out = reference(theirs, output_hidden_states=True)
    for mine_state, hf in zip(states, [*out.hidden_states[:-1], out.last_hidden_state]):
        torch.testing.assert_close(mine_state, hf, atol=1e-4, rtol=0)


def test_a_clips_embedding_does_not_depend_on_its_batch(config: RunConfig, backbone: ASTBackbone) -> None:
    """Alone, beside a longer clip, and with --pad silence: the same states (the padding is rewritten)."""
    short, long = tone(300, 0.3, RATE, seed=3), tone(600, 1.0, RATE, seed=4)
    silence = FeatureExtractor(dataclasses.replace(input_spec(config), pad="silence")).pad_frame(RATE)

    def pooled(clips: list[np.ndarray], pad_frame: torch.Tensor | None = None) -> list[torch.Tensor]:
        batch = pipeline_batch(config, clips, pad_frame)
        with torch.no_grad():
            states, mask = backbone.hidden_states(batch["inputs"], batch["lengths"])
        return [masked_pool(state, mask, "mean") for state in states]

    alone = pooled([short])
    for together in (pooled([long, short]), pooled([long, short], silence)):
        for a, b in zip(alone, together):
            torch.testing.assert_close(b[1:], a, atol=1e-5, rtol=0)
    assert not torch.allclose(alone[-1], pooled([long])[-1])
    # 0.3 s = 28 frames: patch columns start at 0, 4, ..., 24 (7 of 15), in each of the 3 rows
    batch = pipeline_batch(config, [long, short])
    mask = backbone.token_mask(batch["lengths"])
    assert mask.sum(1).tolist() == [45, 21] and not mask[:, :2].any()


def test_a_pad_option_is_refused_as_it_would_change_nothing(checkpoint: Path) -> None:
    """The backbone rewrites every padded frame with its extractor's (above): --pad silence would do nothing."""
    with pytest.raises(ValueError, match=r"^--pad silence: --model ast pads every clip with its feature extractor's"):
        resolved(checkpoint, pad="silence")


def test_attention_and_export_config(backbone: ASTBackbone, tmp_path: Path) -> None:
    assert isinstance(backbone, SupportsAttention) and isinstance(backbone, SupportsExportConfig)
    inputs = torch.randn(1, FRAMES, BINS, generator=torch.Generator().manual_seed(5))
    lengths = torch.tensor([40])
    with torch.no_grad():
        states, mask, attentions = backbone.hidden_states_with_attention(inputs, lengths)
        plain, _ = backbone.hidden_states(inputs, lengths)
    assert backbone.attention_layout() == (2, GRID, (BINS, FRAMES))  # every bin and frame read by a patch
    assert len(attentions) == 2 and attentions[0].shape == (1, 2, 47, 47)
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(1, 2, 47))
    for a, b in zip(states, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    backbone.export_config(tmp_path / "encoder")  # a -c folder: same architecture and front end
    again = input_spec(resolved(tmp_path / "encoder"))
    assert (again.num_mel_bins, again.target_length, again.dataset_mean, again.dataset_std) == (BINS, FRAMES, MEAN, STD)


# ------------------------------------------------------------------------------------------ command line


def train_args(ds: dict, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
            "--model", "ast", "-c", str(checkpoint), "-e", "2", "-bs", "4", "--clf_bottleneck", "8", "--seed", "1",
            "--cache_dir", str(ds["root"] / "cache"), *extra]


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> dict:
    """A frozen run on the 24-clip tone dataset (0.6-0.75 s clips: some padded, some cropped to 64 frames)."""
    ds = make_uid_dataset(tmp_path_factory.mktemp("ast_run"))
    run = ds["root"] / "run"
    assert main(train_args(ds, checkpoint, run)) == 0
    return {**ds, "run": run, "metrics": json.loads((run / "metrics.json").read_text())}


def embeddings(run: Path, csv: Path, out: Path, *extra: str) -> np.ndarray:
    assert main(["extract", "--run", str(run), "-d", str(csv), "--out", str(out), *extra]) == 0
    return np.stack(pd.read_parquet(out).sort_values("uid")["embedding"].to_numpy())


@pytest.mark.slow
def test_frozen_run_cache_rebuild_extract_and_probe(frozen_run: dict, checkpoint: Path, tmp_path: Path) -> None:
    ds, run, first = frozen_run, frozen_run["run"], frozen_run["metrics"]
    assert first["feature_cache"]["used"] and first["feature_cache"]["encoded"] == 24
    assert first["test"]["n"] == 4 and 0 <= first["test"]["accuracy"] <= 1
    config = (run / "config.yaml").read_text()
    assert "model: ast" in config and "freeze: true" in config and "target_length: 0" in config  # as the user gave
    read = json.loads((run / INPUT_SPEC_FILE).read_text())  # what the model read, from the checkpoint's extractor
    assert (read["features"], read["target_length"], read["num_mel_bins"], read["dataset_mean"]) == ("fbank", 64, 16,
                                                                                                     -5.0)
    assert (run / "encoder" / "config.json").is_file() and (run / "encoder" / "preprocessor_config.json").is_file()
    # a second run with another head reads every clip from the cache
    again = train_args(ds, checkpoint, tmp_path / "again", "--clf_bottleneck", "0")
    assert main(again) == 0
    second = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert second["feature_cache"]["used"] and second["feature_cache"]["encoded"] == 0
    assert second["feature_cache"]["reused"] == 24
    # the frozen encoder kept the checkpoint's weights
    original = transformers.ASTForAudioClassification.from_pretrained(checkpoint).audio_spectrogram_transformer
    trained = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(trained[f"backbone.model.{k}"], v) for k, v in original.state_dict().items())
    # evaluate and extract rebuild the run without the original checkpoint folder
    moved = checkpoint.with_name("moved")
    shutil.move(str(checkpoint), moved)
    try:
        test_csv = ds["split"] / "test.csv"
        assert main(["evaluate", "--run", str(run), "-d", str(test_csv), "-o", str(tmp_path / "ev")]) == 0
        scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())["data"]
        assert scored["accuracy"] == first["test"]["accuracy"]
        last = embeddings(run, test_csv, tmp_path / "pt.parquet", "--embedding_type", "pt")
        zero = embeddings(run, test_csv, tmp_path / "pt0.parquet", "--embedding_type", "pt", "--layer", "0")
        assert last.shape == (4, 32) and np.isfinite(last).all() and not np.allclose(last, zero)
        assert main(["attention", "--run", str(run), "--audio", str(ds["prefix"] / "fay0" / "waveform.wav"), "-o",
                     str(tmp_path / "maps")]) == 0
        assert len(list((tmp_path / "maps").glob("attention_*.png"))) == 3  # 2 layers + rollout
    finally:
        shutil.move(str(moved), checkpoint)
    assert main(["probe", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o",
                 str(tmp_path / "probe"), "--model", "ast", "-c", str(checkpoint), "-e", "2", "-bs", "4",
                 "--clf_bottleneck", "8", "--cache_dir", str(ds["root"] / "cache")]) == 0
    table = pd.read_csv(tmp_path / "probe" / "probe.csv")
    assert table["layer"].astype(str).tolist() == ["0", "1", "2", "weighted"]
    assert table["val_accuracy"].notna().all()
    assert json.loads((tmp_path / "probe" / "probe.json").read_text())["feature_cache"]["encoded"] == 0


@pytest.mark.slow
def test_fine_tuning_trains_the_encoder(frozen_run: dict, checkpoint: Path, tmp_path: Path) -> None:
    run = tmp_path / "tuned"
    assert main(train_args(frozen_run, checkpoint, run, "--freeze", "False", "-e", "1", "-lr", "0.01")) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert not metrics["feature_cache"]["used"]
    original = transformers.ASTModel.from_pretrained(checkpoint).state_dict()
    tuned = load_file(str(run / "model.safetensors"))
    layers = [k for k in original if k.startswith("layers.") and k.endswith("weight")]
    assert layers and all(not torch.equal(tuned[f"backbone.model.{k}"], original[k]) for k in layers)


@pytest.mark.slow
def test_onnx_export_reproduces_the_run(frozen_run: dict, tmp_path: Path) -> None:
    """The exported graph (fbank, normalisation, 64-frame padding/cropping, AST) on one padded batch of a
    padded and a cropped clip equals evaluate/extract on each clip alone (onnxruntime, 1e-4)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from audiotune.engine.export import export_run
    from audiotune.models.checkpoint import load_run

    out = tmp_path / "ast.onnx"
    described = export_run(frozen_run["run"], "onnx", out)
    assert described["model"] == "ast" and described["equal_length_batches"] is False
    assert described["preprocessing"]["in_graph"]["target_length"] == FRAMES
    assert "padding_frames" in described["preprocessing"]["in_graph_backbone"]
    clips = [tone(300, 0.5, RATE, seed=5), tone(800, 0.9, RATE, seed=6)]
    waves = torch.zeros(2, len(clips[1]))
    for row, clip in enumerate(clips):
        waves[row, :len(clip)] = torch.from_numpy(clip)
    lengths = torch.tensor([len(c) for c in clips])
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"waveforms": waves.numpy(), "lengths": lengths.numpy()})
    config, model = load_run(frozen_run["run"])
    want: list[list[np.ndarray]] = [[], [], []]
    for clip in clips:
        batch = pipeline_batch(config, [clip])
        with torch.no_grad():
            values = (model(batch["inputs"], batch["lengths"]),
                      model.extract_embedding(batch["inputs"], batch["lengths"], "ft"),
                      model.extract_embedding(batch["inputs"], batch["lengths"], "pt"))
        for slot, value in enumerate(values):
            want[slot].append(value.numpy())
    for name, a, b in zip(("logits", "embedding_ft", "embedding_pooled"), got, want):
        np.testing.assert_allclose(a, np.concatenate(b), rtol=1e-4, atol=1e-4, err_msg=name)
