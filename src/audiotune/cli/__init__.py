"""Command line: one module per command, each declaring its flags, the role of every path it takes and one call
into the engine (:class:`~audiotune.cli.command.Command`). :data:`COMMANDS` is the only list of commands."""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import signal
import sys
from typing import NoReturn

from audiotune import __version__, outputs, vertex
from audiotune.cli import (
    attention,
    cluster,
    cv,
    evaluate,
    export,
    extract,
    import_,
    manifest,
    pretrain,
    probe,
    recipes,
    report,
    segment,
    split,
    stats,
    sweep,
    table,
    taps,
    train,
    vertex_job,
)
from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args
from audiotune.cli.flags import path_roles, taken_options
from audiotune.cli.help import (
    VERBOSE_FLAGS,
    HelpFormatter,
    add_help_flags,
    arrange,
    compact_usage,
    help_request,
    wants_all,
)
from audiotune.cli.seed_flags import refuse_retired
from audiotune.cli.show import one_line, reader_gone, silence_standard_streams, third_party_quiet
from audiotune.cli.stages import config_line_hint
from audiotune.cli.values import parse_bool
from audiotune.interrupts import exit_status, interruption_line, sigterm_raises, stopped_by
from audiotune.launch import launched_local_rank
from audiotune.models import backbones
from audiotune.staging import staged

__all__ = ["COMMANDS", "build_parser", "config_from_args", "main", "parse_bool"]

COMMANDS: tuple[Command, ...] = tuple(module.COMMAND for module in (
    train, evaluate, extract, export, attention, manifest, segment, split, pretrain, probe, cv, cluster, taps, stats,
    vertex_job, sweep, table, import_, recipes, report))
DESCRIPTION = (  # one paragraph, wrapped to the screen
    "audiotune turns labelled audio into classifiers and embeddings: fine-tune or probe pretrained encoders "
    "(wav2vec2-style Hugging Face models, SSAST) or train ECAPA-TDNN from scratch, then evaluate, cross-validate "
    "and extract embeddings. Every command reads a CSV table (path + label columns) or a split directory "
    "(train.csv, val.csv, test.csv) and writes one run directory that the other commands read back.")
EPILOG = """\
start here:
  audiotune manifest AUDIO_DIR --out table.csv --pattern '(?P<label>[a-z]+)_(?P<subject>[a-z]+)_\\d+\\.wav'
  audiotune split table.csv --out split
  echo label > labels.txt
  audiotune train -d split -l labels.txt -o run --model ecapa_tdnn -e 10
  audiotune evaluate --run run -d split/test.csv
recipes (shipped configs): audiotune recipes, then audiotune train --config NAME ...
every command: audiotune COMMAND --help (with --model NAME: that backbone's options only);
  --help-all: every option in full"""
READER_GONE = 128 + 13  # the exit status of a process ended by SIGPIPE, as shells report it
VERBOSE_HELP = "log more; show third-party warnings and tracebacks"


def build_parser(model: str | None = None, full_help: bool = False) -> argparse.ArgumentParser:
    """The whole command line; ``model`` (the ``--model`` given) limits the help to that backbone's options;
    ``full_help``: every option in full (``--help-all``), not the rarely changed groups summarised."""
    parser = argparse.ArgumentParser(prog="audiotune", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter, allow_abbrev=False)
    parser.add_argument(*VERBOSE_FLAGS, action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"audiotune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.description or None,
                                  epilog=f"examples:\n{_indented(command.examples)}" if command.examples else None,
                                  formatter_class=HelpFormatter,
                                  allow_abbrev=False)  # a seed flag such as -b must never be read as a prefix
        _common_flags(sub)
        command.arguments(sub, model)
        for nested in _nested(sub):  # a command's subcommands (import naip, vertex job, ...) take them too
            _common_flags(nested)
            nested.formatter_class = HelpFormatter
        refuse_retired(sub, command.name)
        sub.usage = compact_usage(sub)
        arrange(sub, full_help)
    return parser


