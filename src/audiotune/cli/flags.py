"""What command-line flags are: path roles and the config options as flags.

A path argument is declared with :func:`add_path` and its :class:`~audiotune.storage.Role`; staging of remote
paths (:mod:`audiotune.staging`) and the help text read that declaration, so no list of argument names exists
anywhere else. Config options become flags from their dataclass field metadata (:func:`add_config_flags`); the
flags a command does not take are refused (:func:`refuse_other_options`). How the parsed flags become a RunConfig
is :mod:`audiotune.cli.config_args`.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from collections.abc import Iterable
from typing import Any

from audiotune.cli.help import SUMMARY_DEFAULT, default_text, shared_group
from audiotune.cli.seed_flags import Refused
from audiotune.cli.stages import owners, stage_refusal
from audiotune.cli.values import none_lower, parse_bool, value_parser
from audiotune.config import CLASSIFIER_STAGES, EVERYWHERE, SECTIONS, Stage, acts_of, describe_range, takes
from audiotune.config.options import default_of, literal_words, option_problems
from audiotune.config.sections import ECAPA_FBANK_SIZES, ONE_DEVICE, FeatureConfig
from audiotune.data.folds import FoldOptions
from audiotune.models import backbones
from audiotune.storage import Role

ROLES = "path_roles"  # the namespace attribute holding {dest: Role} of the parsed command
PLAIN_HELP = "plain_help"  # a path argument's help without its role, which declare_role appends
CONFIG_DEFAULTS = "config_defaults"  # the namespace attribute holding a command's own option defaults
CONFIG_STAGES = "config_stages"  # the namespace attribute holding the stages (config.Stage) a command runs
CONFIG_SECTIONS = "config_sections"  # the namespace attribute holding the config options a command declares
FULL_HELP_SECTIONS = ("data", "model")  # the sections `--help` shows in full; the others name their flags
# the help of --devices for a command that runs in one process
ONE_PROCESS_NOTES = {"runtime.devices": f"; here one process on one device: {ONE_DEVICE}"}


def spellings(name: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The short extra spellings (``-lr``), ``--x_y`` and ``--x-y``, then the other extra (seed) spellings: help
    and usage name an option by its own name, with the seeds' (``--max_epochs``, ``--nworkers``) as aliases."""
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    short = [flag for flag in extra if not flag.startswith("--")]
    return short + flags + [flag for flag in extra if flag.startswith("--")]


def add_path(parser: Any, *flags: str, role: Role, help: str = "", **kwargs: Any) -> argparse.Action:
    """A path argument and its role (what it is to the command; see :class:`~audiotune.storage.Role`)."""
    action = parser.add_argument(*flags, help=help, **kwargs)
    declare_role(parser, action.dest, role)
    return action


def add_out(parser: Any, help: str, *, short: bool = True, **kwargs: Any) -> argparse.Action:
    """``-o``/``--out``: the one file a command writes (its role an output file unless ``role`` says otherwise).
    ``short=False`` where ``-o`` is refused as a seed's folder of the same outputs."""
    kwargs.setdefault("role", Role.OUTPUT_FILE)
    return add_path(parser, *(("-o",) if short else ()), "--out", dest="out", help=help, **kwargs)


def add_audio_dir(parser: Any, help: str) -> argparse.Action:
    """``--audio_dir`` (also the seeds' ``--datadir``): the audio folder that a seed's JSON names files in."""
    return add_path(parser, *spellings("audio_dir", ("--datadir",)), role=Role.AUDIO, dest="audio_dir", default="",
                    metavar="FOLDER", help=f"{help} (the seed's --datadir)")


def declare_role(parser: Any, dest: str, role: Role) -> None:
    """Record (or change) the role of argument ``dest`` and say it in its help ("[output file; may be gs://]");
    argument groups share their parser's record and arguments."""
    parser.set_defaults(**{ROLES: {**(parser.get_default(ROLES) or {}), dest: role}})
    where = "local only" if role is Role.LOCAL else f"{role.value}; may be gs://"
    for action in parser._actions:
        if action.dest == dest and action.help != argparse.SUPPRESS:
            own = action.__dict__.setdefault(PLAIN_HELP, action.help or "")  # the help without its role
            action.help = f"{own} [{where}]" if own else f"[{where}]"


