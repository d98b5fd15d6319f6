"""The option machinery of every config section: :func:`option` (a dataclass field with its help, seed flag
spellings, allowed values, valid range, path role and the stages it acts in), the common ranges, and the checks
of values against a field's range (:func:`range_problems`), type (:func:`check_types`) and stages
(:func:`inactive_options`)."""
from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable
from dataclasses import field
from typing import Any

from audiotune.storage import Role

INF = float("inf")
# valid values of a numeric option: (low, high, low included, high included); lists are checked per element
AT_LEAST_0 = (0, INF, True, False)
AT_LEAST_1 = (1, INF, True, False)
PROBABILITY = (0, 1, True, True)


class Stage(enum.Enum):
    """Where an encoder runs; an option's ``acts`` names the stages in which it changes anything."""

    ENCODE = "encode"  # as it is, in eval mode: extract, evaluate, probe, cluster, a frozen encoder in train
    FINE_TUNE = "fine-tune"  # trained on labels: train, cv, sweep with --freeze false
    PRETRAIN = "pretrain"  # trained on a self-supervised objective: audiotune pretrain


EVERYWHERE = frozenset(Stage)
ENCODING = frozenset({Stage.ENCODE})  # the commands that read an encoder as it is
CLASSIFIER_STAGES = frozenset({Stage.ENCODE, Stage.FINE_TUNE})  # train, cv, sweep: frozen or trained encoder
WHILE_TRAINING = frozenset({Stage.FINE_TUNE, Stage.PRETRAIN})  # train mode, gradients (SpecAugment, checkpointing)
FINE_TUNING = frozenset({Stage.FINE_TUNE})
PRETRAINING = frozenset({Stage.PRETRAIN})
_ACTS_TEXT = {
    WHILE_TRAINING: "acts only while the encoder trains",
    FINE_TUNING: "acts only while the encoder fine-tunes on labels (audiotune train --freeze false)",
    PRETRAINING: "acts only in audiotune pretrain",
    CLASSIFIER_STAGES: "acts where the encoder encodes labelled clips, not in audiotune pretrain",
}


@dataclasses.dataclass(frozen=True)
class Needs:
    """An option that acts only while another one, its switch, is set so: ``switch`` is ``section.name``, a name
    of the same options, or empty for those options themselves (several switches); ``holds`` says of the switch's
    value whether the option acts, ``what`` says how the switch must be set (``--speed above 0``); ``stages``: where
    it needs the switch (elsewhere it acts without it: a default of its own there)."""

    switch: str
    holds: Callable[[Any], bool]
    what: str
    stages: frozenset[Stage] = EVERYWHERE


def needs_on(switch: str, what: str) -> Needs:
    """Acts only while ``switch`` is on: a probability or a count above 0, a true boolean (``what``: say so)."""
    return Needs(switch, bool, what)


def option(default: Any, help: str, flags: tuple[str, ...] = (), choices: tuple[Any, ...] | None = None,
           cli: bool = True, valid: tuple[float, float, bool, bool] | None = None, role: Role | None = None,
           action: bool = False, acts: frozenset[Stage] | dict[Any, frozenset[Stage]] = EVERYWHERE,
           training_only: bool = False, needs: Needs | None = None) -> Any:
    """A config field with its command-line help, extra flag spellings, allowed values, valid range and the role
    of a path (how a remote one is read or written). An ``action`` (resume, overwrite) is what one command does,
    not a property of the run: a run's saved config holds its default, so reusing that config repeats nothing.
    ``acts``: the stages in which the option changes anything (:class:`Stage`), or those of each of its values
    (``{choice: stages}``, for an option whose values belong to different stages); a command that runs in none of
    them neither shows nor takes it. ``training_only``: an augmentation, which changes only the clips a model
    trains on (train, cv, sweep, pretrain): a command that trains nothing on clips neither shows nor takes it.
    ``needs``: the switch without which it does nothing (:class:`Needs`; set away from its default while the switch
    is not so, it is refused: :func:`idle_options`)."""
    meta = {"help": help, "flags": flags, "choices": choices, "cli": cli, "valid": valid, "role": role,
            "action": action, "acts": acts, "training_only": training_only, "needs": needs}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def acts_of(spec: dataclasses.Field, value: Any = dataclasses.MISSING) -> frozenset[Stage]:
    """The stages in which option ``spec`` acts: with ``value``, those in which that value does; without, those in
    which any of its values does."""
    acts = spec.metadata.get("acts", EVERYWHERE)
    if not isinstance(acts, dict):
        return acts
    if value is dataclasses.MISSING:
        return frozenset().union(*acts.values())
    return acts.get(value, EVERYWHERE)


