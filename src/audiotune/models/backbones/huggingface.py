"""Hugging Face speech encoders (wav2vec2, HuBERT, WavLM, data2vec-audio) as an audiotune backbone.

The bare encoder comes from ``transformers.AutoModel`` (``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel``,
``Data2VecAudioModel``; a CTC checkpoint loads without its head), by hub id or local directory alike. LayerDrop
only as ``--layerdrop`` asks (:mod:`.hf_training`: every forward returns ``num_layers + 1`` hidden states);
masking only as the ``--mask_*`` options ask (where time spans go: :mod:`.hf_masks`).

Hidden states
-------------
``0`` is the input of the first transformer layer (feature projection + positional convolution), as HF's
``hidden_states[0]``; ``1..N`` are the transformer layers' outputs, and ``-1`` is the encoder's final output
(``last_hidden_state``). For "stable layer norm" encoders (wav2vec2/HuBERT/WavLM large) the last entry
includes the encoder's final LayerNorm, as in transformers 4.x; transformers 5.x's own
``hidden_states[-1]`` is the last layer *before* that LayerNorm.

Padding and batch independence
------------------------------
Every encoder of a padded batch gets a sample-level attention mask: the transformer sees a clip's real frames
only, and they do not depend on the padding of its batch (exact padding). Two kinds would let the padding in
where transformers runs them as it does, and read each clip's own frames outside training instead
(:mod:`.hf_own_frames`; training passes still run as transformers does, as the emotion seed fine-tuned
wav2vec2-base):

* group-norm feature encoders (``feat_extract_norm == "group"``, e.g. wav2vec2-base, HuBERT-base): the first
  convolution's GroupNorm normalises each channel over the whole tensor, zero padding included (on the tiny
  test encoder, padding a clip to twice its length moved its pooled states by 11 %);
* data2vec-audio: its stack of positional convolutions lets real frames leak into the padded ones, which the
  next layer feeds back into the last real frames.

Windowed encoding
-----------------
``max_window > 0`` encodes longer clips in non-overlapping windows of ``max_window`` seconds and concatenates
each hidden state's frames, bounding activation memory (attention is quadratic in frames). Each clip's windows are
cut from its own length, whatever its batch holds: a tail too short for one frame is not read.
Windows do not see each other: no cross-window context, and each window boundary loses a few frames of the conv
stack.
"""
from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from audiotune.config import RunConfig
from audiotune.data.batch_features import HOST_LENGTHS
from audiotune.data.input_spec import InputSpec
from audiotune.data.samplers import EXACT_PADDING, PaddingRule
from audiotune.models.backbones import (
    Backbone,
    TransformersSizes,
    backbone_options,
    encode_in_windows,
    register,
    whole_lengths,
)
from audiotune.models.backbones.hf_checkpoint import (
    check_available,
    check_encoder_type,
    conv_receptive_field,
    extractor_settings,
    normalises,
)
from audiotune.models.backbones.hf_own_frames import (
    ClipGroupNorm,
    ClipPositionalConvs,
    install_clip_norm,
    install_clip_positions,
    own_frames,
)
from audiotune.models.backbones.hf_training import (
    DEFAULT_CHECKPOINT,
    HFOptions,
    HFSettings,
    enable_checkpointing,
    freeze_mask_embedding,
    load_encoder,
)

__all__ = ["DEFAULT_CHECKPOINT", "HFBackbone", "HFOptions", "build_hf", "extractor_settings", "hf_input",
           "resolve_hf"]

log = logging.getLogger(__name__)


