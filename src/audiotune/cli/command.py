"""The declaration every command module makes: its name, help, flags and the one call into the engine."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """``arguments(parser, model)`` declares the flags (``model``: the ``--model`` given on the command line, so
    the help shows that backbone's options only); ``run(args, parser)`` does the work (``parser``: the whole
    command line's, for commands that check another command line, as a sweep or a cloud job does);
    ``examples``: command lines shown at the end of its help, one a line; ``default_outputs(args)`` fills paths
    whose default lies beside an input (outputs such as RUN/evaluate, or a second input such as the args.pkl beside
    a seed model), before remote paths are staged; ``after_interrupt`` tells a user whose command was stopped
    (Ctrl-C, SIGTERM) how to go on (or says it from the command line, as its outputs stand after the stop);
    ``check(args)`` refuses what the command refuses of its command line alone, before it reads any input or asks
    anything of a device (a cloud job's command is checked so before the job is submitted)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser, str | None], None]
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], None]
    description: str = ""
    examples: str = ""
    default_outputs: Callable[[argparse.Namespace], None] | None = None
    after_interrupt: str | Callable[[argparse.Namespace], str] = \
        "outputs not finished were not written; run the command again"
    check: Callable[[argparse.Namespace], None] | None = None
