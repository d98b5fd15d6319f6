"""The error of bad input data, raised throughout the data layer, and the one way a command names its bad inputs.

Every command that checks many inputs (audio files, metadata files, table rows, log lines, recordings) collects
every problem before it stops, and the error names them one per line: the first :data:`LISTED`, then how many
more (:func:`refuse`). Where the command takes ``--on_error``, ``skip`` leaves the bad inputs out and lists them,
with the reason, in the command's skip list instead (:func:`refuse_unless_skipped`).
"""
from __future__ import annotations

from collections.abc import Sequence

from audiotune.config.sections import ON_ERROR, SKIP

LISTED = 10  # the problems an error names, one per line; the rest are counted


class DataError(ValueError):
    """Bad input data: the message names the file or field."""


def listing(problems: Sequence[str]) -> str:
    """The first :data:`LISTED` ``problems``, one per indented line, then how many more there are."""
    more = [f"... and {len(problems) - LISTED} more"] if len(problems) > LISTED else []
    return "".join(f"\n  {problem}" for problem in [*problems[:LISTED], *more])


def refuse(problems: Sequence[str], what: str, hint: str = "") -> None:
    """A :class:`DataError` "N ``what``:" naming ``problems`` (:func:`listing`), then ``hint``; nothing when there
    are none."""
    if problems:
        raise DataError(f"{len(problems)} {what}:{listing(problems)}" + (f"\n{hint}" if hint else ""))


def refuse_unless_skipped(problems: Sequence[str], what: str, on_error: str, listed_in: str) -> None:
    """``--on_error``: ``raise`` refuses the ``problems`` (:func:`refuse`), saying how to skip them instead;
    ``skip`` lets the command leave them out and list them in ``listed_in`` (the skip list it writes)."""
    if on_error not in ON_ERROR:
        raise DataError(f"--on_error {on_error!r}: choose one of {', '.join(ON_ERROR)}")
    if on_error != SKIP:
        refuse(problems, what, f"(use --on_error {SKIP} to leave them out; they are then listed in {listed_in})")
