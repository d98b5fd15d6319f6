"""What ``--compile reduce-overhead`` asked for and did not get: the compiled graphs inductor runs without CUDA graphs.

``reduce-overhead`` captures each compiled graph in a CUDA graph, so that one launch replays its many small kernels.
Inductor runs a graph without one where it cannot capture it (tensors on the CPU, an input it may not mutate, an
operator it will not record, ...): it counts the graph (``counters["inductor"]["cudagraph_skips"]``) and says
why in a log that is off unless ``TORCH_LOGS`` asks for it. :class:`CudaGraphSkips` collects both while a run
trains, so that the run's own log says when the steps are compiled but still launched one kernel at a time.
"""
from __future__ import annotations

import logging
from typing import Any


def _skip_count() -> int | None:
    """Graphs inductor has run without CUDA graphs in this process (None: this torch does not count them)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["inductor"]["cudagraph_skips"])


def _skip_log() -> logging.Logger | None:
    try:
        from torch._inductor.cudagraph_utils import cudagraphs_log
    except ImportError:
        return None
    return cudagraphs_log if isinstance(cudagraphs_log, logging.Logger) else None


class _Reasons(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class CudaGraphSkips:
    """The graphs run without CUDA graphs from :meth:`start` on, and inductor's reasons (:meth:`news`)."""

    def __init__(self) -> None:
        self._seen: int | None = None
        self._reasons = _Reasons()
        self._log: logging.Logger | None = None
        self._told = 0

    def start(self) -> None:
        self._seen = _skip_count()
        self._log = _skip_log()
        if self._log is not None:
            self._log.addHandler(self._reasons)

    def stop(self) -> None:
        if self._log is not None:
            self._log.removeHandler(self._reasons)
        self._log, self._seen = None, None  # nothing more is counted

    def news(self, device: Any) -> str | None:
        """What to tell about the graphs run without CUDA graphs since the last call (None: nothing new)."""
        count = _skip_count()
        if self._seen is None or count is None or count <= self._seen:
            return None
        skipped, self._seen = count - self._seen, count
        reasons = sorted(set(self._reasons.messages[self._told:]))
        self._told = len(self._reasons.messages)
        why = "; ".join(reasons) if reasons else (
            "the model is on the CPU: CUDA graphs need a GPU" if str(device).startswith("cpu") else
            "inductor gave no reason")
        return (f"--compile reduce-overhead: {skipped} compiled graph(s) of the training step run without CUDA "
                f"graphs ({why}); their kernels are launched one at a time, as with --compile default")
