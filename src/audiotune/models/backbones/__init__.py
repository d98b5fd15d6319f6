"""Backbone registry: every backbone is one file behind the same small interface, found by importing the files
of this package (a backbone module calls :func:`register`).

A backbone is a :class:`Backbone` (an ``nn.Module``) with ``embedding_dim``, ``num_layers``, ``num_hidden_states``,
``padding`` (what zero padding does to a clip's result: a :class:`~audiotune.data.samplers.PaddingRule`),
``hidden_states(inputs, lengths) -> (list of (B, T, D) tensors, (B, T) bool mask)`` (``lengths`` None: no clip
is padded) and ``load_pretrained(path)``.
The classifier, engine and CLI never look at which one it is.

What a backbone reads is its :class:`~audiotune.data.input_spec.InputSpec`, derived from the user's options by
:func:`input_spec` (the config is never rewritten with it).
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
import random
import typing
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from audiotune.config import (
    FEATURES_CHECKED_VERSION,
    INPUT_RESOLVED_VERSION,
    RESAMPLED_LENGTH_VERSION,
    WAVEFORM_NORM_VERSION,
    AudioConfig,
    RunConfig,
    as_flags_read,
    check_types,
    default_of,
    option_default,
    range_problems,
)
from audiotune.config.sections import WAVEFORM_OPTIONS, FeatureConfig
from audiotune.data.input_spec import InputSpec
from audiotune.data.samplers import EXACT_PADDING, PaddingRule

log = logging.getLogger(__name__)


class Backbone(nn.Module):
    """Typed base of every backbone: what the classifier, engine and CLI may rely on."""

    # its one hidden state is one vector per clip, pooled by the model itself (ECAPA-TDNN's attentive statistics
    # pooling): a frame pooling gives it back as it is, and there are no states to weigh (:data:`POOLED_IDLE`)
    pooled: bool = False
    # what --pad fills its padded frames with never reaches its layers (ECAPA-TDNN masks them, AST writes its
    # extractor's padding frame): --pad is refused, and a run's recorded --pad is no change of it when resumed
    pads_itself: bool = False

    @property
    def padding(self) -> PaddingRule:
        """What padding a batch does to a clip's result; exact (the default): nothing, given the lengths."""
        return EXACT_PADDING

    @property
    def front_end_settings(self) -> dict[str, int]:
        """What it reads beside its weights and the run's input (:func:`input_spec`) that changes its outputs: a
        feature extractor's settings kept in the checkpoint's own file, or a rule of its computation that earlier
        releases did not follow; none unless the backbone says so."""
        return {}

    @property
    def architecture(self) -> dict[str, Any]:
        """What its layers compute beyond their weights and the run's options, read from its checkpoint (a
        transformers config's activation, norm epsilon, attention heads): none unless the backbone says so (one
        built from the run's options alone)."""
        return {}

    @property
    def frame_hop(self) -> int | None:
        """Input samples between two output frames when that is fixed (a convolutional front end), else None."""
        return None

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Width D of every hidden state."""
        raise NotImplementedError

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """Number of encoder layers."""
        raise NotImplementedError

    @property
    def num_hidden_states(self) -> int:
        """Length of the list :meth:`hidden_states` returns: each layer's output and the input of the first
        (state 0), unless the backbone says otherwise."""
        return self.num_layers + 1

    @property
    def weighted_states(self) -> int:
        """How many of the hidden states, from state 0, ``--weighted`` sums: all of them unless the backbone says
        otherwise (the others stay a ``--layer`` choice)."""
        return self.num_hidden_states

    @abstractmethod
    def hidden_states(self, inputs: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """Inputs and valid lengths (B,) -> ``num_hidden_states`` tensors (B, T, D) and a (B, T) bool mask.

        ``lengths`` None: every clip is as long as the batch (the host knows it: :func:`batch_lengths
        <audiotune.data.batch_features.batch_lengths>`), which an encoder may use to run without a padding mask;
        the result is the one of full lengths."""
        raise NotImplementedError

    @abstractmethod
    def load_pretrained(self, path: str | Path) -> None:
        """Load the encoder's weights from ``path`` (a checkpoint file, directory or hub id)."""
        raise NotImplementedError


