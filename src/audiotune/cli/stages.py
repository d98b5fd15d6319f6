"""Which backbone options a command takes: every backbone declares its options (its settings dataclass) and the
stages each acts in (``option(..., acts=...)``: everywhere, while the encoder trains, in pretraining; see
:class:`~audiotune.config.Stage`). A command says which stages it runs; an option that acts in none of them is
neither listed nor taken (:func:`stage_refusal`), and a ``--config`` file's value of it goes back to its default
(:func:`inactive_at_defaults`). Options given for another backbone than the chosen one are refused too. A recipe's or
a run's config.yaml value whose switch is off with the options given goes back to its default as well
(:func:`own_idle_at_defaults`)."""
from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import sys
from collections.abc import Iterable
from typing import Any

from audiotune import storage
from audiotune.config import (
    SECTIONS,
    RunConfig,
    Stage,
    acts_of,
    default_of,
    describe_acts,
    upgrade_sections,
)
from audiotune.config.files import read_config_file
from audiotune.config.recipes import is_shipped, resolve_recipe
from audiotune.data.prepare import head_options_at_defaults
from audiotune.engine.records import as_made, read_record_config
from audiotune.models import backbones, option_checks
from audiotune.storage import CONFIG_FILE

# The options that describe an encoder read without a run (-c CHECKPOINT --model NAME, its input and the backbone's
# own options); a run reads its own config, so beside --run they are refused (:func:`refuse_encoder_flags`)
ENCODER_OPTIONS = ("model.model", "model.checkpoint", "audio", "features")
ENCODER_SEED_SPELLINGS = ("config", "fbank", "mono", "reduce")


def refuse_encoder_flags(args: argparse.Namespace) -> None:
    """Beside ``--run``, a flag of an encoder read without a run would do nothing: an error naming them."""
    given = vars(args)
    named = {entry.partition(".")[0] for entry in ENCODER_OPTIONS}
    keys = [key for key in given if key.partition(".")[0] in (*named, "options")]
    seeds = [key for key in ENCODER_SEED_SPELLINGS if given.get(key) is not None]
    flags = [f"--{key.partition('.')[2] or key}" for key in (*keys, *seeds)]
    if flags:
        raise ValueError(f"{', '.join(flags)}: options of a pretrained encoder read without a run (-c CHECKPOINT "
                         "--model NAME); --run reads the run's own config")


def as_flag(name: str, value: Any) -> str:
    """``--name value`` as typed (a list as its items)."""
    return f"--{name} {' '.join(map(str, value)) if isinstance(value, list) else value}"


def owners() -> dict[str, list[str]]:
    """Each backbone option's name and the backbones that declare it."""
    found: dict[str, list[str]] = {}
    for name, cls in backbones.options_classes().items():
        for spec in dataclasses.fields(cls):
            found.setdefault(spec.name, []).append(name)
    return found


def stage_refusal(spec: dataclasses.Field, why: str = "") -> str:
    """Why a command does not take option ``spec``: where it acts, and (for an option that acts while the encoder
    fine-tunes) ``why`` the command's encoder does not train."""
    text = describe_acts(acts_of(spec))
    return f"{text}; {why}" if why and Stage.FINE_TUNE in acts_of(spec) else text


def refuse_given_inactive(config: RunConfig, stages: frozenset[Stage], given: Iterable[str],
                          trains: bool = False) -> None:
    """An option of the chosen backbone given on the command line (``given``: the ``options.NAME`` keys) with a value
    that acts in none of ``stages`` is an error naming where it acts, its default too (``pretrain --task ft_cls``);
    ``trains``: a command that trains its encoder in ``stages`` says so too (as the run's own check does)."""
    cls = backbones.options_classes().get(config.model.model)
    for spec in dataclasses.fields(cls) if cls is not None else ():
        value = config.model.options.get(spec.name, default_of(spec))
        if f"options.{spec.name}" in given and not acts_of(spec, value) & stages:
            raise ValueError(option_checks.inactive_problem(spec, value, stages) if trains else
                             f"--{spec.name} {value}: {describe_acts(acts_of(spec, value))}")


def inactive_at_defaults(config: RunConfig, defaults: dict[str, Any], stages: frozenset[Stage],
                         given: Iterable[str] = ()) -> list[str]:
    """Put every option of the chosen backbone whose value acts in none of ``stages`` back at its default (the
    command's own ``options.NAME`` of ``defaults``, else the option's); returns ``--name value`` of those whose
    value changed (a ``--config`` file may hold them: a train or pretrain run's config.yaml). Such a value given on
    the command line (``given``: the ``options.NAME`` keys) is an error naming where it acts."""
    refuse_given_inactive(config, stages, given)
    cls = backbones.options_classes().get(config.model.model)
    changed = []
    for spec in dataclasses.fields(cls) if cls is not None else ():
        if spec.name not in config.model.options:
            continue
        value = config.model.options[spec.name]
        if acts_of(spec, value) & stages:
            continue
        default = defaults.get(f"options.{spec.name}", default_of(spec))
        if value != default:
            changed.append(as_flag(spec.name, value))
            config.model.options[spec.name] = default
    return changed


