"""The front end: a zero-padded batch of waveforms with their lengths → model inputs with their lengths.

One implementation of every step between a prepared clip and the model: waveform normalisation for pretrained
encoders; Kaldi fbank (with an optional per-clip VTLP warp) or MFCC, per-clip utterance normalisation, the
training SpecAugment masks and the dataset mean/std for spectrogram models; and, for fixed-size models,
``target_length`` frames. The dataset runs
it on a batch of one clip in its workers (:class:`~audiotune.data.dataset.FeatureExtractor`), or on whole padded
batches on the model's device (``--features_on device``); an exported graph runs it on whole padded batches.

Each clip's valid frames come from its own samples only (fbank frames never reach past a clip's end;
normalisation statistics are masked; frames past a clip's length are zero, as the collator pads), so a padded
batch gives every clip what it gets alone; MFCC's centred STFT reflects at each clip's own end where asked
(``own_edges``, the batched features of :mod:`audiotune.data.batch_features`), else at the tensor's edge, where
only a clip as long as the batch gets its own result.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from audiotune.config.options import idle_options
from audiotune.config.sections import ZERO_PAD, FeatureConfig
from audiotune.data.audio import AudioError
from audiotune.data.features import (
    FBANK,
    fbank_num_frames,
    frame_samples,
    kaldi_fbank,
    mfcc,
    mfcc_num_frames,
    mfcc_too_short,
    normalize,
)
from audiotune.data.input_spec import InputSpec
from audiotune.data.spec_augment import apply_masks, draw_masks


def waveform_batch(clips: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Clips zero-padded into one float32 (B, N) batch, and each clip's sample count (B,) int64.

    A single clip becomes a batch of one without a copy where it already is contiguous float32.
    """
    if len(clips) == 1:
        waves = torch.from_numpy(np.ascontiguousarray(clips[0], dtype=np.float32))[None]
        return waves, torch.tensor([waves.shape[1]], dtype=torch.long)
    waves = torch.zeros(len(clips), max((len(clip) for clip in clips), default=0))
    for row, clip in enumerate(clips):
        waves[row, :len(clip)] = torch.from_numpy(np.asarray(clip, dtype=np.float32))
    return waves, torch.tensor([len(clip) for clip in clips], dtype=torch.long)


def check_feature_config(config: InputSpec) -> None:
    """A ValueError for settings no clip can be prepared with, raised before any clip is read."""
    if config.features == "fbank" and not config.num_mel_bins:
        raise ValueError("--num_mel_bins is not set (the backbone's input spec sets its default)")
    if config.features == "mfcc" and config.n_mfcc > config.n_mels:
        raise ValueError(f"n_mfcc ({config.n_mfcc}) cannot exceed n_mels ({config.n_mels})")
    if config.dataset_mean is not None and config.dataset_std is None:  # as its option declares
        raise ValueError(idle_options(FeatureConfig(dataset_mean=config.dataset_mean), lambda switch: None)[0])
    if config.dataset_std is not None or config.dataset_mean is not None:
        # a bad statistic fails here, not in a data worker halfway through an epoch
        normalize(torch.zeros(1), config.dataset_mean or 0.0, config.dataset_std or 0.0)


