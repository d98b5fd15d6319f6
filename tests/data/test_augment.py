"""Tests for audiotune.data.augment: waveform augmentations and mixup."""
from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from scipy import signal

from audiotune.config import RunConfig
from audiotune.data.augment import (
    AugmentConfig,
    WaveformAugmenter,
    mixup,
    sample_mixup_lambda,
)
from audiotune.data.features import fbank_num_frames
from audiotune.data.loading import make_dataset
from audiotune.models.backbones import input_spec, resolve_config

SR = 16000
AUGS = ["tshift", "speed", "gauss", "pshift", "gain", "stretch", "eq"]


def speech_like(sr: int = SR, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding 120-160 Hz f0 under a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 140.0 + 20.0 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 11))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t)) * np.hanning(len(t))
    wave = 0.3 * envelope * voiced + 0.003 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def tone(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wave: np.ndarray, sr: int) -> float:
    """Frequency of the largest FFT bin (Hann-windowed)."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spectrum)])


def rms_db(wave: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(wave.astype(np.float64) ** 2))))


def only(name: str, p: float = 1.0, **extra: float) -> AugmentConfig:
    return AugmentConfig(**{name: p}, **extra)


class _MaxRng:
    """Stand-in generator: every gate passes (if p > 0) and every uniform draw is its maximum."""

    def random(self) -> float:
        return 0.0

    def uniform(self, low: float, high: float, size: int | None = None):
        return high if size is None else np.full(size, high)

    def standard_normal(self, size: int) -> np.ndarray:
        return np.zeros(size)


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    return speech_like()


@pytest.mark.parametrize("name", AUGS)
def test_each_augmentation_changes_signal_keeps_shape(wave: np.ndarray, name: str) -> None:
    aug = WaveformAugmenter(only(name), seed=1)
    before = wave.copy()
    out = aug(wave, SR)
    assert out.shape == wave.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out - wave)) > 1e-4
    assert np.array_equal(wave, before)  # input untouched
    assert out is not wave


@pytest.mark.parametrize("name", AUGS)
def test_fresh_parameters_every_call(wave: np.ndarray, name: str) -> None:
    aug = WaveformAugmenter(only(name), seed=2)
    first, second = aug(wave, SR), aug(wave, SR)
    assert not np.allclose(first, second)


def test_probability_zero_is_exact_identity(wave: np.ndarray) -> None:
    aug = WaveformAugmenter(AugmentConfig(), seed=0)
    assert not aug.config.active
    for _ in range(3):
        out = aug(wave, SR)
        assert np.array_equal(out, wave) and out.dtype == np.float32 and out is not wave


def test_same_seed_same_sequence_different_seed_differs(wave: np.ndarray) -> None:
    cfg = AugmentConfig(tshift=0.5, speed=0.5, gauss=0.5, pshift=0.5, gain=0.5, stretch=0.5)
    a, b, c = (WaveformAugmenter(cfg, seed=s) for s in (7, 7, 8))
    seq_a = [a(wave, SR) for _ in range(6)]
    seq_b = [b(wave, SR) for _ in range(6)]
    seq_c = [c(wave, SR) for _ in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(seq_a, seq_b))
    assert not all(np.array_equal(x, y) for x, y in zip(seq_a, seq_c))


def test_pitch_shift_octave_uses_real_sample_rate() -> None:
    sr = 8000
    aug = WaveformAugmenter(only("pshift", pshiftn=12.0), seed=0)
    aug.rng = _MaxRng()  # forces +12 semitones
    out = aug(tone(440.0, sr), sr)
    assert aug.last_params["pshift_semitones"] == 12.0
    assert abs(peak_hz(out, sr) - 880.0) < 10.0


def test_pitch_shift_random_amounts_match_spectrum() -> None:
    sr = 8000
    aug = WaveformAugmenter(only("pshift", pshiftn=2.0), seed=3)
    for _ in range(5):
        out = aug(tone(440.0, sr), sr)
        semitones = aug.last_params["pshift_semitones"]
        assert -2.0 <= semitones <= 2.0
        assert abs(peak_hz(out, sr) - 440.0 * 2 ** (semitones / 12)) < 5.0


def test_gain_changes_rms_by_drawn_db(wave: np.ndarray) -> None:
    aug = WaveformAugmenter(only("gain"), seed=4)
    drawn = []
    for _ in range(30):
        delta = rms_db(aug(wave, SR)) - rms_db(wave)
        assert -12.0 - 1e-3 <= delta <= 12.0 + 1e-3
        assert delta == pytest.approx(aug.last_params["gain_db"], abs=1e-3)
        drawn.append(delta)
    assert min(drawn) < -3.0 and max(drawn) > 3.0  # spread over the range, both signs


def test_eq_filters_each_frequency_by_the_drawn_response() -> None:
    """A tone's steady-state level after eq equals the cascade's response at its frequency,
    recomputed from the drawn parameters alone; low tones lose more than mid ones on average."""
    drops: dict[float, list[float]] = {60.0: [], 1000.0: []}
    aug = WaveformAugmenter(only("eq"), seed=12)
    for _ in range(12):
        for freq in drops:
            out = aug(tone(freq, SR, seconds=2.0), SR)
            p = aug.last_params
            assert 40.0 <= p["eq_highpass_hz"] <= 600.0
            sections = [signal.butter(2, p["eq_highpass_hz"], btype="highpass", fs=SR, output="sos")]
            for band in range(2):
                centre, db, q = (p[f"eq_band{band}_{k}"] for k in ("hz", "db", "q"))
                assert 150.0 <= centre <= 0.45 * SR and -10.0 <= db <= 10.0 and 0.7 <= q <= 2.0
                amp, w0 = 10 ** (db / 40), 2 * np.pi * centre / SR
                alpha = np.sin(w0) / (2 * q)
                b = [1 + alpha * amp, -2 * np.cos(w0), 1 - alpha * amp]
                a = [1 + alpha / amp, -2 * np.cos(w0), 1 - alpha / amp]
                sections.append(signal.tf2sos(b, a))
            _, response = signal.sosfreqz(np.concatenate(sections), worN=[freq], fs=SR)
            expected_db = 20 * np.log10(abs(response[0]))
            steady = out[SR:]  # the second second: transients have died out
            measured_db = rms_db(steady) - rms_db(tone(freq, SR)[SR // 2:])
            assert measured_db == pytest.approx(expected_db, abs=0.3)
            drops[freq].append(measured_db)
    assert np.mean(drops[60.0]) < np.mean(drops[1000.0]) - 6.0


def test_eq_gate_leaves_other_streams_unchanged(wave: np.ndarray) -> None:
    """A configuration without eq draws exactly what it drew before eq existed (no extra gate)."""
    plain = WaveformAugmenter(only("gain", p=0.5), seed=3)
    reference = np.random.default_rng(3)
    for _ in range(5):
        out = plain(wave, SR)
        gates = [reference.random() < p for p in (0, 0, 0, 0, 0.5, 0)]
        if gates[4]:
            gain_db = reference.uniform(-12.0, 12.0)
            assert plain.last_params["gain_db"] == gain_db
        else:
            assert np.array_equal(out, wave)


def test_time_shift_bounded_by_half_second_at_real_rate() -> None:
    for sr in (8000, 16000):
        aug = WaveformAugmenter(only("tshift"), seed=5)
        for _ in range(20):
            out = aug(speech_like(sr), sr)
            assert len(out) == sr
            assert abs(aug.last_params["tshift_samples"]) <= 0.5 * sr
    short = np.ones(100, dtype=np.float32)  # 100 samples << 0.5 s: at most half the clip, so half of it stays
    aug = WaveformAugmenter(only("tshift"), seed=6)
    shifts = []
    for _ in range(50):
        out = aug(short, SR)
        shifts.append(abs(aug.last_params["tshift_samples"]))
        assert len(out) == 100 and shifts[-1] <= 50 and int((out == 1).sum()) >= 50
    assert max(shifts) == 50  # a shift past half the clip is held at half, not drawn again


def test_speed_keeps_length_for_extreme_rates(wave: np.ndarray) -> None:
    aug = WaveformAugmenter(only("speed"), seed=0)
    aug.rng = _MaxRng()  # rate 1.3: shorter resampled clip, padded back
    assert len(aug(wave, SR)) == len(wave) and aug.last_params["speed_rate"] == 1.3
    assert len(aug(wave[:1001], SR)) == 1001  # odd length


def test_speed_range_and_uncropped_speed_keep_the_whole_word(wave: np.ndarray) -> None:
    """--speed_range bounds the rate; --speed_crop False keeps the resampled length (n / rate), so a
    slowed clip loses nothing at its edges, where the seed's crop cuts the onset and the ending."""
    word = np.zeros(16000, dtype=np.float32)
    word[:40] = 1.0  # an onset at the very start of a tightly trimmed clip
    cropped = WaveformAugmenter(only("speed", speed_range=[0.8, 0.8]), seed=0)
    kept = WaveformAugmenter(only("speed", speed_range=[0.8, 0.8], speed_crop=False, gauss=1.0), seed=0)
    a, b = cropped(word, SR), kept(word, SR)
    assert cropped.last_params["speed_rate"] == pytest.approx(0.8) == kept.last_params["speed_rate"]
    assert len(a) == 16000 and len(b) == 20000  # later steps (here noise) keep the new length
    assert np.abs(a[:1000]).max() < 0.01  # the crop removed the onset
    assert np.abs(b[:60]).max() > 0.5  # kept: the onset, stretched to 50 samples
    rates = []
    for _ in range(200):
        out = WaveformAugmenter(only("speed", speed_range=[0.9, 1.1], speed_crop=False), seed=len(rates))(wave, SR)
        rates.append(len(wave) / len(out))
    assert 0.9 - 1e-3 <= min(rates) < 0.92 and 1.08 < max(rates) <= 1.1 + 1e-3
    for bad in ([1.2, 0.9], [0.9], [0.1, 1.0], [1.0, 5.0]):
        with pytest.raises(ValueError, match="--speed_range"):
            AugmentConfig(speed_range=bad)