def path_roles(args: argparse.Namespace) -> dict[str, Role]:
    """``{dest: Role}`` of the parsed command's path arguments."""
    return dict(vars(args).get(ROLES) or {})


def parsed_role(args: argparse.Namespace, dest: str, role: Role) -> None:
    """Give path argument ``dest`` of the parsed ``args`` the role ``role``: for one whose role depends on another
    flag (``import ser --out``: a run directory with ``--classes``), before its paths are staged."""
    vars(args)[ROLES] = {**path_roles(args), dest: role}


def metavar(kind: Any, spec: dataclasses.Field) -> str:
    """The value's name in the help: N (a whole number), X (a number), PATH, or the option's own name."""
    return "N" if kind is int else "X" if kind is float else "PATH" if spec.metadata.get("role") else spec.name.upper()


def _field_argument(spec: dataclasses.Field, kind: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords of option ``spec`` annotated ``kind``: its choices, value type, count and
    metavar."""
    meta = spec.metadata
    kwargs: dict[str, Any] = {"choices": meta["choices"]} if meta.get("choices") else {}
    if meta.get("choices") and "none" in meta["choices"]:
        kwargs["type"] = none_lower  # the seeds pass "None"
    elif bool in (kind, *typing.get_args(kind)):
        kwargs.update(nargs="?", const=True, type=value_parser(kind), metavar="BOOL")
    elif typing.get_origin(kind) is list:
        kwargs.update(nargs="+", type=typing.get_args(kind)[0], metavar=metavar(typing.get_args(kind)[0], spec))
    else:
        base = next((t for t in typing.get_args(kind) if t in (int, float, str)), kind)
        kwargs.update(type=value_parser(kind), metavar=metavar(base, spec))
    if literal_words(kind) and "metavar" in kwargs:  # e.g. N|auto
        kwargs["metavar"] = "|".join((kwargs["metavar"], *literal_words(kind)))
    return kwargs


def _help_text(spec: dataclasses.Field, text: str, shown: str | None) -> str:
    """``text`` with the option's default (``shown``; None: not shown) and valid range."""
    notes = [f"default {shown.replace('%', '%%')}"] if shown is not None and "default" not in text else []
    if spec.metadata.get("valid"):
        notes.append(f"valid {describe_range(*spec.metadata['valid'])}")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _add_field(group: Any, dest: str, spec: dataclasses.Field, hints: dict, hidden: bool = False,
               note: str = "", own_help: str | None = None, default: Any = dataclasses.MISSING) -> None:
    """Option ``spec`` as a flag of ``group``; its help is ``own_help`` (default: the declared help) + ``note``,
    with ``default`` (the command's own; else the declared one)."""
    meta = spec.metadata
    shown = default_text(default_of(spec) if default is dataclasses.MISSING else default)
    text = _help_text(spec, (meta.get("help", "") if own_help is None else own_help) + note, shown)
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, **_field_argument(spec, hints[spec.name])}
    if dest == "model.model":
        kwargs["choices"] = backbones.names()
    names = spellings(spec.name, meta.get("flags", ()))
    if hidden:
        group.add_argument(*names, help=argparse.SUPPRESS, **kwargs)
        return
    action = add_path(group, *names, role=meta["role"], help=text, **kwargs) if meta.get("role") else \
        group.add_argument(*names, help=text, **kwargs)
    action.__dict__[SUMMARY_DEFAULT] = shown  # for a summarised group's line


