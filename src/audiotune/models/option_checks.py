"""Options that change nothing where they are set: which a user's command refuses (:func:`refuse_inactive`: an
option of a stage the command does not run, one whose switch is off, one the backbone reads past) and which a
run's recorded config may hold without them being a change (:func:`without_idle_options`, for resumed runs and
reruns of cv and sweep folders)."""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from audiotune.config import (
    CLASSIFIER_STAGES,
    EVERYWHERE,
    SECTIONS,
    ClassifierConfig,
    RunConfig,
    Stage,
    acts_of,
    default_of,
    describe_acts,
    idle_fields,
    idle_options,
    inactive_options,
    option_default,
)
from audiotune.config.options import Needs
from audiotune.config.sections import WAVEFORM_OPTIONS, FeatureConfig
from audiotune.models.backbones import DEFAULT_RATE, backbone_class, backbone_options, input_spec, resolve_config

# the classifier options a pooled backbone (:attr:`Backbone.pooled`) leaves idle: the first two change nothing
# (a resumed run's are no change), the weighted sum of its one state only scales it (refused all the same)
POOLED_IDLE = ("pooling_mode", "pool_drop_last")
POOLED_REFUSED = (*POOLED_IDLE, "weighted")
_POOLED_WHY = {"pooling_mode": "every pooling of one vector gives it back as it is",
               "pool_drop_last": "its one frame is never left out",
               "weighted": "there is one hidden state, nothing to weigh"}


def pooled_refusal(model: str, option: str) -> str | None:
    """Why classifier option ``option`` does nothing for ``--model model`` (a pooled backbone), or None."""
    if option in POOLED_REFUSED and backbone_class(model).pooled:
        return f"--model {model}'s hidden state is one vector per clip, pooled by the model: {_POOLED_WHY[option]}"
    return None


def ignored_options(config: RunConfig) -> list[str]:
    """``--name value: why`` for each option the user set away from its default that the chosen backbone reads
    past: the classifier's frame pooling of a pooled backbone (:attr:`Backbone.pooled`), a ``--resample_rate``
    other than the rate the backbone's input declares (its feature extractor's)."""
    problems = []
    name = config.model.model
    for spec in dataclasses.fields(ClassifierConfig):
        value, why = getattr(config.classifier, spec.name), pooled_refusal(name, spec.name)
        if why and value != default_of(spec):
            problems.append(f"--{spec.name} {str(value).lower() if isinstance(value, bool) else value}: {why}; "
                            f"leave --{spec.name} out")
    asked = config.audio.resample_rate
    rate = input_spec(config).resample_rate if asked != DEFAULT_RATE else asked  # read only when given
    if asked != rate:
        problems.append(f"--resample_rate {asked}: --model {name} reads audio at {rate} Hz (its feature "
                        "extractor's rate) whatever --resample_rate says; leave --resample_rate out")
    return problems


# why an option that acts while the encoder trains does nothing in a stage (appended to describe_acts' text)
_STAGE_WHY = {Stage.ENCODE: "the encoder is frozen here (--freeze true, the default for a pretrained encoder): add "
                            "--freeze false, or --frozen_train_mode for a frozen encoder in training mode",
              Stage.PRETRAIN: "audiotune pretrain trains the encoder on its self-supervised objective"}


def _option_parts(config: RunConfig) -> list[Any]:
    """The options of every section of ``config`` and of its backbone."""
    options = backbone_options(config)
    return [*(getattr(config, section) for section in SECTIONS), *([options] if options is not None else [])]


def _switch_value(config: RunConfig) -> Callable[[str], Any]:
    def value(switch: str) -> Any:
        section, _, name = switch.partition(".")
        return getattr(getattr(config, section), name)
    return value


def idle_settings(config: RunConfig,
                  stages: frozenset[Stage] = EVERYWHERE) -> list[tuple[str, dataclasses.Field, Needs]]:
    """``(section, field, needs)`` of every option of ``config`` set away from its default while its switch is off
    in ``stages`` (:func:`~audiotune.config.idle_fields`); ``section`` is ``options`` for the backbone's own
    options."""
    named = {id(getattr(config, section)): section for section in SECTIONS}
    return [(named.get(id(part), "options"), spec, needs) for part in _option_parts(config)
            for spec, needs in idle_fields(part, _switch_value(config), stages)]