def test_cut_edges_drops_a_bounded_random_share_at_each_end(wave: np.ndarray) -> None:
    """--cut_edges removes U(0, cut_max) s at each end, independently; the rest is the clip unchanged;
    a short clip loses at most a quarter at each end; off (the default), no gate is drawn."""
    aug = WaveformAugmenter(only("cut_edges", cut_max=0.05), seed=4)
    heads, tails = [], []
    for _ in range(200):
        out = aug(wave, SR)
        head, tail = int(aug.last_params["cut_start_samples"]), int(aug.last_params["cut_end_samples"])
        assert np.array_equal(out, wave[head : len(wave) - tail])
        heads.append(head)
        tails.append(tail)
    assert max(heads) <= 800 and max(tails) <= 800  # 0.05 s at 16 kHz
    assert min(heads) < 100 and max(heads) > 700 and min(tails) < 100 and max(tails) > 700
    assert abs(np.corrcoef(heads, tails)[0, 1]) < 0.2  # the two ends are drawn independently
    short = speech_like(seconds=0.1)  # 1600 samples: 0.05 s would be half of it
    aug = WaveformAugmenter(only("cut_edges", cut_max=0.05), seed=5)
    assert min(len(aug(short, SR)) for _ in range(50)) >= 800
    assert WaveformAugmenter(AugmentConfig(gain=0.5), seed=3)(wave, SR).shape == wave.shape
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="--cut_max"):
            AugmentConfig(cut_max=bad)


