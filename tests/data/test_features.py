"""Tests for audiotune.data.features against kaldi-native-fbank, a NumPy Kaldi reference and librosa.

Tolerances (log-mel, natural log):
* vs kaldi-native-fbank (a float32 C++ implementation): |diff| <= 2e-3 everywhere, and
  <= 5e-4 on bins within 40 dB of their frame's peak. The residual is float32 rounding
  inside knf's FFT (~1e-6 of the frame's peak power), which only shows in the log of
  weak bins; in float64 our output agrees with the float64 NumPy reference to 1e-9.
* MFCC vs librosa (float64 filters): atol 1e-3 on the cepstra (values up to ~800; observed
  <= 6e-4 for float32 input); float64 input agrees to 1e-8 on all frames but the last (see
  test_mfcc_matches_librosa).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from audiotune.data import spec_augment
from audiotune.data.features import (
    fbank_num_frames,
    kaldi_fbank,
    mfcc,
    mfcc_min_samples,
    mfcc_num_frames,
    mfcc_too_short,
    normalize,
    queued_on,
)
from audiotune.data.spec_augment import apply_masks

knf = pytest.importorskip("kaldi_native_fbank")
LOG_EPS = math.log(torch.finfo(torch.float32).eps)


def chirp_noise(sr: int, seconds: float = 1.0, seed: int = 0, gain: float = 1.0) -> np.ndarray:
    """A linear chirp from 100 Hz to near Nyquist plus white noise, float32 in [-1, 1]."""
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    sweep = 0.5 * np.sin(2 * np.pi * (100 * t + (sr / 2 - 200) / (2 * seconds) * t**2))
    return (gain * (sweep + 0.05 * rng.standard_normal(t.size))).astype(np.float32)


def knf_fbank(x: np.ndarray, sr: int, bins: int, window: str, frame_length_ms: float = 25.0) -> np.ndarray:
    """kaldi-native-fbank features; it takes the samples at the scale given (no int16 rescale)."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.window_type = window
    opts.frame_opts.samp_freq = sr
    opts.frame_opts.snip_edges = True
    opts.frame_opts.frame_length_ms = frame_length_ms
    opts.mel_opts.num_bins = bins
    opts.mel_opts.low_freq = 20
    opts.mel_opts.high_freq = 0  # 0 means Nyquist
    opts.use_energy = False
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(sr, x)
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


