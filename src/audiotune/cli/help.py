"""How ``--help`` reads: each flag once with its default, a command's own options before the shared groups, the
shared groups of rarely changed options summarised as their flag names (``--help-all`` shows them in full), and
examples at the end. Groups are marked shared or summarised where they are declared (:func:`shared_group`)."""
from __future__ import annotations

import argparse
import itertools
import shutil
import textwrap
from typing import Any

HELP_ALL = "--help-all"
HELP_FLAGS = ("-h", "--help")  # argparse's own
VERBOSE_FLAGS = ("-v", "--verbose")
SHARED = "shared_group"  # group attribute: declared by a helper that several commands call
SUMMARISED = "summarised_group"  # group attribute: --help lists its flags only (--help-all shows them in full)
SUMMARY_DEFAULT = "summary_default"  # action attribute: the default a summarised group's line gives after the flag
SUMMARY_DEFAULT_WIDTH = 12  # longer defaults (lists, paths) are left to --help-all


def shared_group(parser: Any, title: str, summarised: bool = False) -> Any:
    """An argument group that several commands share (listed after a command's own options); ``summarised``: its
    flags are only named by ``--help``. A group already declared under ``title`` is returned as it is."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    group = parser.add_argument_group(title)
    setattr(group, SHARED, True)
    setattr(group, SUMMARISED, summarised)
    return group


def default_text(value: Any) -> str | None:
    """A default as the help prints it (None: nothing worth printing: unset, empty)."""
    if value is None or value is argparse.SUPPRESS or value in ("", []):
        return None
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _shown_default(action: argparse.Action) -> str | None:
    """The default worth printing after an option's help (None: nothing to print)."""
    if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreFalseAction,
                           argparse._VersionAction)):
        return None
    return default_text(action.default)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Flags spelt once (``--x-y`` is accepted beside ``--x_y`` but not repeated), the value's name once, and the
    default after the help of every option that has one (unless its help already tells it); descriptions and
    examples keep their own line breaks."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Indented lines (command lines) kept as written; other lines wrapped to the screen."""
        return "\n".join(indent + line if len(line) <= width or line.startswith(" ") else
                         textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent,
                                       break_on_hyphens=False) for line in text.splitlines())

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        names = [flag for flag in action.option_strings
                 if not (flag.startswith("--") and "-" in flag[2:] and f"--{flag[2:].replace('-', '_')}"
                         in action.option_strings)]
        if action.nargs == 0:
            return ", ".join(names)
        return f"{', '.join(names)} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = _shown_default(action)
        if shown is None or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: {shown.replace('%', '%%')})" if text else f"(default: {shown.replace('%', '%%')})"


def compact_usage(parser: argparse.ArgumentParser) -> str:
    """``PROG POSITIONALS REQUIRED [options]``: the usage line without the long list of optional flags."""
    words = []
    for action in parser._actions:
        if action.option_strings:
            if action.required:
                words.append(f"{action.option_strings[0]} {str(action.metavar or action.dest).upper()}")
        elif isinstance(action, argparse._SubParsersAction):
            words.append("{" + ",".join(action.choices) + "} ...")
        else:
            name = str(action.metavar or action.dest)
            words.append(f"{name} [{name} ...]" if action.nargs in ("+", "*") else name)
    return " ".join(["%(prog)s", *(word.replace("%", "%%") for word in words), "[options]"])


def arrange(parser: argparse.ArgumentParser, full: bool) -> None:
    """A command's own groups before the shared ones; without ``full`` the summarised groups list their flags."""
    groups = parser._action_groups
    first, rest = groups[:2], groups[2:]  # positionals, then the options group
    parser._action_groups = first + [g for g in rest if not getattr(g, SHARED, False)] + \
        [g for g in rest if getattr(g, SHARED, False)]
    if full:
        return
    for group in rest:
        if getattr(group, SUMMARISED, False):
            shown = [action for action in group._group_actions if action.help is not argparse.SUPPRESS]
            if not shown:
                continue
            names = "  ".join(_summarised(action) for action in shown)
            width = max(shutil.get_terminal_size().columns - 4, 40)
            group.description = textwrap.fill(names, width, break_on_hyphens=False)
            for action in shown:
                action.help = argparse.SUPPRESS


def _summarised(action: argparse.Action) -> str:
    """A flag in a summarised group's line: its spellings, and ``=DEFAULT`` when the default is short."""
    name = "/".join(action.option_strings[:2]) if not action.option_strings[0].startswith("--") else \
        action.option_strings[0]
    default = getattr(action, SUMMARY_DEFAULT, None)
    if default is None or " " in default or not 0 < len(default) <= SUMMARY_DEFAULT_WIDTH:
        return name
    return f"{name}={default.replace('%', '%%')}"


def add_help_flags(parser: argparse.ArgumentParser) -> None:
    """``--help-all`` (read by :func:`wants_all` before parsing) beside ``-h/--help``."""
    parser.add_argument(HELP_ALL, action="help", help="show every option's help, not only its name")


def help_request(argv: list[str]) -> list[str]:
    """A command line that asks for help (``-h``, ``--help``) as the help of its command alone: the command's
    (and subcommand's) names, then ``--help``, so that help is shown whatever else the line holds (a flag the
    command refuses, a value out of range); any other command line as it is."""
    own = argv[:argv.index("--")] if "--" in argv else argv  # after `--`: a command that another one runs
    if not any(word in HELP_FLAGS for word in own):
        return argv
    words = list(itertools.dropwhile(lambda word: word in VERBOSE_FLAGS, own))  # `audiotune -v COMMAND ...`
    return [*itertools.takewhile(lambda word: not word.startswith("-"), words), HELP_FLAGS[1]]


def wants_all(argv: list[str]) -> tuple[list[str], bool]:
    """The command line with ``--help-all`` turned into ``--help``, and whether it was given."""
    if HELP_ALL not in argv:
        return argv, False
    return ["--help" if word == HELP_ALL else word for word in argv], True