class HFBackbone(TransformersSizes, Backbone):
    """A Hugging Face speech encoder: (B, N) waveforms -> all hidden states and a frame mask.

    With masking options the encoder masks time spans and feature channels of the projected features in
    training mode only (transformers' SpecAugment, at least two time spans per clip, inside its real frames
    when the encoder takes an attention mask); evaluation and frozen encoders never mask.
    """


    def __init__(self, options: HFOptions, pretrained: bool = True) -> None:
        """``pretrained=False`` builds from the checkpoint's config only (random weights)."""
        super().__init__()
        self.options = options
        self.checkpoint = options.checkpoint
        self.max_window = options.max_window
        self.sample_rate = options.sample_rate or int(extractor_settings(options.checkpoint)["sampling_rate"])
        self.model = load_encoder(options, pretrained)
        install_clip_norm(self.model)
        install_clip_positions(self.model)

    @property
    def group_norm(self) -> bool:
        """True when the conv feature encoder normalises with GroupNorm over time (wav2vec2-base style)."""
        return getattr(self.model.config, "feat_extract_norm", "layer") == "group"

    @property
    def clip_norm(self) -> ClipGroupNorm | None:
        """The group-norm feature encoder's first normalisation, which scores each clip over its own frames."""
        norm = getattr(self.model.feature_extractor.conv_layers[0], "layer_norm", None) if self.group_norm else None
        return norm if isinstance(norm, ClipGroupNorm) else None

    @property
    def clip_positions(self) -> ClipPositionalConvs | None:
        """data2vec-audio's positional convolutions, which read zeros past each scored clip's frames."""
        convs = getattr(self.model.encoder, "pos_conv_embed", None)
        return convs if isinstance(convs, ClipPositionalConvs) else None

    @property
    def front_end_settings(self) -> dict[str, int]:
        """A scored clip of a group-norm encoder or data2vec-audio is encoded on its own frames, which earlier
        releases did not do."""
        return {name: 1 for name, module in (("clip_group_norm", self.clip_norm),
                                             ("clip_positions", self.clip_positions)) if module is not None}

    @property
    def padding(self) -> PaddingRule:
        """Exact where an attention mask keeps padding out of the transformer and the convolutions read each
        clip's own frames (see the module docstring)."""
        if self.group_norm and self.clip_norm is None:
            return PaddingRule(False, 0.0, "the group-norm feature encoder normalises over the padding")
        if self.model.config.model_type == "data2vec-audio" and self.clip_positions is None:
            return PaddingRule(False, 0.0, "the positional convolutions carry padding into the last real frames")
        if self.model.config.model_type == "wav2vec2-conformer":
            return PaddingRule(False, 0.0, "the conformer's convolution modules read the padded frames, unmasked")
        return EXACT_PADDING

    @property
    def frame_hop(self) -> int:
        """Samples between two frames: the product of the conv strides (320 for wav2vec2)."""
        hop = 1
        for stride in self.model.config.conv_stride:
            hop *= int(stride)
        return hop

    @property
    def receptive_field(self) -> int:
        """Samples the conv feature encoder needs for one frame (400 for wav2vec2)."""
        return conv_receptive_field(self.model.config)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames the transformer sees for ``lengths`` samples (the model's own formula, adapter excluded)."""
        extra = {"add_adapter": False} if getattr(self.model.config, "add_adapter", False) else {}
        return self.model._get_feat_extract_output_lengths(lengths, **extra).long()

    def _windows(self, total: int) -> list[tuple[int, int]]:
        """Sample ranges encoded separately: the whole tensor, or max_window-second windows; a last one too short
        for one frame is left out (no clip has a frame there: see :func:`encode_in_windows`)."""
        size = round(self.max_window * self.sample_rate)
        if size <= 0 or total <= size:
            return [(0, total)]
        bounds = [(start, min(start + size, total)) for start in range(0, total, size)]
        return bounds[:-1] if bounds[-1][1] - bounds[-1][0] < self.receptive_field else bounds

    def _states(self, waveforms: Tensor, attention: Tensor | None) -> list[Tensor]:
        """Every hidden state of the encoder over (B, n) samples; in training passes the encoder masks its spans
        itself, on the device (hf_masks.install_masks)."""
        out = self.model(waveforms, attention_mask=attention, output_hidden_states=True)
        states = list(out.hidden_states)
        if out.last_hidden_state.shape == states[-1].shape:  # no adapter: include the final LayerNorm (4.x numbering)
            states[-1] = out.last_hidden_state
        return states

    def _own_frames(self, samples: Tensor) -> contextlib.AbstractContextManager[None]:
        """While it lasts, the encoder reads each clip's own frames of its ``samples`` real samples: the first
        convolution's (a group norm's) and the feature encoder's (data2vec-audio's positional convolutions)."""
        config = self.model.config
        first = torch.div(samples - int(config.conv_kernel[0]), int(config.conv_stride[0]), rounding_mode="floor") + 1
        return own_frames((self.clip_norm, first), (self.clip_positions, self.frame_lengths(samples)))

    def _encode(self, waveforms: Tensor, valid: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """One pass of the encoder over (B, n) samples of which ``valid`` (B,) are real (None: all of them)."""
        field = self.receptive_field
        if waveforms.shape[1] < field:  # shorter than one frame: zero-pad so the conv stack runs
            valid = whole_lengths(waveforms, valid)
            waveforms = F.pad(waveforms, (0, field - waveforms.shape[1]))
        if valid is None:  # no padding, no mask: transformers then reads none back to see what it masks
            states = self._states(waveforms, None)
            return states, torch.ones(states[0].shape[:2], dtype=torch.bool, device=states[0].device)
        # a clip shorter than one frame is treated as zero-padded to one frame; never an all-masked row
        seen = valid.clamp(min=field)
        positions = torch.arange(waveforms.shape[1], device=waveforms.device)
        with self._own_frames(seen):
            states = self._states(waveforms, (positions[None, :] < seen[:, None]).long())
        frames = self.frame_lengths(seen).clamp(max=states[0].shape[1])
        frames = torch.where(valid > 0, frames, torch.zeros_like(frames))  # windows past a clip's end add no frames
        mask = torch.arange(states[0].shape[1], device=frames.device)[None, :] < frames[:, None]
        return states, mask

    def hidden_states(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """Waveforms (B, N), valid samples (B,) -> ``num_hidden_states`` tensors (B, T, D), mask (B, T).

        Every encoder of a padded batch gets an attention mask (group-norm ones see the padding in their
        convolutions: ``padding``); one of a batch without padding (``lengths`` None) none, as the same mask of
        ones would change nothing.
        With ``max_window`` the windows' frames are concatenated along time and the mask covers them all.
        """
        return encode_in_windows(self._encode, waveforms, lengths, self._windows(waveforms.shape[1]),
                                 shortest=self.receptive_field)

    def load_pretrained(self, path: str | Path) -> None:
        """Re-load the encoder weights from a hub id or directory (strict: same architecture required)."""
        self.model.load_state_dict(load_encoder(replace(self.options, checkpoint=str(path)), True).state_dict())

    def hidden_states_with_attention(self, waveforms: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor,
                                                                                      list[Tensor]]:
        """As :meth:`hidden_states`, plus each layer's attention probabilities (B, heads, frames, frames),
        from one pass over the whole clips (no windows)."""
        states, mask = self.hidden_states(waveforms, lengths)
        if hasattr(self.model, "set_attn_implementation"):  # fused attention kernels return no weights
            self.model.set_attn_implementation("eager")
        sample_mask = (torch.arange(waveforms.shape[1], device=waveforms.device)[None] < lengths[:, None]).long()
        with self._own_frames(lengths):
            out = self.model(waveforms, attention_mask=sample_mask, output_attentions=True)
        return states, mask, list(out.attentions)

    def attention_layout(self) -> tuple[int, None, None]:
        """No class token; frames along time, every one read."""
        return 0, None, None

    def export_config(self, folder: str | Path) -> None:
        """Write the encoder's architecture (config.json) and its feature extractor (preprocessor_config.json),
        so a run directory rebuilds without the hub and reads its input as the run did (:func:`hf_input`)."""
        from transformers import AutoFeatureExtractor

        self.model.config.save_pretrained(str(folder))
        try:
            AutoFeatureExtractor.from_pretrained(self.checkpoint).save_pretrained(str(folder))
        except (OSError, ValueError):  # none with the checkpoint: the folder falls back to the same settings
            pass

    def freeze_feature_encoder(self) -> None:
        """Freeze the CNN feature encoder only (the transformer and projection stay trainable)."""
        self.model.freeze_feature_encoder()

    def freeze_feature_projection(self, mask_embedding: bool = True) -> None:
        """Freeze the projection of the CNN features into the transformer's width and (``mask_embedding``) the mask
        embedding that replaces masked frames of its output: the seed emotion system's fine-tuning trained
        neither."""
        self.model.feature_projection.requires_grad_(False)
        if mask_embedding:
            freeze_mask_embedding(self.model)

    # ------------------------------------------------------------------ self-supervised pretraining

    @classmethod
    def pretrain_objectives(cls, config: RunConfig) -> tuple[str, ...]:
        """``tapt``: wav2vec2's contrastive + diversity objective, continued (:mod:`.hf_pretraining`);
        ``ptapt``: masked prediction of k-means frame labels (:mod:`.hf_ptapt`)."""
        return ("tapt", "ptapt")

    @classmethod
    def objective_problems(cls, objective: str, config: RunConfig) -> list[str]:
        """P-TAPT predicts the frame labels of ``--pseudo_labels``: without them there is nothing to predict."""
        if objective == "ptapt" and not backbone_options(config).pseudo_labels:
            return ["--objective ptapt: give the frame labels to predict with --pseudo_labels LABELS.parquet "
                    "(written by `audiotune cluster`)"]
        return []

    def start_pretraining(self, objective: str, config: RunConfig) -> None:
        """Load what the objective trains (quantizer and projections, or cluster heads); the encoder becomes
        its own. P-TAPT reads whole clips (:func:`hf_input`)."""
        from audiotune.models.backbones.hf_pretraining import Wav2Vec2Tapt
        from audiotune.models.backbones.hf_ptapt import PseudoLabelPretraining

        if objective == "ptapt":
            self.pretrainer: Wav2Vec2Tapt | PseudoLabelPretraining = PseudoLabelPretraining(
                self.checkpoint, config, layerdrop=self.options.layerdrop)
        else:
            self.pretrainer = Wav2Vec2Tapt(self.checkpoint, config, layerdrop=self.options.layerdrop)
        self.model = self.pretrainer.encoder
        if self.options.gradient_checkpointing:
            enable_checkpointing(self.model)

    def clip_problems(self, uids: Sequence[str]) -> list[str]:
        """P-TAPT: each clip without frame labels in ``--pseudo_labels`` (TAPT learns from any clip)."""
        from audiotune.models.backbones.hf_ptapt import PseudoLabelPretraining

        if not isinstance(self.pretrainer, PseudoLabelPretraining):
            return []
        return self.pretrainer.unlabelled(uids)

    def pretrain_loss(self, batch: dict[str, Any], objective: str, step: int = 0,
                      rng: random.Random | None = None) -> dict[str, Tensor]:
        """The objective's loss of a batch of waveforms (``inputs``, ``lengths``, ``uid``); the crops and masks are
        drawn from the lengths the batch holds on the host, where it has them."""
        from audiotune.models.backbones.hf_pretraining import Wav2Vec2Tapt

        rng = rng or random.Random(0)
        lengths = batch.get(HOST_LENGTHS, batch["lengths"])
        if isinstance(self.pretrainer, Wav2Vec2Tapt):
            return self.pretrainer.loss(batch["inputs"], lengths, step, rng)
        return self.pretrainer.loss(batch["inputs"], lengths, batch["uid"], rng)

    def save_pretrained_outputs(self, folder: Path) -> list[Path]:
        """``folder/encoder``: a ``save_pretrained`` directory that ``--checkpoint`` reads like a hub id."""
        return [self.pretrainer.save(Path(folder))]


def resolve_hf(config: RunConfig) -> None:
    """The default checkpoint; frozen unless asked (as the seed did). :func:`hf_input` reads the encoder's rate
    (another ``--resample_rate`` is refused: :func:`~audiotune.models.option_checks.ignored_options`)."""
    if not config.model.checkpoint:
        config.model.checkpoint = DEFAULT_CHECKPOINT
    check_available(config.model.checkpoint, "-c")  # no network and no local copy: one line at once
    check_encoder_type(config.model.checkpoint)
    if config.model.freeze is None:
        config.model.freeze = True
    if config.model.objective == "ptapt" and config.audio.clip_length:
        log.info("--objective ptapt reads whole clips (--clip_length %s ignored; --max_seconds crops)",
                 config.audio.clip_length)


def hf_input(config: RunConfig) -> InputSpec:
    """Waveforms at the encoder's own rate with its extractor's normalisation, at least one frame of its
    convolutional front end long. P-TAPT (``--objective ptapt``) reads whole clips: its labels cover every frame
    (``--max_seconds`` crops them)."""
    from transformers import AutoConfig

    checkpoint = config.model.checkpoint or DEFAULT_CHECKPOINT
    settings = extractor_settings(checkpoint)
    spec = replace(InputSpec.from_sections(config.audio, config.features), resample_rate=settings["sampling_rate"],
                   features="waveform",
                   waveform_norm=normalises(settings, config.features.waveform_norm, config.version),
                   min_samples=config.audio.min_samples or conv_receptive_field(AutoConfig.from_pretrained(checkpoint)))
    return spec.whole_clips() if config.model.objective == "ptapt" else spec


@register("hf", input=hf_input, resolve=resolve_hf, options=HFSettings)
def build_hf(config: RunConfig, pretrained: bool = True) -> HFBackbone:
    """The HF encoder named by ``--checkpoint`` (default: wav2vec2-base-960h).

    ``pretrained=False`` reads the checkpoint's config only (random weights), for runs whose weights are
    loaded from their own ``model.safetensors`` afterwards.
    """
    return HFBackbone(HFOptions.from_config(config), pretrained=pretrained)