def takes(spec: dataclasses.Field, stages: frozenset[Stage]) -> bool:
    """Whether a command that runs ``stages`` takes option ``spec``: it acts in one of them and, for an
    augmentation, the command trains on clips (fine-tuning or pretraining; a frozen encoder's heads in train too)."""
    if spec.metadata.get("training_only") and not stages & WHILE_TRAINING:
        return False
    return bool(acts_of(spec) & stages)


def describe_acts(stages: frozenset[Stage]) -> str:
    """'acts only in audiotune pretrain' style text of where an option acts."""
    return _ACTS_TEXT.get(stages) or "acts only in stage(s) " + ", ".join(sorted(stage.value for stage in stages))


def default_of(spec: dataclasses.Field) -> Any:
    """The default value of option ``spec``."""
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default


def option_default(options: type, name: str) -> Any:
    """The default of option ``name`` of options dataclass ``options``, for a dataclass built from those options
    to take as its own field's default (the value written once, in the option)."""
    return default_of({spec.name: spec for spec in dataclasses.fields(options)}[name])


def option_choices(options: type, name: str) -> tuple[Any, ...]:
    """The values option ``name`` of options dataclass ``options`` takes (its declared choices)."""
    return tuple({spec.name: spec for spec in dataclasses.fields(options)}[name].metadata.get("choices") or ())


def inactive_options(options: Any, stages: frozenset[Stage]) -> list[tuple[dataclasses.Field, Any]]:
    """Each option of dataclass instance ``options`` that acts in none of ``stages`` but is set away from its
    default, with its value (it would silently do nothing there)."""
    return [(spec, getattr(options, spec.name)) for spec in dataclasses.fields(options)
            if not acts_of(spec, getattr(options, spec.name)) & stages
            and getattr(options, spec.name) != default_of(spec)]


def idle_fields(options: Any, switch_value: Callable[[str], Any],
                stages: frozenset[Stage] = EVERYWHERE) -> list[tuple[dataclasses.Field, Needs]]:
    """Every option of dataclass instance ``options`` set away from its default while the switch it needs
    (:class:`Needs`) is not so, in each of ``stages`` it acts in, with what it needs; ``switch_value(switch)``: the
    value of a switch of another section (``section.name``; one without a section is an option of ``options``)."""
    idle = []
    for spec in dataclasses.fields(options):
        needs, value = spec.metadata.get("needs"), getattr(options, spec.name)
        if needs is None or value == default_of(spec) or not stages & acts_of(spec, value) <= needs.stages:
            continue
        switch = switch_value(needs.switch) if "." in needs.switch else \
            getattr(options, needs.switch) if needs.switch else options
        if not needs.holds(switch):
            idle.append((spec, needs))
    return idle


def idle_options(options: Any, switch_value: Callable[[str], Any], stages: frozenset[Stage] = EVERYWHERE,
                 skip: frozenset[str] = frozenset()) -> list[str]:
    """``--name value: acts only with --switch ...`` for every option of :func:`idle_fields` but those named in
    ``skip`` (refused otherwise)."""
    problems = []
    for spec, needs in idle_fields(options, switch_value, stages):
        if spec.name in skip:
            continue
        value = getattr(options, spec.name)
        shown = " ".join(map(str, value)) if isinstance(value, list) else value
        problems.append(f"--{spec.name} {shown}: acts only with {needs.what}")
    return problems


