"""The seeds' command lines, read as the seeds meant them: spellings that translate into options (``--fbank True``
sized by ``--n_mels``/``--n_fft``, ``--reduce``/``--mono``, ``-b BUCKET`` under ``-i``), and the retired spellings
and values refused with their replacement (:data:`~audiotune.config.RETIRED_FLAGS`,
:data:`~audiotune.config.RETIRED_VALUES`)."""
from __future__ import annotations

import argparse
import re
from typing import Any

from audiotune.config import BARE, RETIRED_FLAGS, RETIRED_IN_COMMAND, RETIRED_VALUES, RunConfig
from audiotune.config.sections import ECAPA_FBANK_SIZES, ECAPA_MFCC_IGNORED

MFCC_ONLY = ("n_mfcc", "n_mels", "n_fft")


def apply_seed_spellings(args: argparse.Namespace, config: RunConfig) -> None:
    """Set what the seed spellings given in ``args`` mean in ``config`` (refusing those that contradict)."""
    _channel_aliases(args, config)
    _seed_feature_sizes(args, config)
    _valid_split(args, config)
    config.data.prefix = in_bucket(args, config.data.prefix)


def _seed_feature_sizes(args: argparse.Namespace, config: RunConfig) -> None:
    """The ECAPA seed's ``--fbank True`` sized the fbank by ``--n_mels`` (bins) and ``--n_fft`` (frames); without
    it, MFCC size flags given for other features would do nothing, so they are refused. Its ``--fbank False`` (MFCC)
    ignored its fbank-only flags, which act on MFCCs here: given with a value that acts, they are refused."""
    given = vars(args)
    if given.get("fbank") is False:
        acting = [name for name in ECAPA_MFCC_IGNORED if given.get(f"features.{name}")]
        if acting:
            shown = ", ".join(f"--{name}" for name in acting)
            raise ValueError(f"{shown}: the ECAPA seed's --fbank False (MFCC) ignored them (fbank only); leave them "
                             "out for its MFCC, or write --features mfcc instead of --fbank False to apply them to "
                             "the MFCCs")
    if given.get("fbank") is True:
        for seed_name, name in ECAPA_FBANK_SIZES.items():
            if f"features.{name}" in given and f"features.{seed_name}" in given:
                raise ValueError(f"--{seed_name} with --fbank True is the seed's fbank --{name}; give one of them")
            if f"features.{name}" not in given:
                setattr(config.features, name, getattr(config.features, seed_name))
        unused = [name for name in MFCC_ONLY if name not in ECAPA_FBANK_SIZES and f"features.{name}" in given]
    else:
        unused = [name for name in MFCC_ONLY if f"features.{name}" in given]
    if unused and config.features.features != "mfcc":
        shown = ", ".join(f"--{name}" for name in unused)
        raise ValueError(f"{shown}: MFCC option(s), unused with --features {config.features.features or 'unset'}; add "
                         f"--features mfcc (the ECAPA seed's default), or size the fbank with --num_mel_bins and "
                         f"--target_length")


def in_bucket(args: argparse.Namespace, prefix: str) -> str:
    """The seeds read uid audio from ``-b BUCKET`` at ``-i PREFIX``: a prefix that is not a URL is in the bucket."""
    bucket = str(vars(args).get("bucket_name") or "").removeprefix("gs://").strip("/")
    if bucket and "://" not in prefix:
        return f"gs://{bucket}/{prefix.lstrip('/')}" if prefix else f"gs://{bucket}"
    return prefix


def _channel_aliases(args: argparse.Namespace, config: RunConfig) -> None:
    """The seeds' --reduce/--mono spell a channel mode; an explicit --channel_mode must agree with them."""
    given = vars(args)
    if "reduce" not in given and "mono" not in given:
        return
    alias = "none" if given.get("reduce") is False else given.get("mono", "sum" if "reduce" in given else "mean")
    explicit = given.get("audio.channel_mode")
    if explicit is not None and explicit != alias:
        raise ValueError(f"--channel_mode {explicit} contradicts --reduce/--mono (which mean --channel_mode {alias})")
    config.audio.channel_mode = alias