def numpy_kaldi_fbank(x: np.ndarray, sr: int, bins: int, window: str, frame_length_ms: float = 25.0) -> np.ndarray:
    """Float64 frame-by-frame transcription of Kaldi's fbank (keeps empty mel bins, as torchaudio)."""
    length, shift = int(sr * frame_length_ms * 0.001), int(sr * 10 * 0.001)
    padded = 1 << (length - 1).bit_length()
    a = 2 * np.pi / (length - 1)
    hann = 0.5 - 0.5 * np.cos(a * np.arange(length))
    win = {"hanning": hann, "povey": hann**0.85, "hamming": 0.54 - 0.46 * np.cos(a * np.arange(length)),
           "rectangular": np.ones(length)}[window]
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(sr / 2)
    delta = (hi - lo) / (bins + 1)
    banks = np.zeros((padded // 2, bins))
    for b in range(bins):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        for i in range(padded // 2):
            m = mel(i * sr / padded)
            if left < m < right:
                banks[i, b] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    out = []
    for t in range(1 + (len(x) - length) // shift):
        frame = x[t * shift : t * shift + length].astype(np.float64)
        frame = frame - frame.mean()
        frame = np.concatenate([[frame[0] * (1 - 0.97)], frame[1:] - 0.97 * frame[:-1]])
        power = np.abs(np.fft.rfft(frame * win, padded)) ** 2
        out.append(np.log(np.maximum(power[: padded // 2] @ banks, np.finfo(np.float32).eps)))
    return np.array(out)


def assert_close_to_knf(ours: np.ndarray, ref: np.ndarray) -> None:
    """Log-mel agreement, tighter on bins with energy near the frame peak."""
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref)
    assert diff.max() <= 2e-3, diff.max()
    strong = ref >= ref.max(axis=1, keepdims=True) - math.log(1e4)
    assert diff[strong].max() <= 5e-4, diff[strong].max()


@pytest.mark.parametrize(
    ("sr", "bins", "window", "frame_ms"),
    [
        (16000, 80, "hanning", 25.0), (8000, 80, "hanning", 25.0),
        (16000, 80, "povey", 25.0), (8000, 80, "povey", 25.0),
        (16000, 80, "hamming", 25.0), (16000, 80, "rectangular", 25.0),
        (16000, 128, "hanning", 50.0), (8000, 128, "hanning", 50.0),
        (16000, 128, "povey", 50.0), (22050, 128, "hanning", 25.0),
    ],
)
def test_fbank_matches_kaldi_native_fbank(sr: int, bins: int, window: str, frame_ms: float) -> None:
    x = chirp_noise(sr)
    ref = knf_fbank(x, sr, bins, window, frame_ms)
    ours = kaldi_fbank(torch.from_numpy(x), sr, bins, frame_length_ms=frame_ms, window_type=window)
    assert ours.dtype == torch.float32
    assert_close_to_knf(ours.numpy(), ref)


@pytest.mark.parametrize("sr", [16000, 8000])
def test_knf_rejects_128_bins_at_25ms(sr: int) -> None:
    # Kaldi asserts when a mel bin covers no FFT bin; torchaudio (and we) keep it at log(eps).
    with pytest.raises(ValueError, match="num_mel_bins too large"):
        knf_fbank(chirp_noise(sr, 0.1), sr, 128, "hanning")


def test_numpy_reference_matches_knf() -> None:
    x = chirp_noise(16000, 0.5)
    assert_close_to_knf(numpy_kaldi_fbank(x, 16000, 80, "povey"), knf_fbank(x, 16000, 80, "povey"))


@pytest.mark.parametrize(("sr", "empty"), [(16000, [3]), (8000, [4, 7, 12, 17])])
@pytest.mark.parametrize("window", ["hanning", "povey"])
def test_fbank_128_bins_matches_reference(sr: int, empty: list[int], window: str) -> None:
    x = chirp_noise(sr, 0.5)
    ref = numpy_kaldi_fbank(x, sr, 128, window)
    ours64 = kaldi_fbank(torch.from_numpy(x).double(), sr, 128, window_type=window).numpy()
    np.testing.assert_allclose(ours64, ref, rtol=0, atol=1e-9)
    ours32 = kaldi_fbank(torch.from_numpy(x), sr, 128, window_type=window).numpy()
    assert np.abs(ours32 - ref).max() <= 2e-3
    assert np.all(ours32[:, empty] == np.float32(LOG_EPS))  # the known AST "dead" bins


def test_fbank_batched_equals_per_item() -> None:
    clips = [chirp_noise(16000, 0.6, seed=s, gain=g) for s, g in [(0, 1), (1, 0.01), (2, 3)]]
    batch = torch.from_numpy(np.stack(clips))
    together = kaldi_fbank(batch, 16000, 128)
    assert together.shape == (3, fbank_num_frames(batch.shape[1], 16000), 128)
    for i in range(3):
        torch.testing.assert_close(together[i], kaldi_fbank(batch[i], 16000, 128), rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 163840])
def test_fbank_num_frames(n: int) -> None:
    expected = 1 + (n - 400) // 160
    assert fbank_num_frames(n, 16000) == expected
    assert kaldi_fbank(torch.zeros(2, n), 16000, 64).shape == (2, expected, 64)


def test_fbank_short_input_gives_zero_frames() -> None:
    assert fbank_num_frames(399, 16000) == 0
    assert kaldi_fbank(torch.zeros(2, 399), 16000).shape == (2, 0, 128)
    assert kaldi_fbank(torch.zeros(100), 16000, 80).shape == (0, 80)


@pytest.mark.parametrize("rate", [8000, 16000, 22050])
def test_frame_counts_of_a_tensor_are_the_frames_each_clip_gives(rate: int) -> None:
    counts = torch.tensor([0, 1, 199, 200, 201, 399, 400, 401, 559, 560, 1003])
    fbank = fbank_num_frames(counts, rate)
    assert fbank.tolist() == [fbank_num_frames(int(n), rate) for n in counts]
    assert fbank.tolist() == [kaldi_fbank(torch.zeros(int(n)), rate, 8).shape[0] for n in counts]
    long_enough = counts[counts >= mfcc_min_samples(400)]
    assert mfcc_num_frames(long_enough, 400).tolist() == [mfcc(torch.randn(int(n)), rate, n_mels=16, n_mfcc=8).shape[0]
                                                           for n in long_enough]


def librosa_mfcc(x: np.ndarray, sr: int, n_mfcc: int, n_fft: int, n_mels: int, top_db: float | None) -> np.ndarray:
    """(T, n_mfcc) reference following the torchaudio MFCC recipe with librosa + scipy."""
    import librosa
    import scipy.fft

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Empty filters detected")  # expected: 128 mels on 201 FFT bins
        spec = librosa.feature.melspectrogram(
            y=x.astype(np.float64), sr=sr, n_fft=n_fft, hop_length=n_fft // 2, win_length=n_fft, window="hann",
            center=True, pad_mode="reflect", power=2.0, n_mels=n_mels, htk=True, norm="slaney", fmin=0.0,
            fmax=sr / 2, dtype=np.float64,  # librosa builds float32 mel filters by default
        )
    db = 10.0 * np.log10(np.maximum(spec, 1e-10))
    if top_db is not None:
        db = np.maximum(db, db.max() - top_db)
    return scipy.fft.dct(db, type=2, norm="ortho", axis=0)[:n_mfcc].T


@pytest.mark.parametrize(("sr", "n_fft", "n_mels", "n_mfcc", "top_db"),
                         [(16000, 400, 128, 80, 80.0), (8000, 256, 64, 40, None), (22050, 512, 128, 128, 60.0)])
def test_mfcc_matches_librosa(sr: int, n_fft: int, n_mels: int, n_mfcc: int, top_db: float | None) -> None:
    x = chirp_noise(sr, 0.5)
    x[: sr // 10] = 0.0  # a silent stretch so the top_db clamp is exercised
    ref = librosa_mfcc(x, sr, n_mfcc, n_fft, n_mels, top_db)
    ours32 = mfcc(torch.from_numpy(x), sr, n_mfcc, n_fft, n_mels, top_db)
    ours64 = mfcc(torch.from_numpy(x).double(), sr, n_mfcc, n_fft, n_mels, top_db)
    assert ours32.shape == (mfcc_num_frames(len(x), n_fft), n_mfcc) == ref.shape
    np.testing.assert_allclose(ours32.numpy(), ref, rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours64.numpy(), ref, rtol=0, atol=1e-3)
    # librosa pads the tail chunk separately, which changes one edge sample of the last frame
    # when len % hop == 0 (the 16 kHz case); everywhere else float64 agrees to rounding.
    np.testing.assert_allclose(ours64.numpy()[:-1], ref[:-1], rtol=0, atol=1e-8)


def test_mfcc_top_db_is_per_clip() -> None:
    loud, quiet = chirp_noise(16000, 0.5, seed=0), chirp_noise(16000, 0.5, seed=1, gain=1e-4)
    batch = mfcc(torch.from_numpy(np.stack([loud, quiet])).double(), 16000)
    for i, clip in enumerate([loud, quiet]):
        torch.testing.assert_close(batch[i], mfcc(torch.from_numpy(clip).double(), 16000), rtol=0, atol=1e-8)
    # A batch-wide max would clamp the whole quiet clip to one value (a constant c0, zero c1..).
    assert batch[1, :, 1:].abs().max() > 1.0


def test_mfcc_of_a_padded_batch_with_lengths_gives_each_clip_its_own() -> None:
    clips = [chirp_noise(16000, seconds, seed=k, gain=gain) for k, (seconds, gain) in
             enumerate([(0.61, 1.0), (0.23, 1e-3), (0.4, 0.5)])]
    longest = max(len(clip) for clip in clips)
    padded = torch.zeros(len(clips), longest, dtype=torch.float64)
    for row, clip in enumerate(clips):
        padded[row, :len(clip)] = torch.from_numpy(clip)
    lengths = torch.tensor([len(clip) for clip in clips])
    batched = mfcc(padded, 16000, lengths=lengths)
    unaware = mfcc(padded, 16000)  # reflects at the tensor's edge: the shorter clips' last frames differ
    for row, clip in enumerate(clips):
        alone = mfcc(torch.from_numpy(clip).double(), 16000)
        torch.testing.assert_close(batched[row, :len(alone)], alone, rtol=0, atol=1e-8)
        if len(clip) < longest:
            assert not torch.allclose(unaware[row, :len(alone)], alone)
    with pytest.raises(ValueError, match="clip of 150 samples is too short for n_fft=400"):
        mfcc(padded, 16000, lengths=torch.tensor([longest, 150, 300]))


def test_mfcc_frames_and_short_clip() -> None:
    assert mfcc_num_frames(16000, 400) == 1 + 16000 // 200
    assert mfcc(torch.randn(2, 1000), 16000).shape == (2, mfcc_num_frames(1000, 400), 80)
    with pytest.raises(ValueError, match="too short for n_fft=400"):
        mfcc(torch.randn(200), 16000)
    assert mfcc(torch.randn(mfcc_min_samples(400)), 16000).shape[0] == 2 and not mfcc_too_short(201, 400)
    assert mfcc_too_short(200, 400) == "clip of 200 samples is too short for n_fft=400: reflect padding needs more " \
        "than 200 samples"


def test_normalize() -> None:
    x = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(normalize(x, 1.0, 2.0), torch.tensor([0.0, 0.5]))
    for bad in (0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="dataset std is 0"):
            normalize(x, 0.0, bad)
    assert normalize(0.0, -4.0, 4.0) == 0.5  # one value: AST's padding frame


def test_utterance_mean_normalisation_removes_a_gain() -> None:
    from audiotune.data.dataset import FeatureExtractor
    from audiotune.data.input_spec import InputSpec

    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    plain = FeatureExtractor(InputSpec(features="fbank", num_mel_bins=40))
    centred = FeatureExtractor(InputSpec(features="fbank", num_mel_bins=40, utterance_norm="mean"))
    scaled = FeatureExtractor(InputSpec(features="fbank", num_mel_bins=40, utterance_norm="meanvar"))
    # a gain adds the same log energy to every bin: gone once each bin's clip mean is subtracted
    assert (plain(clip * 4, 16000) - plain(clip, 16000)).abs().min() > 2.0
    torch.testing.assert_close(centred(clip * 4, 16000), centred(clip, 16000), atol=1e-3, rtol=0)
    feats = scaled(clip, 16000)
    torch.testing.assert_close(feats.mean(0), torch.zeros(40), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.std(0, unbiased=False), torch.ones(40), atol=1e-3, rtol=0)


def test_host_values_go_to_a_gpu_from_pinned_memory_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """queued_on: on CUDA, pinned and copied with non_blocking (a copy from pageable memory waits for the device's
    queued work); elsewhere a plain copy. SpecAugment's spans of a batch on the device go through it."""
    assert queued_on(np.array([[1, 2]]), "cpu", torch.long).tolist() == [[1, 2]]
    assert queued_on([0.5, 1.5], "cpu").dtype == torch.float32
    calls: list[str] = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pinned") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: calls.append(
        f"to {args[0]} non_blocking={kwargs.get('non_blocking', False)}") or self)
    queued_on([1, 2], torch.device("cuda", 0))
    assert calls == ["pinned", "to cuda:0 non_blocking=True"]
    monkeypatch.undo()

    sent: list[object] = []
    real = spec_augment.queued_on
    monkeypatch.setattr(spec_augment, "queued_on", lambda values, device, dtype=None: sent.append(device) or real(
        values, device, dtype))
    masked = apply_masks(torch.ones(2, 5, 4), [((0, 1), (0, 0)), ((1, 3), (2, 4))])
    assert sent == [torch.device("cpu")] and masked[1, :, 1:3].eq(0).all() and masked[1, 2:4].eq(0).all()
