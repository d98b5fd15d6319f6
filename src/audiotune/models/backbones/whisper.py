"""The encoder of OpenAI's Whisper (transformers' ``WhisperModel``) as an audiotune backbone.

Only the encoder is loaded (``WhisperEncoder`` weights from a ``WhisperModel``,
``WhisperForConditionalGeneration`` or ``WhisperForAudioClassification`` checkpoint, by hub id or local
directory); the decoder's weights are never built. The backbone takes waveforms at the feature extractor's rate
and computes Whisper's log-mel front end itself, in torch, batched, on the model's device: the STFT of
``preprocessor_config.json`` (``n_fft``, ``hop_length``, periodic Hann window, reflection at the clip's start),
its Slaney mel filters, ``log10`` of the power clamped at 1e-10, the floor at the clip's maximum minus 8, then
``(x + 4) / 4``, as ``WhisperFeatureExtractor`` does (its ``dither``, 0 in the released extractors, is not
applied: encoding stays deterministic).

Hidden states
-------------
``0`` is the input of the first layer (conv1 → GELU → conv2 → GELU, plus the positional embeddings of the
frames), ``1..N`` the layers' outputs, the last one through the encoder's final LayerNorm: HF's
``hidden_states`` with ``output_hidden_states=True``, ``-1`` being ``last_hidden_state``. One frame every
``frame_hop`` = 2 x ``hop_length`` samples (20 ms at 16 kHz).

The 30-second window, and where outputs differ from the stock encoder
---------------------------------------------------------------------
The stock encoder pads every clip to its window (``max_source_positions`` x 2 mel frames: 3000 frames, 30 s)
and has no attention mask. Here each clip runs on its own frames only: ``ceil(samples / hop_length)`` mel
frames, the first ``ceil(frames / 2)`` positional embeddings, and an attention mask over the padded frames of
its batch. Padded mel frames and padded conv1 outputs are zeroed before the next convolution, so a clip's
border frames see the convolutions' own zero padding, as when the clip is encoded alone, and the clip's
maximum (for the ``max - 8`` floor) is taken over its own frames: a clip's states do not depend on its batch.

* A clip that fills the window exactly gets the stock encoder's hidden states (its STFT reflects at the clip's
  end, as the stock 30-s input does).
* A shorter clip has the stock encoder's positional embeddings and log-mel values on its frames (the stock
  clip maximum also covers the padding frames just past the clip, which hold only its fading tail), but its
  hidden states differ, because Whisper has no attention mask: the stock encoder attends to the whole 30 s,
  padding frames included (log-mel at the floor, ``(max - 4) / 4``), and its last conv frame sees a padding
  frame where this one sees the convolution's zero padding. State 0 differs on that last frame only; every
  layer then spreads the difference over all frames. Measured on the tiny random test model (2 layers, d_model
  32, a 1-s window, ``tests/models/backbones/test_whisper.py``), for 0.25-0.75-s clips: largest difference on
  the clip's frames 2e-3 to 5e-3 of the state's scale at state 0, 6e-3 to 1.8e-2 at the last state; mean-pooled
  states 0.3e-2 to 1.9e-2 apart (relative L2) at the last state. A trained model's difference could not be
  measured offline.
* A clip's padding frames (outside the mask) hold no meaningful values.

Longer clips are encoded in consecutive windows of ``max_window`` seconds (the run config's option, which the
resolver sets to the model's own 30 s when it is 0; at most that), each window as a clip of its own (states
concatenated along time, no context across windows). A full 30-s window reflects at its end, as the stock encoder
does with a 30-s crop; shorter windows end in zeros.

Export
------
``torch.stft`` goes through torch's dynamo ONNX exporter (ONNX ``STFT``, opset 17+). The graph holds one
window: ``audiotune export`` limits its clips to ``max_window`` seconds.

Not supported: the stock encoder's 30-s padding as a choice (it would need an option in ``config/sections.py``),
attention maps (``audiotune attention``), self-supervised pretraining, ``--freeze_feature_projection`` (the second
convolution already outputs the encoder's width: no projection, and no such flag for this backbone;
``--freeze_feature_encoder`` freezes both convolutions).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiotune.config import AT_LEAST_0, RunConfig, option, option_default
from audiotune.data.input_spec import InputSpec
from audiotune.models.backbones import (
    Backbone,
    backbone_options,
    encode_in_windows,
    register,
    transformers_architecture,
    whole_lengths,
)
from audiotune.models.backbones.hf_checkpoint import check_available, from_config_initialised, weights_quietly

__all__ = ["DEFAULT_CHECKPOINT", "WhisperBackbone", "WhisperOptions", "build_whisper", "front_end_settings",
           "resolve_whisper", "whisper_input"]

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "openai/whisper-base"
# the encoder's weights under every Whisper head: WhisperModel, ...ForConditionalGeneration, ...ForAudioClassification
ENCODER_KEYS = {r"^(?:model\.)?encoder\.": ""}
LOG_FLOOR = -10.0  # log10 of the 1e-10 power clamp: no log-mel value is lower


@dataclass
class WhisperSettings:
    """The options of ``--model whisper`` (flags shown with it; ``config.model.options`` in a run)."""

    max_window: float = option(0.0, "encode clips longer than this many seconds window by window (0 = the model's "
                                    "own window, 30 s; at most that)", valid=AT_LEAST_0)


@dataclass(frozen=True)
class WhisperOptions:
    """What builds a :class:`WhisperBackbone`, read from a run config by :meth:`from_config`; the defaults are
    :class:`WhisperSettings`'."""

    checkpoint: str = DEFAULT_CHECKPOINT
    max_window: float = option_default(WhisperSettings, "max_window")  # seconds per window (0: the model's own)

    @classmethod
    def from_config(cls, config: RunConfig) -> WhisperOptions:
        return cls(checkpoint=config.model.checkpoint or DEFAULT_CHECKPOINT,
                   max_window=float(backbone_options(config).max_window))


