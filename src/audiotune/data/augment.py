"""Waveform augmentations for training: seeded, per-call random, length-preserving (but for speed
perturbation with ``speed_crop`` off and for the edge cut).

Each augmentation is gated by its own probability and draws fresh parameters on every
call from one seeded ``np.random.Generator`` held by :class:`WaveformAugmenter`.
Pitch shift and time stretch use audiomentations (signalsmith-stretch backend) with the
parameters we drew injected through ``freeze_parameters`` + ``parameters``, so
audiomentations never touches the global ``random``/``np.random`` state.  Time shift,
speed, gain, Gaussian noise and equalisation are a few lines of numpy/soxr/scipy and are done
here directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from audiomentations import PitchShift, TimeStretch
from scipy import signal

from audiotune.config import AUGMENT_GATES, AUGMENT_LATE_GATES, AugmentConfig

__all__ = ["AugmentConfig", "DeviceTail", "WaveformAugmenter", "mixup", "sample_mixup_lambda"]

_TSHIFT_MAX_S = 0.5  # time shift bound in seconds
_FILL_NOISE = 0.001  # amplitude of the uniform noise that fills vacated samples
_STRETCH_RANGE = (0.5, 1.5)
_GAIN_DB_RANGE = (-12.0, 12.0)
_GAUSS_RANGE = (0.001, 0.015)  # audiomentations AddGaussianNoise default amplitudes
GAUSS_PEAK_FLOOR = 1e-3  # the noise's std is a share of the clip's peak, at least this
_MIXUP_ALPHA = 10.0
_HIGHPASS_HZ = (40.0, 600.0)  # eq: high-pass cutoff range (log-uniform)
_EQ_BANDS = 2  # eq: peaking bands after the high-pass
_EQ_CENTRE_HZ = 150.0  # eq: lowest band centre; the highest is 0.45 x the sample rate
_EQ_GAIN_DB = 10.0  # eq: band gains in U(-10, 10) dB
_EQ_Q_RANGE = (0.7, 2.0)
_CUT_MAX_SHARE = 0.25  # cut_edges removes at most this share of the clip at each end


def _fit_centre(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Centre-crop ``wave`` to ``length`` or centre-pad it with small uniform noise."""
    n = len(wave)
    if n >= length:
        start = (n - length) // 2
        return wave[start : start + length]
    out = rng.uniform(-_FILL_NOISE, _FILL_NOISE, length).astype(np.float32)
    start = (length - n) // 2
    out[start : start + n] = wave
    return out