# transformers config entries that change nothing an encoder in eval mode outputs: what it was saved by and as,
# what its heads, tokens and losses use, how it starts from random weights
_NOT_ARCHITECTURE = frozenset({
    "architectures", "transformers_version", "dtype", "torch_dtype", "id2label", "label2id", "problem_type",
    "return_dict", "output_attentions", "output_hidden_states", "use_cache", "tie_word_embeddings",
    "is_encoder_decoder", "finetuning_task", "tokenizer_class", "prefix", "task_specific_params", "bos_token_id",
    "eos_token_id", "pad_token_id", "decoder_start_token_id", "suppress_tokens", "begin_suppress_tokens",
    "vocab_size", "apply_spec_augment", "num_negatives", "contrastive_logits_temperature", "diversity_loss_weight",
    "ctc_loss_reduction", "ctc_zero_infinity", "initializer_range", "init_std",
})


def transformers_architecture(config: Any) -> dict[str, Any]:
    """The entries of a transformers config that change what its encoder outputs in eval mode: all but those of
    ``_NOT_ARCHITECTURE``, private ones and those acting only while it trains (dropout, LayerDrop, masking)."""
    return {key: value for key, value in config.to_dict().items()
            if key not in _NOT_ARCHITECTURE and not key.startswith(("_", "mask_"))
            and "dropout" not in key and "layerdrop" not in key}


class TransformersSizes:
    """The sizes and architecture of a backbone around a transformers encoder (``self.model``), read from its
    config: put before :class:`Backbone` among the bases."""

    model: Any

    @property
    def architecture(self) -> dict[str, Any]:
        """The encoder's transformers config (:func:`transformers_architecture`)."""
        return transformers_architecture(self.model.config)

    @property
    def embedding_dim(self) -> int:
        """Width of every hidden state (``config.hidden_size``)."""
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        """Number of transformer layers (``config.num_hidden_layers``)."""
        return int(self.model.config.num_hidden_layers)


# optional abilities: the engine probes for them with isinstance, never by the backbone's name
@runtime_checkable
class SupportsAttention(Protocol):
    """A backbone that can return its attention weights (``audiotune attention``)."""

    def hidden_states_with_attention(self, inputs: Tensor, lengths: Tensor
                                     ) -> tuple[list[Tensor], Tensor, list[Tensor]]: ...

    def attention_layout(self) -> tuple[int, tuple[int, int] | None, tuple[int, int] | None]: ...
    # (tokens before the frames or patches, the patch grid (frequency rows, time columns) or None for frames,
    # the (bins, frames) of the input the patches read or None: all of it)


@runtime_checkable
class SupportsTokenPooling(Protocol):
    """A backbone whose hidden states hold special tokens beside the frames: ``token_mask(pool, batch, device)``
    (B, tokens) chooses the tokens a pool named in ``token_pools`` averages (SSAST: ``cls``, ``avgtok``)."""

    token_pools: tuple[str, ...]

    def token_mask(self, pool: str, batch: int, device: torch.device) -> Tensor: ...

    @property
    def pooled_tokens(self) -> str:
        """The token pool whose tokens a frame pooling (mean, max) of the hidden states reads."""


@runtime_checkable
class SupportsFeatureEncoderFreeze(Protocol):
    """A backbone with a separate convolutional front end (``--freeze_feature_encoder``)."""

    def freeze_feature_encoder(self) -> None: ...


@runtime_checkable
class SupportsFeatureProjectionFreeze(Protocol):
    """A backbone whose convolutional front end is projected into the encoder's width by a layer of its own
    (``--freeze_feature_projection``)."""

    def freeze_feature_projection(self, mask_embedding: bool = True) -> None: ...


@dataclass(frozen=True)
class Ability:
    """What a model-section option needs of a backbone: the protocol, and what a backbone without it lacks."""

    protocol: type
    lacking: str


