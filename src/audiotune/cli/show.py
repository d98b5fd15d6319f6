"""What the commands print: where outputs went, metric summaries, one-line errors."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from audiotune import storage
from audiotune.config.sections import RESUME_HINT
from audiotune.data.errors import DataError
from audiotune.outputs import CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT


def after_stopped_run(args: argparse.Namespace) -> str:
    """How a stopped train or pretrain goes on, said in its one line: --resume where its run directory (``-o``) kept
    a checkpoint to go on from; stopped before its first, nothing to resume: the same command again (a directory it
    made went with it, one that was there holds no run), or with --overwrite where the directory holds its config."""
    from audiotune.staging import remote_place

    exp_dir = vars(args).get("exp_dir")
    url = remote_place(args, "exp_dir")
    if url is not None:  # a bucket's run directory gets a run's outputs when the command finishes
        if storage.isfile(storage.join(url, CHECKPOINT_DIR, LAST_CHECKPOINT)):
            return f"{url} is sent its outputs when the command finishes, so it holds the run as it was before " \
                   f"this attempt; {RESUME_HINT}"
        return f"{url} is sent its outputs when the command finishes, so nothing of this attempt was kept: run " \
               "the same command again"
    if not exp_dir or storage.is_remote(exp_dir) or storage.remote_name(str(exp_dir)) != str(exp_dir):
        return RESUME_HINT  # a remote run directory: what it holds is read there
    folder = Path(exp_dir)
    if (folder / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file():
        return RESUME_HINT
    if (folder / CONFIG_FILE).is_file():
        return "it stopped before its first checkpoint, so there is nothing to resume: the same command with " \
               "--overwrite starts it again"
    return "it stopped before its first checkpoint, so nothing was kept: run the same command again"


def one_line(err: BaseException) -> str:
    """The error's own message (what the user must fix), with its type when the message alone says too little."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, (DataError, ValueError, OSError)):
        return text
    return f"{type(err).__name__}: {text} (rerun with -v for the traceback)"


def reader_gone(err: BaseException) -> bool:
    """Whether ``err`` is a write to standard output or error after the reader of that pipe went away
    (``audiotune recipes | head -1``): the command then stops quietly, as other command-line tools do, rather
    than reporting an error nobody reads. A broken pipe elsewhere (a data worker, a socket) stays an error."""
    if not isinstance(err, BrokenPipeError):
        return False
    for stream in (sys.stdout, sys.stderr):
        try:
            descriptor = stream.fileno()
        except (AttributeError, OSError, ValueError):  # replaced by a buffer (tests) or closed
            continue
        poller = select.poll()
        poller.register(descriptor, select.POLLOUT)
        if any(events & select.POLLERR for _, events in poller.poll(0)):  # a pipe with no reader left
            return True
    return False


def silence_standard_streams() -> None:
    """Point standard output and error at the null device, so that nothing more (not even the interpreter's last
    flush at exit) writes to a pipe whose reader has gone."""
    null = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(null, stream.fileno())
    os.close(null)


def summary(metrics: dict) -> dict:
    """The headline metrics of one split (and of its recordings, when windows were aggregated)."""
    keys = ("n", "accuracy", "macro_f1", "weighted_f1", "uar", "auc", "mae", "rmse", "pearson", "ccc")
    picked = {k: metrics.get(k) for k in keys if metrics.get(k) not in (None, {})}
    if "recording" in metrics:
        picked["recording"] = summary(metrics["recording"])
    return picked


def quiet_lightning(verbose: bool) -> None:
    """Lightning sets INFO when imported: its hardware and tips banner on every run, unless -v."""
    if not verbose:
        logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)


@contextlib.contextmanager
def third_party_quiet(verbose: bool) -> Iterator[None]:
    """The warnings of the libraries underneath (deprecations, scikit-learn's notes on metrics) and transformers'
    weight-loading report speak to their developers, not to audiotune's users: shown with -v only."""
    if verbose:
        yield
        return
    user_verbosity = os.environ.get("TRANSFORMERS_VERBOSITY")
    os.environ["TRANSFORMERS_VERBOSITY"] = user_verbosity or "error"  # read when transformers is first imported
    transformers_log = logging.getLogger("transformers")  # when it was imported already
    level = transformers_log.level
    transformers_log.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # each reaches ours_only, which shows audiotune's own
        shown = warnings.showwarning

        def ours_only(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
            if f"{os.sep}audiotune{os.sep}" in str(filename):  # a library may turn its own warnings on again
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = ours_only
        try:
            yield
        finally:
            transformers_log.setLevel(level)
            if user_verbosity is None:
                os.environ.pop("TRANSFORMERS_VERBOSITY", None)
