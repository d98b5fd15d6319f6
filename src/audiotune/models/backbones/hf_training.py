"""The options of ``--model hf`` (:class:`HFSettings`) and the bare Hugging Face encoder as they ask for it
(:class:`HFOptions`): loaded with the masking, LayerDrop and gradient checkpointing of its training passes (where
its time spans go: :mod:`.hf_masks`), and a mask embedding kept as loaded (:func:`freeze_mask_embedding`).

LayerDrop skips each transformer layer with probability ``p`` in a training pass: the layer passes its input on
unchanged, so the encoder still returns one hidden state per layer (a skipped layer's state repeats the one
before it), as transformers 4.x did and as the seeds' models trained. transformers' own LayerDrop is switched off
(from 5.x a skipped layer records no hidden state, and the states would shift). WavLM layers pass the position
bias on, and its first layer, which computes that bias, always runs (as in transformers).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from audiotune.config import (
    AT_LEAST_0,
    AT_LEAST_1,
    CLASSIFIER_STAGES,
    FINE_TUNING,
    PRETRAINING,
    PROBABILITY,
    WHILE_TRAINING,
    Needs,
    RunConfig,
    needs_on,
    option,
    option_default,
)
from audiotune.models.backbones import backbone_options, input_spec
from audiotune.models.backbones.hf_checkpoint import from_config_initialised, report_loading, weights_quietly
from audiotune.models.backbones.hf_masks import (
    MIN_MASKS,
    PTAPT_MASK_LENGTH,
    PTAPT_MASK_PROB,
    SPAN_RULES,
    install_masks,
)
from audiotune.storage import Role

DEFAULT_CHECKPOINT = "facebook/wav2vec2-base-960h"
# fine-tuning's masking when --mask_time_prob / --mask_time_length are unset (pretraining objectives have their own)
FINE_TUNING_MASK_PROB, FINE_TUNING_MASK_LENGTH = 0.0, 10
# fine-tuning masks time spans only with --mask_time_prob above 0 (the checkpoint's is not read there); pretraining
# always does (the checkpoint's or P-TAPT's share unless given)
MASKED_TIME = Needs("mask_time_prob", bool, "--mask_time_prob above 0 (fine-tuning masks no time spans without it)",
                    FINE_TUNING)


def with_objective(objective: str) -> Needs:
    """Acts only in ``audiotune pretrain --objective OBJECTIVE`` (pretrain resolves an unnamed one, tapt, first)."""
    return Needs("model.objective", lambda named: named == objective, f"--objective {objective}")


@dataclass
class HFSettings:
    """The options of ``--model hf`` (flags shown with it; ``config.model.options`` in a run)."""

    max_window: float = option(0.0, "encode clips longer than this many seconds window by window (0 = whole clip)",
                               valid=AT_LEAST_0, acts=CLASSIFIER_STAGES)  # pretraining encodes whole batches
    mask_time_prob: float | None = option(None, "about the share of frames masked (P x frames / "
                                                "--mask_time_length spans, as transformers counts them), replaced by "
                                                "the mask embedding. Fine-tuning (default "
                                                f"{FINE_TUNING_MASK_PROB:g}: none; the seed emotion system 0.08); "
                                                "pretraining (default: tapt the "
                                                "checkpoint's mask_time_prob, 0.05 for wav2vec2-base; ptapt "
                                                f"{PTAPT_MASK_PROB:g})",
                                          valid=PROBABILITY, acts=WHILE_TRAINING)
    mask_time_length: int | None = option(None, "frames per masked span (default: fine-tuning "
                                                f"{FINE_TUNING_MASK_LENGTH}, tapt the checkpoint's mask_time_length, "
                                                f"ptapt {PTAPT_MASK_LENGTH})", valid=AT_LEAST_1, acts=WHILE_TRAINING,
                                          needs=MASKED_TIME)
    mask_spans: str = option("clip", "how masked time spans are counted and placed: clip (in each clip's real "
                                     "frames) or batch (counted from the batch's padded length and cut to each "
                                     "clip's frames: transformers 4.10, the emotion seed)", choices=SPAN_RULES,
                             acts=WHILE_TRAINING, needs=MASKED_TIME)
    mask_feature_prob: float = option(0.0, "fine-tuning: about the share of feature channels zeroed (P x "
                                           "channels / --mask_feature_length spans; the seed emotion system: "
                                           "0.05)", valid=PROBABILITY,
                                      acts=FINE_TUNING)  # pretraining masks no channels
    mask_feature_length: int = option(10, "fine-tuning: channels per zeroed span (the seed: 64)",
                                      valid=AT_LEAST_1, acts=FINE_TUNING,
                                      needs=needs_on("mask_feature_prob", "--mask_feature_prob above 0"))
    pseudo_labels: str = option("", "P-TAPT (--objective ptapt): frame labels written by `audiotune cluster` "
                                    "(parquet); one prediction head per K", role=Role.INPUT,
                                acts=PRETRAINING, needs=with_objective("ptapt"))
    fresh_quantizer: bool = option(False, "TAPT from a checkpoint without quantizer weights (e.g. CTC fine-tuned): "
                                          "start the quantizer and projections from random weights",
                                  acts=PRETRAINING, needs=with_objective("tapt"))
    gradient_checkpointing: bool = option(False, "recompute each encoder layer's activations in the backward pass "
                                                 "instead of keeping them: less memory for a trained encoder, "
                                                 "a second forward pass of each layer, the same gradients",
                                          acts=WHILE_TRAINING)
    layerdrop: float | Literal["checkpoint"] = option(
        0.0, "fine-tuning and --objective ptapt: probability that each transformer layer is skipped in a training "
             "pass (LayerDrop; 0: off; under DDP with --strategy ddp_find_unused_parameters_true); checkpoint: its "
             "config's value, as the seeds' Hugging Face models trained (--objective tapt always skips with the "
             "checkpoint's, as the seed's TAPT)", valid=PROBABILITY, acts=WHILE_TRAINING)
    tapt_loss: str = option("frame", "TAPT objective: frame (contrastive loss per masked frame + the diversity "
                                     "weight x diversity; distractors from the clip's masked frames) or batch "
                                     "(transformers 4.10, the emotion seed: contrastive summed over the batch + the "
                                     "weighted diversity once; distractors from all frames)",
                            choices=("frame", "batch"), acts=PRETRAINING, needs=with_objective("tapt"))
    gumbel_anneal: bool = option(True, "TAPT: anneal the quantizer's Gumbel temperature per step as wav2vec2's "
                                       "pretraining (2.0 x 0.999995^step, at least 0.5); false keeps 2.0 (the seed)",
                                acts=PRETRAINING, needs=with_objective("tapt"))


@dataclass(frozen=True)
class HFOptions:
    """What builds an :class:`~.huggingface.HFBackbone`, read from a run config by :meth:`from_config`: the
    checkpoint and the options of ``--model hf`` the encoder takes (their defaults are :class:`HFSettings`', an
    unset masking option fine-tuning's)."""

    checkpoint: str = DEFAULT_CHECKPOINT
    max_window: float = option_default(HFSettings, "max_window")  # seconds per separately encoded window (0: whole)
    sample_rate: int | None = None  # the rate ``max_window`` is counted in (None: the checkpoint's extractor's)
    mask_time_prob: float = FINE_TUNING_MASK_PROB  # time spans that get the mask embedding while the encoder trains
    mask_time_length: int = FINE_TUNING_MASK_LENGTH
    mask_spans: str = option_default(HFSettings, "mask_spans")  # how time spans are counted and placed (hf_masks)
    mask_feature_prob: float = option_default(HFSettings, "mask_feature_prob")  # feature-channel spans set to 0
    mask_feature_length: int = option_default(HFSettings, "mask_feature_length")
    gradient_checkpointing: bool = option_default(HFSettings, "gradient_checkpointing")  # in training mode only
    layerdrop: float | None = option_default(HFSettings, "layerdrop")  # None: the checkpoint's

    @classmethod
    def from_config(cls, config: RunConfig) -> HFOptions:
        m = backbone_options(config)
        return cls(checkpoint=config.model.checkpoint or DEFAULT_CHECKPOINT, max_window=float(m.max_window),
                   sample_rate=input_spec(config).resample_rate,
                   mask_time_prob=FINE_TUNING_MASK_PROB if m.mask_time_prob is None else float(m.mask_time_prob),
                   mask_time_length=FINE_TUNING_MASK_LENGTH if m.mask_time_length is None else
                   int(m.mask_time_length), mask_spans=str(m.mask_spans),
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
        with from_config_initialised():
            model = AutoModel.from_config(config)
    if options.mask_time_prob == 0 and isinstance(getattr(model, "masked_spec_embed", None), nn.Parameter):
        # the mask embedding is unused then; an unused parameter would trip DDP and differ between load paths
        del model.masked_spec_embed
    if options.masks:
        install_masks(model, options.mask_spans)  # drawn and applied on the device, by --mask_spans
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
