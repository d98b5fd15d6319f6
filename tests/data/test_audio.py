"""Segments of recordings and the channel stage: only the span is read, every mode matches numpy."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
from conftest import shared_path, tone
from scipy.signal import fftconvolve

from audiotune.config import config_from_dict
from audiotune.data.audio import (
    AudioError,
    AudioSpec,
    Span,
    check_clip,
    load_clip,
    map_channels,
    prepared_length,
    read_audio,
)
from audiotune.data.checked_audio import scan_audio
from audiotune.data.layout import read_table

DEMO_CLIP = Path(__file__).resolve().parents[2] / "examples" / "demo_data" / "audio" / "down_alba_0.wav"


def numpy_modes(waveform: np.ndarray) -> dict[str, np.ndarray]:
    """What each channel mode should give for (channels, samples), written independently with numpy."""
    loudest = np.abs(waveform).argmax(axis=0)
    return {
        "mean": waveform.mean(axis=0),
        "sum": waveform.sum(axis=0),
        "maxabs": waveform[loudest, np.arange(waveform.shape[1])],
        "interleave": np.reshape(waveform, -1, order="F"),  # the tap2key seed's own expression
        "stack": np.concatenate(list(waveform)),
    }


def write_array_recording(path: Path, rir: np.ndarray, rate: int) -> np.ndarray:
    """A shipped clip convolved with an 8-channel room impulse response: (8, samples) as written (PCM 16)."""
    clip, clip_rate = sf.read(DEMO_CLIP, dtype="float32")
    assert clip_rate == rate
    channels = np.stack([fftconvolve(clip, rir[:, c]) for c in range(rir.shape[1])])
    channels = (0.9 * channels / np.abs(channels).max()).astype(np.float32)
    sf.write(path, channels.T, rate, subtype="PCM_16")
    return sf.read(path, dtype="float32", always_2d=True)[0].T


def check_every_mode(path: Path, written: np.ndarray) -> None:
    for mode, expected in numpy_modes(written).items():
        clip, rate = load_clip(str(path), AudioSpec(resample_rate=0, channel_mode=mode, clip_length=0))
        np.testing.assert_allclose(clip, expected, atol=1e-6, err_msg=mode)
        assert check_clip(str(path), AudioSpec(resample_rate=0, channel_mode=mode, clip_length=0)) == len(expected)
    top = written[4:8]
    clip, _ = load_clip(str(path), AudioSpec(resample_rate=0, channel_mode="interleave", channel_select=(4, 5, 6, 7),
                                             clip_length=0))
    np.testing.assert_allclose(clip, np.reshape(top, -1, order="F"), atol=1e-6)
    spec = AudioSpec(resample_rate=0, channel_mode="select", channel_select=(3,), clip_length=0)
    clip, _ = load_clip(str(path), spec)
    np.testing.assert_allclose(clip, written[3], atol=1e-6)


@pytest.mark.shared
def test_pad_clips_pads_a_short_clip_with_its_mean_as_the_naip_seeds(tmp_path: Path) -> None:
    """The seeds' Truncate: a clip shorter than --clip_length padded to it with each channel's mean, then centred
    (their mixup stage): silence after the clip; a longer clip is cropped as without it."""
    path = tmp_path / "short.wav"
    wave = (tone(300, 0.5, 16000) + 0.1).astype(np.float32)
    sf.write(path, np.stack([wave, 0.5 * wave], axis=1), 16000, subtype="FLOAT")
    for mode in ("sum", "interleave"):
        spec = AudioSpec(clip_length=1.0, channel_mode=mode, pad_clips=True)
        padded, _ = load_clip(str(path), spec)
        channels = 2 if mode == "interleave" else 1
        assert len(padded) == 16000 * channels == prepared_length(8000, 16000, spec, 2), mode
        cropped, _ = load_clip(str(path), AudioSpec(clip_length=1.0, channel_mode=mode))
        assert np.array_equal(padded[:len(cropped)], cropped), mode
    mixed = 1.5 * wave
    assert np.allclose(padded[::2][8000:], wave.mean(), atol=1e-6)  # interleaved: each channel its own mean
    assert np.allclose(padded[1::2][8000:], 0.5 * wave.mean(), atol=1e-6)
    centred, _ = load_clip(str(path), AudioSpec(clip_length=1.0, channel_mode="sum", pad_clips=True, remove_dc=True))
    assert np.allclose(centred[:8000], mixed - mixed.mean(), atol=1e-5) and np.abs(centred[8000:]).max() < 1e-6
    longer, _ = load_clip(str(path), AudioSpec(clip_length=0.25, channel_mode="sum", pad_clips=True))
    assert len(longer) == 4000


def test_channel_modes_on_a_real_8_channel_room_response(tmp_path: Path) -> None:
    rir, rate = sf.read(shared_path("data/multichannel/real_8ch_rir.wav"), dtype="float32", always_2d=True)
    assert rir.shape[1] == 8
    path = tmp_path / "array.wav"
    written = write_array_recording(path, rir, rate)
    assert not np.allclose(written[0], written[7])  # the room makes the channels differ
    check_every_mode(path, written)


def test_channel_modes_on_generated_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rir = (rng.standard_normal((200, 8)) * np.exp(-np.arange(200) / 30)[:, None]).astype(np.float32)
    path = tmp_path / "array.wav"
    check_every_mode(path, write_array_recording(path, rir, 16000))


def test_lengthening_modes_resample_each_channel_before_laying_them_out(tmp_path: Path) -> None:
    wave = tone(500, 0.3, 48000, channels=3) * np.array([1.0, -0.5, 0.25], dtype=np.float32)
    path = tmp_path / "three.wav"
    sf.write(path, wave, 48000, subtype="FLOAT")
    per_channel = soxr.resample(wave, 48000, 16000).T  # (3, n) at 16 kHz
    clip, rate = load_clip(str(path), AudioSpec(channel_mode="interleave", clip_length=0))
    assert rate == 16000 and len(clip) == 3 * per_channel.shape[1] == prepared_length(len(wave), 48000,
                                                                                        AudioSpec(channel_mode="interleave",
                                                                                                  clip_length=0), 3)
    np.testing.assert_allclose(clip, np.reshape(per_channel, -1, order="F"), atol=1e-5)
    # the crop is in seconds of the recording: 0.1 s of each channel, then 3 channels side by side
    clip, _ = load_clip(str(path), AudioSpec(channel_mode="stack", clip_length=0.1))
    np.testing.assert_allclose(clip, per_channel[:, :1600].reshape(-1), atol=1e-5)


def test_channel_mode_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "quad.wav"
    sf.write(path, tone(300, 0.2, 16000, channels=4), 16000)
    with pytest.raises(AudioError, match="quad.wav.*channel.*\\[5\\].*has 4"):
        load_clip(str(path), AudioSpec(channel_select=(1, 5)))
    with pytest.raises(AudioError, match="quad.wav.*select keeps one channel"):
        check_clip(str(path), AudioSpec(channel_mode="select", channel_select=(1,)), span=Span(channels=(0, 1)))
    with pytest.raises(ValueError, match="select keeps one channel"):
        AudioSpec(channel_mode="select")
    with pytest.raises(ValueError, match="--channel_mode"):
        AudioSpec(channel_mode="loudest")
    assert map_channels(np.array([[1.0, -3.0], [-2.0, 2.0]]), "maxabs").tolist() == [-2.0, -3.0]


def test_a_span_reads_only_its_frames_and_channels(tmp_path: Path) -> None:
    rate = 8000
    wave = tone(300, 3.0, rate, channels=4) * np.linspace(0.2, 1.0, 3 * rate, dtype=np.float32)[:, None]
    path = tmp_path / "long.wav"
    sf.write(path, wave, rate, subtype="FLOAT")
    spec = AudioSpec(resample_rate=0, channel_mode="stack", clip_length=0)
    clip, _ = load_clip(str(path), spec, span=Span(offset=1.25, duration=0.5, channels=(2, 0)))
    expected = wave[10000:14000, [2, 0]].T.reshape(-1)
    np.testing.assert_allclose(clip, expected, atol=1e-7)
    assert check_clip(str(path), spec, span=Span(offset=1.25, duration=0.5, channels=(2, 0))) == 8000
    # a duration-less span runs to the end of the file
    assert check_clip(str(path), AudioSpec(resample_rate=0, clip_length=0), span=Span(offset=2.5)) == 4000
    with pytest.raises(AudioError, match="long.wav: segment 2.8 s to 3.3 s is past the end of the file \\(3 s\\)"):
        check_clip(str(path), spec, span=Span(offset=2.8, duration=0.5))
    with pytest.raises(AudioError, match="past the end"):
        load_clip(str(path), spec, span=Span(offset=3.5))
    with pytest.raises(AudioError, match="offset -1 s"):
        check_clip(str(path), spec, span=Span(offset=-1.0, duration=0.5))
    with pytest.raises(AudioError, match="duration 0 s"):
        check_clip(str(path), spec, span=Span(offset=1.0, duration=0.0))


def test_a_silent_segment_of_a_loud_file_is_a_bad_row(tmp_path: Path) -> None:
    wave = np.concatenate([np.zeros(8000, np.float32), tone(300, 1.0, 8000)])
    path = tmp_path / "gap.wav"
    sf.write(path, wave, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="gap.wav: audio is all zeros in this segment"):
        check_clip(str(path), AudioSpec(), span=Span(offset=0.1, duration=0.5))
    assert check_clip(str(path), AudioSpec(), span=Span(offset=0.9, duration=0.5)) == 8000


def test_segment_tables_derive_uids_and_scan_names_bad_rows(tmp_path: Path) -> None:
    rate = 8000
    sf.write(tmp_path / "rec.wav", tone(300, 2.0, rate, channels=2), rate)
    csv = tmp_path / "segments.csv"
    pd.DataFrame({"path": ["rec.wav", "rec.wav", "rec.wav", "rec.wav"], "offset": [0.0, 0.5, 1.75, np.nan],
                  "duration": [0.5, 0.5, 0.5, np.nan], "channels": ["0,1", "1", np.nan, np.nan],
                  "label": ["a", "b", "a", "b"]}).to_csv(csv, index=False)
    table = read_table(csv)
    assert table.index.tolist() == ["rec.wav@0", "rec.wav@0.5", "rec.wav@1.75", "rec.wav"]
    table["expected_rate"] = np.nan
    kept, failures = scan_audio(table, AudioSpec(channel_mode="interleave", clip_length=0), "train")
    # 0.5 s at 8 kHz resampled to 16 kHz: 8000 samples per channel; interleave lays out the channels read
    assert kept["num_samples"].tolist() == [16000, 8000, 64000]
    assert failures["uid"].tolist() == ["rec.wav@1.75"] and "past the end of the file (2 s)" in failures["reason"][0]
    pd.DataFrame({"path": ["rec.wav", "rec.wav"], "offset": [0.5, 0.5]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="duplicate uid.*distinct offsets"):
        read_table(csv)


def test_the_check_streams_a_long_recording_in_blocks(tmp_path: Path) -> None:
    rate, seconds = 48000, 40
    path = tmp_path / "long8.wav"
    with sf.SoundFile(path, "w", rate, 8, subtype="PCM_16") as handle:
        for _ in range(seconds):
            handle.write(tone(200, 1.0, rate, channels=8))
    whole_bytes = seconds * rate * 8 * 4  # the file as float32: 61 MB
    tracemalloc.start()
    try:
        length = check_clip(str(path), AudioSpec(clip_length=0))
        check_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        clip, _ = load_clip(str(path), AudioSpec(clip_length=1.0))
        crop_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert length == seconds * 16000 and len(clip) == 16000
    assert check_peak < 16e6 < whole_bytes / 3, f"the check held {check_peak / 1e6:.1f} MB"
    assert crop_peak < 16e6, f"a 1-s crop held {crop_peak / 1e6:.1f} MB"


@pytest.mark.parametrize("rate", [8000, 44100])
def test_a_crop_reads_a_prefix_with_the_same_result_as_the_whole_file(tmp_path: Path, rate: int) -> None:
    wave = tone(330, 4.0, rate, channels=2)
    path = tmp_path / "clip.wav"
    sf.write(path, wave, rate, subtype="FLOAT")
    clip, _ = load_clip(str(path), AudioSpec(clip_length=1.5))
    whole = soxr.resample(wave.mean(axis=1), rate, 16000)[:24000]
    np.testing.assert_allclose(clip, whole, atol=1e-5)


def test_old_configs_with_reduce_and_mono_still_load() -> None:
    from audiotune.config import OWN_MEANINGS_VERSION

    earlier = OWN_MEANINGS_VERSION - 1
    assert config_from_dict({"audio": {"reduce": True, "mono": "sum"}, "version": earlier}).audio.channel_mode == "sum"
    assert config_from_dict({"audio": {"reduce": False, "mono": "mean"}, "version": earlier}).audio.channel_mode == \
        "none"
    assert config_from_dict({"audio": {"channel_mode": "interleave"}}).audio.channel_mode == "interleave"


def test_a_file_shorter_than_its_header_promises_is_bad_audio(tmp_path: Path) -> None:
    whole = tmp_path / "whole.wav"
    sf.write(whole, tone(300, 0.15, 16000), 16000, subtype="PCM_16")
    data = whole.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:44 + 1560])  # a copy that stopped early: 780 of 2400 samples
    with pytest.raises(AudioError, match=r"cut.wav: truncated: the header promises 4800 bytes of audio, the file "
                                         r"holds 1560"):
        read_audio(str(cut))
    assert read_audio(str(whole))[0].shape[-1] == 2400
    streamed = bytearray(data)
    streamed[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # a writer that did not know the length
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    assert read_audio(str(tmp_path / "streamed.wav"))[0].shape[-1] == 2400


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_one_channel_is_its_own_mix(mode: str) -> None:
    mono = tone(300, 0.1, 8000)[None].astype(np.float32)
    mixed = map_channels(mono, mode)
    assert np.array_equal(mixed, numpy_modes(mono)[mode]) and np.shares_memory(mixed, mono)  # no copy


def test_remove_dc_subtracts_the_mean_of_the_prepared_clip(tmp_path: Path) -> None:
    """After the channel stage and the crop, as the NAIP seeds centred each clip once it was read and cut."""
    wave = np.stack([tone(300, 0.5, 16000) + 0.2, tone(500, 0.5, 16000) - 0.05], axis=1)
    sf.write(tmp_path / "offset.wav", wave, 16000, subtype="FLOAT")
    spec = AudioSpec(channel_mode="sum", clip_length=0.25)
    plain, _ = load_clip(str(tmp_path / "offset.wav"), spec)
    centred, rate = load_clip(str(tmp_path / "offset.wav"), AudioSpec(channel_mode="sum", clip_length=0.25,
                                                                      remove_dc=True))
    expected = wave[:4000].sum(axis=1)
    np.testing.assert_allclose(plain, expected, atol=1e-6)
    np.testing.assert_allclose(centred, expected - expected.mean(), atol=1e-6)
    assert (rate, centred.dtype, len(centred)) == (16000, np.float32, 4000) and abs(float(plain.mean())) > 0.1


@pytest.mark.parametrize("on_device", [False, True], ids=["features in the workers", "features on the device"])
def test_remove_dc_gives_the_mfcc_of_the_centred_clip_and_leaves_the_fbank(tmp_path: Path, on_device: bool) -> None:
    """A DC offset moves the low MFCC bands; the fbank removes it from every frame already."""
    import torch

    from audiotune.data.dataset import AudioDataset
    from audiotune.data.features import kaldi_fbank, mfcc
    from audiotune.data.input_spec import InputSpec
    from audiotune.data.loading import collator

    wave = tone(300, 0.5, 16000) + 0.2
    sf.write(tmp_path / "offset.wav", wave, 16000, subtype="FLOAT")
    table = pd.DataFrame({"path": [str(tmp_path / "offset.wav")]}, index=["offset"])

    def features(kind: str, remove_dc: bool) -> torch.Tensor:
        inputs = InputSpec(features=kind, num_mel_bins=40, n_mfcc=40, n_mels=64, clip_length=0, remove_dc=remove_dc)
        dataset = AudioDataset(table, np.zeros((1, 0), np.float32), inputs, on_device=on_device)
        collate = collator(dataset)
        batch = collate([dataset[0]])
        return (collate.features(batch) if on_device else batch)["inputs"][0]

    centred = torch.from_numpy(wave - wave.mean())
    expected = mfcc(centred, 16000, n_mfcc=40, n_mels=64)
    assert float((features("mfcc", True) - expected).abs().max()) < 1e-3
    as_read = features("mfcc", False)
    assert float((as_read - mfcc(torch.from_numpy(wave), 16000, n_mfcc=40, n_mels=64)).abs().max()) < 1e-3
    assert float((as_read - expected).abs().max()) > 1.0
    fbank = features("fbank", True)
    assert float((fbank - kaldi_fbank(centred, 16000, num_mel_bins=40)).abs().max()) < 1e-3
    assert float((fbank - features("fbank", False)).abs().max()) < 1e-3


def test_several_channels_with_channel_mode_none_name_the_flag_given(tmp_path: Path) -> None:
    """The error named only the seeds' --reduce False, not the --channel_mode none the user typed."""
    path = tmp_path / "stereo.wav"
    sf.write(path, tone(300, 0.5, 8000, channels=2), 8000)
    for read in (load_clip, check_clip):
        with pytest.raises(AudioError, match="stereo.wav: 2 channels, and --channel_mode none .* reads mono files "
                                             "only; choose --channel_mode mean"):
            read(str(path), AudioSpec(channel_mode="none"))
