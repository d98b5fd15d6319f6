"""``--model ecapa_tdnn``: the package backbone over
:class:`~audiotune.models.backbones.ecapa_model.ECAPA_TDNN` (SpeechBrain's ECAPA-TDNN in plain torch), its options
and flags, and the features it asks for. Its single hidden state is the pooled embedding; its padding is exact
(each clip reflect-padded at its own edges, statistics masked; see :mod:`audiotune.models.backbones.ecapa_model`),
so scoring batches take clips of any mix of lengths.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from audiotune.config import AT_LEAST_1, RunConfig, needs_on, option, option_default
from audiotune.config.sections import ZERO_PAD
from audiotune.data.input_spec import InputSpec
from audiotune.models.backbones import Backbone, backbone_options, input_spec, register
from audiotune.models.backbones.ecapa_model import (
    ECAPA_TDNN,
    frames_to_relative_lengths,
    load_speechbrain_state_dict,
)

__all__ = ["EcapaBackbone", "EcapaOptions", "build_ecapa", "ecapa_input", "resolve_ecapa"]

READ_AS_SEED = ("read_frames", "padding_value")  # the backbone's, not ECAPA_TDNN's


@dataclass
class EcapaSettings:
    """The options of ``--model ecapa_tdnn`` (flags shown with it; ``config.model.options`` in a run)."""

    lin_neurons: int = option(192, "ECAPA-TDNN embedding size", valid=AT_LEAST_1)
    channels: list[int] = option([512, 512, 512, 512, 1536], "ECAPA-TDNN channels per block", valid=AT_LEAST_1)
    kernel_sizes: list[int] = option([5, 3, 3, 3, 1], "ECAPA-TDNN kernel size per block", valid=AT_LEAST_1)
    dilations: list[int] = option([1, 2, 3, 4, 1], "ECAPA-TDNN dilation per block", valid=AT_LEAST_1)
    attention_channels: int = option(128, "ECAPA-TDNN attentive pooling channels", valid=AT_LEAST_1)
    se_channels: int = option(128, "ECAPA-TDNN squeeze-excitation channels", valid=AT_LEAST_1)
    res2net_scale: int = option(8, "ECAPA-TDNN Res2Net scale", valid=AT_LEAST_1)
    global_context: bool = option(True, "ECAPA-TDNN attentive pooling with global context")
    # config only (seeds/naip_ecapa, and so `import naip`, sets it): the seed's reading, not a new habit
    read_padding: bool = option(False, "read every clip as --target_length frames, its padding included (zeros "
                                       "before --dataset_mean/--dataset_std), as the ECAPA seed's fbank mode did",
                                cli=False, needs=needs_on("features.target_length", "--target_length above 0 (the "
                                                          "frames a clip is read as: the seed's --n_fft with "
                                                          "--fbank True)"))


@dataclass(frozen=True)
class EcapaOptions:
    """What builds an :class:`EcapaBackbone` (:class:`ECAPA_TDNN`'s arguments), read from a run config by
    :meth:`from_config`; the defaults are :class:`EcapaSettings`'."""

    input_size: int
    lin_neurons: int = option_default(EcapaSettings, "lin_neurons")
    channels: tuple[int, ...] = tuple(option_default(EcapaSettings, "channels"))
    kernel_sizes: tuple[int, ...] = tuple(option_default(EcapaSettings, "kernel_sizes"))
    dilations: tuple[int, ...] = tuple(option_default(EcapaSettings, "dilations"))
    attention_channels: int = option_default(EcapaSettings, "attention_channels")
    res2net_scale: int = option_default(EcapaSettings, "res2net_scale")
    se_channels: int = option_default(EcapaSettings, "se_channels")
    global_context: bool = option_default(EcapaSettings, "global_context")
    read_frames: int = 0  # every clip read as this many frames, its padding included (0: its own frames only)
    padding_value: float = 0.0  # what the frames it reads past a clip's own hold

    @classmethod
    def from_config(cls, config: RunConfig) -> EcapaOptions:
        """The run's ECAPA flags; the input is its fbank (``num_mel_bins``) or MFCC (``n_mfcc``) width."""
        m, f = backbone_options(config), input_spec(config)
        input_size = f.num_mel_bins if f.features == "fbank" else f.n_mfcc
        assert input_size is not None  # ecapa_input sets num_mel_bins
        # the seed zero-padded its fbank before normalising it: (0 - mean) / (2 std)
        mean, std = f.dataset_mean, f.dataset_std
        padding = -mean / (2 * std) if m.read_padding and mean is not None and std is not None else 0.0
        return cls(input_size, m.lin_neurons, tuple(m.channels), tuple(m.kernel_sizes), tuple(m.dilations),
                   m.attention_channels, m.res2net_scale, m.se_channels, m.global_context,
                   f.target_length if m.read_padding else 0, padding)


class EcapaBackbone(Backbone):
    """Package backbone wrapping :class:`ECAPA_TDNN`; its single hidden state is the pooled embedding."""

    pooled = True  # attentive statistics pooling: one embedding per clip, its single hidden state
    pads_itself = True  # the padded frames are masked: its layers read only each clip's own

    def __init__(self, options: EcapaOptions) -> None:
        super().__init__()
        self.options = options
        self.ecapa = ECAPA_TDNN(**{k: v for k, v in asdict(options).items() if k not in READ_AS_SEED})
        self._embedding_dim = self.ecapa.fc.conv.out_channels

    @property
    def embedding_dim(self) -> int:
        """Size of the embedding (``lin_neurons``)."""
        return self._embedding_dim

    @property
    def num_layers(self) -> int:
        """1: ECAPA exposes its pooled embedding as its single hidden state."""
        return 1

    @property
    def num_hidden_states(self) -> int:
        """Length of the list :meth:`hidden_states` returns."""
        return 1

    def hidden_states(self, features: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """Features (B, T, F), valid frame counts (B,) int -> ([embedding (B, 1, D)], mask (B, 1) all True); with
        ``read_frames`` each clip is read as that many frames, those past its own holding ``padding_value``."""
        B, T = features.shape[:2]
        rel = None
        if lengths is not None and lengths.device != features.device:
            lengths = lengths.to(features.device)
        if lengths is not None and self.options.read_frames:
            past = torch.arange(T, device=features.device)[None, :] >= lengths[:, None]
            features = features.masked_fill(past[..., None], self.options.padding_value)
            lengths = lengths.clamp(min=min(self.options.read_frames, T))
        if lengths is not None:
            rel = frames_to_relative_lengths(lengths, T, dtype=features.dtype)
        emb = self.ecapa(features, rel)
        return [emb], torch.ones(B, 1, dtype=torch.bool, device=features.device)

    def load_pretrained(self, path: str | Path) -> None:
        """Load a SpeechBrain-layout checkpoint into ``self.ecapa`` strictly."""
        load_speechbrain_state_dict(self.ecapa, path, strict=True)


def resolve_ecapa(config: RunConfig) -> None:
    """ECAPA-TDNN is trained, so it is never frozen unless asked; its blocks' sizes are one per block; ``--pad``
    other than its default is an error (its convolutions, batch norms and pooling read only a clip's own frames:
    what the padding holds never reaches them; a resumed run made with one goes on)."""
    if config.features.pad != ZERO_PAD and not config.train.resume:
        raise ValueError(f"--pad {config.features.pad}: --model ecapa_tdnn masks the padded frames (its layers read "
                         "only each clip's own), so what they hold changes nothing; leave --pad out")
    settings = backbone_options(config)
    sizes = {"channels": settings.channels, "kernel_sizes": settings.kernel_sizes, "dilations": settings.dilations}
    if len({len(values) for values in sizes.values()}) > 1:
        given = ", ".join(f"--{name} {len(values)} ({' '.join(map(str, values))})" for name, values in sizes.items())
        raise ValueError(f"{given}: give each one value per block, the same number of blocks (at least 3: a TDNN, "
                         "SE-Res2Net blocks, the MFA)")
    if config.model.freeze is None:
        config.model.freeze = False


def ecapa_input(config: RunConfig) -> InputSpec:
    """ECAPA-TDNN reads fbank or MFCC features, long enough for every frame-level convolution.

    Unless given, 80 mel bins and, when the encoder is trained, light SpecAugment (frequency masks up to 8
    bins, time masks up to 10 frames); with the cosine schedule these are the newcomer defaults measured
    in BENCHMARKS.md against the seed's MFCC, constant learning rate and no masking.
    """
    f = config.features
    if f.features not in (None, "fbank", "mfcc"):
        raise ValueError(f"--model ecapa_tdnn reads fbank or mfcc features, not '{f.features}'")
    trained = not config.model.freeze  # a frozen encoder keeps its inputs fixed, so the feature cache can serve
    spec = replace(InputSpec.from_sections(config.audio, f),
                   num_mel_bins=80 if f.num_mel_bins is None else f.num_mel_bins,  # the usual ECAPA-TDNN input
                   freqm=(8 if trained else 0) if f.freqm is None else f.freqm,
                   timem=(10 if trained else 0) if f.timem is None else f.timem, min_samples=config.audio.min_samples)
    # every frame-level convolution reflect-pads by (kernel - 1) * dilation / 2 and needs more frames than that
    settings = backbone_options(config)
    pads = [(k - 1) * d // 2 for k, d in zip(settings.kernel_sizes, settings.dilations)]
    return spec.with_min_samples(max(pads) + 1)


@register("ecapa_tdnn", input=ecapa_input, resolve=resolve_ecapa, options=EcapaSettings)
def build_ecapa(config: RunConfig, pretrained: bool = True) -> EcapaBackbone:
    """ECAPA-TDNN over the run's fbank (num_mel_bins) or MFCC (n_mfcc) features; ``--checkpoint`` if pretrained."""
    backbone = EcapaBackbone(EcapaOptions.from_config(config))
    if pretrained and config.model.checkpoint:
        backbone.load_pretrained(config.model.checkpoint)
    return backbone
