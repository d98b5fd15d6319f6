"""The bare Hugging Face encoder as its options ask for it (:class:`HFOptions`): loaded with the masking, LayerDrop
and gradient checkpointing of its training passes (where its time spans go: :mod:`.hf_masks`), and a mask
embedding kept as loaded (:func:`freeze_mask_embedding`).

LayerDrop skips each transformer layer with probability ``p`` in a training pass: the layer passes its input on
unchanged, so the encoder still returns one hidden state per layer (a skipped layer's state repeats the one
before it), as transformers 4.x did and as the seeds' models trained. transformers' own LayerDrop is switched off
(from 5.x a skipped layer records no hidden state, and the states would shift). WavLM layers pass the position
bias on, and its first layer, which computes that bias, always runs (as in transformers).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from audiotune.config import RunConfig
from audiotune.models.backbones import backbone_options, input_spec
from audiotune.models.backbones.hf_checkpoint import report_loading, weights_quietly
from audiotune.models.backbones.hf_masks import MIN_MASKS

DEFAULT_CHECKPOINT = "facebook/wav2vec2-base-960h"


@dataclass(frozen=True)
class HFOptions:
    """What builds an :class:`~.huggingface.HFBackbone`, read from a run config by :meth:`from_config`."""

    checkpoint: str = DEFAULT_CHECKPOINT
    max_window: float = 0.0  # seconds per separately encoded window (0: whole clips)
    sample_rate: int = 16000
    mask_time_prob: float = 0.0  # SpecAugment while the encoder trains: time spans get the mask embedding
    mask_time_length: int = 10
    mask_spans: str = "clip"  # how time spans are counted and placed (hf_masks)
    mask_feature_prob: float = 0.0  # feature-channel spans set to 0
    mask_feature_length: int = 10
    gradient_checkpointing: bool = False  # recompute layer activations in backward (training mode only)
    layerdrop: float | None = 0.0  # probability of skipping a layer in a training pass; None: the checkpoint's

    @classmethod
    def from_config(cls, config: RunConfig) -> HFOptions:
        m = backbone_options(config)
        return cls(checkpoint=config.model.checkpoint or DEFAULT_CHECKPOINT, max_window=float(m.max_window),
                   sample_rate=input_spec(config).resample_rate, mask_time_prob=float(m.mask_time_prob or 0.0),
                   mask_time_length=int(m.mask_time_length or 10), mask_spans=str(m.mask_spans),
                   mask_feature_prob=float(m.mask_feature_prob),
                   mask_feature_length=int(m.mask_feature_length),
                   gradient_checkpointing=bool(m.gradient_checkpointing),
                   layerdrop=None if m.layerdrop == "checkpoint" else float(m.layerdrop))

    @property
    def masks(self) -> bool:
        return self.mask_time_prob > 0 or self.mask_feature_prob > 0


def load_encoder(options: HFOptions, pretrained: bool) -> Any:
    """The bare encoder of the checkpoint with only the LayerDrop and masking ``options`` ask for (a transformers
    model, typed Any)."""
    # deferred: importing transformers takes seconds
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(options.checkpoint)
    config.mask_time_prob = options.mask_time_prob  # no SpecAugment-style masking unless asked for
    config.mask_time_length = options.mask_time_length
    config.mask_time_min_masks = MIN_MASKS  # as wav2vec2's fine-tuning recipe and the seed emotion system
    config.mask_feature_prob = options.mask_feature_prob
    config.mask_feature_length = options.mask_feature_length
    config.mask_feature_min_masks = 1
    config.apply_spec_augment = options.masks
    if pretrained:
        with weights_quietly():
            model, loading = AutoModel.from_pretrained(options.checkpoint, config=config, output_loading_info=True)
        report_loading(options.checkpoint, config, loading)
    else:
        model = AutoModel.from_config(config)
    if options.mask_time_prob == 0 and isinstance(getattr(model, "masked_spec_embed", None), nn.Parameter):
        # the mask embedding is unused then; an unused parameter would trip DDP and differ between load paths
        del model.masked_spec_embed
    install_layerdrop(model, options.layerdrop)  # one hidden state per layer, skipped or not
    if options.gradient_checkpointing:
        enable_checkpointing(model)
    return model


def enable_checkpointing(model: Any) -> None:
    """Turn on the transformers model's gradient checkpointing (active in training mode only). Non-reentrant:
    gradients reach the layers even when the encoder's input needs none (a frozen feature encoder)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.x; the old name is deprecated there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def freeze_mask_embedding(model: Any) -> None:
    """Keep the encoder's mask embedding (``masked_spec_embed``, what masked time spans are replaced with) as
    loaded, when it has one."""
    embedding = getattr(model, "masked_spec_embed", None)
    if isinstance(embedding, nn.Parameter):
        embedding.requires_grad_(False)


def install_layerdrop(model: Any, probability: float | None) -> None:
    """Skip each of ``model.encoder.layers`` with ``probability`` in training passes (see the module's text;
    ``None``: the probability of ``model.config.layerdrop``, the checkpoint's); ``model.config.layerdrop`` is set
    to 0 so transformers does not skip them too."""
    if probability is None:
        probability = float(model.config.layerdrop)
    model.config.layerdrop = 0.0
    if probability <= 0:
        return
    for index, layer in enumerate(model.encoder.layers):
        passes_bias = "position_bias" in inspect.signature(layer.forward).parameters
        if passes_bias and index == 0:  # WavLM's first layer computes the position bias the others read
            continue
        layer.forward = _skippable(layer, layer.forward, probability, passes_bias)


def _skippable(layer: torch.nn.Module, run: Any, probability: float, passes_bias: bool) -> Any:
    def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if layer.training and float(torch.rand([])) < probability:
            return (hidden_states, kwargs.get("position_bias")) if passes_bias else hidden_states
        return run(hidden_states, *args, **kwargs)

    return forward