def _extractor(checkpoint: str, num_mel_bins: int) -> Any:
    """The checkpoint's ``WhisperFeatureExtractor``; without a ``preprocessor_config.json``, the released
    extractors' settings (16 kHz, n_fft 400, hop 160) with the encoder's mel bins."""
    from transformers import WhisperFeatureExtractor

    try:
        extractor = WhisperFeatureExtractor.from_pretrained(checkpoint)
    except OSError:  # no preprocessor_config.json (or offline without a cache)
        extractor = WhisperFeatureExtractor(feature_size=num_mel_bins)
    if int(extractor.feature_size) != num_mel_bins:
        raise ValueError(f"--checkpoint {checkpoint}: its feature extractor makes {extractor.feature_size} mel bins, "
                         f"its encoder reads {num_mel_bins}")
    return extractor


def _whisper_config(checkpoint: str) -> Any:
    """The checkpoint's ``WhisperConfig`` (a transformers config, typed Any); another model type is an error."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint)
    if config.model_type != "whisper":
        raise ValueError(f"--checkpoint {checkpoint}: a {config.model_type} model, not Whisper (use --model hf for "
                         "wav2vec2-style encoders)")
    return config


def front_end_settings(checkpoint: str) -> dict[str, int]:
    """``sampling_rate``, ``hop_length``, ``n_fft``, ``num_mel_bins`` and ``window_samples`` (the samples of one
    full encoder window) of a Whisper checkpoint, read from its configs without its weights."""
    config = _whisper_config(checkpoint)
    extractor = _extractor(checkpoint, int(config.num_mel_bins))
    hop = int(extractor.hop_length)
    return {"sampling_rate": int(extractor.sampling_rate), "hop_length": hop, "n_fft": int(extractor.n_fft),
            "num_mel_bins": int(config.num_mel_bins), "window_samples": 2 * int(config.max_source_positions) * hop}


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers reports the decoder's weights as unexpected when only the encoder loads (missing weights are
    checked here instead), and the encoder's tensor-parallel plan as unused."""
    loggers = [logging.getLogger(f"transformers.{name}") for name in ("modeling_utils", "distributed.tensor_parallel")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _load_encoder(checkpoint: str, pretrained: bool) -> Any:
    """The ``WhisperEncoder`` of ``checkpoint`` in float32 with SDPA attention and no LayerDrop (a transformers
    model, typed Any); random weights unless ``pretrained``."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = _whisper_config(checkpoint)
    config.encoder_layerdrop = 0.0  # every layer always runs: a fixed number of hidden states
    config._attn_implementation = "sdpa"  # takes the boolean padding mask built here
    if not pretrained:
        with from_config_initialised():
            return WhisperEncoder(config)
    with _quiet_loading(), weights_quietly():
        loaded: Any = WhisperEncoder.from_pretrained(checkpoint, config=config, key_mapping=ENCODER_KEYS,
                                                     dtype=torch.float32, output_loading_info=True)
    encoder, info = loaded
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ValueError(f"--checkpoint {checkpoint}: no Whisper encoder weights for {len(missing)} tensor(s), e.g. "
                         f"{missing[0]}")
    return encoder


def _conv_lengths(lengths: Tensor, conv: nn.Conv1d) -> Tensor:
    """Output frames of a 1-D convolution for ``lengths`` input frames (0 stays 0)."""
    out = (lengths + 2 * int(conv.padding[0]) - int(conv.dilation[0]) * (int(conv.kernel_size[0]) - 1) - 1) \
        // int(conv.stride[0]) + 1
    return torch.where(lengths > 0, out, torch.zeros_like(out))


class WhisperBackbone(Backbone):
    """Whisper's encoder: (B, N) waveforms -> log-mel (computed here) -> all hidden states and a frame mask."""

    stft_window: Tensor
    mel_filters: Tensor  # (mels, n_fft // 2 + 1)

    def __init__(self, options: WhisperOptions, pretrained: bool = True) -> None:
        """``pretrained=False`` builds from the checkpoint's configs only (random weights)."""
        super().__init__()
        self.options = options
        self.checkpoint = options.checkpoint
        self.model = _load_encoder(options.checkpoint, pretrained)
        self.extractor = _extractor(options.checkpoint, int(self.model.config.num_mel_bins))
        self.sample_rate = int(self.extractor.sampling_rate)
        self.hop_length = int(self.extractor.hop_length)
        self.n_fft = int(self.extractor.n_fft)
        full = self.mel_frames_per_window * self.hop_length
        window = round(options.max_window * self.sample_rate) // self.frame_hop * self.frame_hop
        if options.max_window > 0 and not 0 < window <= full:
            raise ValueError(f"--max_window {options.max_window}: Whisper encodes windows of "
                             f"{self.frame_hop / self.sample_rate:g} to {full / self.sample_rate:g} seconds")
        self.full_window = full  # samples of the stock encoder's input
        self.window = window or full
        # derived from preprocessor_config.json: not weights, so neither saved nor loaded
        self.register_buffer("stft_window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("mel_filters", torch.from_numpy(self.extractor.mel_filters.T.copy()).float(),
                             persistent=False)

    @property
    def architecture(self) -> dict[str, Any]:
        """The encoder's transformers config (:func:`transformers_architecture`)."""
        return transformers_architecture(self.model.config)

    @property
    def front_end_settings(self) -> dict[str, int]:
        """The extractor's settings its log-mel is computed with (from ``preprocessor_config.json``)."""
        return {"sampling_rate": self.sample_rate, "hop_length": self.hop_length, "n_fft": self.n_fft,
                "num_mel_bins": int(self.model.config.num_mel_bins)}

    @property
    def mel_frames_per_window(self) -> int:
        """Mel frames of the stock encoder's input: ``max_source_positions`` x the conv strides (3000)."""
        return int(self.model.config.max_source_positions) * self._conv_stride

    @property
    def _conv_stride(self) -> int:
        return int(self.model.conv1.stride[0]) * int(self.model.conv2.stride[0])

    @property
    def embedding_dim(self) -> int:
        """Width of every hidden state (``d_model``)."""
        return int(self.model.config.d_model)

    @property
    def num_layers(self) -> int:
        """Number of encoder layers."""
        return len(self.model.layers)

    @property
    def frame_hop(self) -> int:
        """Samples between two output frames: hop_length x the conv strides (320 at 16 kHz)."""
        return self.hop_length * self._conv_stride

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Output frames of clips of ``lengths`` samples (one window or less)."""
        mel = torch.div(lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor")
        return _conv_lengths(_conv_lengths(mel, self.model.conv1), self.model.conv2)

    def describe_front_end(self) -> dict[str, Any]:
        """The log-mel this backbone computes from its waveforms (see :meth:`log_mel`)."""
        return {"log_mel": "Whisper's: power STFT (hann window, centred; reflect at the end of a clip that fills "
                           "the window, zeros past the end of a shorter one), mel filters, log10 of the power "
                           "clamped at 1e-10, floored at the clip's maximum - 8 over its own frames, (x + 4) / 4",
                "n_fft": self.n_fft, "hop_length": self.hop_length, "num_mel_bins": int(self.mel_filters.shape[0]),
                "window_samples": self.full_window}

    def log_mel(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, n) waveforms of which ``lengths`` (B,) samples are real -> Whisper's log-mel (B, mels, frames),
        zero past each clip's ``ceil(length / hop)`` frames, and those frame counts (B,)."""
        hop, half = self.hop_length, self.n_fft // 2
        samples = waveforms.shape[1]
        positions = torch.arange(samples, device=waveforms.device)
        waveforms = waveforms.float() * (positions[None, :] < lengths[:, None])
        # past its end a clip is zeros, as the stock input padded to 30 s; one that fills the window reflects there
        tail = torch.arange(1, half + 1, device=waveforms.device)
        mirror = (lengths[:, None] - 1 - tail).clamp(min=0, max=samples - 1)
        full = (lengths == self.full_window)[:, None]
        extended = torch.cat([waveforms, waveforms.gather(1, mirror) * full], dim=1)
        spectrum = torch.stft(extended, self.n_fft, hop, window=self.stft_window.float(), center=True,
                              pad_mode="reflect", return_complex=True)
        frames_total = -(-samples // hop)
        power = spectrum[..., :frames_total].abs() ** 2
        logs = torch.clamp(self.mel_filters.float() @ power, min=1e-10).log10()
        frames = torch.div(lengths + hop - 1, hop, rounding_mode="floor")
        valid = (torch.arange(frames_total, device=logs.device)[None, :] < frames[:, None])[:, None, :]
        peak = logs.masked_fill(~valid, LOG_FLOOR).amax(dim=(1, 2), keepdim=True)  # over the clip's own frames
        logs = (torch.maximum(logs, peak - 8.0) + 4.0) / 4.0
        return logs * valid, frames

    def _front_end(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`log_mel` in float32, also under autocast (a half-precision log-mel loses the quiet bins)."""
        device_type = waveforms.device.type
        if torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                return self.log_mel(waveforms, lengths)
        return self.log_mel(waveforms, lengths)

    def _encode(self, waveforms: Tensor, valid: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """One window: (B, n <= window) samples of which ``valid`` (B,) are real (None: all) -> states and frame
        mask."""
        encoder, valid = self.model, whole_lengths(waveforms, valid)
        mel, mel_frames = self._front_end(waveforms, valid)
        mel_valid = torch.arange(mel.shape[2], device=mel.device)[None, None, :] < mel_frames[:, None, None]
        # zero padding between the convolutions: a clip's border frames see zeros, as when it is alone
        hidden = F.gelu(encoder.conv1(mel.to(encoder.conv1.weight.dtype))) * mel_valid
        hidden = F.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        frames = _conv_lengths(_conv_lengths(mel_frames, encoder.conv1), encoder.conv2)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        mask = positions[None, :] < frames[:, None]
        hidden = hidden + encoder.embed_positions.weight[: hidden.shape[1]]
        hidden = F.dropout(hidden, p=float(encoder.dropout), training=encoder.training)
        # keys of the padding are masked; a window past a clip's end keeps one key, so no softmax row is empty
        keys = mask | ((positions == 0)[None, :] & (frames == 0)[:, None])
        attention = keys[:, None, None, :]
        states = [hidden]
        for layer in encoder.layers:
            hidden = layer(hidden, attention)
            states.append(hidden)
        states[-1] = encoder.layer_norm(hidden)
        return states, mask

    def _windows(self, total: int) -> list[tuple[int, int]]:
        """Sample ranges encoded separately: the whole tensor, or consecutive windows."""
        if total <= self.window:
            return [(0, total)]
        return [(start, min(start + self.window, total)) for start in range(0, total, self.window)]

    def hidden_states(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """Waveforms (B, N), valid samples (B,) -> ``num_hidden_states`` tensors (B, T, D), mask (B, T).

        Clips longer than the window are encoded window by window and their frames concatenated along time.
        """
        return encode_in_windows(self._encode, waveforms, lengths, self._windows(waveforms.shape[1]))

    def load_pretrained(self, path: str | Path) -> None:
        """Re-load the encoder weights from a hub id or directory (strict: same architecture required)."""
        self.model.load_state_dict(_load_encoder(str(path), True).state_dict())

    def export_config(self, folder: str | Path) -> None:
        """Write the encoder's architecture (config.json) and its feature extractor (preprocessor_config.json),
        so a run directory rebuilds without the hub."""
        self.model.config.save_pretrained(str(folder))
        self.extractor.save_pretrained(str(folder))

    def freeze_feature_encoder(self) -> None:
        """Freeze the two convolutions in front of the layers (``--freeze_feature_encoder``)."""
        self.model.conv1.requires_grad_(False)
        self.model.conv2.requires_grad_(False)


def resolve_whisper(config: RunConfig) -> None:
    """The default checkpoint; frozen unless asked; windows of the model's own 30 s unless ``max_window`` asks for
    shorter ones. :func:`whisper_input` reads the extractor's rate (another ``--resample_rate`` is refused)."""
    if not config.model.checkpoint:
        config.model.checkpoint = DEFAULT_CHECKPOINT
    check_available(config.model.checkpoint, "-c")  # no network and no local copy: one line at once
    if config.model.freeze is None:
        config.model.freeze = True
    settings = front_end_settings(config.model.checkpoint)
    rate = settings["sampling_rate"]
    longest = settings["window_samples"] / rate
    window = float(config.model.options.get("max_window", 0.0))
    if window > longest:
        raise ValueError(f"--max_window {window:g}: {config.model.checkpoint} encodes at most {longest:g} seconds at "
                         "once")
    if not window:
        config.model.options["max_window"] = longest


def whisper_input(config: RunConfig) -> InputSpec:
    """Waveforms at the feature extractor's rate, not normalised (Whisper's extractor feeds raw samples to its
    log-mel), at least one full analysis window (25 ms) long."""
    settings = front_end_settings(config.model.checkpoint or DEFAULT_CHECKPOINT)
    return replace(InputSpec.from_sections(config.audio, config.features), resample_rate=settings["sampling_rate"],
                   features="waveform", waveform_norm=False, min_samples=config.audio.min_samples or settings["n_fft"])


@register("whisper", input=whisper_input, resolve=resolve_whisper, options=WhisperSettings)
def build_whisper(config: RunConfig, pretrained: bool = True) -> WhisperBackbone:
    """The Whisper encoder named by ``--checkpoint`` (default: openai/whisper-base).

    ``pretrained=False`` reads the checkpoint's configs only (random weights), for runs whose weights are loaded
    from their own ``model.safetensors`` afterwards.
    """
    return WhisperBackbone(WhisperOptions.from_config(config), pretrained=pretrained)