class _InRange(argparse.Action):
    """Stores the value of option ``spec``; one outside its declared range is the option's own error (as a config
    file's value is, :func:`~audiotune.config.options.range_problems`)."""

    def __init__(self, option_strings: list[str], dest: str, spec: Any = None, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.spec = spec

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        problems = option_problems(self.spec, values, choices=False)
        if problems:
            parser.error(problems[0])
        setattr(namespace, self.dest, values)


def add_option_flag(parser: Any, key: str, of_run: bool = False, note: str = "", **changes: Any) -> argparse.Action:
    """Option ``key`` (``section.name``) as a flag of a command that takes it alone, dest ``name``: every spelling,
    choice, value type and valid range of the option's declaration (a value outside them is the option's error).
    ``of_run``: the command loads a run and sets the option over the run's value (None unless given); else the
    option's default. ``note`` follows the option's help; ``changes``: the command's own add_argument keywords."""
    section, name = key.split(".")
    spec = next(spec for spec in dataclasses.fields(SECTIONS[section]) if spec.name == name)
    shown = "the run's" if of_run else default_text(default_of(spec))
    text = _help_text(spec, changes.pop("help", spec.metadata["help"]) + note, shown)
    kwargs = {"dest": name, "default": None if of_run else default_of(spec), "action": _InRange, "spec": spec,
              **_field_argument(spec, typing.get_type_hints(SECTIONS[section])[name]), **changes}
    if kwargs.get("choices") and "metavar" not in changes:
        kwargs.pop("metavar", None)  # a command's few own flags show their choices
    names = spellings(name, spec.metadata.get("flags", ()))
    if spec.metadata.get("role"):
        return add_path(parser, *names, role=spec.metadata["role"], help=text, **kwargs)
    return parser.add_argument(*names, help=text, **kwargs)


def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] = tuple(SECTIONS),
                     model: str | None = None, writes_run: bool = True, backbone_flags: bool = True,
                     defaults: dict[str, Any] | None = None, stages: frozenset[Stage] = CLASSIFIER_STAGES,
                     why: str = "", notes: dict[str, str] | None = None,
                     exp_dir: str = "run directory for every output") -> None:
    """The options of ``sections`` as flags (``--x_y`` and ``--x-y``), plus the seeds' spellings; a
    ``section.name`` entry adds that one option of a section.

    With the model section come the options of every backbone (its options dataclass), grouped by backbone; with
    ``model`` (the ``--model`` of the command line) the other backbones' options are left out of the help.
    ``defaults`` are this command's own option defaults (``{"model.model": "ssast"}``; ``options.NAME``: a
    backbone's option): a ``--config`` file or a flag overrides them. ``writes_run``: the command writes a run
    directory (``-o/--exp_dir``); ``backbone_flags``: the command reads the backbones' own options, those that act
    in ``stages`` (the stages the command runs: a backbone option acting in none is refused, with ``why`` the
    command's encoder does not train when it acts while the encoder fine-tunes; see :mod:`audiotune.cli.stages`).
    ``notes``: what an option means to this command, by ``section.name``, after the option's help; ``exp_dir``: what
    ``-o/--exp_dir`` is to the command."""
    add_path(parser, "--config", role=Role.INPUT, metavar="PATH",
             help="YAML file or shipped recipe (`audiotune recipes`) to start from; flags override it")
    if writes_run:
        add_path(parser, *spellings("exp_dir", ("-o",)), role=Role.RUN_OUTPUT, dest="exp_dir", metavar="PATH",
                 default=argparse.SUPPRESS, help=exp_dir)
    add_section_flags(parser, sections, stages, why, model, notes, defaults)
    named = {entry.partition(".")[0] for entry in sections}  # the sections with at least one option taken
    if "model" in named and backbone_flags:
        _add_backbone_flags(parser, model, stages, why)
    seeds = shared_group(parser, "seed command-line compatibility", summarised=True)
    if "features" in named:
        bins, frames = (f"--{seed} (default {getattr(FeatureConfig(), seed)})" for seed in ECAPA_FBANK_SIZES)
        seeds.add_argument("--fbank", nargs="?", const=True, type=parse_bool, default=argparse.SUPPRESS,
                           metavar="BOOL", help=f"the ECAPA seed's switch: True = --features fbank of {bins} bins and "
                                                f"{frames} frames, as the seed; False = --features mfcc")
    if "audio" in named:
        seeds.add_argument("--mono", choices=("mean", "sum"), default=argparse.SUPPRESS,
                           help="same as --channel_mode mean|sum")
        seeds.add_argument("--reduce", nargs="?", const=True, type=parse_bool, default=argparse.SUPPRESS,
                           metavar="BOOL", help="True: sum the channels, as the seeds did (--mono mean: average "
                                                "them); False: same as --channel_mode none (mono files only)")
    parser.set_defaults(**{CONFIG_DEFAULTS: defaults or {}, CONFIG_STAGES: stages, CONFIG_SECTIONS: sections})
    add_storage_flags(parser)


