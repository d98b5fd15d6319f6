"""`audiotune export`: ONNX and TorchScript graphs with a dynamic time axis that reproduce the trained model.

The reference is what `evaluate` / `extract` compute for each clip on its own: the pipeline's feature
extractor and collator, then the run's classifier loaded by `load_run`.
"""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tone

from audiotune.cli import main
from audiotune.data.dataset import Collator, FeatureExtractor
from audiotune.data.features import kaldi_fbank
from audiotune.data.input_spec import InputSpec
from audiotune.engine import export
from audiotune.engine.export import FrontEnd, export_run, sidecar_path
from audiotune.models.backbones import input_spec
from audiotune.models.checkpoint import load_run

RATE = 16000


def padded(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips zero-padded into one batch, with their lengths: the exported graph's inputs."""
    waves = torch.zeros(len(clips), max(len(c) for c in clips))
    for row, clip in enumerate(clips):
        waves[row, :len(clip)] = torch.from_numpy(clip)
    return waves, torch.tensor([len(c) for c in clips], dtype=torch.long)


def pipeline_batch(features: InputSpec, clips: list[np.ndarray]) -> dict:
    """The data pipeline's batch of clips each prepared alone (FeatureExtractor, then the Collator)."""
    extract = FeatureExtractor(features)
    items = []
    for clip in clips:
        feats = extract(clip, RATE)
        items.append({"uid": "clip", "inputs": feats, "length": feats.shape[0], "targets": torch.zeros(1)})
    return Collator(features.target_length)(items)


def reference(run: Path, clips: list[np.ndarray]) -> list[np.ndarray]:
    """Logits, ft embedding and pooled embedding of each clip alone, as evaluate / extract compute them."""
    config, model = load_run(run)
    pooled_kind = "wt" if config.classifier.weighted else "pt"
    outputs: list[list[np.ndarray]] = [[], [], []]
    for clip in clips:
        batch = pipeline_batch(input_spec(config), [clip])
        with torch.no_grad():
            for slot, value in enumerate((model(batch["inputs"], batch["lengths"]),
                                          model.extract_embedding(batch["inputs"], batch["lengths"], "ft"),
                                          model.extract_embedding(batch["inputs"], batch["lengths"], pooled_kind))):
                outputs[slot].append(value.numpy())
    return [np.concatenate(values) for values in outputs]


def assert_matches(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for name, a, b in zip(export.OUTPUT_NAMES, got, want):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


def clips() -> list[np.ndarray]:
    """Two clips of different lengths (0.8 s and 1.3 s) and pitches."""
    return [tone(300, 0.8, RATE, seed=3), tone(800, 1.3, RATE, seed=4)]


# ---------------------------------------------------------------------------------------------- front end

FRONT_ENDS = {
    "fbank_norms": InputSpec(features="fbank", num_mel_bins=24, utterance_norm="meanvar", dataset_mean=-3.0,
                                 dataset_std=2.5),
    "fbank_target_length": InputSpec(features="fbank", num_mel_bins=16, target_length=60),
    "waveform_norm": InputSpec(features="waveform", waveform_norm=True),
    "waveform": InputSpec(features="waveform"),
}


@pytest.mark.parametrize("name", sorted(FRONT_ENDS))
def test_front_end_gives_each_clip_of_a_padded_batch_what_the_pipeline_gives_it_alone(name: str) -> None:
    features = FRONT_ENDS[name]
    batch_clips = [tone(300, 0.5, RATE, seed=1), tone(700, 0.93, RATE, seed=2)]  # 48 and 91 fbank frames
    inputs, lengths = FrontEnd(features, RATE)(*padded(batch_clips))
    want = pipeline_batch(features, batch_clips)
    assert lengths.tolist() == want["lengths"].tolist()
    torch.testing.assert_close(inputs, want["inputs"], rtol=1e-4, atol=1e-4)


def test_front_end_mfcc_matches_the_pipeline_for_equal_lengths() -> None:
    features = InputSpec(features="mfcc", n_mfcc=13, n_mels=40, utterance_norm="mean")
    batch_clips = [tone(300, 0.6, RATE, seed=1), tone(900, 0.6, RATE, seed=2)]
    inputs, lengths = FrontEnd(features, RATE)(*padded(batch_clips))
    want = pipeline_batch(features, batch_clips)
    assert lengths.tolist() == want["lengths"].tolist()
    torch.testing.assert_close(inputs, want["inputs"], rtol=1e-4, atol=1e-4)


def test_the_description_names_the_fbank_settings_the_graph_computes_with() -> None:
    defaults = {name: p.default for name, p in inspect.signature(kaldi_fbank).parameters.items()}
    described = {key: export.FBANK[key] for key in ("frame_length_ms", "frame_shift_ms", "preemphasis", "low_freq",
                                                    "high_freq", "remove_dc_offset")}
    assert described == {key: defaults[key] for key in described} and export.FBANK["window"] == defaults["window_type"]


def test_the_description_is_named_after_the_whole_file_name() -> None:
    assert sidecar_path("deploy/model.onnx") == Path("deploy/model.onnx.json")  # as earlier exports named it
    assert sidecar_path("deploy/model.v2.pt").name == "model.v2.pt.json"


# ---------------------------------------------------------------------------------------------- bad input

def test_not_a_run_directory_is_an_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "no_run"
    missing.mkdir()
    out = tmp_path / "model.onnx"
    assert main(["export", "--run", str(missing), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not a run directory" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not sidecar_path(out).exists()


def test_unknown_format_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    with pytest.raises(SystemExit) as stopped:
        main(["export", "--run", str(run), "--format", "tflite", "--out", str(tmp_path / "m.tflite")])
    assert stopped.value.code == 2 and "tflite" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--format 'tflite': choose one of onnx, torchscript"):
        export_run(run, "tflite", tmp_path / "m.tflite")


@pytest.mark.parametrize(("fmt", "name", "message"), [
    ("torchscript", "m.onnx", "a onnx file name for --format torchscript; name it m.pt (or give --format onnx)"),
    ("onnx", "m.pt", "a torchscript file name for --format onnx; name it m.onnx (or give --format torchscript)")])
def test_an_output_named_as_the_other_format_is_an_error(tmp_path: Path, fmt: str, name: str, message: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")  # never read: the output is checked first
    with pytest.raises(ValueError, match=re.escape(f"--out {tmp_path / name}: {message}")):
        export_run(run, fmt, tmp_path / name)


def test_unwritable_output_is_an_error_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")  # never read: the output is checked first
    (tmp_path / "file").write_text("in the way")
    out = tmp_path / "file" / "model.onnx"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2
    assert str(out) in capsys.readouterr().err
    assert main(["export", "--run", str(run), "--out", str(run / "config.yaml")]) == 2
    assert "a file of the run itself" in capsys.readouterr().err


def test_a_file_of_the_run_is_never_replaced_by_an_export_or_its_description(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (run / "metrics.json").write_text("{}\n")
    (run / "predictions.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match=r"--out .*metrics: metrics.json is a file of the run itself"):
        export.check_export_args(str(run), "onnx", run / "metrics")  # its description would be metrics.json
    with pytest.raises(ValueError, match="predictions.parquet is a file of the run itself"):
        export.check_export_args(str(run), "torchscript", run / "predictions.parquet")
    (run / "model.onnx").write_bytes(b"graph")  # an export written there before is replaced
    sidecar_path(run / "model.onnx").write_text(json.dumps({"format": "onnx", "file": "model.onnx"}))
    assert export.check_export_args(str(run), "onnx", run / "model.onnx") == run / "model.onnx"


def test_the_sidecar_says_whether_clips_are_centred_before_the_graph() -> None:
    """--remove_dc acts where the clip is prepared, outside the graph: a deployment has to do it too."""
    from audiotune.config import RunConfig
    from audiotune.models.backbones import resolve_config

    for centred in (False, True):
        config = resolve_config(RunConfig())
        config.audio.remove_dc = centred
        described = export.sidecar(config, input_spec(config), Path("run"), Path("m.onnx"), "onnx", "mean",
                                   [1, 1, 1], False, None, [])
        assert described["preprocessing"]["remove_dc"] is centred
        assert "with remove_dc subtract the clip's mean" in described["preprocessing"]["before_graph"]


# ---------------------------------------------------------------------------------------------- exports

@pytest.mark.slow
def test_onnx_export_of_ecapa_reproduces_the_model_on_two_lengths(trained_run: dict, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "deploy" / "ecapa.onnx"
    assert main(["export", "--run", str(trained_run["run"]), "--format", "onnx", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    described = json.loads(sidecar_path(out).read_text())
    assert described["format"] == "onnx" and described["opset"] == export.OPSET
    assert [i["name"] for i in described["inputs"]] == ["waveforms", "lengths"]
    assert [o["name"] for o in described["outputs"]] == list(export.OUTPUT_NAMES)
    assert described["sample_rate"] == RATE and described["equal_length_batches"] is False
    assert described["heads"][0]["classes"] == ["high", "low"] and described["heads"][0]["scores"].startswith("soft")
    assert described["outputs"][0]["columns"] == ["pitch=high", "pitch=low", "loud", "long"]
    assert described["preprocessing"]["in_graph"]["num_mel_bins"] == 24
    assert described["audiotune_version"] and described["verified"]["max_abs_difference"]["logits"] < 1e-4

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["audiotune.json"]) == described  # inside too
    two = clips()
    want = reference(trained_run["run"], two)
    # each clip alone, at its own length, through the same graph
    got = [session.run(None, {"waveforms": waves.numpy(), "lengths": lengths.numpy()})
           for waves, lengths in (padded([clip]) for clip in two)]
    assert_matches([np.concatenate(parts) for parts in zip(*got)], want)
    assert not np.allclose(want[0][0], want[0][1])  # the two clips differ: the comparison can fail
    # ECAPA's padding is exact: a batch of mixed lengths gives each clip its own result
    mixed = [*two, tone(500, 1.1, RATE, seed=9)]
    assert len({len(clip) for clip in mixed}) == 3
    batch = session.run(None, dict(zip(("waveforms", "lengths"), (t.numpy() for t in padded(mixed)))))
    assert_matches(batch, reference(trained_run["run"], mixed))
    waves, lengths = padded(mixed)
    with pytest.raises(Exception, match="(?i)concat|shape|dimension"):  # one length for three waveforms
        session.run(None, {"waveforms": waves.numpy(), "lengths": lengths[:1].numpy()})


@pytest.mark.slow
def test_torchscript_export_of_ecapa_reproduces_the_model(trained_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "ecapa.pt"
    described = export_run(trained_run["run"], "torchscript", out)
    assert described["exporter"] == "torch.jit.trace" and json.loads(sidecar_path(out).read_text()) == described
    assert described["batchnorm"] == {"statistics": "training", "run_adapt_bn": "none",
                                      "same_as": "audiotune evaluate --adapt_bn none"}
    inside = {"audiotune.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=inside)
    assert json.loads(inside["audiotune.json"]) == described  # the description travels with the graph
    two = clips()
    with torch.no_grad():
        got = [[t.numpy() for t in loaded(*padded([clip]))] for clip in two]
        waves, lengths = padded(two)
        with pytest.raises(RuntimeError, match="equal size"):  # one length for two waveforms
            loaded(waves, lengths[:1])
    assert_matches([np.concatenate(parts) for parts in zip(*got)], reference(trained_run["run"], two))


@pytest.mark.slow
def test_an_export_that_does_not_reproduce_the_model_writes_nothing(trained_run: dict, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ecapa.pt"
    out.write_bytes(b"earlier export")

    def wrong(path: Path):  # a graph whose outputs are all zero
        loaded = torch.jit.load(str(path))
        return lambda waves, lengths: [np.zeros_like(t.numpy()) for t in loaded(waves, lengths)]

    monkeypatch.setattr(export, "_torchscript_runner", wrong)
    assert main(["export", "--run", str(trained_run["run"]), "--format", "torchscript", "--out", str(out)]) == 2
    assert "differs from the model" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier export" and not sidecar_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ecapa.pt"]  # no partial file left

    # an export stopped after its description was written keeps the earlier model and the earlier description
    sidecar_path(out).write_text('{"earlier": true}')
    monkeypatch.undo()
    written = export.write_json

    def then_stopped(path: Path, value: dict) -> Path:
        written(path, value)
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "write_json", then_stopped)
    assert main(["export", "--run", str(trained_run["run"]), "--format", "torchscript", "--out", str(out)]) == 130
    assert out.read_bytes() == b"earlier export" and sidecar_path(out).read_text() == '{"earlier": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ecapa.pt", sidecar_path(out).name]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
@pytest.mark.parametrize("kind", ["w2v_layer", "w2v_group"])
def test_onnx_export_of_a_speech_encoder_takes_padded_batches(uid_dataset: dict, hf_checkpoints: dict,
                                                              tmp_path: Path, kind: str) -> None:
    """A wav2vec2 with attention masks, its layer-norm or group-norm feature encoder reading each clip's own
    samples: one padded batch of two lengths gives each clip its own result, from raw waveforms (the per-clip
    normalisation runs inside the graph)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert main(["train", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-l",
                 str(uid_dataset["labels"]), "-o", str(run), "--model", "hf", "-c", str(hf_checkpoints[kind]),
                 "-e", "1", "-bs", "4", "--clf_bottleneck", "8", "--weighted", "--cache_dir",
                 str(tmp_path / "cache")]) == 0
    out = tmp_path / "w2v.onnx"
    described = export_run(run, "onnx", out)
    assert described["equal_length_batches"] is False and described["outputs"][2]["type"] == "wt"
    assert described["preprocessing"]["in_graph"]["features"] == "waveform"
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    two = clips()
    waves, lengths = padded(two)
    got = session.run(None, {"waveforms": waves.numpy(), "lengths": lengths.numpy()})
    assert_matches(got, reference(run, two))


@pytest.mark.slow
def test_onnx_export_of_ssast_pads_and_crops_to_its_frame_count(uid_dataset: dict, tmp_path: Path) -> None:
    """SSAST reads exactly target_length fbank frames: inside the graph a 0.5-s clip is padded and a 0.8-s
    clip cropped to 64 frames, normalised with the dataset statistics, in one batch."""
    onnxruntime = pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert main(["train", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-l",
                 str(uid_dataset["labels"]), "-o", str(run), "--model", "ssast", "--model_size", "tiny",
                 "--num_mel_bins", "32", "--target_length", "64", "--fshape", "16", "--tshape", "16", "--fstride",
                 "16", "--tstride", "16", "--task", "ft_avgtok", "--freeze", "False", "--dataset_mean", "-4",
                 "--dataset_std", "4", "-e", "0", "--clf_bottleneck", "8"]) == 0
    out = tmp_path / "ssast.onnx"
    described = export_run(run, "onnx", out)
    assert described["preprocessing"]["in_graph"]["target_length"] == 64
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    two = [tone(300, 0.5, RATE, seed=5), tone(800, 0.8, RATE, seed=6)]
    waves, lengths = padded(two)
    assert_matches(session.run(None, {"waveforms": waves.numpy(), "lengths": lengths.numpy()}), reference(run, two))


class _Echo(torch.nn.Module):
    """A classifier stand-in: each clip's mean as its logit, embedding and pooled state."""

    def forward_with_embeddings(self, inputs: torch.Tensor, lengths: torch.Tensor, merge: str):
        mean = inputs.sum(1, keepdim=True) / lengths[:, None]
        return mean, mean, mean


class _OneWindow(_Echo):
    """A model that reads one window of 10 samples at most (Whisper's position embeddings): a wider input fails."""

    def forward_with_embeddings(self, inputs: torch.Tensor, lengths: torch.Tensor, merge: str):
        if inputs.shape[1] > 10:
            raise RuntimeError("the size of tensor a (12) must match the size of tensor b (10)")
        return super().forward_with_embeddings(inputs, lengths, merge)


class _Through(torch.nn.Module):
    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor):
        return waveforms, lengths


def test_a_clip_the_graph_does_not_read_as_given_gets_nan_not_a_result() -> None:
    """Shorter than the model reads, longer than one window of --max_window, or past the padded batch: NaN rows;
    the clips in range keep their results."""
    module = export.ExportedClassifier(_OneWindow(), _Through(), "mean", shortest=4, longest=10)
    waveforms = torch.ones(4, 12)
    outputs = module(waveforms, torch.tensor([3, 8, 11, 13]))  # wider than the window the model reads
    for out in outputs:
        assert torch.isnan(out[[0, 2, 3]]).all() and out[1].tolist() == [10 / 8]
    unbounded = export.ExportedClassifier(_Echo(), _Through(), "mean", shortest=4)
    assert not torch.isnan(unbounded(waveforms[:2], torch.tensor([12, 5]))[0]).any()
    with pytest.raises(RuntimeError, match="equal size"):  # one length for two waveforms is not spread over both
        unbounded(waveforms[:2], torch.tensor([12]))