def describe_range(low: float, high: float, low_in: bool, high_in: bool) -> str:
    """'[0, 1)' style text of a range (inf for unbounded)."""
    def text(v: float) -> str:
        return "inf" if v == INF else "-inf" if v == -INF else str(int(v)) if float(v).is_integer() else f"{v:g}"
    return f"{'[' if low_in else '('}{text(low)}, {text(high)}{']' if high_in else ')'}"


def range_problems(options: Any) -> list[str]:
    """``--name value: must be in ...`` for every option of dataclass instance ``options`` outside its declared
    valid range or not one of its declared choices (lists are checked per element). The command line checks
    choices itself; a config file's values are checked here."""
    return [problem for spec in dataclasses.fields(options)
            for problem in option_problems(spec, getattr(options, spec.name))]


def option_problems(spec: dataclasses.Field, value: Any, choices: bool = True) -> list[str]:
    """What :func:`range_problems` finds in ``value`` of option ``spec``; ``choices``: also whether it is one of
    the declared choices (argparse checks those of a flag)."""
    problems = []
    if choices and spec.metadata.get("choices"):
        wrong = [item for item in (value if isinstance(value, list) else [value])
                 if item is not None and item not in spec.metadata["choices"]]
        if wrong:
            problems.append(f"--{spec.name} {wrong[0]}: choose one of {', '.join(map(str, spec.metadata['choices']))}")
    if not spec.metadata.get("valid"):
        return problems
    low, high, low_in, high_in = spec.metadata["valid"]
    for item in value if isinstance(value, list) else [value]:
        if item is None or isinstance(item, (bool, str)):  # words such as "auto" are checked by their type
            continue
        fine = isinstance(item, (int, float)) and math.isfinite(item) and \
            (low < item or (low_in and item == low)) and (item < high or (high_in and item == high))
        if not fine:
            problems.append(f"--{spec.name} {item}: must be in {describe_range(low, high, low_in, high_in)}")
            break
    return problems


def _fits(value: Any, kind: Any) -> bool:
    """Whether a YAML value fits a field annotation (int | None, list[int], float, str, bool, int | Literal["auto"])."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if kind is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True


# the words a boolean flag reads as True and as False, as the seeds' command lines passed them
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off", "none")


def _as_flag_reads(value: Any, kind: Any) -> Any:
    """``value`` as its flag reads the same text, where YAML read it as another type: ``1e-4`` (a string to YAML
    1.1) for a number, ``32`` (a number to YAML) for a word such as ``--precision 32``; else as it is."""
    if _fits(value, kind):
        return value
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list and isinstance(value, list):
        return [_as_flag_reads(item, args[0]) for item in value]
    kinds = args if origin in (typing.Union, types.UnionType) else (kind,)
    if bool in kinds and isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    if float in kinds and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if str in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def as_flags_read(section_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` of ``section_cls``'s options read as their flags read the same text (see :func:`_as_flag_reads`);
    options it does not declare as they are."""
    hints = typing.get_type_hints(section_cls)
    return {name: _as_flag_reads(value, hints[name]) if name in hints else value for name, value in values.items()}


def check_types(section_cls: type, values: dict[str, Any], where: str) -> None:
    """An error naming every value of ``values`` that does not fit its field's type in ``section_cls``."""
    hints = typing.get_type_hints(section_cls)
    wrong = [f"{name}: {value!r} is not {_type_name(hints[name])}" for name, value in values.items()
             if not _fits(value, hints[name])]
    if wrong:
        raise ValueError(f"{where}: wrong type: " + "; ".join(wrong))


def literal_words(kind: Any) -> tuple[str, ...]:
    """The words a field annotation allows besides its other type (``int | Literal["auto"]``: ``("auto",)``)."""
    return tuple(word for arg in typing.get_args(kind) if typing.get_origin(arg) is typing.Literal
                 for word in typing.get_args(arg))


def _type_name(kind: Any) -> str:
    return str(kind).replace("typing.", "").replace("<class '", "").replace("'>", "")