def add_section_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...],
                      stages: frozenset[Stage] = EVERYWHERE, why: str = "", model: str | None = None,
                      notes: dict[str, str] | None = None, defaults: dict[str, Any] | None = None) -> None:
    """The options of ``sections`` as flags, a group per section (in full in ``--help`` for FULL_HELP_SECTIONS, by
    flag name for the others; a ``model``'s help leaves out the options it does not read: ``backbones.reads_option``);
    a ``section.name`` entry adds that one option, its help showing the command's own default where ``defaults``
    has one. Each lands in the namespace as ``section.name`` (only when given on
    the command line). An option acting in none of ``stages`` (the stages the command runs) is refused, saying where
    it acts, and so is an augmentation where the command trains nothing on clips (no fine-tuning or pretraining)."""
    hints = {section: typing.get_type_hints(cls) for section, cls in SECTIONS.items()}
    for key, spec in declared_fields(sections):
        if not takes(spec, stages):
            refusal = stage_refusal(spec, why) if not acts_of(spec) & stages else \
                f"an augmentation: acts only on the clips a model trains on; {why}" if why else \
                "an augmentation: acts only on the clips a model trains on"
            parser.add_argument(*spellings(spec.name, spec.metadata.get("flags", ())), action=Refused,
                                replacement=refusal)
            continue
        section = key.partition(".")[0]
        group = shared_group(parser, section, summarised=section not in FULL_HELP_SECTIONS)
        _add_field(group, key, spec, hints[section], not backbones.reads_option(model, key), (notes or {}).get(key, ""),
                   default=(defaults or {}).get(key, dataclasses.MISSING))


def declared_fields(sections: tuple[str, ...]) -> list[tuple[str, dataclasses.Field]]:
    """``(section.name, field)`` of every option that ``sections`` makes a flag, in declaration order."""
    fields = []
    for entry in sections:
        section, _, only = entry.partition(".")
        fields += [(f"{section}.{spec.name}", spec) for spec in dataclasses.fields(SECTIONS[section])
                   if spec.metadata.get("cli") is not False and only in ("", spec.name)]
    return fields


def declared_options(sections: tuple[str, ...] = tuple(SECTIONS)) -> list[str]:
    """``section.name`` of every option that ``sections`` (entries as :func:`add_section_flags` takes them: a
    section, or ``section.name`` for one option) makes a flag, in declaration order."""
    return [key for key, _ in declared_fields(sections)]


def taken_options(args: argparse.Namespace, sections: tuple[str, ...] | None = None) -> set[str]:
    """``section.name`` of each option that the parsed command ``args`` takes as a flag: declared by ``sections``
    (None: the command's own declaration; none for a command without config flags) and acting in its stages."""
    declared = vars(args).get(CONFIG_SECTIONS, ()) if sections is None else sections
    stages = vars(args).get(CONFIG_STAGES, CLASSIFIER_STAGES)
    return {key for key, spec in declared_fields(declared) if takes(spec, stages)}


def refuse_other_options(parser: argparse.ArgumentParser, why: str) -> None:
    """Every flag a training command takes that this command does not (the options of the sections it leaves out,
    the backbones' options, the seeds' switches, -o/--exp_dir), refused with ``why``: for a command that takes part
    of the options, one line saying so, not argparse's unrecognised argument. Call it after the command's own flags
    (those stay)."""
    refuse_flags_of(parser, _training_flags(), why)


