"""Backbone registry: every backbone is one file behind the same small interface.

A backbone is an ``nn.Module`` with ``embedding_dim``, ``num_layers``, ``num_hidden_states``,
``needs_equal_length``,
``hidden_states(inputs, lengths) -> (list of (B, T, D) tensors, (B, T) bool mask)`` and
``load_pretrained(path)``. The classifier, engine and CLI never look at which one it is.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from audiotune.config import RunConfig

BackboneFactory = Callable[[RunConfig], nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}


def register(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make a backbone factory available as ``--model NAME``."""
    def wrap(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = factory
        return factory
    return wrap


def build_backbone(config: RunConfig) -> nn.Module:
    """The backbone named by ``config.model.model``, with pretrained weights if ``--checkpoint`` is set."""
    from audiotune.models.backbones import ecapa  # noqa: F401  (registers itself)

    name = config.model.model
    if name not in _REGISTRY:
        raise ValueError(f"--model {name}: unknown backbone (known: {sorted(_REGISTRY)})")
    backbone = _REGISTRY[name](config)
    if config.model.checkpoint:
        backbone.load_pretrained(config.model.checkpoint)
    return backbone
