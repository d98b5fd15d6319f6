"""Clips and spectrograms as data URIs: the report plays and shows them with nothing but the HTML file."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

# tried in order: lossless first, then a compressed one; a clip too large for either is linked, not embedded
AUDIO_FORMATS = (("FLAC", "PCM_16", "audio/flac"), ("OGG", "VORBIS", "audio/ogg"))


def _encode(wave: np.ndarray, rate: int, container: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), rate, format=container, subtype=subtype)
    return buffer.getvalue()


def audio_uri(wave: np.ndarray, rate: int, max_bytes: int) -> tuple[str, str] | None:
    """A (samples,) clip as a data URI of at most ``max_bytes`` bytes, and a note when it is not the clip as read
    losslessly (compressed, scaled); None when even compressed it is larger (the page links its source instead)."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    peak = float(np.abs(wave).max()) if len(wave) else 0.0
    if peak > 1.0:  # the model reads values beyond full scale; the player would clip them
        wave = wave / peak
    note = "" if peak <= 1.0 else f"scaled by 1/{peak:.3g} to play"
    for container, subtype, mime in AUDIO_FORMATS:
        data = _encode(wave, rate, container, subtype)
        if len(data) <= max_bytes:
            return _uri(mime, data), "; ".join(n for n in (note, "" if container == "FLAC" else "compressed") if n)
    return None


def _uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def log_spectrogram(wave: np.ndarray, rate: int, bins: int = 64) -> np.ndarray:
    """(bins, frames) log power of 25 ms Hann frames every 10 ms, frequencies pooled into ``bins`` bands."""
    size, hop = max(int(0.025 * rate), 16), max(int(0.010 * rate), 8)
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if len(wave) < size:
        wave = np.pad(wave, (0, size - len(wave)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, size)[::hop] * np.hanning(size)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.linspace(0, power.shape[1], bins + 1).astype(int)
    pooled = np.stack([power[:, a:max(b, a + 1)].mean(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=0)
    return np.log10(pooled + 1e-10)


def spectrogram_uri(wave: np.ndarray, rate: int, width: int = 240, height: int = 64) -> str:
    """A small PNG thumbnail of the clip's log spectrogram (low frequencies at the bottom)."""
    image = log_spectrogram(wave, rate, height)
    floor = image.max() - 8.0  # 80 dB of range
    image = np.clip(image, floor, None)
    columns = np.linspace(0, image.shape[1] - 1, min(width, image.shape[1])).astype(int)
    buffer = io.BytesIO()
    plt.imsave(buffer, image[::-1, columns], cmap="magma", format="png")
    return _uri("image/png", buffer.getvalue())
