"""The audio store: rows are decoded once, read back afterwards, keyed by content, span and settings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import SMALL_ECAPA, tone

import audiotune.data.dataset as dataset_module
from audiotune.cli import main
from audiotune.data.audio import AudioSpec, Span
from audiotune.data.audio_store import AudioStore, segment_key, spec_digest
from audiotune.data.augment import AugmentConfig
from audiotune.data.dataset import AudioDataset
from audiotune.data.input_spec import InputSpec


@pytest.fixture()
def recording(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "rec.ogg"
    sf.write(path, tone(440, 2.0, 44100, channels=2), 44100, format="OGG")
    return pd.DataFrame({"path": [str(path)] * 3, "offset": [0.0, 0.5, 1.0], "duration": [0.5, 0.5, 0.5]},
                        index=pd.Index(["a", "b", "c"], name="uid"))


def counting_decoder(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = dataset_module.load_clip

    def load_clip(path: str, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "load_clip", load_clip)
    return calls


def test_rows_are_decoded_once_and_read_back_identically(recording: pd.DataFrame, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_decoder(monkeypatch)
    inputs = InputSpec(channel_mode="interleave", features="waveform")
    spec = inputs.audio()
    plain = AudioDataset(recording, np.zeros((3, 0)), inputs)
    stored = AudioDataset(recording, np.zeros((3, 0)), inputs, store=AudioStore(tmp_path / "cache", spec))
    expected = [plain[i]["inputs"] for i in range(3)]
    assert len(calls) == 3
    first = [stored[i]["inputs"] for i in range(3)]
    assert len(calls) == 6  # the first pass fills the store
    second = [stored[i]["inputs"] for i in range(3)]
    assert len(calls) == 6  # the second reads it: no decoding
    for a, b, c in zip(expected, first, second):
        assert a.shape == (16000,)  # 0.5 s of 2 channels at 16 kHz, interleaved
        assert np.array_equal(a.numpy(), b.numpy()) and np.array_equal(a.numpy(), c.numpy())
    assert len(list((tmp_path / "cache" / "audio").rglob("*.safetensors"))) == 3


def test_a_store_that_cannot_write_serves_the_clips_and_says_so_once(recording: pd.DataFrame, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    write_bytes = Path.write_bytes

    def full_disk(path: Path, data: bytes) -> int:
        if path.name.endswith(".partial") and path.is_relative_to(tmp_path / "cache"):
            write_bytes(path, data[:4])  # what a full disk leaves behind
            raise OSError(28, "No space left on device")
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    inputs = InputSpec(channel_mode="interleave", features="waveform")
    plain = AudioDataset(recording, np.zeros((3, 0)), inputs)
    store = AudioStore(tmp_path / "cache", inputs.audio())
    stored = AudioDataset(recording, np.zeros((3, 0)), inputs, store=store)
    with caplog.at_level("WARNING"):
        for _ in range(2):
            for i in range(3):
                assert np.array_equal(stored[i]["inputs"].numpy(), plain[i]["inputs"].numpy())
    assert sum("cannot keep prepared clips" in r.message for r in caplog.records) == 1 and store.unwritable
    assert not list((tmp_path / "cache").rglob("*.partial")) and not list((tmp_path / "cache").rglob("*.safetensors"))


def test_a_store_in_a_place_that_cannot_hold_files_serves_the_clips(recording: pd.DataFrame, tmp_path: Path,
                                                                   caplog) -> None:
    """A cache path that is a file (or a read-only folder): the leftover of the failed write cannot be removed
    either, and the clip is still served, as for a full disk."""
    (tmp_path / "afile").write_text("x")
    inputs = InputSpec(channel_mode="interleave", features="waveform")
    plain = AudioDataset(recording, np.zeros((3, 0)), inputs)
    store = AudioStore(tmp_path / "afile", inputs.audio())
    stored = AudioDataset(recording, np.zeros((3, 0)), inputs, store=store)
    with caplog.at_level("WARNING"):
        assert np.array_equal(stored[0]["inputs"].numpy(), plain[0]["inputs"].numpy())
    assert store.unwritable and any("cannot keep prepared clips" in r.message for r in caplog.records)


@pytest.mark.parametrize("damage", [b"", b"\x10\x00\x00", "zeroed"])
def test_a_stored_clip_that_cannot_be_read_is_prepared_again_and_named(
        recording: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, damage: bytes | str) -> None:
    """An entry emptied, cut short or whose samples changed under an intact header (a full disk, a killed copy, a
    crash before the data reached the disk) is no reason to stop training, nor to train on it: the clip is decoded
    again, stored whole again, and the warning names the entry and the audio file."""
    inputs = InputSpec(channel_mode="interleave", features="waveform")
    plain = AudioDataset(recording, np.zeros((3, 0)), inputs)
    stored = AudioDataset(recording, np.zeros((3, 0)), inputs, store=AudioStore(tmp_path / "cache", inputs.audio()))
    for i in range(3):
        stored[i]
    entries = sorted((tmp_path / "cache" / "audio").rglob("*.safetensors"))
    if damage == "zeroed":  # the header as written, the second half of the samples zeros
        data = bytearray(entries[0].read_bytes())
        start = 8 + int.from_bytes(data[:8], "little")
        data[(start + len(data)) // 2:] = bytes(len(data) - (start + len(data)) // 2)
        damage = bytes(data)
    entries[0].write_bytes(damage)
    expected = [plain[i]["inputs"].numpy() for i in range(3)]
    calls = counting_decoder(monkeypatch)
    with caplog.at_level("WARNING"):
        again = [stored[i]["inputs"].numpy() for i in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(again, expected))
    assert len(calls) == 1 and entries[0].stat().st_size > 100  # stored whole again
    assert [r.message for r in caplog.records if "cannot be read" in r.message] == \
        [f"{entries[0]}: a stored clip of {recording['path'].iloc[0]} that cannot be read "
         f"({caplog.records[-1].message.split('(', 1)[1]}"]


def test_augmentation_still_runs_on_every_draw(recording: pd.DataFrame, tmp_path: Path) -> None:
    inputs = InputSpec(features="waveform")
    dataset = AudioDataset(recording, np.zeros((3, 0)), inputs, augment=AugmentConfig(gauss=1.0), train=True,
                           store=AudioStore(tmp_path, inputs.audio(train=True)))
    draws = [dataset[0]["inputs"] for _ in range(3)]
    assert not np.allclose(draws[0].numpy(), draws[1].numpy()) and not np.allclose(draws[1].numpy(), draws[2].numpy())


def test_keys_change_with_span_content_and_settings(recording: pd.DataFrame, tmp_path: Path) -> None:
    path = recording["path"].iloc[0]
    keys = {segment_key(path, Span(0.0, 0.5)), segment_key(path, Span(0.5, 0.5)),
            segment_key(path, Span(0.5, 0.5, (1,))),
            segment_key(path, Span())}
    assert len(keys) == 4
    assert AudioStore(tmp_path, AudioSpec()).folder != AudioStore(tmp_path, AudioSpec(channel_mode="sum")).folder
    before = segment_key(path, Span(0.0, 0.5))
    sf.write(path, tone(220, 2.0, 44100, channels=2), 44100, format="OGG")
    assert segment_key(path, Span(0.0, 0.5)) != before


@pytest.mark.slow
def test_training_with_the_store_gives_the_same_run(uid_dataset: dict, tmp_path: Path) -> None:
    runs = {}
    for store in ("False", "True"):
        out = tmp_path / f"run_{store}"
        assert main(["train", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]),
                     "-l", str(uid_dataset["labels"]), "-o", str(out), "--model", "ecapa_tdnn", *SMALL_ECAPA,
                     "-e", "2", "-bs", "4", "--audio_cache", store, "--cache_dir", str(tmp_path / "cache")]) == 0
        runs[store] = json.loads((out / "metrics.json").read_text())
    assert runs["True"]["test"]["accuracy"] == runs["False"]["test"]["accuracy"]
    assert runs["True"]["test"]["auc"] == pytest.approx(runs["False"]["test"]["auc"], abs=1e-6)
    assert len(list((tmp_path / "cache" / "audio").rglob("*.safetensors"))) == 24


@pytest.mark.slow
def test_training_stores_resampled_audio_by_itself_when_it_reads_it_again(uid_dataset: dict, tmp_path: Path) -> None:
    stored = {}
    for epochs in ("1", "2"):  # the 8 kHz clips are resampled to 16 kHz: worth storing when read twice
        cache = tmp_path / f"cache{epochs}"
        assert main(["train", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]),
                     "-l", str(uid_dataset["labels"]), "-o", str(tmp_path / f"run{epochs}"), "--model", "ecapa_tdnn",
                     *SMALL_ECAPA, "-e", epochs, "-bs", "4", "--cache_dir", str(cache)]) == 0
        stored[epochs] = len(list(cache.rglob("*.safetensors")))
    assert stored == {"1": 0, "2": 20}  # 16 training and 4 validation clips; the test split is scored once


def test_a_setting_added_later_keeps_the_stores_of_earlier_releases_at_its_default() -> None:
    """--remove_dc, the resampled length and --pad_clips arrived after stores existed: at the values of the earlier
    releases (unset, soxr's rounded count) the key is the digest of the settings before them; the ceil count is a new
    entry."""
    import dataclasses
    import hashlib

    spec = AudioSpec(resample_rate=16000, clip_length=1.0, resampled_length="round")
    later = ("remove_dc", "resampled_length", "pad_clips")
    earlier = {k: v for k, v in dataclasses.asdict(spec).items() if k not in later}
    assert spec_digest(spec) == hashlib.blake2b(json.dumps(earlier, sort_keys=True).encode(), digest_size=8).hexdigest()
    assert spec_digest(dataclasses.replace(spec, remove_dc=True)) != spec_digest(spec)
    assert spec_digest(dataclasses.replace(spec, resampled_length="ceil")) != spec_digest(spec)
    assert spec_digest(dataclasses.replace(spec, pad_clips=True)) != spec_digest(spec)