def _common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command and subcommand takes: ``--help-all`` and ``-v`` (given after the command's name)."""
    add_help_flags(parser)
    parser.add_argument(*VERBOSE_FLAGS, action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def _stopped(command: Command, args: argparse.Namespace, signum: signal.Signals) -> int:
    """The end of a command stopped by ``signum``: one line saying so and how to go on, and the signal's status."""
    if launched_local_rank() == 0:  # a launcher stops every process of a machine at once: one line says so
        after = command.after_interrupt if isinstance(command.after_interrupt, str) else command.after_interrupt(args)
        print(interruption_line(command.name, signum, after), file=sys.stderr)
    return exit_status(signum)


def _refuse_unknown(parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]) -> NoReturn:
    """Exit as the (sub)command given does on an unrecognised argument, naming the closest flag it takes."""
    chosen = parser
    while True:
        action = next((a for a in chosen._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, action.dest, None) if action is not None else None
        if action is None or name not in action.choices:
            break
        chosen = action.choices[name]
    flag = next((word.split("=")[0] for word in unknown if word.startswith("-")), "")
    close = difflib.get_close_matches(flag, list(chosen._option_string_actions), n=1, cutoff=0.75) if flag else []
    chosen.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" (did you mean {close[0]}?)" if close else ""))


def _nested(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser``'s subcommands, and of theirs."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in dict.fromkeys(action.choices.values()):
                found += [nested, *_nested(nested)]
    return found


def _indented(lines: str) -> str:
    return "\n".join(f"  {line}" for line in lines.splitlines())


def _model_named(argv: list[str]) -> str | None:
    """The backbone that ``--model NAME`` or ``--model=NAME`` names on the command line, if any."""
    known = backbones.names()
    for index, word in enumerate(argv):
        value = argv[index + 1] if word == "--model" and index + 1 < len(argv) else \
            word.partition("=")[2] if word.startswith("--model=") else None
        if value in known:
            return value
    return None


def main(argv: list[str] | None = None) -> int:
    typed = sys.argv[1:] if argv is None else list(argv)
    argv, full_help = wants_all(typed)
    parser = build_parser(_model_named(argv), full_help)
    args, unknown = parser.parse_known_args(help_request(argv))
    if unknown:  # the command's own usage and error, with the flag it is closest to
        _refuse_unknown(parser, args, unknown)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        for place in ("exp_dir", "cloud_dir"):  # one run directory (and its upload) per tuning trial
            if vars(args).get(place) and "{trial}" in str(vars(args)[place]):
                vars(args)[place] = str(vars(args)[place]).replace("{trial}", vertex.trial_id())
        os.environ.update(vertex.cluster_environment())  # a Vertex AI multi-worker job: where rank 0 is
        if command.default_outputs:
            command.default_outputs(args)
        with sigterm_raises(), third_party_quiet(args.verbose), outputs.invoked(typed), \
                staged(args, path_roles(args), resumable="train.resume" in taken_options(args)):
            command.run(args, parser)
    except (KeyboardInterrupt, SystemExit) as err:  # Ctrl-C, SIGTERM, or Lightning's exit after either
        signum = stopped_by(err)
        if signum is None:
            raise
        return _stopped(command, args, signum)
    except Exception as err:  # one line for the user; the traceback with -v
        stopped = stopped_by(err)  # an error that followed a stop (a data loader worker the signal killed)
        if stopped is not None and not args.verbose:
            return _stopped(command, args, stopped)
        if reader_gone(err):  # `audiotune ... | head`: stop as other tools do when their reader has gone
            silence_standard_streams()
            return READER_GONE
        if args.verbose:
            raise
        print(f"audiotune {args.command}: error: {one_line(err)}{config_line_hint(args, str(err))}", file=sys.stderr)
        return 2
    return 0