def test_no_augmentation_leaves_a_clip_shorter_than_the_model_reads(wave: np.ndarray) -> None:
    """min_length: the edge cut shrinks (both ends in proportion), an uncropped speed-up is centre-padded with
    noise; without it the same draws are kept."""
    clip = wave[:1000]
    bounded = WaveformAugmenter(only("cut_edges", cut_max=1.0), seed=7)
    free = WaveformAugmenter(only("cut_edges", cut_max=1.0), seed=7)
    lengths = []
    for _ in range(50):
        out, plain = bounded(clip, SR, min_length=900), free(clip, SR)
        head = int(bounded.last_params["cut_start_samples"])
        assert len(out) >= 900 and np.array_equal(out, clip[head : head + len(out)])
        lengths.append(len(plain))
    assert min(lengths) < 900  # the same draws without the bound cut deeper
    fast = WaveformAugmenter(only("speed", speed_range=[2.0, 2.0], speed_crop=False), seed=0)
    assert len(fast(clip, SR)) == 500 and len(fast(clip, SR, min_length=800)) == 800
    assert len(fast(clip, SR, min_length=300)) == 500


def test_training_clips_keep_the_models_shortest_length_under_edge_cuts(tmp_path: Path) -> None:
    """The training dataset passes the run's min_samples to the augmenter: a clip of exactly that length keeps
    all its fbank frames however deep --cut_edges cuts."""
    config = RunConfig()
    config.model.model = "ecapa_tdnn"
    config.features.features = "fbank"
    config.augment.cut_edges, config.augment.cut_max = 1.0, 1.0
    resolve_config(config)
    inputs = input_spec(config)
    shortest = inputs.min_samples
    frames = fbank_num_frames(shortest, SR)
    assert shortest > 0 and frames >= 1
    path = tmp_path / "short.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(shortest) / SR), SR)
    table = pd.DataFrame({"path": [str(path)]}, index=pd.Index(["a"], name="uid"))
    torch.manual_seed(0)
    dataset = make_dataset(config, inputs, table, np.zeros((1, 0), np.float32), train=True)
    assert [dataset[0]["length"] for _ in range(20)] == [frames] * 20
    torch.manual_seed(0)  # without the bound, the cut takes frames away
    unbounded = make_dataset(config, dataclasses.replace(inputs, min_samples=0), table, np.zeros((1, 0), np.float32),
                             train=True)
    assert min(unbounded[0]["length"] for _ in range(20)) < frames


