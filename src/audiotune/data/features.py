"""Batched, torchaudio-free audio features: Kaldi fbank, MFCC, normalisation (SpecAugment on them:
:mod:`audiotune.data.spec_augment`).

`kaldi_fbank` reproduces ``torchaudio.compliance.kaldi.fbank`` (dither 0, no energy,
``snip_edges=True``) and `mfcc` reproduces ``torchaudio.transforms.MFCC`` with
``log_mels=False``, both vectorised over a batch of waveforms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar, overload

import torch

_EPS = torch.finfo(torch.float32).eps  # Kaldi/torchaudio log floor (FLT_EPSILON)
_WINDOWS = ("hanning", "hamming", "povey", "rectangular")
Count = TypeVar("Count", int, torch.Tensor)  # a clip's sample count, or a tensor of them


def queued_on(values: object, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``values`` (numbers, a numpy array or a CPU tensor) as a tensor on ``device``, copied behind the work already
    queued there instead of after it: on CUDA from pinned memory without blocking. A plain ``torch.tensor(values,
    device=...)`` copies from pageable memory, which makes the host wait until the device has finished everything
    queued, so a training step could not be queued while the last one runs."""
    tensor, target = torch.as_tensor(values, dtype=dtype), torch.device(device)
    if target.type != "cuda" or tensor.device.type != "cpu":  # nothing to pin: a plain copy (or none)
        return tensor.to(target)
    return tensor.pin_memory().to(target, non_blocking=True)


@dataclass(frozen=True)
class FbankSettings:
    """The Kaldi fbank every fbank model reads (``torchaudio.compliance.kaldi.fbank``'s defaults, as AST's and
    SSAST's extractors call it): :func:`kaldi_fbank`'s defaults, the front end's frames, an exported graph's
    description."""

    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window: str = "hanning"
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: an offset from Nyquist


FBANK = FbankSettings()
MFCC_TOP_DB = 80.0  # the MFCC's dynamic range below each clip's peak, in dB (torchaudio's MFCC with top_db 80)


