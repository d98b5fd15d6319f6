"""Backbone registry: every backbone is one file behind the same small interface.

A backbone is an ``nn.Module`` with ``embedding_dim``, ``num_layers``, ``num_hidden_states``,
``needs_equal_length``,
``hidden_states(inputs, lengths) -> (list of (B, T, D) tensors, (B, T) bool mask)`` and
``load_pretrained(path)``. The classifier, engine and CLI never look at which one it is.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from audiotune.config import RunConfig

BackboneFactory = Callable[[RunConfig, bool], nn.Module]
ConfigResolver = Callable[[RunConfig], None]
_REGISTRY: dict[str, tuple[BackboneFactory, ConfigResolver | None]] = {}


def register(name: str, resolve: ConfigResolver | None = None) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make ``factory(config, pretrained)`` available as ``--model NAME``.

    ``resolve(config)`` fills the options the backbone decides (input features, sample rate, defaults) and
    rejects combinations it cannot run, before anything is read or written.
    """
    def wrap(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = (factory, resolve)
        return factory
    return wrap


# modules register themselves on import; only the one a run names is imported (transformers is slow to load)
_MODULES = {"ecapa_tdnn": "audiotune.models.backbones.ecapa", "hf": "audiotune.models.backbones.huggingface",
            "ssast": "audiotune.models.backbones.ssast"}


def _entry(name: str) -> tuple[BackboneFactory, ConfigResolver | None]:
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        raise ValueError(f"--model {name}: unknown backbone (known: {sorted(_MODULES)})")
    return _REGISTRY[name]


def resolve_config(config: RunConfig) -> RunConfig:
    """Let the chosen backbone settle the options it owns; returns the same config."""
    resolve = _entry(config.model.model)[1]
    if resolve is not None:
        resolve(config)
    features = config.features
    features.freqm = 0 if features.freqm is None else features.freqm  # SpecAugment is off unless a backbone
    features.timem = 0 if features.timem is None else features.timem  # or the user turns it on
    return config


def build_backbone(config: RunConfig, pretrained: bool = True) -> nn.Module:
    """The backbone named by ``config.model.model``; ``pretrained`` loads ``--checkpoint`` weights."""
    return _entry(config.model.model)[0](config, pretrained)