# model-section options that only a backbone with the ability reads (the command line and build_classifier refuse
# them for another: :func:`lacks_ability`; the help of another backbone leaves them out, as it does the backbones'
# own options)
ABILITY_OPTIONS: dict[str, Ability] = {
    "model.freeze_feature_encoder": Ability(SupportsFeatureEncoderFreeze, "no separate convolutional feature encoder"),
    "model.freeze_feature_projection": Ability(SupportsFeatureProjectionFreeze, "no feature projection after its "
                                               "convolutional front end"),
}


def lacks_ability(option: str, model: str) -> str:
    """The refusal of ``option`` (an :data:`ABILITY_OPTIONS` key) for ``--model model``, which lacks the ability."""
    return f"--{option.split('.', 1)[1]}: --model {model} has {ABILITY_OPTIONS[option].lacking}"


@runtime_checkable
class DescribesFrontEnd(Protocol):
    """A backbone that runs steps of its own on its input (a log-mel it computes, a padding value it sets): what
    an exported model's description says the graph does beyond the shared front end."""

    def describe_front_end(self) -> dict[str, Any]: ...


@runtime_checkable
class SupportsExportConfig(Protocol):
    """A backbone that needs its architecture stored beside the weights to be rebuilt."""

    def export_config(self, folder: str | Path) -> None: ...


@runtime_checkable
class SupportsPretraining(Protocol):
    """A backbone with self-supervised objectives (``audiotune pretrain``); the engine knows nothing else of them.

    The engine calls :meth:`start_pretraining` once, then :meth:`pretrain_loss` per batch (training and
    validation), then :meth:`save_pretrained_outputs` with the kept weights.
    """

    @classmethod
    def pretrain_objectives(cls, config: RunConfig) -> tuple[str, ...]:
        """The objectives ``--objective`` may name with ``config``'s options; the first is the default. Read from
        the config alone, before the backbone is built: a bad objective, or an option of another one, is refused
        before any checkpoint is read."""
        ...

    @classmethod
    def objective_problems(cls, objective: str, config: RunConfig) -> list[str]:
        """What ``objective`` needs of ``config``'s options that they do not give (``--objective ptapt`` without its
        frame labels), one text each, read from the config alone as :meth:`pretrain_objectives` is."""
        ...

    def start_pretraining(self, objective: str, config: RunConfig) -> None:
        """Build what the objective needs beyond the encoder (quantizer, prediction layers); all trainable."""
        ...

    def clip_problems(self, uids: Sequence[str]) -> list[str]:
        """What the objective started cannot learn from among the clips ``uids`` (a clip without the frame labels
        it predicts), one text each: checked before the first step."""
        ...

    def pretrain_loss(self, batch: dict[str, Any], objective: str, step: int,
                      rng: random.Random) -> dict[str, Tensor]:
        """``{"loss": scalar, ...}`` of one batch (``inputs``, ``lengths``); ``step`` is the optimiser step (for
        schedules the objective owns), ``rng`` draws its masks (seeded, so validation masks repeat)."""
        ...

    def save_pretrained_outputs(self, folder: Path) -> list[Path]:
        """Write the pretrained encoder in the layouts its users load; returns what was written."""
        ...


def whole_lengths(inputs: Tensor, lengths: Tensor | None) -> Tensor:
    """``lengths``, or where they are None (no clip padded) each clip's as long as the batch (``inputs``' dim 1)."""
    if lengths is None:
        return torch.full((inputs.shape[0],), inputs.shape[1], dtype=torch.long, device=inputs.device)
    return lengths