def _valid_split(args: argparse.Namespace, config: RunConfig) -> None:
    """The SER seed's ``--valid_split F`` kept a random share F of the training clips for training (1.0: no
    validation)."""
    share = vars(args).get("valid_split")
    if share is None:
        return
    if not 0 < share <= 1:
        raise ValueError(f"--valid_split {share}: the share of the training clips kept for training, in (0, 1]")
    if "train.val_share" in vars(args):
        raise ValueError("--valid_split and --val_share both set the validation share; give one")
    config.train.val_share = round(1 - share, 6)
    if share == 1:
        config.data.val_size = 0


class Refused(argparse.Action):
    """A spelling that the command does not take (a retired seed spelling, an option of other commands): refused
    with what to write instead."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="*", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        self.replacement = replacement

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string}: {self.replacement}")


def refuse_declared(parser: argparse.ArgumentParser, dest: str, why: str) -> None:
    """The flag of ``dest`` that a shared declaration gave ``parser`` but the command refuses: out of its help,
    each spelling refused with ``why``."""
    action = next(action for action in parser._actions if action.dest == dest)
    for group in parser._action_groups:
        if action in group._group_actions:
            group._group_actions.remove(action)
    parser._remove_action(action)
    for flag in action.option_strings:
        del parser._option_string_actions[flag]
        parser.add_argument(flag, action=Refused, replacement=why)


def _refusing_values(convert: Any, refused: dict[str, str]) -> Any:
    """``convert`` (an argparse type) that refuses the retired values of ``refused`` with their message."""
    def same(text: str, value: str) -> bool:
        try:
            return float(text) == float(value)
        except ValueError:
            return text.strip().lower() == value

    def parse(text: str) -> Any:
        if text is _BARE_GIVEN:
            raise argparse.ArgumentTypeError(refused[BARE])
        for value, message in refused.items():
            if value != BARE and same(text, value):
                raise argparse.ArgumentTypeError(f"{text}: {message}")
        return convert(text) if convert else text
    return parse


_BARE_GIVEN = "<given without a value>"  # the const of a flag whose seed spelling was a bare switch


def _not_taken(replacement: str, taken: dict[str, argparse.Action]) -> str:
    """The flags a retired spelling's replacement names that this command does not take (they are other
    commands'), said after it; nothing when it names a command to run instead."""
    if "audiotune " in replacement:
        return ""
    named = [flag for flag in dict.fromkeys(re.findall(r"(?<![\w-])--[a-z][\w-]*", replacement))
             if not isinstance(taken.get(flag), argparse.Action) or isinstance(taken[flag], Refused)]
    return f" ({', '.join(named)}: not {'an option' if len(named) == 1 else 'options'} of this command)" if named \
        else ""


def refuse_retired(parser: argparse.ArgumentParser, command: str = "") -> None:
    """Refuse the retired seed spellings (:data:`~audiotune.config.RETIRED_FLAGS`, and those of ``command``:
    :data:`~audiotune.config.RETIRED_IN_COMMAND`) and values (:data:`~audiotune.config.RETIRED_VALUES`; a flag the
    seed took as a bare switch, given without a value) on ``parser`` and every parser under it, wherever a parser
    does not declare that spelling (or takes that value) itself."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subparsers:
        for sub in dict.fromkeys(action.choices.values()):
            refuse_retired(sub)
    if subparsers:
        return
    taken = parser._option_string_actions
    for spelling, replacement in {**RETIRED_FLAGS, **RETIRED_IN_COMMAND.get(command, {})}.items():
        names = [n for n in dict.fromkeys([spelling, spelling.replace("_", "-")]) if n not in taken]
        if names:
            parser.add_argument(*names, action=Refused, replacement=replacement + _not_taken(replacement, taken))
    by_flag: dict[str, dict[str, str]] = {}
    for (flag, value), message in RETIRED_VALUES.items():
        by_flag.setdefault(flag, {})[value] = message
    for flag, refused in by_flag.items():
        taking = taken.get(flag)
        if taking is not None and taking.nargs is None and not isinstance(taking, Refused):
            taking.type = _refusing_values(taking.type, refused)
            if BARE in refused:  # alone, argparse would say only "expected one argument"
                taking.nargs, taking.const = "?", _BARE_GIVEN
