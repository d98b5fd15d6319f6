"""Progress of every pass over data (training, validation, scoring, extraction, the feature cache, clustering,
tap detection, the features' statistics), one helper for all of them.

On a terminal, a bar with the count, rate and time left (tqdm) on stderr. Where stderr is not a terminal (nohup,
SLURM, CI logs), one plain line each time the pass crosses another ``PLAIN_STEP`` percent, e.g.
``evaluate test: 40% (4/10 batches, 2.5 batches/s, ETA 0:00:02)``, and a last line when it ends; a pass of unknown
length writes only that last line. Only the first process of a multi-process run reports, on one node of
several too (:func:`audiotune.launch.launched_rank_zero`). A pass that :func:`track` reports stops before its next
step where a signal's interruption was dropped by Python on its way (:func:`audiotune.interrupts.raise_if_terminated`).
"""
from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TextIO, TypeVar

from tqdm import tqdm

from audiotune.interrupts import raise_if_terminated
from audiotune.launch import launched_rank_zero

PLAIN_STEP = 10  # percent between two plain lines when stderr is not a terminal

Item = TypeVar("Item")


def _first_process() -> bool:
    return launched_rank_zero() and os.environ.get("RANK", "0") == "0"  # RANK: also once a process group exists


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """The progress of one pass of ``total`` steps (None: unknown) named ``label``, counted in ``unit``s.

    Call :meth:`update` after each step and :meth:`close` at the end (or use it as a context manager).
    ``stream`` (default stderr) decides the form: a bar on a terminal, plain percentage lines otherwise.
    """

    def __init__(self, total: int | None, label: str, unit: str = "batch", stream: TextIO | None = None,
                 step: int = PLAIN_STEP) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.label, self.unit, self.step = total, label, unit, step
        self.count, self.note, self.start = 0, "", time.perf_counter()
        self.enabled = _first_process()
        self._shown = 0  # plain lines: the last multiple of ``step`` percent written
        self._closed = False
        self.bar = None
        if self.enabled and self.stream.isatty():
            self.bar = tqdm(total=total, desc=label, unit=unit, file=self.stream, dynamic_ncols=True, leave=False)

    def update(self, steps: int = 1, note: str = "") -> None:
        """``steps`` more steps done; ``note`` (e.g. the running loss) is shown beside the count."""
        self.count += steps
        self.note = note or self.note
        if not self.enabled:
            return
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(steps)
            return
        if self.total:
            reached = min(100, self.count * 100 // self.total) // self.step * self.step
            if reached > self._shown and self.count < self.total:
                self._shown = reached
                self._line()

    def _line(self) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.count / elapsed
        units = f"{self.unit}es" if self.unit.endswith(("s", "sh", "ch", "x")) else f"{self.unit}s"
        counted = self.unit if self.count == 1 else units
        if self.total and self.count < self.total:
            left = (self.total - self.count) / rate if rate > 0 else 0.0
            where = f"{self.count * 100 // self.total}% ({self.count}/{self.total} {units}, {rate:.3g} {units}/s, " \
                    f"ETA {_duration(left)}"
        else:
            where = f"done ({self.count} {counted} in {_duration(elapsed)}, {rate:.3g} {units}/s"
        note = f", {self.note}" if self.note else ""
        # one write, its newline in it: a stop raised between print's text and its newline (a signal handler's
        # interruption) left the line open, and the command's last line was written after it on the same line
        self.stream.write(f"{self.label}: {where}{note})\n")
        self.stream.flush()

    def close(self, finished: bool = True) -> None:
        """End the pass: the bar is cleared, or the last plain line is written (``finished``; a pass cut short
        by an error writes none)."""
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and finished:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close(finished=kind is None)


def track(items: Iterable[Item], label: str, total: int | None = None, unit: str = "batch",
          stream: TextIO | None = None) -> Iterator[Item]:
    """``items`` passed through, reporting each as one step of :class:`Progress` (``total``: ``len(items)``
    where it has one); an interruption that Python dropped while the last step ran is raised before the next."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, label, unit, stream) as progress:
        for item in items:
            raise_if_terminated()
            yield item
            progress.update()