def encode_in_windows(encode: Callable[[Tensor, Tensor | None], tuple[list[Tensor], Tensor]], waveforms: Tensor,
                      lengths: Tensor | None, windows: list[tuple[int, int]],
                      shortest: int = 0) -> tuple[list[Tensor], Tensor]:
    """``encode(waveforms, valid)`` of each sample range of ``windows`` apart (bounded memory for long clips), each
    hidden state's frames and the masks concatenated along time; ``lengths`` (B,) are the real samples (None: no
    clip is padded, and no window either). A clip with fewer than ``shortest`` real samples in a window after the
    first (a tail too short for one frame) has none there: what a clip gets depends on its own length only."""
    if lengths is not None:
        lengths = (lengths if lengths.device == waveforms.device else lengths.to(waveforms.device)).long()
    passes = []
    for start, end in windows:
        real = None if lengths is None else (lengths - start).clamp(0, end - start)
        if real is not None and start > 0 and shortest > 0:
            real = torch.where(real < shortest, torch.zeros_like(real), real)
        passes.append(encode(waveforms[:, start:end], real))
    if len(passes) == 1:
        return passes[0]
    states = [torch.cat(parts, dim=1) for parts in zip(*(p[0] for p in passes))]
    return states, torch.cat([p[1] for p in passes], dim=1)


BackboneFactory = Callable[[RunConfig, bool], Backbone]
ModelResolver = Callable[[RunConfig], None]
InputDeclaration = Callable[[RunConfig], InputSpec]


@dataclass(frozen=True)
class Entry:
    """A registered backbone: its factory, its input, its model-section resolver and its options dataclass."""

    factory: BackboneFactory
    input: InputDeclaration | None
    resolve: ModelResolver | None
    options: type | None


_REGISTRY: dict[str, Entry] = {}


def register(name: str, input: InputDeclaration | None = None, resolve: ModelResolver | None = None,
             options: type | None = None) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: make ``factory(config, pretrained)`` available as ``--model NAME``.

    ``options`` is the backbone's own options dataclass (fields made with :func:`audiotune.config.option`):
    its fields become flags shown with ``--model NAME``, their values live in ``config.model.options``, and
    :func:`backbone_options` reads them back as an instance. ``input(config)`` returns the
    :class:`~audiotune.data.input_spec.InputSpec` the backbone reads given the user's options (pure: the config
    is not changed; default: the audio and features sections as they are) and rejects inputs it cannot read.
    ``resolve(config)`` fills the model section's defaults the backbone decides (checkpoint, freezing).
    """
    def wrap(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = Entry(factory, input, resolve, options)
        return factory
    return wrap


def _discover() -> None:
    """Import every module of this package: a backbone module registers itself with :func:`register`, so adding
    a backbone is adding its file."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def names() -> list[str]:
    """The backbones ``--model`` may name."""
    _discover()
    return sorted(_REGISTRY)


def _entry(name: str) -> Entry:
    if name not in _REGISTRY:
        _discover()
    if name not in _REGISTRY:
        raise ValueError(f"--model {name}: unknown backbone (known: {sorted(_REGISTRY)})")
    return _REGISTRY[name]


def backbone_class(name: str) -> type[Backbone]:
    """The class the factory of ``--model NAME`` returns (its declared abilities, without building it)."""
    return typing.cast(type[Backbone], typing.get_type_hints(_entry(name).factory)["return"])


# --resample_rate left as it is: a model that reads audio at another rate takes its own (said in a warning)
DEFAULT_RATE = option_default(AudioConfig, "resample_rate")
def reads_option(name: str | None, option: str) -> bool:
    """Whether ``--model NAME`` reads ``option`` (``section.name``): one of :data:`ABILITY_OPTIONS` only when the
    class its factory returns has the ability (no backbone named: any may)."""
    ability = ABILITY_OPTIONS.get(option)
    return not name or ability is None or issubclass(backbone_class(name), ability.protocol)


def options_classes() -> dict[str, type]:
    """Each registered backbone's options dataclass, by backbone name."""
    _discover()
    return {name: entry.options for name, entry in sorted(_REGISTRY.items()) if entry.options is not None}


