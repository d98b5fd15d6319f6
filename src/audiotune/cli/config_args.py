"""A parsed command line as a RunConfig: the command's own defaults, then ``--config``, then every flag given
(:func:`config_from_args`, :func:`apply_flags`); a ``--config`` file's options that the command does not take put
back at their defaults (:func:`others_at_defaults`) or refused (:func:`refuse_other_values`); the remote inputs it
names read from local copies. Which flags a command declares is :mod:`audiotune.cli.flags`.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path
from typing import Any

from audiotune import storage
from audiotune.cli.flags import (
    CONFIG_DEFAULTS,
    CONFIG_SECTIONS,
    CONFIG_STAGES,
    declared_fields,
    declared_options,
    path_roles,
    taken_options,
)
from audiotune.cli.seed_flags import apply_seed_spellings
from audiotune.cli.stages import (
    as_flag,
    config_file_sections,
    given_options,
    inactive_at_defaults,
    own_idle_at_defaults,
    refuse_given_inactive,
    refuse_other_backbones,
    say_left_at_defaults,
)
from audiotune.config import (
    CLASSIFIER_STAGES,
    CONFIG_VERSION,
    EVERYWHERE,
    OWN_MEANINGS_VERSION,
    SECTIONS,
    ModelConfig,
    RunConfig,
    Stage,
    acts_of,
    check_config,
    config_from_dict,
)
from audiotune.config.files import written_version
from audiotune.data.folds import FOLD_PLACEHOLDER
from audiotune.models import backbones
from audiotune.outputs import CONFIG_FILE, made_in
from audiotune.storage import Role

# seed boolean flags whose meaning maps onto another option: (section, name, value if true, value if false)
SEED_SWITCHES = {"fbank": ("features", "features", "fbank", "mfcc")}


def others_at_defaults(config: RunConfig, args: argparse.Namespace,
                       sections: tuple[str, ...] = tuple(SECTIONS)) -> list[str]:
    """Put every option that ``sections`` does not declare, and every backbone option that acts in none of the
    command's stages, back at its default (the command's own, then the option's): a ``--config`` file may hold
    options of other commands (a train run's config.yaml), which a command that refuses their flags must not read
    either. Returns ``--name value`` of those whose value changed."""
    own = vars(args).get(CONFIG_DEFAULTS) or {}
    changed = inactive_at_defaults(config, own, vars(args).get(CONFIG_STAGES, CLASSIFIER_STAGES), vars(args))
    for key, shown, default in _others_set(config, args, sections):
        changed.append(shown)
        _set(config, key, default)
    return changed


def refuse_other_values(config: RunConfig, args: argparse.Namespace, sections: tuple[str, ...], why: str) -> None:
    """A ``--config`` file's value of an option that ``sections`` does not declare is an error saying ``why``, for a
    command that trains (as its flag is): the run would record an option that did nothing."""
    found = [shown for _, shown, _ in _others_set(config, args, sections)]
    if found:
        raise ValueError(f"--config {args.config}: {', '.join(found)}: {why}")


def _others_set(config: RunConfig, args: argparse.Namespace,
                sections: tuple[str, ...]) -> list[tuple[str, str, Any]]:
    """``(section.name, "--name value", default)`` of each option that ``sections`` does not declare and that
    ``config`` holds away from its default (the command's own, then the option's)."""
    defaults = RunConfig()
    for key, value in (vars(args).get(CONFIG_DEFAULTS) or {}).items():
        _set(defaults, key, value)
    taken = taken_options(args, sections)
    found = []
    for key in declared_options():
        section, name = key.split(".")
        value, default = getattr(getattr(config, section), name), getattr(getattr(defaults, section), name)
        if key not in taken and value != default:
            found.append((key, as_flag(name, value), default))
    return found


def config_from_args(args: argparse.Namespace, read_inputs: bool = True,
                     takes: tuple[str, ...] | None = None, own_idle: bool = True) -> RunConfig:
    """A RunConfig from defaults (the command's own, then --config), with every flag given on the command line
    applied; an option of another backbone than the one chosen is an error. ``takes``: a command that reads part of
    a config file (probe, extract, cluster) names the options it takes (entries as
    :func:`~audiotune.cli.flags.add_section_flags` takes them): the others, and the backbone options that act in none
    of its stages, go back to their defaults, named on stderr (:func:`others_at_defaults`); a command that reads them
    all leaves the values of audiotune's own config files that do nothing where it trains at their defaults
    (:func:`own_idle_at_defaults`; not with ``own_idle`` False: a sweep, whose trials may turn switches on, does so per
    trial). Then, with ``read_inputs``, the remote inputs that the config file names among the options the command
    reads are read from local copies (False: a command that only checks or records them); those it does not read are
    not downloaded."""
    config = RunConfig()
    for key, value in (vars(args).get(CONFIG_DEFAULTS) or {}).items():
        _set(config, key, value)
    config_file, raw = config_file_sections(args)
    if config_file:
        config = config_from_dict(raw, source=str(config_file), base=config)
        config.version = CONFIG_VERSION  # a recipe's options are the user's (the backbone derives its input anew)
        run_made_in = "" if storage.is_remote(config_file) else made_in(Path(config_file).parent)
        if run_made_in:  # a run's config.yaml: its relative paths are from where the run was made
            from audiotune.engine.records import placed_paths

            placed_paths(config, run_made_in)
            if "exp_dir" not in vars(args) and path_roles(args).get("exp_dir") is Role.RUN_OUTPUT and \
                    Path(config_file).name == CONFIG_FILE and "exp_dir" in raw:  # the run's own config
                config.exp_dir = _own_run(str(config_file), config.exp_dir, run_made_in)
    from_file = copy.deepcopy(config) if config_file and takes is not None else None
    config = apply_flags(config, args)
    refuse_other_backbones(args, config, _backbone_options_written(raw) if config_file else ())
    if vars(args).get("command") != "cv":
        refuse_fold_placeholders(config)
    if takes is not None:
        others_at_defaults(config, args, takes)
        # named: the file's own values only (a seed switch's, such as --fbank's frames, is not the file's)
        say_left_at_defaults(vars(args).get("command", ""), vars(args).get("config"),
                             others_at_defaults(from_file, args, takes) if from_file else [])
    if read_inputs:
        _local_inputs(config, vars(args).get(CONFIG_SECTIONS, tuple(SECTIONS)),
                      vars(args).get(CONFIG_STAGES, EVERYWHERE))
    if takes is None:  # a command that reads the whole config (its encoder's, read locally)
        stages = vars(args).get(CONFIG_STAGES, CLASSIFIER_STAGES)
        refuse_given_inactive(config, stages, given_options(args), trains=True)
        if own_idle:
            own_idle_at_defaults(config, config_file, raw, given_options(args),
                                 next(iter(stages)) if len(stages) == 1 else None)
    return config


def _backbone_options_written(raw: dict[str, Any]) -> list[str]:
    """The backbone options a config file's model section sets, where its options mean what the flags mean (an
    earlier release's file listed every backbone's: those of others are left out as it meant)."""
    model = raw.get("model")
    if written_version(raw) < OWN_MEANINGS_VERSION or not isinstance(model, dict):
        return []
    own = {spec.name for spec in dataclasses.fields(ModelConfig)}
    return [name for name in model if name not in own]


def _own_run(config_file: str, recorded: str, run_made_in: str) -> str:
    """The run directory a command writes when given a run's ``config.yaml`` without ``-o``: the run the file lies
    in, which its ``exp_dir`` names from where the run was made; a file whose ``exp_dir`` names another folder (a
    run copied or moved) is an error, since writing there would replace or resume another run than the one named."""
    own = Path(config_file).parent
    named = Path(run_made_in) / recorded
    if storage.is_remote(recorded) or not named.exists() or not named.samefile(own):
        raise ValueError(f"--config {config_file}: the config of the run in {own}, but it records "
                         f"{storage.remote_name(recorded) if storage.is_remote(recorded) else named} as its run "
                         f"directory (a run copied or moved, or one an earlier release resumed from another "
                         f"folder): give -o to say where this command writes (-o {own}: this run)")
    return str(own)


def refuse_fold_placeholders(config: RunConfig) -> None:
    """An encoder path holding cv's fold placeholder names one encoder per fold: anywhere but cv an error (it would
    be read as a hub id or a missing folder)."""
    from audiotune.engine.cv_encoders import encoder_paths

    for name, path in encoder_paths(config).items():
        if FOLD_PLACEHOLDER in path:
            raise ValueError(f"--{name} {path}: {FOLD_PLACEHOLDER} stands for each fold's name in `audiotune cv` "
                             "only; give one encoder's path here")


def _local_inputs(config: RunConfig, sections: tuple[str, ...], stages: frozenset[Stage]) -> None:
    """The remote inputs that a config file names (a run's config.yaml records their URLs) read from local copies,
    as those given on the command line are (:mod:`audiotune.staging`): of the options of ``sections`` and the chosen
    backbone's whose value acts in ``stages``, the options the command reads (a train command refuses the others)."""
    for key, spec in declared_fields(sections):
        section, name = key.split(".")
        part = getattr(config, section)
        setattr(part, name, storage.local_inputs(getattr(part, name), spec.metadata.get("role")))
    options = backbones.options_classes().get(config.model.model)
    for spec in dataclasses.fields(options) if options else ():
        value = config.model.options.get(spec.name)
        if spec.name in config.model.options and acts_of(spec, value) & stages:
            config.model.options[spec.name] = storage.local_inputs(value, spec.metadata.get("role"))


def _set(config: RunConfig, key: str, value: Any) -> None:
    """Set option ``section.name`` (``options.name``: the backbone's own option) of ``config``."""
    section, name = key.split(".", 1)
    if section == "options":
        config.model.options[name] = value
    else:
        setattr(getattr(config, section), name, value)


def apply_flags(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``config`` with every config flag of ``args`` (those given on the command line) set."""
    for key, value in vars(args).items():
        if "." in key:
            _set(config, key, value)
        elif key == "exp_dir":
            config.exp_dir = value
        elif key in SEED_SWITCHES:
            section, name, if_true, if_false = SEED_SWITCHES[key]
            setattr(getattr(config, section), name, if_true if value else if_false)
    apply_seed_spellings(args, config)
    return check_config(config)