def _as_batch(waveforms: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Return a (B, N) floating tensor and whether the input was 1-D."""
    if waveforms.dim() not in (1, 2):
        raise ValueError(f"expected (N,) or (B, N) waveforms, got shape {tuple(waveforms.shape)}")
    squeeze = waveforms.dim() == 1
    x = waveforms.unsqueeze(0) if squeeze else waveforms
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)  # rfft has no integer/half CPU kernels
    return x, squeeze


def frame_samples(sample_rate: int, frame_length_ms: float = FBANK.frame_length_ms,
                  frame_shift_ms: float = FBANK.frame_shift_ms) -> tuple[int, int]:
    """Fbank window length and shift in samples, truncated as torchaudio does."""
    return int(sample_rate * frame_length_ms * 0.001), int(sample_rate * frame_shift_ms * 0.001)


def _frame_sizes(sample_rate: int, frame_length_ms: float, frame_shift_ms: float) -> tuple[int, int]:
    """:func:`frame_samples`, an error where they are too few for a frame."""
    frame_len, frame_shift = frame_samples(sample_rate, frame_length_ms, frame_shift_ms)
    if frame_len < 2 or frame_shift < 1:
        raise ValueError(f"frame length {frame_len} / shift {frame_shift} samples is too small")
    return frame_len, frame_shift


def min_samples_for_frames(features: str, n_fft: int, sample_rate: int, frames: int = 1) -> int:
    """Fewest samples at ``sample_rate`` that give ``frames`` frames of ``features`` (fbank, or mfcc with
    ``n_fft``; 0: waveform inputs, or a rate only known per file)."""
    if features == "fbank" and sample_rate:
        frame_len, frame_shift = _frame_sizes(sample_rate, FBANK.frame_length_ms, FBANK.frame_shift_ms)
        return frame_len + (frames - 1) * frame_shift
    if features == "mfcc":
        return max(mfcc_min_samples(n_fft), (frames - 1) * (n_fft // 2))
    return 0


def _floor_div(count: Count, step: int) -> Count:
    return torch.div(count, step, rounding_mode="floor") if isinstance(count, torch.Tensor) else count // step


def fbank_num_frames(num_samples: Count, sample_rate: int, frame_length_ms: float = FBANK.frame_length_ms,
                     frame_shift_ms: float = FBANK.frame_shift_ms) -> Count:
    """Number of Kaldi frames (``snip_edges=True``) for a clip of ``num_samples`` samples (an int, or a tensor of
    counts: the frames of each)."""
    frame_len, frame_shift = _frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    frames = 1 + _floor_div(num_samples - frame_len, frame_shift)
    return frames.clamp(min=0) if isinstance(frames, torch.Tensor) else max(frames, 0)


@lru_cache(maxsize=32)
def _kaldi_window(window_type: str, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Kaldi's symmetric analysis window (computed in float64, as Kaldi does in double)."""
    n = torch.arange(length, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * n / (length - 1))
    if window_type == "hanning":
        w = hann
    elif window_type == "povey":
        w = hann.pow(0.85)
    elif window_type == "hamming":
        w = 0.54 - 0.46 * torch.cos(2 * math.pi * n / (length - 1))
    elif window_type == "rectangular":
        w = torch.ones(length, dtype=torch.float64)
    else:
        raise ValueError(f"window_type must be one of {_WINDOWS}, got {window_type!r}")
    return queued_on(w.to(dtype), device)


@overload
def _kaldi_mel(freq: torch.Tensor) -> torch.Tensor: ...
@overload
def _kaldi_mel(freq: float) -> float: ...
def _kaldi_mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi mel scale: 1127 ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


VTLP_CUT = 0.6  # the warp is linear up to 0.6 x Nyquist (4800 Hz at 16 kHz), then meets Nyquist


def vtlp_frequencies(freqs: torch.Tensor, warp: float, nyquist: float) -> torch.Tensor:
    """Frequencies moved by a vocal tract length warp (Jaitly & Hinton, 2013): ``f * warp`` below a boundary
    and a straight line from there to Nyquist, so the axis keeps its ends and stays increasing."""
    if warp == 1.0:
        return freqs
    cut = VTLP_CUT * nyquist
    boundary = cut * min(warp, 1.0) / warp
    above = nyquist - (nyquist - cut * min(warp, 1.0)) / (nyquist - boundary) * (nyquist - freqs)
    return torch.where(freqs <= boundary, freqs * warp, above)


@lru_cache(maxsize=32)
def _kaldi_mel_banks(
    num_bins: int, padded_len: int, sample_rate: int, low_freq: float, high_freq: float,
    device: torch.device, dtype: torch.dtype, warp: float = 1.0,
) -> torch.Tensor:
    """(padded_len // 2 + 1, num_bins) Kaldi triangular mel weights, one row per rfft bin; the Nyquist row is
    zero. ``warp`` != 1 moves the spectrum's frequencies by :func:`vtlp_frequencies` before they meet the mel
    triangles."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist  # Kaldi: non-positive high_freq is an offset from Nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= nyquist, got {low_freq}, {high_freq}")
    mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    bins = torch.arange(num_bins, dtype=torch.float64).unsqueeze(0)
    left, center, right = mel_low + bins * delta, mel_low + (bins + 1) * delta, mel_low + (bins + 2) * delta
    fft_freqs = vtlp_frequencies(torch.arange(padded_len // 2, dtype=torch.float64) * (sample_rate / padded_len),
                                 warp, nyquist)
    mel = _kaldi_mel(fft_freqs).unsqueeze(1)
    up, down = (mel - left) / (center - left), (right - mel) / (right - center)
    # Bins narrower than one FFT bin stay all-zero (torchaudio allows this; Kaldi asserts).
    weights = torch.clamp(torch.minimum(up, down), min=0.0)
    return queued_on(torch.cat([weights, weights.new_zeros(1, num_bins)]).to(dtype), device)


def kaldi_fbank(
    waveforms: torch.Tensor,
    sample_rate: int,
    num_mel_bins: int = 128,
    frame_length_ms: float = FBANK.frame_length_ms,
    frame_shift_ms: float = FBANK.frame_shift_ms,
    preemphasis: float = FBANK.preemphasis,
    low_freq: float = FBANK.low_freq,
    high_freq: float = FBANK.high_freq,
    remove_dc_offset: bool = FBANK.remove_dc_offset,
    window_type: str = FBANK.window,
    htk_compat: bool = True,
    use_log: bool = True,
    warp: float = 1.0,
) -> torch.Tensor:
    """Kaldi log-mel filterbank, as ``torchaudio.compliance.kaldi.fbank`` with dither 0.

    Args:
        waveforms: (B, N) or (N,) waveforms, used at the scale given (no int16 rescaling).
        sample_rate: sampling rate in Hz.
        num_mel_bins: number of triangular mel bins.
        frame_length_ms / frame_shift_ms: window length and hop (``snip_edges=True``).
        preemphasis: per-frame preemphasis coefficient (first sample uses itself).
        low_freq / high_freq: mel band edges in Hz; ``high_freq <= 0`` is an offset from Nyquist.
        remove_dc_offset: subtract each frame's mean before preemphasis.
        window_type: "hanning" (symmetric), "hamming", "povey" or "rectangular".
        htk_compat: only moves the energy term in Kaldi; no energy is produced, so unused.
        use_log: log of mel energies floored at float32 eps (else linear energies).
        warp: vocal tract length warp of the frequency axis (:func:`vtlp_frequencies`; 1 = none).

    Returns:
        (B, T, num_mel_bins) features, or (T, num_mel_bins) for 1-D input, where
        T = `fbank_num_frames` (0 when the clip is shorter than one frame).
    """
    del htk_compat  # why: with use_energy=False Kaldi's htk_compat changes nothing
    x, squeeze = _as_batch(waveforms)
    frame_len, frame_shift = _frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    num_frames = fbank_num_frames(x.shape[-1], sample_rate, frame_length_ms, frame_shift_ms)
    padded_len = 1 << (frame_len - 1).bit_length()  # round_to_power_of_two=True
    banks = _kaldi_mel_banks(num_mel_bins, padded_len, sample_rate, float(low_freq), float(high_freq),
                             x.device, x.dtype, float(warp))
    window = _kaldi_window(window_type, frame_len, x.device, x.dtype)
    if num_frames == 0:
        out = x.new_zeros(x.shape[0], 0, num_mel_bins)
        return out[0] if squeeze else out
    # Each frame is written once into a zero-padded (B, T, padded_len) buffer: fewer batch-sized temporaries,
    # whose fresh pages, not the arithmetic, are most of the cost of a batch. unfold keeps only whole frames
    # (snip_edges): no slice, whose end would be a guard in an exported graph.
    raw = x.unfold(-1, frame_len, frame_shift)
    padded = x.new_zeros(*raw.shape[:2], padded_len)
    frames = padded[..., :frame_len]
    offset = raw.mean(dim=-1, keepdim=True) if remove_dc_offset else None
    if preemphasis != 0.0:
        # Kaldi, per DC-free frame: y[i] = x[i] - c * x[i-1] for i > 0, y[0] = x[0] - c * x[0]. Past the first
        # sample that is the waveform's own difference, less (1 - c) times the frame's mean: one pass over the
        # waveform rather than over frames that overlap 2.5 times.
        emphasised = torch.cat([x[..., :1], x[..., 1:] - preemphasis * x[..., :-1]], dim=-1)
        source, first = emphasised.unfold(-1, frame_len, frame_shift), raw[..., :1] * (1.0 - preemphasis)
        offset = None if offset is None else offset * (1.0 - preemphasis)
    else:
        source, first = raw, None
    if offset is None:
        frames.copy_(source)
    else:
        torch.sub(source, offset, out=frames)
    if first is not None:
        frames[..., :1] = first if offset is None else first - offset
    frames.mul_(window)
    spectrum = torch.fft.rfft(padded)
    power = spectrum.real.square().addcmul_(spectrum.imag, spectrum.imag)
    mel = power @ banks  # (B, T, M); the Nyquist bin has zero weight in Kaldi
    if use_log:
        mel = mel.clamp_(min=_EPS).log_()
    return mel[0] if squeeze else mel


def mfcc_num_frames(num_samples: Count, n_fft: int = 400) -> Count:
    """Frames of a centred STFT with hop n_fft // 2 (``1 + num_samples // hop`` for even n_fft), for an int or a
    tensor of sample counts."""
    hop = n_fft // 2
    return 1 + _floor_div(num_samples + 2 * hop - n_fft, hop)


def mfcc_min_samples(n_fft: int) -> int:
    """The fewest samples a clip needs for MFCC: its centred STFT's reflect padding needs more than n_fft // 2."""
    return n_fft // 2 + 1


def mfcc_too_short(num_samples: int, n_fft: int) -> str:
    """Why a clip of ``num_samples`` samples gives no MFCC ('' when it gives some)."""
    if num_samples >= mfcc_min_samples(n_fft):
        return ""
    return (f"clip of {num_samples} samples is too short for n_fft={n_fft}: reflect padding needs more than "
            f"{n_fft // 2} samples")


@lru_cache(maxsize=16)
def _mfcc_constants(
    sample_rate: int, n_fft: int, n_mels: int, n_mfcc: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Periodic Hann window, (F, n_mels) HTK/Slaney mel filters and (n_mels, n_mfcc) ortho DCT-II."""
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    f_max = float(sample_rate // 2)  # torchaudio MelScale default uses integer division
    all_freqs = torch.linspace(0.0, f_max, n_fft // 2 + 1, dtype=torch.float64)
    m_max = 2595.0 * math.log10(1.0 + f_max / 700.0)
    m_pts = torch.linspace(0.0, m_max, n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down, up = -slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    fb = fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels]))  # Slaney area normalisation
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64).unsqueeze(1)
    dct = torch.cos(math.pi / n_mels * (n + 0.5) * k)
    dct[0] *= 1.0 / math.sqrt(2.0)
    dct = dct * math.sqrt(2.0 / n_mels)
    return tuple(queued_on(t.to(dtype), device) for t in (window, fb, dct.t()))  # type: ignore[return-value]


def mfcc(
    waveforms: torch.Tensor,
    sample_rate: int,
    n_mfcc: int = 80,
    n_fft: int = 400,
    n_mels: int = 128,
    top_db: float | None = MFCC_TOP_DB,
    lengths: torch.Tensor | None = None,
    shortest: int | None = None,
) -> torch.Tensor:
    """MFCCs as ``torchaudio.transforms.MFCC(log_mels=False)`` with HTK mels and Slaney norm.

    The top_db clamp uses each clip's own maximum (torchaudio would pool the maximum over a
    batch), so a batched call of clips of one length equals per-clip calls; with ``lengths``, so does a
    zero-padded batch of clips of any lengths.

    Args:
        waveforms: (B, N) or (N,) waveforms.
        sample_rate: sampling rate in Hz.
        n_mfcc: number of cepstral coefficients kept (<= n_mels).
        n_fft: FFT size and window length; hop is n_fft // 2, centred with reflect padding.
        n_mels: number of mel bands.
        top_db: dynamic range kept below each clip's peak in dB; None disables it.
        lengths: (B,) samples of each clip of a zero-padded (B, N) batch: each clip is reflected at its own end
            and its peak is that of its own frames (frames past a clip's own are left for the caller to mask).
        shortest: the smallest of ``lengths`` when the caller knows it (None: read back from their device).

    Returns:
        (B, T, n_mfcc), or (T, n_mfcc) for 1-D input, with T = `mfcc_num_frames`.
    """
    if n_mfcc > n_mels:
        raise ValueError(f"n_mfcc ({n_mfcc}) cannot exceed n_mels ({n_mels})")
    x, squeeze = _as_batch(waveforms)
    if lengths is None:
        shortest = x.shape[-1]
    else:
        lengths = lengths if lengths.device == x.device else lengths.to(x.device)
        shortest = int(lengths.min()) if shortest is None else shortest  # on a GPU the host waits for the device
    too_short = mfcc_too_short(shortest, n_fft)
    if too_short:
        raise ValueError(too_short)
    window, fb, dct = _mfcc_constants(sample_rate, n_fft, n_mels, n_mfcc, x.device, x.dtype)
    centred = lengths is None  # else each clip is reflect-padded at its own ends here
    framed = x if lengths is None else _reflect_each(x, lengths, n_fft // 2)
    spec = torch.stft(framed, n_fft, hop_length=n_fft // 2, win_length=n_fft, window=window, center=centred,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    power = spec.real.square() + spec.imag.square()  # (B, F, T)
    mel = power.transpose(-1, -2) @ fb  # (B, T, n_mels)
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    if top_db is not None:
        peaks = db
        if lengths is not None:  # a clip's peak over its own frames only
            frames = mfcc_num_frames(lengths, n_fft)
            own = torch.arange(db.shape[-2], device=db.device)[None, :] < frames[:, None]
            peaks = db.masked_fill(~own[..., None], -torch.inf)
        floor = peaks.amax(dim=(-2, -1), keepdim=True) - top_db  # why: per clip, not per batch
        db = torch.maximum(db, floor)
    out = db @ dct
    return out[0] if squeeze else out


def _reflect_each(x: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, N) zero-padded clips → (B, N + 2 pad), each reflect-padded at its own start and end as a centred STFT
    pads a clip alone (positions past a clip's reflection repeat its first sample: no frame of its own reads them)."""
    last = (lengths - 1)[:, None]  # on the device of x
    positions = torch.arange(-pad, x.shape[-1] + pad, device=x.device).abs()[None, :]
    positions = torch.where(positions > last, 2 * last - positions, positions).clamp(min=0)
    return x.gather(-1, positions.expand(x.shape[0], -1))


Normalised = TypeVar("Normalised", float, torch.Tensor)


def normalize(features: Normalised, mean: float, std: float) -> Normalised:
    """AST/SSAST dataset normalisation: ``(x - mean) / (2 * std)``, of features or of one value."""
    if not math.isfinite(std) or std == 0:
        raise ValueError(
            f"dataset std is 0 or not finite (got {std}): set --dataset_std or run `audiotune stats`"
        )
    return (features - mean) / (2.0 * std)