class FrontEnd(nn.Module):
    """The front end of an :class:`~audiotune.data.input_spec.InputSpec` at one sample rate: (B, N) waveforms and
    their lengths → model inputs and their lengths.

    ``forward`` gives what the model reads (``target_length`` frames where set); :meth:`extract` gives each clip's
    features at its own length, which the dataset's collator pads (with zeros or silence) and fits itself.
    """

    padding: Tensor | None  # the pad frame (:meth:`pad_frame`), a buffer that moves with the module

    def __init__(self, config: InputSpec, sample_rate: int):
        super().__init__()
        check_feature_config(config)
        self.config, self.sample_rate = config, sample_rate
        self.frame_length, self.frame_shift = frame_samples(sample_rate)  # kaldi_fbank's, with which it is called
        # computed once here (a tenth of a second of silence), not in every batch that fit_length pads
        self.register_buffer("padding", self._padding_frame(), persistent=False)

    def frame_counts(self, lengths: Tensor) -> Tensor:
        """Frames of each clip's own samples (for waveform inputs: the samples themselves)."""
        if self.config.features == "fbank":
            return fbank_num_frames(lengths, self.sample_rate)
        if self.config.features == "mfcc":
            return mfcc_num_frames(lengths, self.config.n_fft)
        return lengths

    def check_clip(self, num_samples: int, path: str = "") -> None:
        """An :class:`AudioError` naming ``path`` when a clip of ``num_samples`` samples gives no features."""
        cfg = self.config
        if cfg.features == "fbank" and num_samples < self.frame_length:
            raise AudioError(f"{path}: clip of {num_samples} samples is shorter than one "
                             f"{FBANK.frame_length_ms:g} ms fbank frame")
        too_short = mfcc_too_short(num_samples, cfg.n_fft) if cfg.features == "mfcc" else ""
        if too_short:
            raise AudioError(f"{path}: {too_short}")

    def _spectra(self, waveforms: Tensor, warps: Sequence[float] | None, lengths: Tensor | None = None,
                 counts: Sequence[int] | None = None) -> Tensor:
        """(B, N) waveforms → (B, frames, bins) fbank (each clip warped by its VTLP factor) or MFCC (with
        ``lengths``: each clip's frames as it gets them alone; ``counts``, the same as plain numbers, spare reading
        them back from the device)."""
        cfg = self.config
        if warps is not None and len(warps) != waveforms.shape[0]:
            raise ValueError(f"{len(warps)} VTLP warps for a batch of {waveforms.shape[0]} clips")
        if warps is not None and all(warp == 1.0 for warp in warps):
            warps = None  # no clip warped: one call for the whole batch
        if warps is not None and cfg.features != "fbank":
            raise ValueError(f"VTLP warps the fbank's frequency axis; --features {cfg.features} has none")
        if cfg.features == "fbank":
            assert cfg.num_mel_bins is not None  # __init__ rejects fbank without num_mel_bins
            if warps is not None:  # the mel banks depend on the warp: one call per clip
                return torch.cat([kaldi_fbank(waveforms[row:row + 1], self.sample_rate,
                                              num_mel_bins=cfg.num_mel_bins, warp=float(warp))
                                  for row, warp in enumerate(warps)])
            return kaldi_fbank(waveforms, self.sample_rate, num_mel_bins=cfg.num_mel_bins)
        return mfcc(waveforms, self.sample_rate, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                    lengths=lengths, shortest=min(counts) if counts and lengths is not None else None)

    def clip(self, waveform: Tensor, warp: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """One whole clip (N,) → its inputs, (frames, bins) features or (N,) samples: the dataset's path, per
        clip in its workers, where no frame is padding, so no statistic is masked. ``generator`` (training):
        the clip's SpecAugment draws (:meth:`spec_masks`)."""
        cfg = self.config
        if cfg.features == "waveform":
            if not cfg.waveform_norm:
                return waveform
            centred = waveform - waveform.mean()
            return centred / torch.sqrt(centred.square().mean() + 1e-7)
        feats = self._spectra(waveform[None], [warp])
        if cfg.utterance_norm != "none":
            feats = feats - feats.mean(1, keepdim=True)
            if cfg.utterance_norm == "meanvar":
                feats = feats / torch.sqrt(feats.square().mean(1, keepdim=True) + 1e-5)
        feats = self.spec_masks(feats, [feats.shape[1]], None if generator is None else [generator])
        return self._dataset_norm(feats)[0]

    def spec_masks(self, feats: Tensor, frames: Sequence[int],
                   generators: Sequence[torch.Generator] | None) -> Tensor:
        """Each clip's SpecAugment masks (``--freqm``/``--timem``, drawn from its generator; none without
        generators), set to 0 before the dataset normalisation, as the seeds and the original SSAST mask, then
        normalise: a masked cell becomes (0 - mean) / (2 std) like any zero. The time mask is drawn over the
        ``target_length`` frames the model reads where set (the seeds padded or cut the fbank first; a mask
        drawn past a clip's own frames leaves its padding as it is), else over the clip's own ``frames``."""
        cfg = self.config
        if generators is None or not (cfg.freqm or cfg.timem):
            return feats
        if len(generators) != feats.shape[0]:
            raise ValueError(f"{len(generators)} SpecAugment generators for a batch of {feats.shape[0]} clips")
        return apply_masks(feats, [draw_masks(feats.shape[2], cfg.target_length or int(count), cfg.freqm, cfg.timem,
                                              generator) for generator, count in zip(generators, frames)])

    def extract(self, waveforms: Tensor, lengths: Tensor, warps: Sequence[float] | None = None,
                own_edges: bool = False, generators: Sequence[torch.Generator] | None = None,
                counts: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """Each clip's inputs at its own length, zero past it: (B, frames, bins) features or (B, N) waveforms,
        and the frame counts (B,). ``warps`` (fbank only) moves each clip's frequency axis by its factor (VTLP).
        ``own_edges``: MFCC frames reflect at each clip's own end, so every clip of a padded batch gets what it
        gets alone (off: at the tensor's edge, as the exported graph computes them). ``generators`` (training):
        each clip's SpecAugment draws (:meth:`spec_masks`), over its frames counted from ``counts`` (``lengths``
        as plain numbers; without them ``lengths`` is read back from its device where needed)."""
        cfg = self.config
        lengths = lengths.to(torch.long)
        if cfg.features == "waveform":
            if warps is not None and any(warp != 1.0 for warp in warps):
                raise ValueError("VTLP warps the fbank's frequency axis; --features waveform has none")
            if not cfg.waveform_norm:
                return waveforms, lengths
            valid = torch.arange(waveforms.shape[1], device=waveforms.device)[None, :] < lengths[:, None]
            return _masked_waveform_norm(waveforms, valid, lengths), lengths
        feats = self._spectra(waveforms, warps, lengths if own_edges else None, counts)
        frames = self.frame_counts(lengths).clamp(max=feats.shape[1])
        weights = (torch.arange(feats.shape[1], device=feats.device)[None, :] < frames[:, None]).unsqueeze(-1)
        weights = weights.to(feats.dtype)
        count = frames.clamp(min=1).to(feats.dtype)[:, None, None]
        if cfg.utterance_norm != "none":
            feats = feats - (feats * weights).sum(1, keepdim=True) / count
            if cfg.utterance_norm == "meanvar":
                feats = feats / torch.sqrt((feats * weights).square().sum(1, keepdim=True) / count + 1e-5)
        if generators is None:
            own: list[int] = []
        elif counts is not None:
            own = self.frame_counts(torch.tensor(counts, dtype=torch.long)).clamp(max=feats.shape[1]).tolist()
        else:
            own = frames.tolist()
        feats = self.spec_masks(feats, own, generators)
        return self._dataset_norm(feats) * weights, frames  # the collator pads normalised features with zeros

    def _dataset_norm(self, feats: Tensor) -> Tensor:
        """``--dataset_mean``/``--dataset_std``: :func:`~audiotune.data.features.normalize`, where set."""
        cfg = self.config
        if cfg.dataset_std is None:
            return feats
        return normalize(feats, cfg.dataset_mean or 0.0, cfg.dataset_std)

    def pad_frame(self) -> Tensor | None:
        """The frame that pads a clip to its batch or to ``target_length`` (``--pad``): None for zeros (and for
        waveforms), the features of silence, or the value 0 before the dataset normalisation
        (``zero_before_norm``: ``(0 - mean) / (2 std)`` after it, as the NAIP seeds padded their fbank)."""
        return self.padding

    def _padding_frame(self) -> Tensor | None:
        cfg = self.config
        if cfg.features == "waveform" or cfg.pad == ZERO_PAD:
            return None
        silence = self.clip(torch.zeros(max(self.sample_rate // 10, self.frame_length)))
        frame = silence[silence.shape[0] // 2].clone()
        return frame if cfg.pad == "silence" else self._dataset_norm(torch.zeros_like(frame))

    def fit_length(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Spectrogram inputs padded or cropped to ``target_length`` (when set), every frame past a clip's own
        holding the pad frame (:meth:`pad_frame`; zeros without one): in a padded batch, each clip's padding up to
        the batch's widest clip too, as the collator pads a clip alone."""
        target = self.config.target_length
        if inputs.dim() != 3:
            return inputs, lengths
        if target:  # zeros appended, then cropped: exactly target_length frames without a branch on the length
            fill = inputs.new_zeros((inputs.shape[0], target, inputs.shape[2]))
            inputs, lengths = torch.cat([inputs, fill], dim=1)[:, :target], lengths.clamp(max=target)
        frame = self.pad_frame()
        if frame is None:  # extract left the frames past each clip's own zero
            return inputs, lengths
        own = torch.arange(inputs.shape[1], device=inputs.device)[None, :] < lengths[:, None]
        return torch.where(own[..., None], inputs, frame.to(inputs)), lengths

    def forward(self, waveforms: Tensor, lengths: Tensor,
                warps: Sequence[float] | None = None) -> tuple[Tensor, Tensor]:
        """(B, N) waveforms and their real sample counts (B,) → model inputs and their lengths."""
        return self.fit_length(*self.extract(waveforms, lengths, warps))


def _masked_waveform_norm(waveforms: Tensor, valid: Tensor, lengths: Tensor) -> Tensor:
    """Zero mean, unit variance over each clip's real samples (as Hugging Face extractors), padding kept 0."""
    weights = valid.to(waveforms.dtype)
    count = lengths.clamp(min=1).to(waveforms.dtype)[:, None]
    centred = waveforms - (waveforms * weights).sum(1, keepdim=True) / count
    variance = (centred * weights).square().sum(1, keepdim=True) / count
    return centred / torch.sqrt(variance + 1e-7) * weights
