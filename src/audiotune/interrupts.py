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
from collections.abc import Callable, Iterator
from types import FrameType
from typing import NoReturn

# where Lightning raises SIGTERMException (a SystemExit with no code) when it stops a fit on SIGTERM itself
LIGHTNING_EXCEPTIONS = "pytorch_lightning.utilities.exceptions"


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the command: raised where it runs, so that everything that cleans up after Ctrl-C (a
    KeyboardInterrupt) cleans up after it too, Lightning's fit included. A KeyboardInterrupt raised for another
    signal says which in its ``signum`` (the multi-process scoring commands' own, ``engine.shards.Stopped``, too)."""

    signum = signal.SIGTERM


# the interruption a signal handler raised in this process (the process, its exception's type and message), kept
# while the handler's block runs: Python drops an exception that a handler raises while a finalizer runs
# (``Exception ignored in ...``, say a generator collected at an epoch's end), and :func:`raise_if_terminated`
# raises it again where the work goes on
_RAISED: list[tuple[int, type[KeyboardInterrupt], str]] = []


def raise_from_handler(err: KeyboardInterrupt) -> NoReturn:
    """Raise ``err`` from a signal handler, kept for :func:`raise_if_terminated` should Python drop it."""
    _RAISED.append((os.getpid(), type(err), str(err)))
    raise err


@contextlib.contextmanager
def handler_raises(signum: signal.Signals, handler: Callable[[int, FrameType | None], None]) -> Iterator[bool]:
    """``handler`` (which raises with :func:`raise_from_handler`) handles ``signum`` while the block runs; then the
    handler before comes back and what it raised is forgotten. Yields False where handlers cannot be set (not the
    main thread, where Python runs them)."""
    kept = len(_RAISED)
    try:
        earlier = signal.signal(signum, handler)
    except ValueError:
        yield False
        return
    try:
        yield True
    finally:
        signal.signal(signum, earlier)
        del _RAISED[kept:]


# the SIGTERM this process received in its last :func:`sigterm_raises` block ((pid, signal)): an error that ends a
# command after it (a data loader worker the same signal killed, a peer gone) is the stop it follows
_RECEIVED: list[tuple[int, int]] = []


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in this process. A second SIGTERM while the first
    is being handled is ignored, so that the clean-up finishes. A process forked from this one (a data loader
    worker) that gets SIGTERM ends as it would without this handler, quietly, leaving the report to this one."""
    owner = os.getpid()
    received: list[int] = []

    def terminate(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if received:
            return
        received.append(signum)
        _RECEIVED.append((owner, signum))
        raise_from_handler(Terminated(f"stopped by signal {signal.Signals(signum).name}"))

    _RECEIVED.clear()
    with handler_raises(signal.SIGTERM, terminate):
        yield


def raise_if_terminated() -> None:
    """Raise again the interruption a signal handler of this process raised, if the work still goes on: Python
    dropped it on its way (see :data:`_RAISED`). Call it only where work starts (a batch), never in clean-up code
    that runs while the exception passes."""
    if _RAISED and _RAISED[0][0] == os.getpid():
        _, kind, message = _RAISED[0]
        raise kind(message)


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
    # an error raised while a stop passed (its clean-up: a data loader worker the same signal killed), or after
    # this process was sent SIGTERM: the stop is what ended the command
    seen, context = 0, err.__context__
    while context is not None and seen < 20:
        if isinstance(context, KeyboardInterrupt):
            return signal.Signals(getattr(context, "signum", signal.SIGINT))
        seen, context = seen + 1, context.__context__
    received = [signum for pid, signum in _RECEIVED if pid == os.getpid()]
    return signal.Signals(received[0]) if received else None


def exit_status(signum: signal.Signals) -> int:
    """The status a shell reports for a process ended by signal ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def interruption_line(command: str, signum: signal.Signals, after: str) -> str:
    """The one line a stopped command prints: Ctrl-C is what the user did at the terminal; another signal came from
    elsewhere and is named."""
    how = "interrupted" if signum == signal.SIGINT else f"interrupted by {signum.name}"
    return f"audiotune {command}: {how}; {after}"
