"""Hub ids without a network: a cached copy is read offline at once; no copy fails in one line within seconds."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import HF_TINY, make_uid_dataset, save_hf_checkpoint

from audiotune.cli import main
from audiotune.config import RunConfig
from audiotune.models.backbones import hf_checkpoint, input_spec, resolve_config
from audiotune.models.backbones.hf_checkpoint import check_available


def cache_copy(hub: Path, repo: str) -> Path:
    """A tiny wav2vec2 laid out as huggingface_hub caches a download of ``repo``."""
    import transformers

    revision = "0123456789abcdef"
    snapshot = hub / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(revision)
    return snapshot


def test_no_network_and_no_copy_fails_at_once_in_one_line(no_network: Path, capsys: pytest.CaptureFixture) -> None:
    import audiotune.engine.train  # noqa: F401  (the time measured is the hub's, not the first imports')

    data = make_uid_dataset(no_network.parent)
    start = time.monotonic()
    code = main(["train", "--model", "hf", "-c", "facebook/wav2vec2-base", "-d", str(data["split"]), "-i",
                 str(data["prefix"]), "-l", str(data["labels"]), "-o", str(no_network.parent / "run")])
    assert code == 2 and time.monotonic() - start < 5
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "-c facebook/wav2vec2-base: not a local folder" in error
    assert "cannot be reached" in error and "Models without a network" in error
    assert not (no_network.parent / "run").exists()


def test_hf_hub_offline_is_honoured_without_trying_the_network(no_network: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set, and no copy is cached"):
        check_available("facebook/wav2vec2-base", "-c")
    assert hf_checkpoint._hub_reachable.cache_info().misses == 0  # no connection was tried


def test_a_cached_copy_is_read_offline(no_network: Path) -> None:
    from huggingface_hub import constants

    cache_copy(no_network, "someone/tiny-w2v")
    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", "someone/tiny-w2v"
    start = time.monotonic()
    resolve_config(config)  # reads the cached config and feature extractor
    assert time.monotonic() - start < 5 and constants.HF_HUB_OFFLINE
    inputs = input_spec(config)
    assert inputs.resample_rate == 16000 and inputs.features == "waveform"


def test_local_folders_and_files_are_left_to_their_loader(no_network: Path, tmp_path: Path) -> None:
    check_available(str(tmp_path))  # an existing folder: never a hub id
    check_available("gs://bucket/model")
    assert hf_checkpoint._hub_reachable.cache_info().misses == 0


@pytest.mark.parametrize("verbose", [False, True])
def test_weight_loading_bars_show_with_verbose_only(verbose: bool, hf_checkpoints: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture):
    """transformers draws "Loading weights" and "Writing model shards" bars at every load and save; audiotune's
    loads show them with -v (INFO) only, and leave them as they were afterwards."""
    from transformers import AutoModel

    caplog.set_level("INFO" if verbose else "WARNING")
    with hf_checkpoint.weights_quietly():
        AutoModel.from_pretrained(hf_checkpoints["w2v_layer"]).save_pretrained(tmp_path / "copy")
    inside = capsys.readouterr().err
    assert ("Loading weights" in inside and "Writing model shards" in inside) is verbose
    assert ("Loading weights" in inside or "Writing model shards" in inside) is verbose, inside
    AutoModel.from_pretrained(hf_checkpoints["w2v_layer"])
    assert "Loading weights" in capsys.readouterr().err  # outside, transformers' own setting


def test_a_command_without_verbose_draws_no_weight_loading_bar(hf_checkpoints: dict[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture):
    ds = make_uid_dataset(tmp_path)
    out = tmp_path / "emb.parquet"
    assert main(["extract", "-c", str(hf_checkpoints["w2v_layer"]), "--model", "hf", "--prefix", str(ds["prefix"]),
                 "-d", str(ds["split"] / "test.csv"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert out.exists() and "Loading weights" not in captured.err, captured.err


def test_the_unused_head_of_an_audio_classifier_is_named_once_and_a_ctc_head_is_not(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import transformers

    from audiotune.models.backbones.huggingface import HFBackbone, HFOptions

    config = transformers.Wav2Vec2Config(**{**HF_TINY, "num_hidden_layers": 1}, num_labels=5, vocab_size=12)
    transformers.Wav2Vec2ForSequenceClassification(config).save_pretrained(tmp_path / "classifier")
    transformers.Wav2Vec2ForCTC(config).save_pretrained(tmp_path / "ctc")
    with caplog.at_level("WARNING", logger="audiotune"):
        HFBackbone(HFOptions(str(tmp_path / "classifier")))
        HFBackbone(HFOptions(str(tmp_path / "ctc")))
    said = [r.getMessage() for r in caplog.records if r.name.startswith("audiotune")]
    assert said == [f"-c {tmp_path / 'classifier'}: an audio classification model; 4 tensor(s) of its head "
                    "(projector, classifier) are not used by the encoder: `audiotune import tap2key "
                    f"{tmp_path / 'classifier'} -o RUN` keeps them"], said