def option_value(config: RunConfig, section: str, name: str) -> Any:
    """Option ``name`` of ``section`` (``options``: the backbone's, kept in the model section)."""
    return config.model.options.get(name) if section == "options" else getattr(getattr(config, section), name)


def set_option(config: RunConfig, section: str, name: str, value: Any) -> None:
    """Set option ``name`` of ``section`` (``options``: the backbone's, kept in the model section)."""
    if section == "options":
        config.model.options[name] = value
    else:
        setattr(getattr(config, section), name, value)


def without_idle_options(config: RunConfig, reader: RunConfig, stages: frozenset[Stage] = EVERYWHERE,
                         new_run: bool = False) -> RunConfig:
    """A copy of ``config`` with every option that did nothing at its default, given or not, when the backbone of
    ``reader`` reads it: those whose switch is off in ``stages`` (:func:`idle_settings`), those
    :func:`ignored_options` names but the weighted sum, and, for a model that reads waveforms, those of spectrogram
    frames (:func:`resolve_config` and :func:`refuse_inactive` refuse them all). ``new_run``: for a run that starts
    (no weights of its own to fit), also the softmax-weighted sum of a pooled backbone's one state (a weight of 1)."""
    config = copy.deepcopy(config)
    reads_waveforms = input_spec(reader).features == "waveform"
    if backbone_class(reader.model.model).pooled:
        softmax = config.classifier.layer_weights == ClassifierConfig.layer_weights
        idle = (*POOLED_IDLE, "weighted") if new_run and softmax else POOLED_IDLE
        for spec in dataclasses.fields(ClassifierConfig):
            if spec.name in idle:
                setattr(config.classifier, spec.name, default_of(spec))
    if backbone_class(reader.model.model).pads_itself:  # --pad never reached its layers
        config.features.pad = option_default(FeatureConfig, "pad")
    asked = copy.deepcopy(reader)
    asked.audio.resample_rate = config.audio.resample_rate
    if input_spec(asked).resample_rate != config.audio.resample_rate:  # the backbone's own rate, whatever it says
        config.audio.resample_rate = DEFAULT_RATE
    if not new_run:
        own_features_unset(config, reader)
    for section, spec, _ in idle_settings(config, stages):
        set_option(config, section, spec.name, default_of(spec))
    if reads_waveforms:  # but --target_length, which cropped the waveforms' samples
        for spec in dataclasses.fields(FeatureConfig):
            if spec.name not in (*WAVEFORM_OPTIONS, "target_length"):
                setattr(config.features, spec.name, default_of(spec))
    return config


def own_features_unset(config: RunConfig, reader: RunConfig) -> None:
    """``config``'s --features unset (None) where it gives the backbone of ``reader`` the input it reads without it:
    the same settings as a record that leaves it out (one of version 2 or 3 read its saved fbank so), for the
    comparisons of a resumed run and of a rerun cv or sweep folder (a new run keeps what was asked)."""
    if config.features.features is None:
        return
    given = copy.deepcopy(reader)
    given.audio, given.features = copy.deepcopy(config.audio), copy.deepcopy(config.features)
    unset = copy.deepcopy(given)
    unset.features.features = None
    try:
        if input_spec(given) == input_spec(unset):
            config.features.features = None
    except (ValueError, OSError):  # no input this backbone reads, or its checkpoint not at hand: as it is
        return


def checked_stages(config: RunConfig, stage: Stage | None = None) -> frozenset[Stage]:
    """Where the options of ``config`` act, as :func:`refuse_inactive` checks them: ``stage``, else fine-tuning, or
    encoding when ``--freeze`` holds the encoder (before the backbone resolved ``--freeze``: either)."""
    freeze = config.model.freeze and not config.model.frozen_train_mode  # in training mode: as if it fine-tunes
    return CLASSIFIER_STAGES if stage is None and freeze is None else \
        frozenset({stage or (Stage.ENCODE if freeze else Stage.FINE_TUNE)})