def test_probability_gating_is_binomial(wave: np.ndarray) -> None:
    aug = WaveformAugmenter(only("gain", p=0.5), seed=9)
    changed = sum(not np.array_equal(aug(wave, SR), wave) for _ in range(200))
    assert 65 <= changed <= 135  # 100 +/- 5 sd of Binomial(200, 0.5)


def test_picklable_round_trip_preserves_state(wave: np.ndarray) -> None:
    cfg = AugmentConfig(tshift=1.0, speed=1.0, gauss=1.0, pshift=1.0, gain=1.0, stretch=1.0, eq=1.0)
    aug = WaveformAugmenter(cfg, seed=11)
    aug(wave, SR)
    clone = pickle.loads(pickle.dumps(aug))
    assert np.array_equal(clone(wave, SR), aug(wave, SR))


class _AugDataset:
    def __init__(self, aug: WaveformAugmenter, wave: np.ndarray) -> None:
        self.aug, self.wave = aug, wave

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> np.ndarray:
        return self.aug(self.wave, SR)


def test_dataloader_workers_get_distinct_streams(wave: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    aug = WaveformAugmenter(only("gain"), seed=0)
    loader = torch.utils.data.DataLoader(_AugDataset(aug, wave[:2000]), batch_size=None, num_workers=2)
    outs = [x.numpy() for x in loader]  # items 0, 2 from worker 0; 1, 3 from worker 1
    assert len(outs) == 4 and all(o.shape == (2000,) for o in outs)
    assert not np.array_equal(outs[0], outs[1])  # the two workers did not replay one stream


def test_config_validation_and_active() -> None:
    with pytest.raises(ValueError):
        AugmentConfig(gain=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(pshiftn=30.0)
    with pytest.raises(ValueError, match="--eq"):
        AugmentConfig(eq=-0.1)
    assert AugmentConfig(eq=0.2).active
    assert AugmentConfig(stretch=0.1).active and not AugmentConfig(pshiftn=4.0).active


def test_rejects_multichannel(wave: np.ndarray) -> None:
    with pytest.raises(ValueError):
        WaveformAugmenter(only("gain"))(np.stack([wave, wave]), SR)


def test_mixup_math() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(1000).astype(np.float32) + 0.5
    b_long = rng.standard_normal(1500).astype(np.float32) - 0.2
    ta, tb = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    wave, target = mixup(a, b_long, ta, tb, 1.0)
    assert wave.dtype == np.float32 and len(wave) == len(a)
    np.testing.assert_allclose(wave, a - a.mean(), atol=1e-5)
    np.testing.assert_allclose(target, ta)
    wave, target = mixup(a, b_long, ta, tb, 0.3)
    b_cut = b_long[:1000].astype(np.float64)
    expected = 0.3 * (a - a.mean()) + 0.7 * (b_cut - b_cut.mean())
    np.testing.assert_allclose(wave, expected - expected.mean(), atol=1e-5)
    np.testing.assert_allclose(target, [0.3, 0.0, 0.7], atol=1e-6)
    wave, _ = mixup(a, b_long[:300], ta, tb, 0.5)  # shorter b is zero-padded
    assert len(wave) == len(a) and abs(float(wave.mean())) < 1e-5
    with pytest.raises(ValueError):
        mixup(a, b_long, ta, tb, 1.5)


def test_sample_mixup_lambda_beta_10_10() -> None:
    lams = [sample_mixup_lambda(np.random.default_rng(1)) for _ in range(2)]
    assert lams[0] == lams[1]  # seeded
    rng = np.random.default_rng(2)
    draws = np.array([sample_mixup_lambda(rng) for _ in range(2000)])
    assert np.all((draws > 0) & (draws < 1))
    assert abs(draws.mean() - 0.5) < 0.01 and abs(draws.std() - np.sqrt(0.25 / 21)) < 0.01