def config_file_sections(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """The config file that ``--config`` names (a shipped recipe by its path) and its sections; ``(None, {})``
    without one."""
    given = vars(args).get("config")
    if not given:
        return None, {}
    path = resolve_recipe(str(given))
    return path, read_config_file(path)


def given_options(*args: argparse.Namespace) -> set[str]:
    """The ``section.name`` and ``options.NAME`` keys of the options given on the command line(s) ``args``."""
    return {key for namespace in args for key in vars(namespace) if "." in key}


def own_idle_at_defaults(config: RunConfig, config_file: str | None, raw: dict[str, Any], given: Iterable[str],
                         stage: Stage | None = None, say: bool = True) -> RunConfig:
    """Put every value of a config file that audiotune wrote (a shipped recipe; a run's config.yaml, which records
    its ``version``) that does nothing where the command trains (``stage``: as
    :func:`~audiotune.models.option_checks.idle_at_defaults` tells) back at its default: a recipe's value whose
    switch is off with the options given (``--layer_weights raw`` without ``--weighted``, the
    ``--frozen_train_mode`` of a frozen encoder with ``--freeze false``) is its way for when the switch is on; a run's
    config.yaml may hold options refused since it was written (ECAPA-TDNN's pooling, a rate the encoder reads past,
    ``--labeling_method`` for labels without a soft head).
    ``raw``: the file's sections; ``given``: the ``section.name`` and ``options.NAME`` keys of the command line, whose
    values stay (refused as they are). ``say``: name on stderr those of a run's config put back (a recipe's are its
    way, said in the recipe). A resumed run reads its file as it is (it goes on as it was made). Returns
    ``config``."""
    shipped = bool(config_file) and is_shipped(str(config_file))
    if shipped and config.train.resume and config.exp_dir:
        keep_what_the_record_predates(config, config_file, raw, given, storage.join(config.exp_dir, CONFIG_FILE),
                                      stage=stage, say=say)
    if not config_file or config.train.resume or not (shipped or "version" in raw):
        return config
    changed = option_checks.idle_at_defaults(config, frozenset(given), stage)
    if stage != Stage.PRETRAIN:  # and those of heads its labels lack
        changed += head_options_at_defaults(config, {key.partition(".")[2] for key in given
                                                     if key.startswith("train.")})
    if changed and say and not shipped:
        print(f"--config {config_file}: left at their defaults, as they do nothing with the options given: "
              f"{' / '.join(changed)}", file=sys.stderr)
    return config


def keep_what_the_record_predates(config: RunConfig, config_file: str | None, raw: dict[str, Any],
                                  given: Iterable[str], record: str, key: str = "", stage: Stage | None = None,
                                  say: bool = True) -> RunConfig:
    """A run resumed, a cv or a sweep folder run again, with a shipped recipe (``config_file``, ``raw``: its sections)
    goes on as it was made: each option the recipe sets away from its default that acts where it trains (``stage``:
    as :func:`~audiotune.models.option_checks.idle_at_defaults` tells)
    while the settings recorded at ``record`` (a run's config.yaml; under ``key`` of a folder's record) leave it out
    or hold its default (the recipe set it after they were written, such as ``pad_clips``) takes its default back,
    unless ``given`` on the command line (``section.name``, ``options.NAME``); named on stderr with ``say``.
    Returns ``config``."""
    if not config_file or not is_shipped(str(config_file)):
        return config
    earlier = read_record_config(record, key)  # None: not a record this release reads (its check names it)
    if earlier is None:
        return config
    given = set(given)
    acting = copy.deepcopy(config)  # the values that act where the runs train
    option_checks.idle_at_defaults(acting, frozenset(given), stage)
    untold = as_made({"model": {"model": config.model.model}}, str(config_file))  # a record of nothing: defaults
    model_fields = {spec.name for spec in dataclasses.fields(earlier.model)}
    changed = []
    for section, options in upgrade_sections(raw, str(config_file)).items():
        if section not in SECTIONS or not isinstance(options, dict):
            continue
        for name, value in options.items():
            part = section if section != "model" or name in model_fields else "options"
            known = name in untold.model.options if part == "options" else hasattr(getattr(untold, part), name)
            if f"{part}.{name}" in given or not known:
                continue
            made, default, acts = (option_checks.option_value(found, part, name) for found in (earlier, untold, acting))
            if made == default and acts not in (made, None):
                option_checks.set_option(config, part, name, made)
                changed.append(as_flag(name, value))
    if changed and say:
        print(f"--config {config_file}: {storage.parent(record)} was made before the recipe set "
              f"{' / '.join(changed)}; it goes on without them, as it was made", file=sys.stderr)
    return config


def refuse_given_idle(config: RunConfig, args: argparse.Namespace, takes: tuple[str, ...]) -> None:
    """For a command that takes part of the options (``takes``: ``section`` or ``section.name`` entries): an option
    typed on its command line whose switch, also one it takes, is off (``-lr`` with ``--scheduler onecycle``) is an
    error, as train refuses it. One whose switch the command does not take is its own to read (probe's heads read
    every hidden state, whatever ``--weighted`` says)."""
    def taken(key: str) -> bool:
        return key in takes or key.partition(".")[0] in takes

    given = given_options(args)
    problems = []
    for section, spec, needs in option_checks.idle_settings(config):
        switch = needs.switch if "." in needs.switch else f"{section}.{needs.switch}"
        if f"{section}.{spec.name}" in given and needs.switch and taken(switch):
            problems.append(f"{as_flag(spec.name, option_checks.option_value(config, section, spec.name))}: "
                            f"acts only with {needs.what}")
    if problems:
        raise ValueError(" / ".join(problems))


def say_left_at_defaults(command: str, config_file: str | None, ignored: list[str]) -> None:
    """Name on stderr the ``--config`` file's options that ``command`` left at their defaults, if any."""
    if ignored:
        print(f"--config {config_file}: options {command} does not take are left at their defaults (not "
              f"{', '.join(ignored)})", file=sys.stderr)


def refuse_other_backbones(args: argparse.Namespace, config: RunConfig, file_options: Iterable[str] = ()) -> None:
    """A flag of one backbone given for another would silently do nothing: refused, naming its backbones; so is a
    model-section flag for a part the backbone lacks (:data:`~audiotune.models.backbones.ABILITY_OPTIONS`), and an
    option of another backbone that a config file's model section sets (``file_options``: its backbone options, of
    a file whose options mean what the flags mean)."""
    declared = owners()
    wrong = [(name, declared[name]) for key in vars(args) if key.startswith("options.")
             for name in [key.removeprefix("options.")] if config.model.model not in declared[name]]
    if wrong:
        shown = ", ".join(f"--{name} (--model {', '.join(owner)})" for name, owner in wrong)
        raise ValueError(f"{shown}: option(s) of another backbone than --model {config.model.model}")
    written = [(name, declared[name]) for name in file_options
               if name in declared and config.model.model not in declared[name] and f"options.{name}" not in vars(args)]
    if written:
        shown = ", ".join(f"{name} (--model {', '.join(owner)})" for name, owner in written)
        raise ValueError(f"--config {vars(args).get('config')}: model: {shown}: option(s) of another backbone than "
                         f"--model {config.model.model}, which would do nothing: drop them")
    for key in vars(args):  # a model-section option the backbone lacks the part for
        if key in backbones.ABILITY_OPTIONS and not backbones.reads_option(config.model.model, key):
            raise ValueError(backbones.lacks_ability(key, config.model.model))


def _leaves(raw: Any) -> dict[str, Any]:
    """The options of a config file's sections (nested as written: a backbone's under ``model.options``) by name."""
    if not isinstance(raw, dict):
        return {}
    return {name: value for key, item in raw.items()
            for name, value in (_leaves(item) if isinstance(item, dict) else {key: item}).items()}


def config_line_hint(args: argparse.Namespace, message: str) -> str:
    """For an error refusing options (``--name value: ...``) that the ``--config`` file sets and the command line
    does not (a file written before they were refused): the lines of the file to drop, else ``""``."""
    source = vars(args).get("config")
    if not source:
        return ""
    given = {key.rpartition(".")[2] for key in vars(args) if "." in key}
    try:
        held = _leaves(config_file_sections(args)[1])
    except (OSError, ValueError):
        return ""
    lines = [f"{name}: {value}" for name, value in re.findall(r"(?:^|/ )--(\w+) ([^:/ ]+):", message)
             if name not in given and str(held.get(name)).lower() == value.lower()]
    return f" (--config {source} sets {', '.join(lines)}: drop {'that line' if len(lines) == 1 else 'those lines'})" \
        if lines else ""
