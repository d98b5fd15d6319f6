"""What a model reads: the input a backbone declares from the user's options, and the one thing the data layer
prepares clips by (the config keeps what the user asked for; this holds what the model gets)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from audiotune.config import AudioConfig, FeatureConfig
from audiotune.config.sections import ZERO_PAD
from audiotune.data.audio import AudioSpec
from audiotune.data.features import min_samples_for_frames


@dataclass(frozen=True)
class InputSpec:
    """The input of a model. Field names are the options they come from (``--resample_rate``, ``--features``...).

    resample_rate: samples per second the audio is resampled to (0: each file keeps its own).
    channel_mode / channel_select: how a row's channels become one signal (:class:`~audiotune.data.audio.AudioSpec`).
    min_samples: shortest prepared clip the model can read (shorter clips are bad audio).
    clip_length: seconds of each training clip (0: whole clips).
    eval_clip_length: seconds of each scored clip (validation, test, evaluate, extract; 0: whole clips).
    remove_dc: each prepared clip less its mean, before any augmentation or feature.
    pad_clips: each clip shorter than its crop padded to it with its mean (:class:`~audiotune.data.audio.AudioSpec`).
    resampled_length: the count of resampled samples, ``ceil`` or, for runs of config version 5 or earlier,
    ``round`` (:mod:`audiotune.data.resample`).
    features: the front end: waveform (raw samples), fbank (Kaldi log-mel) or mfcc.
    waveform_norm: per-clip zero mean, unit variance of waveform inputs.
    num_mel_bins / target_length: fbank bins; frames every input is padded or cropped to (0: its own length).
    freqm / timem / noise / vtlp: the spectrogram augmentations of training.
    The other fields are the front end's settings as :class:`~audiotune.config.FeatureConfig` documents them.
    """

    resample_rate: int = 16000
    channel_mode: str = "mean"
    channel_select: tuple[int, ...] = ()
    min_samples: int = 0
    clip_length: float = 10.0
    eval_clip_length: float = 10.0
    remove_dc: bool = False
    pad_clips: bool = False
    resampled_length: str = "ceil"
    features: str = "fbank"
    waveform_norm: bool = False
    num_mel_bins: int | None = None
    target_length: int = 0
    n_mfcc: int = 80
    n_fft: int = 400
    n_mels: int = 128
    utterance_norm: str = "none"
    pad: str = ZERO_PAD
    dataset_mean: float | None = None
    dataset_std: float | None = None
    freqm: int = 0
    timem: int = 0
    noise: bool = False
    vtlp: float = 0.0
    vtlp_range: tuple[float, float] = (0.9, 1.1)

    @classmethod
    def from_sections(cls, audio: AudioConfig, features: FeatureConfig) -> InputSpec:
        """The input the audio and features sections ask for, as they are (a backbone with no needs of its own);
        an unset SpecAugment width masks nothing, an unset ``min_samples`` is one frame of the features."""
        scored = audio.clip_length if audio.eval_clip_length < 0 else audio.eval_clip_length
        spec = cls(resample_rate=int(audio.resample_rate), channel_mode=audio.channel_mode,
                   channel_select=tuple(audio.channel_select), min_samples=int(audio.min_samples),
                   clip_length=float(audio.clip_length), eval_clip_length=float(scored),
                   remove_dc=bool(audio.remove_dc), pad_clips=bool(audio.pad_clips),
                   features=features.features or "fbank", waveform_norm=bool(features.waveform_norm),
                   num_mel_bins=features.num_mel_bins, target_length=int(features.target_length),
                   n_mfcc=features.n_mfcc, n_fft=features.n_fft, n_mels=features.n_mels,
                   utterance_norm=features.utterance_norm, pad=features.pad, dataset_mean=features.dataset_mean,
                   dataset_std=features.dataset_std, freqm=int(features.freqm or 0), timem=int(features.timem or 0),
                   noise=bool(features.noise), vtlp=float(features.vtlp),
                   vtlp_range=(float(features.vtlp_range[0]), float(features.vtlp_range[1])))
        return spec.with_min_samples()

    def with_min_samples(self, frames: int = 1) -> InputSpec:
        """This spec with ``min_samples`` set to the samples of ``frames`` feature frames unless already set."""
        if self.min_samples:
            return self
        least = min_samples_for_frames(self.features, self.n_fft, self.resample_rate, frames)
        return dataclasses.replace(self, min_samples=least)

    def audio(self, train: bool = False) -> AudioSpec:
        """How clips are read: the training crop when ``train``, else the scoring crop."""
        return AudioSpec(resample_rate=self.resample_rate, channel_mode=self.channel_mode,
                         channel_select=self.channel_select,
                         clip_length=self.clip_length if train else self.eval_clip_length, remove_dc=self.remove_dc,
                         pad_clips=self.pad_clips, resampled_length=self.resampled_length)

    def training_crop(self) -> InputSpec:
        """This spec with scored clips cropped as training clips (to encode training data through the scoring
        path, as the feature cache does)."""
        return dataclasses.replace(self, eval_clip_length=self.clip_length)

    def scoring_crop(self) -> InputSpec:
        """This spec with training clips cropped as scored clips: what the feature cache keys scored clips by
        (the training crop never reads them)."""
        return dataclasses.replace(self, clip_length=self.eval_clip_length)

    def whole_clips(self) -> InputSpec:
        """This spec reading every clip whole, in training and scoring alike."""
        return dataclasses.replace(self, clip_length=0.0, eval_clip_length=0.0)

    @property
    def rate_or_default(self) -> int:
        """The sample rate clips are counted in when each file keeps its own (``--resample_rate 0``): 16 kHz."""
        return self.resample_rate or 16000

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict of every field."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}