def inactive_problem(spec: Any, value: Any, stages: frozenset[Stage]) -> str:
    """``--name value: where it acts`` of an option that acts in none of ``stages``, with why the command's encoder
    does not train where it acts while the encoder fine-tunes."""
    acts = acts_of(spec, value)
    why = _STAGE_WHY.get(next(iter(stages))) if Stage.FINE_TUNE in acts and len(stages) == 1 else None
    return f"--{spec.name} {value}: {describe_acts(acts)}" + (f"; {why}" if why else "")


def refuse_inactive(config: RunConfig, stage: Stage | None = None) -> None:
    """An error naming every option of the model section and of the backbone in the resolved ``config`` set away
    from its default that does nothing in ``stage`` (default: fine-tuning, or encoding when ``--freeze`` holds the
    encoder; before the backbone resolved ``--freeze``, either: only what acts in neither), with what would make it
    act. For the commands that read a user's options (train, pretrain), never for a run being loaded."""
    options = backbone_options(config)
    stages = checked_stages(config, stage)
    inactive = inactive_options(config.model, stages)
    if options is not None:
        inactive += inactive_options(options, stages)
    problems = [inactive_problem(spec, value, stages) for spec, value in inactive]
    # an option whose switch is off (--speed_range without --speed); a resumed run's are no change of it (its
    # config.yaml may hold them from before they were refused: see engine.resume)
    # (one that acts in none of the stages is refused as such above, whatever its switch)
    for part in _option_parts(config) if not config.train.resume else []:
        problems += idle_options(part, _switch_value(config), stages,
                                 skip=frozenset(spec.name for spec, _ in inactive))
    if not config.train.resume:
        problems += ignored_options(config)
    if problems:
        raise ValueError(" / ".join(problems))


def idle_at_defaults(config: RunConfig, given: frozenset[str] = frozenset(), stage: Stage | None = None) -> list[str]:
    """Set each option of ``config`` that does nothing where it trains (``stage``, as :func:`refuse_inactive` checks)
    to its default, but those named in ``given`` (``section.name``, ``options.name``: the flags of the command line,
    which are refused): those whose switch is off with the options given, and those the chosen backbone reads past
    (:func:`without_idle_options` of a run that starts). Returns ``--name value: why`` of each.

    How a config file audiotune wrote is read for a new run: a recipe's value whose switch is off is its way for
    when the switch is on; a run's config.yaml may hold options refused since it was written (they did nothing then
    and read as their defaults do nothing now). One that acts in none of the stages is refused as ever. A config
    whose options cannot be read is left as it is (the command says why); one whose backbone cannot be resolved
    (a checkpoint not at hand) has only its values whose switch is off put back."""
    try:
        reader: RunConfig | None = resolve_config(copy.deepcopy(config))
    except (ValueError, OSError):
        reader = None
    try:
        stages = checked_stages(reader or config, stage)
        switched_off = idle_settings(config, stages)
        if reader is None:
            quiet = copy.deepcopy(config)
            for section, spec, _ in switched_off:
                set_option(quiet, section, spec.name, default_of(spec))
        else:
            quiet = without_idle_options(config, reader, stages, new_run=True)
        options = backbone_options(reader or config)
    except (ValueError, OSError):
        return []
    why = {(section, spec.name): f"acts only with {needs.what}" for section, spec, needs in switched_off}
    # one that acts nowhere in the command (a pretraining option in train) is refused as ever
    nowhere = {spec.name for part in (config.model, options) if part is not None
               for spec, _ in inactive_options(part, stages)}
    keys = [*((section, spec.name) for section in SECTIONS for spec in dataclasses.fields(getattr(config, section))),
            *(("options", name) for name in config.model.options)]
    changed = []
    for section, name in keys:
        value, default = option_value(config, section, name), option_value(quiet, section, name)
        if name not in ("options", *nowhere) and value != default and f"{section}.{name}" not in given:
            set_option(config, section, name, default)
            reason = why.get((section, name), f"does nothing with --model {config.model.model}")
            changed.append(f"--{name} {str(value).lower() if isinstance(value, bool) else value}: {reason}")
    return changed
