"""Clips and spectrograms embedded as data URIs decode back to what was embedded."""
from __future__ import annotations

import base64
import io

import numpy as np
import soundfile as sf

from audiotune.report.media import audio_uri, log_spectrogram, spectrogram_uri


def decode(uri: str) -> tuple[str, bytes]:
    head, _, data = uri.partition(",")
    return head, base64.b64decode(data)


def test_a_small_clip_is_embedded_losslessly_with_its_length() -> None:
    wave = 0.3 * np.sin(np.linspace(0, 400, 8000)).astype(np.float32)
    uri, remark = audio_uri(wave, 16000, 96_000)
    head, data = decode(uri)
    assert head == "data:audio/flac;base64" and remark == ""
    decoded, rate = sf.read(io.BytesIO(data))
    assert rate == 16000 and len(decoded) == len(wave)
    assert np.abs(decoded - wave).max() < 1e-4


def test_a_large_clip_is_compressed_and_one_over_the_cap_even_compressed_is_not_embedded() -> None:
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 4).astype(np.float32)
    embedded = audio_uri(noise, 16000, 100_000)
    assert embedded is not None
    head, data = decode(embedded[0])
    assert head == "data:audio/ogg;base64" and embedded[1] == "compressed" and len(data) <= 100_000
    assert len(sf.read(io.BytesIO(data))[0]) == len(noise)
    assert audio_uri(noise, 16000, 20_000) is None  # the page links its source instead


def test_loud_clips_are_scaled_to_play_and_say_so() -> None:
    uri, remark = audio_uri(np.array([0.0, 2.0, -4.0] * 1000, dtype=np.float32), 8000, 96_000)
    decoded, _ = sf.read(io.BytesIO(decode(uri)[1]))
    assert "scaled by 1/4" in remark and np.abs(decoded).max() > 0.99


def test_spectrogram_shows_where_the_energy_is() -> None:
    rate = 16000
    t = np.arange(rate) / rate
    low, high = np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 6000 * t)
    assert log_spectrogram(low, rate)[:, 10].argmax() < log_spectrogram(high, rate)[:, 10].argmax()
    head, data = decode(spectrogram_uri(low, rate))
    assert head == "data:image/png;base64" and data.startswith(b"\x89PNG")
