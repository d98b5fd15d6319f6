"""How a command that was stopped ends. Ctrl-C (SIGINT) and SIGTERM (a scheduler's time limit, a preemption,
``kill``, a container stopping) both end it as an interruption: what it holds cleaned up as the exception passes
(Lightning's teardown, locks, files written aside), one line naming how it was stopped with the command's hint on
how to go on, and the status a shell gives a process ended by that signal (128 + its number), so that a scheduler
sees a failure and retries instead of taking the run for finished."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

# where Lightning raises SIGTERMException (a SystemExit with no code) when it stops a fit on SIGTERM itself
LIGHTNING_EXCEPTIONS = "pytorch_lightning.utilities.exceptions"


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the command: raised where it runs, so that everything that cleans up after Ctrl-C (a
    KeyboardInterrupt) cleans up after it too, Lightning's fit included. A KeyboardInterrupt raised for another
    signal says which in its ``signum`` (the multi-process scoring commands' own, ``engine.shards.Stopped``, too)."""

    signum = signal.SIGTERM


# the signal the command's handler received, while a :func:`sigterm_raises` block runs: (the process, the signal)
_RECEIVED: list[tuple[int, int]] = []


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in this process. A second SIGTERM while the first
    is being handled is ignored, so that the clean-up finishes. A process forked from this one (a data loader
    worker) that gets SIGTERM ends as it would without this handler, quietly, leaving the report to this one.

    Python drops an exception that a signal handler raises while a finalizer runs (``Exception ignored in ...``,
    say a generator collected at an epoch's end); :func:`raise_if_terminated` raises it again where the work
    goes on (the fits' batches call it)."""
    owner = os.getpid()

    def terminate(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if _RECEIVED:
            return
        _RECEIVED.append((owner, signum))
        raise Terminated(f"stopped by signal {signal.Signals(signum).name}")

    try:
        earlier = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread, where Python runs signal handlers
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, earlier)
        _RECEIVED.clear()


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` when SIGTERM reached this process in a :func:`sigterm_raises` block and the work
    still goes on: the exception its handler raised was dropped on its way (see there). Call it only where work
    starts (a batch), never in clean-up code that runs while the exception passes."""
    if _RECEIVED and _RECEIVED[0][0] == os.getpid():
        raise Terminated(f"stopped by signal {signal.Signals(_RECEIVED[0][1]).name}")


def stopped_by(err: BaseException) -> signal.Signals | None:
    """The signal that ended the command with ``err``, or None when ``err`` is no interruption. Lightning ends a
    fit stopped by Ctrl-C with ``exit(1)`` after its clean-up (the KeyboardInterrupt is the exit's context), and a
    fit where it saw SIGTERM first (another process of the run was sent it) with its SIGTERMException."""
    lightning = sys.modules.get(LIGHTNING_EXCEPTIONS)  # never imported: no fit ran, so no exception of its
    if lightning is not None and isinstance(err, lightning.SIGTERMException):
        return signal.SIGTERM
    cause = err.__context__ if isinstance(err, SystemExit) else err
    if isinstance(cause, KeyboardInterrupt):
        return signal.Signals(getattr(cause, "signum", signal.SIGINT))
    return None


def exit_status(signum: signal.Signals) -> int:
    """The status a shell reports for a process ended by signal ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def interruption_line(command: str, signum: signal.Signals, after: str) -> str:
    """The one line a stopped command prints: Ctrl-C is what the user did at the terminal; another signal came from
    elsewhere and is named."""
    how = "interrupted" if signum == signal.SIGINT else f"interrupted by {signum.name}"
    return f"audiotune {command}: {how}; {after}"
