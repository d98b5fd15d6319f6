"""Frozen-feature cache: same results as encoding every epoch, reuse across runs, invalidation by any key."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import SMALL_ECAPA
from safetensors.torch import load_file, save_file

from audiotune.cli import main
from audiotune.config import RESAMPLED_LENGTH_VERSION, RunConfig
from audiotune.data import checked_audio
from audiotune.data.audio_store import keyed_settings
from audiotune.engine.cache import CachedDataset, cache_blocker, preprocessing_digest
from audiotune.models.backbones import input_spec, resolve_config


def run(ds: dict, out, cache_dir, *extra: str) -> dict:
    # clips cropped to one length, so ECAPA's padding cannot make the two paths differ
    args = ["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
            *SMALL_ECAPA, "-e", "3", "-bs", "4", "--seed", "5", "--freeze", "--clip_length", "0.5",
            "--scheduler", "none", "--cache_dir", str(cache_dir), *extra]
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def scores(out) -> np.ndarray:
    table = pd.read_parquet(out / "predictions.parquet").sort_values(["split", "uid"])
    return table.filter(like="score:").to_numpy()


@pytest.mark.slow
def test_cached_training_equals_encoding_every_epoch(uid_dataset: dict, tmp_path) -> None:
    cached = run(uid_dataset, tmp_path / "cached", tmp_path / "cache")
    plain = run(uid_dataset, tmp_path / "plain", tmp_path / "cache", "--cache", "False")
    assert cached["feature_cache"]["used"] and cached["feature_cache"]["encoded"] == 24
    assert not plain["feature_cache"]["used"] and plain["feature_cache"]["why_not"] == "--cache False"
    np.testing.assert_allclose(scores(tmp_path / "cached"), scores(tmp_path / "plain"), atol=1e-4)
    assert cached["test"]["accuracy"] == plain["test"]["accuracy"]
    assert cached["test"]["auc"] == plain["test"]["auc"]
    # dropout is really on in the heads while they train from the cache
    run(uid_dataset, tmp_path / "nodrop", tmp_path / "cache", "--final_dropout", "0")
    # (well above the 1e-4 that separates the cached from the uncached run above)
    assert np.abs(scores(tmp_path / "nodrop") - scores(tmp_path / "cached")).max() > 3e-4


@pytest.mark.slow
def test_cache_is_reused_and_invalidated_by_each_key(uid_dataset: dict, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = run(uid_dataset, tmp_path / "a", cache)
    assert first["feature_cache"]["encoded"] == 24
    again = run(uid_dataset, tmp_path / "b", cache, "--final_dropout", "0.1")  # another head: same features
    assert again["feature_cache"] == {**first["feature_cache"], "encoded": 0, "reused": 24}
    other_weights = run(uid_dataset, tmp_path / "c", cache, "--seed", "6")  # other random encoder
    assert other_weights["feature_cache"]["encoded"] == 24
    other_prep = run(uid_dataset, tmp_path / "d", cache, "--clip_length", "0.4")
    assert other_prep["feature_cache"]["encoded"] == 24
    other_pool = run(uid_dataset, tmp_path / "e", cache, "--frame_activation", "relu")  # other frames pooled
    assert other_pool["feature_cache"]["encoded"] == 24
    # the training crop of d and the scored crop of a: every entry is found (the training crop never reads the
    # scored clips)
    crop = run(uid_dataset, tmp_path / "crop", cache, "--clip_length", "0.4", "--eval_clip_length", "0.5")
    assert crop["feature_cache"]["encoded"] == 0 and crop["feature_cache"]["reused"] == 24
    assert crop["feature_cache"]["folders"]["train"] == other_prep["feature_cache"]["folders"]["train"]
    assert crop["feature_cache"]["folders"]["test"] == first["feature_cache"]["folders"]["test"]
    # new audio content in one file: only that clip is encoded again
    path = uid_dataset["prefix"] / "ann0" / "waveform.wav"
    wave, rate = sf.read(path)
    sf.write(path, wave[::-1].copy(), rate)
    changed = run(uid_dataset, tmp_path / "f", cache)
    assert changed["feature_cache"]["encoded"] == 1 and changed["feature_cache"]["reused"] == 23
    # a, c, d, e: one folder per encoder + preprocessing (beside the record of checked audio)
    assert len([folder for folder in cache.iterdir() if folder.name != checked_audio.FOLDER]) == 4


@pytest.mark.slow
def test_a_broken_entry_is_encoded_again_and_never_read(uid_dataset: dict, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = run(uid_dataset, tmp_path / "a", cache)
    entries = sorted(Path(first["feature_cache"]["folders"]["train"]).glob("*.safetensors"))
    whole = entries[0].read_bytes()
    entries[0].write_bytes(whole[:len(whole) - 8])  # cut short (a copy that stopped)
    entries[1].write_bytes(b"")  # emptied
    states = load_file(str(entries[2]))["pooled"]
    save_file({"pooled": states[..., :3].contiguous()}, str(entries[2]))  # states of another shape
    again = run(uid_dataset, tmp_path / "b", cache)
    assert again["feature_cache"]["encoded"] == 3 and again["feature_cache"]["reused"] == 21
    np.testing.assert_allclose(scores(tmp_path / "b"), scores(tmp_path / "a"), atol=1e-6)
    assert entries[1].stat().st_size > 0 and load_file(str(entries[2]))["pooled"].shape == states.shape
    entries[3].write_bytes(entries[3].read_bytes()[:-8])  # broken after the check: a clear error, not a crash
    dataset = CachedDataset(pd.DataFrame(index=["x"]), np.zeros((1, 0)), entries[3].parent, [entries[3].stem])
    with pytest.raises(ValueError, match=rf"feature cache entry .*{entries[3].name} of row x cannot be read"):
        dataset[0]


def test_a_cache_that_cannot_be_written_is_one_line_naming_the_entry_and_what_to_do(
        uid_dataset: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    write_bytes = Path.write_bytes

    def full_disk(path: Path, data: bytes) -> int:  # an entry written into its partial meets a full disk
        if path.name.endswith(".partial") and path.is_relative_to(tmp_path / "cache"):
            raise OSError(28, "No space left on device")
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    args = ["train", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-l",
            str(uid_dataset["labels"]), "-o", str(tmp_path / "run"), *SMALL_ECAPA, "-e", "1", "-bs", "4", "--freeze",
            "--cache_dir", str(tmp_path / "cache")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cache'}" in err and ".safetensors: the feature cache cannot be written" in err
    assert "No space left on device" in err and "--cache False" in err


def test_cache_blockers() -> None:
    config = RunConfig()
    assert cache_blocker(config) is not None  # not frozen
    config.model.freeze = True
    assert cache_blocker(config) is None
    config.augment.gain = 0.5
    assert "augmentation" in cache_blocker(config)
    config.augment.gain = 0.0
    config.features.timem = 10
    assert "SpecAugment" in cache_blocker(config)
    config.features.timem = 0
    config.features.vtlp = 0.5
    assert "VTLP" in cache_blocker(config)
    config.features.vtlp = 0.0
    config.classifier.weighted, config.classifier.pooling_mode = True, "max"
    assert "max pooling" in cache_blocker(config)
    config.classifier.weighted = False
    for option, value in (("group_batches", "subject"), ("bucket_sampler", True), ("dynamic_batch", 30)):
        assert cache_blocker(config) is None
        setattr(config.train, option, value)
        assert "batch clips by their groups or lengths" in cache_blocker(config)
        setattr(config.train, option, getattr(RunConfig().train, option))


def test_the_key_is_the_input_the_model_reads() -> None:
    asked = resolve_config(RunConfig())  # the user's options: ECAPA-TDNN's input defaults left to it
    inputs = input_spec(asked)
    key = preprocessing_digest(asked, inputs, "mean")
    earlier = copy.deepcopy(asked)  # a config of an earlier release: the same input, resolved in its sections
    earlier.version, earlier.features.num_mel_bins, earlier.audio.min_samples = 1, 80, inputs.min_samples
    earlier.features.freqm, earlier.features.timem = 8, 10
    rounded = copy.deepcopy(asked)  # config version 5: the same input with soxr's rounded count of samples
    rounded.version = RESAMPLED_LENGTH_VERSION - 1
    assert preprocessing_digest(earlier, input_spec(earlier), "mean") == preprocessing_digest(
        rounded, input_spec(rounded), "mean") != key  # since version 6 the ceil count: another encoding
    assert "resampled_length" not in keyed_settings(input_spec(rounded).to_dict())  # earlier caches found
    other = copy.deepcopy(asked)
    other.features.num_mel_bins = 40
    assert preprocessing_digest(other, input_spec(other), "mean") != key
    assert preprocessing_digest(asked, inputs.whole_clips(), "mean") != key  # another crop: another encoding
    centred = copy.deepcopy(asked)
    centred.audio.remove_dc = True  # the clips less their mean: another encoding of MFCC or waveform inputs
    assert preprocessing_digest(centred, input_spec(centred), "mean") != key
    assert "remove_dc" not in keyed_settings(inputs.to_dict())  # unset, as before it existed: earlier caches found
    for name, value in (("frame_activation", "relu"), ("pool_drop_last", True)):  # other frames pooled
        pooled = copy.deepcopy(asked)
        setattr(pooled.classifier, name, value)
        assert preprocessing_digest(pooled, inputs, "mean") != key




@pytest.mark.slow
def test_balanced_epochs_are_the_same_from_the_cache(uid_dataset: dict, tmp_path) -> None:
    cached = run(uid_dataset, tmp_path / "cached", tmp_path / "cache", "--balance", "undersample")
    plain = run(uid_dataset, tmp_path / "plain", tmp_path / "cache", "--balance", "undersample", "--cache", "False")
    shuffled = run(uid_dataset, tmp_path / "shuffled", tmp_path / "cache")
    assert "balance" not in shuffled
    assert cached["feature_cache"]["used"] and cached["balance"] == plain["balance"]
    assert np.allclose(scores(tmp_path / "cached"), scores(tmp_path / "plain"), atol=1e-5)
    assert not np.allclose(scores(tmp_path / "cached"), scores(tmp_path / "shuffled"), atol=1e-5)


def test_an_entry_whose_states_were_zeroed_after_it_was_written_is_not_taken(tmp_path) -> None:
    """A crash can leave a file's header and zeros where its data was: such an entry held the right shape and was
    reused (heads trained on zeros); its checksum tells it apart. Entries of earlier releases have none."""
    import struct

    import torch

    from audiotune.engine.cache import entry_holds, write_entry

    entry = tmp_path / "k.safetensors"
    write_entry(entry, torch.randn(3, 8))
    assert entry_holds(entry, (3, 8))
    raw = entry.read_bytes()
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    entry.write_bytes(raw[:start] + bytes(len(raw) - start))
    assert not entry_holds(entry, (3, 8))
    save_file({"pooled": torch.randn(3, 8)}, str(entry))  # as earlier releases wrote entries: no checksum
    assert entry_holds(entry, (3, 8))
