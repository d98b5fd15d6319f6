"""What changes the training passes of a Hugging Face encoder: LayerDrop, short batches' masks and gradient
checkpointing.

LayerDrop skips each transformer layer with probability ``p`` in a training pass: the layer passes its input on
unchanged, so the encoder still returns one hidden state per layer (a skipped layer's state repeats the one
before it), as transformers 4.x did and as the seeds' models trained. transformers' own LayerDrop is switched off
(from 5.x a skipped layer records no hidden state, and the states would shift). WavLM layers pass the position
bias on, and its first layer, which computes that bias, always runs (as in transformers).
"""
from __future__ import annotations

import inspect
from typing import Any

import torch


def enable_checkpointing(model: Any) -> None:
    """Turn on the transformers model's gradient checkpointing (active in training mode only). Non-reentrant:
    gradients reach the layers even when the encoder's input needs none (a frozen feature encoder)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.x; the old name is deprecated there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def unmasked_if_short(model: Any, clips: int, frames: int) -> dict[str, torch.Tensor]:
    """The forward's ``mask_time_indices`` for a training batch of ``frames`` frames shorter than one masked time
    span: none masked. transformers leaves a clip shorter than a span unmasked within a longer batch but raises for
    a batch of such clips only; here that batch is unmasked too, so whether a clip is masked never depends on the
    clips batched with it. Otherwise nothing: transformers draws the spans."""
    config = model.config
    if not model.training or not config.mask_time_prob or frames >= config.mask_time_length:
        return {}
    return {"mask_time_indices": torch.zeros(clips, frames, dtype=torch.bool, device=model.device)}


def install_layerdrop(model: Any, probability: float) -> None:
    """Skip each of ``model.encoder.layers`` with ``probability`` in training passes (see the module's text);
    ``model.config.layerdrop`` is set to 0 so transformers does not skip them too."""
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