def refuse_flags_of(parser: argparse.ArgumentParser, flags: Iterable[str], why: str) -> None:
    """Each of ``flags`` that ``parser`` does not take, refused with ``why``."""
    for flag in flags:
        if flag not in parser._option_string_actions:
            parser.add_argument(flag, action=Refused, replacement=why)


@functools.cache
def _training_flags() -> tuple[str, ...]:
    """Every flag a training command takes (its options, the backbones', the seeds' switches, the run directory)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_config_flags(parser)
    return tuple(parser._option_string_actions)



def _add_backbone_flags(parser: argparse.ArgumentParser, model: str | None, stages: frozenset[Stage],
                        why: str) -> None:
    """One group per backbone with its options that act in ``stages``; an option that several declare is one flag,
    in the chosen backbone's group (else the first's) with that backbone's help (else each one's, where they
    differ). The others are refused."""
    declared = owners()
    classes = backbones.options_classes()
    for name, cls in classes.items():
        group = shared_group(parser, f"options of --model {name}", summarised=True)
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            shared = declared[spec.name]
            if name != (model if model in shared else shared[0]):
                continue
            other = bool(model and model not in shared)  # hidden: refused naming its backbones
            if not other and not acts_of(spec) & stages:
                parser.add_argument(*spellings(spec.name, spec.metadata.get("flags", ())), action=Refused,
                                    replacement=stage_refusal(spec, why))
                continue
            note = f" (--model {', '.join(shared)})" if len(shared) > 1 else ""
            helps = {owner: next(f for f in dataclasses.fields(classes[owner]) if f.name == spec.name)
                     .metadata.get("help", "") for owner in shared}
            own = None
            if model not in shared and len(set(helps.values())) > 1:  # no backbone named: what each one means
                own, note = "; ".join(f"--model {owner}: {text}" for owner, text in helps.items()), ""
            _add_field(group, f"options.{spec.name}", spec, hints, other, note, own)


def add_storage_flags(parser: argparse.ArgumentParser) -> None:
    """The seed systems' Google Cloud Storage flags; any path may also be a gs:// URL (see audiotune.staging).
    Declared once per parser (a command taking both scoring and config flags asks twice)."""
    if "--bucket_name" in parser._option_string_actions:
        return
    group = shared_group(parser, "cloud storage (every path may also be gs://BUCKET/...)", summarised=True)
    group.add_argument("-b", "--bucket_name", "--bucket-name", dest="bucket_name",
                       help="bucket that --cloud uploads to, and that -i/--prefix is read from when it is not a "
                            "URL (gs://BUCKET/PREFIX, as the seeds)")
    group.add_argument("-p", "--project_name", "--project-name", dest="project_name",
                       help="Google Cloud project of the buckets")
    group.add_argument("--cloud", nargs="?", const=True, type=parse_bool, default=False, metavar="BOOL",
                       help="also upload the output folder to gs://BUCKET/CLOUD_DIR when the command finishes")
    group.add_argument("--cloud_dir", "--cloud-dir", dest="cloud_dir", default="",
                       help="folder inside -b/--bucket_name that --cloud uploads to")


def add_grouping_flags(group: Any, group_help: str, folds_help: str, stratify_help: str) -> None:
    """``--group``, ``--folds`` and ``--stratify`` of a command that draws splits or folds (split, cv), with the
    defaults of :class:`~audiotune.data.folds.FoldOptions`; each help says what the flag means to the command."""
    defaults = FoldOptions()
    group.add_argument("--group", default=defaults.group, help=f"{group_help} (default {defaults.group})")
    group.add_argument("--folds", type=int, default=defaults.folds, metavar="K", help=folds_help)
    group.add_argument("--stratify", default=defaults.stratify, metavar="COLUMN", help=stratify_help)