def backbone_options(config: RunConfig) -> Any:
    """The chosen backbone's options (an instance of its options dataclass) from ``config.model.options``.

    An option of another backbone is left out (config files of earlier releases list every backbone's options;
    a flag of another backbone is refused by the command line), an option of none is an error naming it, and
    every value is checked against its type and valid range."""
    name = config.model.model
    cls = _entry(name).options
    given = dict(config.model.options)
    if cls is None:
        return None
    own = {spec.name for spec in dataclasses.fields(cls)}
    others = {spec.name for other in options_classes().values() for spec in dataclasses.fields(other)}
    unknown = sorted(set(given) - own - others)
    if unknown:
        raise ValueError(f"unknown option(s) of the model section: {unknown}")
    values = as_flags_read(cls, {k: v for k, v in given.items() if k in own})
    check_types(cls, values, f"options of --model {name}")
    options = cls(**values)
    problems = range_problems(options)
    if problems:
        raise ValueError("invalid option(s): " + "; ".join(problems))
    return options


def resolve_config(config: RunConfig) -> RunConfig:
    """Let the chosen backbone settle the model section's options it owns (its options complete, its default
    checkpoint and freezing); returns the same config. The audio and features sections stay as the user gave
    them: what the model reads is :func:`input_spec`."""
    entry = _entry(config.model.model)
    options = backbone_options(config)
    config.model.options = dataclasses.asdict(options) if options is not None else {}  # every option, complete
    resolve = entry.resolve
    if resolve is not None:
        resolve(config)
    inputs = input_spec(config)  # an input the backbone cannot read is an error now, before anything is read or written
    if config.audio.resample_rate == DEFAULT_RATE != inputs.resample_rate:  # one the user chose is refused
        log.warning("--model %s reads audio at %s Hz: it is resampled to that", config.model.model,
                    inputs.resample_rate)
    if inputs.features == "waveform":  # the options of spectrogram frames do nothing (a resumed run's: no change)
        spectral = [(spec.name, getattr(config.features, spec.name)) for spec in dataclasses.fields(FeatureConfig)
                    if spec.name not in WAVEFORM_OPTIONS and getattr(config.features, spec.name) != default_of(spec)]
        if spectral and not config.train.resume:
            crop = "; crop waveforms with --clip_length SECONDS" if any(n == "target_length" for n, _ in spectral) \
                else ""
            raise ValueError(f"{' '.join(f'--{name} {value}' for name, value in spectral)}: act on spectrogram "
                             f"frames; --model {config.model.model} reads waveforms{crop}")
    return config


def input_spec(config: RunConfig) -> InputSpec:
    """What the chosen backbone reads given the config's options; a ValueError for inputs it cannot read.

    A config written by an earlier release already holds the input its backbone resolved, and that is its input.
    """
    declare = _entry(config.model.model).input
    if config.version < INPUT_RESOLVED_VERSION or declare is None:
        spec = InputSpec.from_sections(config.audio, config.features)
    else:
        spec = declare(config)
    features = config.features.features  # None: the model's own
    if features not in (None, spec.features) and config.version >= FEATURES_CHECKED_VERSION:
        read = "waveforms" if spec.features == "waveform" else f"{spec.features} features"
        raise ValueError(f"--features {features}: --model {config.model.model} reads {read}")
    asked = config.features.waveform_norm
    if asked is not None and config.version >= WAVEFORM_NORM_VERSION:
        if spec.features != "waveform":
            raise ValueError(f"--waveform_norm {str(asked).lower()}: --model {config.model.model} reads "
                             f"{spec.features} features, not waveforms")
        if spec.waveform_norm != asked:
            raise ValueError(f"--waveform_norm {str(asked).lower()}: --model {config.model.model} reads its "
                             f"waveforms {'normalised' if spec.waveform_norm else 'as they are'} whatever it says")
    if config.version < RESAMPLED_LENGTH_VERSION:  # its clips had soxr's rounded count of resampled samples
        spec = dataclasses.replace(spec, resampled_length="round")
    return spec


def build_backbone(config: RunConfig, pretrained: bool = True) -> Backbone:
    """The backbone named by ``config.model.model``; ``pretrained`` loads ``--checkpoint`` weights."""
    return _entry(config.model.model).factory(config, pretrained)