def _fit_end(wave: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad ``wave`` at the end to exactly ``length`` samples."""
    if len(wave) >= length:
        return wave[:length]
    return np.concatenate([wave, np.zeros(length - len(wave), dtype=wave.dtype)])


def _current_worker_seed() -> int | None:
    """The torch DataLoader worker's seed, or None outside a worker (or without torch)."""
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # torch is optional for pure-numpy use
        return None
    info = get_worker_info()
    return None if info is None else int(info.seed)


@dataclass(frozen=True)
class DeviceTail:
    """The last augmentations of one clip, drawn in a data worker and applied after the transfer, batched
    (:mod:`audiotune.data.device_augment`): the equalisation's cascade (SOS rows; None: none), the gain factor, the
    Gaussian noise's std as a share of the clip's peak (0: none; the peak after the gain, at least
    ``GAUSS_PEAK_FLOOR``) and the seed of its values. The default finishes nothing."""

    sections: np.ndarray | None = None
    gain: float = 1.0
    noise_share: float = 0.0
    noise_seed: int = 0

    @property
    def active(self) -> bool:
        return self.sections is not None or self.gain != 1.0 or self.noise_share > 0.0


class WaveformAugmenter:
    """Applies the augmentations of an :class:`AugmentConfig` to mono waveforms.

    Order: edge cut, time shift, speed, time stretch, pitch shift, equalisation, gain, Gaussian noise.
    All randomness comes from ``self.rng``; the same seed gives the same output
    sequence.  Inside a torch DataLoader worker the generator is re-seeded once per
    worker from ``(seed, worker_info.seed)`` so workers (and epochs, whose worker seeds
    differ) do not replay identical augmentations.  Picklable (no lambdas / closures).
    """

    def __init__(self, config: AugmentConfig, seed: int | None = None) -> None:
        self.config = config
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None  # worker seed the rng was last derived from
        self.last_params: dict[str, float] = {}  # parameters of the latest call (logging/tests)
        # p=1.0: gating is ours; parameters are injected per call (frozen = no self-draw).
        self._pitch = PitchShift(min_semitones=-config.pshiftn, max_semitones=config.pshiftn, p=1.0)
        self._stretch = TimeStretch(
            min_rate=_STRETCH_RANGE[0], max_rate=_STRETCH_RANGE[1], leave_length_unchanged=True, p=1.0
        )
        self._pitch.freeze_parameters()
        self._stretch.freeze_parameters()

    def reseed(self, seed: int | None) -> None:
        """Replace the generator (e.g. from a custom ``worker_init_fn``); not overridden later."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._worker_seed = _current_worker_seed()  # so the automatic worker reseed skips

    def _maybe_reseed_for_worker(self) -> None:
        """Derive a distinct, reproducible stream per DataLoader worker process."""
        worker_seed = _current_worker_seed()
        if worker_seed is None or worker_seed == self._worker_seed:
            return
        self._worker_seed = worker_seed
        entropy = [worker_seed] if self.seed is None else [self.seed, worker_seed]
        self.rng = np.random.default_rng(np.random.SeedSequence(entropy))

    def __call__(self, waveform: np.ndarray, sample_rate: int, min_length: int = 0) -> np.ndarray:
        """Augment a 1-D float mono waveform.

        Returns a new float32 array of the same length (shorter after an edge cut; of the speed-changed
        length when ``speed_crop`` is off); each augmentation is applied with its probability and fresh
        random parameters. ``min_length`` (the shortest clip the model reads) bounds what the edge cut and
        an uncropped speed-up may leave: the cut shrinks, a sped-up clip is centre-padded with noise.
        """
        return self._augment(waveform, sample_rate, min_length, defer=False)[0]

    def split(self, waveform: np.ndarray, sample_rate: int, min_length: int = 0) -> tuple[np.ndarray, DeviceTail]:
        """As a call, but the last augmentations (equalisation, gain, Gaussian noise) are drawn and not applied:
        the waveform up to the pitch shift, and the :class:`DeviceTail` that finishes it batched on the model's
        device (:mod:`audiotune.data.device_augment`). The draws are the call's, but for the noise's own values:
        one seed for the device's generator instead of the samples."""
        return self._augment(waveform, sample_rate, min_length, defer=True)

    def _augment(self, waveform: np.ndarray, sample_rate: int, min_length: int,
                 defer: bool) -> tuple[np.ndarray, DeviceTail]:
        wave = np.array(waveform, dtype=np.float32, copy=True)  # never alias the input
        if wave.ndim != 1:
            raise ValueError(f"expected a 1-D mono waveform, got shape {wave.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self._maybe_reseed_for_worker()
        n = len(wave)
        cfg = self.config
        # One gate draw per augmentation on every call keeps the stream layout stable.
        gates = {name: self.rng.random() < getattr(cfg, name) for name in AUGMENT_GATES}
        for name in AUGMENT_LATE_GATES:  # drawn after the others, only when on: older streams are unchanged
            if getattr(cfg, name) > 0.0:
                gates[name] = self.rng.random() < getattr(cfg, name)
        self.last_params = {}
        if n == 0 or not any(gates.values()):
            return wave, DeviceTail()
        if gates.get("cut_edges"):
            wave = self._cut_edges(wave, sample_rate, min_length)
            n = len(wave)
        if gates["tshift"]:
            wave = self._time_shift(wave, sample_rate)
        if gates["speed"]:
            low, high = cfg.speed_range
            rate = float(self.rng.uniform(low, high))
            self.last_params["speed_rate"] = rate
            # Treat the clip as recorded at sr*rate and resample to sr: n/rate samples, pitch x rate.
            fast = soxr.resample(wave, sample_rate * rate, sample_rate).astype(np.float32)
            wave = _fit_centre(fast, n if cfg.speed_crop else max(len(fast), min_length), self.rng)
            n = len(wave)  # the length every later step keeps
        if gates["stretch"]:
            rate = float(self.rng.uniform(*_STRETCH_RANGE))
            self.last_params["stretch_rate"] = rate
            self._stretch.parameters = {"should_apply": True, "rate": rate}
            wave = _fit_end(self._stretch(wave, sample_rate), n)
        if gates["pshift"]:
            semitones = float(self.rng.uniform(-cfg.pshiftn, cfg.pshiftn))
            self.last_params["pshift_semitones"] = semitones
            self._pitch.parameters = {"should_apply": True, "num_semitones": semitones}
            wave = _fit_end(self._pitch(wave, sample_rate), n)
        # the tail: every parameter drawn in the same order wherever it is applied
        sections = self._eq_sections(sample_rate) if gates.get("eq") else None
        gain = 1.0
        if gates["gain"]:
            gain_db = float(self.rng.uniform(*_GAIN_DB_RANGE))
            self.last_params["gain_db"] = gain_db
            gain = 10.0 ** (gain_db / 20.0)
        share = float(self.rng.uniform(*_GAUSS_RANGE)) if gates["gauss"] else 0.0
        if defer:
            if share:
                self.last_params["gauss_share"] = share
            return wave, DeviceTail(sections, gain, share, int(self.rng.integers(2**63)) if share else 0)
        if sections is not None:
            wave = signal.sosfilt(sections, wave).astype(np.float32)
        if gates["gain"]:
            wave = wave * np.float32(gain)
        if share:
            std = share * max(float(np.max(np.abs(wave))), GAUSS_PEAK_FLOOR)  # the floor: silence still gets noise
            self.last_params["gauss_std"] = std
            wave = wave + (std * self.rng.standard_normal(n)).astype(np.float32)
        return np.ascontiguousarray(wave, dtype=np.float32), DeviceTail()

    def _time_shift(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Shift by U(-0.5 s, 0.5 s) without rollover, at most half the clip (half of it always stays: a short
        clip is never shifted out whole, leaving only the fill); fill the gap with tiny noise."""
        n = len(wave)
        shift = int(round(self.rng.uniform(-_TSHIFT_MAX_S, _TSHIFT_MAX_S) * sample_rate))
        shift = max(-(n // 2), min(n // 2, shift))
        self.last_params["tshift_samples"] = float(shift)
        out = self.rng.uniform(-_FILL_NOISE, _FILL_NOISE, n).astype(np.float32)
        if shift >= 0:
            out[shift:] = wave[: n - shift]
        else:
            out[:shift] = wave[-shift:]
        return out

    def _cut_edges(self, wave: np.ndarray, sample_rate: int, min_length: int) -> np.ndarray:
        """Drop U(0, cut_max) s at each end, independently, at most a quarter of the clip at each; both cuts
        shrink in proportion where they would leave fewer than ``min_length`` samples."""
        n = len(wave)
        longest = min(int(self.config.cut_max * sample_rate), int(n * _CUT_MAX_SHARE))
        head, tail = (int(self.rng.integers(0, longest + 1)) for _ in range(2))
        spare = max(n - min_length, 0)
        if head + tail > spare:
            head = head * spare // (head + tail)
            tail = min(tail, spare - head)
        self.last_params.update({"cut_start_samples": float(head), "cut_end_samples": float(tail)})
        return wave[head : n - tail]

    def _eq_sections(self, sample_rate: int) -> np.ndarray:
        """Draws a random high-pass, then random peaking bands (RBJ cookbook biquads): one cascade, as SOS rows."""
        nyquist = sample_rate / 2.0
        low, high = np.log(_HIGHPASS_HZ[0]), np.log(min(_HIGHPASS_HZ[1], 0.45 * nyquist))
        cutoff = float(np.exp(self.rng.uniform(low, high)))
        self.last_params["eq_highpass_hz"] = cutoff
        sections = [_highpass_sos(cutoff, sample_rate)]
        top = 0.45 * sample_rate
        for band in range(_EQ_BANDS):
            centre = float(np.exp(self.rng.uniform(np.log(min(_EQ_CENTRE_HZ, top / 2)), np.log(top))))
            gain_db = float(self.rng.uniform(-_EQ_GAIN_DB, _EQ_GAIN_DB))
            q = float(self.rng.uniform(*_EQ_Q_RANGE))
            self.last_params.update({f"eq_band{band}_hz": centre, f"eq_band{band}_db": gain_db,
                                     f"eq_band{band}_q": q})
            sections.append(_peaking_sos(centre, gain_db, q, sample_rate))
        return np.concatenate(sections)

    def __repr__(self) -> str:
        return f"WaveformAugmenter({self.config!r}, seed={self.seed!r})"


def _highpass_sos(cutoff: float, sample_rate: int) -> np.ndarray:
    """The 2nd-order Butterworth high-pass (the cookbook's high-pass at Q = 1/sqrt(2): the same bilinear-transform
    biquad as ``scipy.signal.butter(2, cutoff, "highpass")``, without designing it) as a (1, 6) SOS row."""
    w0 = 2.0 * np.pi * cutoff / sample_rate
    alpha, cos_w0 = np.sin(w0) / np.sqrt(2.0), np.cos(w0)
    b = np.array([(1.0 + cos_w0) / 2.0, -(1.0 + cos_w0), (1.0 + cos_w0) / 2.0])
    a = np.array([1.0 + alpha, -2.0 * cos_w0, 1.0 - alpha])
    return np.concatenate([b / a[0], a / a[0]])[None, :]


def _peaking_sos(centre: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """One peaking-EQ biquad (Robert Bristow-Johnson's audio EQ cookbook) as a (1, 6) SOS row."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * centre / sample_rate
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * amp, -2.0 * np.cos(w0), 1.0 - alpha * amp])
    a = np.array([1.0 + alpha / amp, -2.0 * np.cos(w0), 1.0 - alpha / amp])
    return np.concatenate([b / a[0], a / a[0]])[None, :]


def mixup(
    wave_a: np.ndarray,
    wave_b: np.ndarray,
    target_a: np.ndarray,
    target_b: np.ndarray,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Mix two examples: ``lam * a + (1 - lam) * b`` for waves and targets.

    ``wave_b`` is zero-padded or cut to ``len(wave_a)``; both waves are mean-centred
    before mixing and the mix is re-centred.  Returns float32 ``(wave, target)``.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    a = np.asarray(wave_a, dtype=np.float64).reshape(-1)
    b = _fit_end(np.asarray(wave_b, dtype=np.float64).reshape(-1), len(a))
    a = a - a.mean() if len(a) else a
    b = b - b.mean() if len(b) else b
    mixed = lam * a + (1.0 - lam) * b
    mixed = mixed - mixed.mean() if len(mixed) else mixed
    ta = np.asarray(target_a, dtype=np.float64)
    tb = np.asarray(target_b, dtype=np.float64)
    if ta.shape != tb.shape:
        raise ValueError(f"target shapes differ: {ta.shape} vs {tb.shape}")
    target = lam * ta + (1.0 - lam) * tb
    return mixed.astype(np.float32), target.astype(np.float32)


def sample_mixup_lambda(rng: np.random.Generator) -> float:
    """Draw a mixup weight from Beta(10, 10) (concentrated around 0.5)."""
    return float(rng.beta(_MIXUP_ALPHA, _MIXUP_ALPHA))
