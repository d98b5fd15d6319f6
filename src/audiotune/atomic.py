"""Outputs that appear complete or not at all.

Every file audiotune writes goes through :func:`atomic_path` (a folder: :func:`atomic_dir`): the writer fills a
hidden temporary file in the destination folder, and only a writer that finished renames it into place
(``os.replace`` is atomic on one file system). An interrupted, killed or failing writer (full disk, Ctrl-C) leaves
the previous file, or none, never a truncated or partial one that reads as complete. A file-system error in writing
an output is an :class:`OutputError` naming it. The writers of whole files (bytes, JSON, tables) on top of these
are in :mod:`audiotune.outputs`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from audiotune import partials, storage


class OutputError(OSError):
    """An output the file system refused (full disk, quota, read-only): the message names the file."""


def refused(path: str | Path, err: BaseException) -> OutputError:
    """The error for an output that could not be written; the earlier file at ``path`` (if any) is kept."""
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        return OutputError(f"{path}: could not be written: a file, not a folder, is in the way on this path")
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip() or type(err).__name__
    return OutputError(f"{path}: could not be written ({reason}); nothing was written there (check free space, "
                       "quotas and permissions)")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block finishes. A file-system
    error in writing it (full disk, read-only folder) becomes an :class:`OutputError` naming ``path``."""
    path = Path(path)
    with _writing(path, directory=False) as partial:
        yield partial
        with open(partial, "rb+") as stream:  # the bytes are on disk before the name points at them
            os.fsync(stream.fileno())
        partials.give_usual_mode(partial)  # a writer that replaced the file (safetensors: 0600) made it private
        _first_of_set(path)
        os.replace(partial, path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` (an earlier folder is removed) only if
    the block finishes, so ``path`` is always a whole earlier or a whole new folder."""
    path = Path(path)
    with _writing(path, directory=True) as partial:
        yield partial
        for file in partial.rglob("*"):  # the bytes are on disk before the name points at them
            if file.is_file() and not file.is_symlink():
                with open(file, "rb+") as stream:
                    os.fsync(stream.fileno())
                partials.give_usual_mode(file)  # as a file written in place (safetensors writes 0600)
        old = None
        if path.exists():
            # named as a partial: left by a process killed before it went, the next writer of ``path`` removes it
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=f".old{partials.PARTIAL_SUFFIX}",
                                        dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(partial, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


class _Set:
    """The files of one :func:`written_together` block, each with the stamp its earlier version had (None: none)."""

    def __init__(self) -> None:
        self.before: dict[Path, tuple[int, int] | None] = {}
        self.placed = False  # a new file of the set took its place

    def add(self, paths: Iterable[str | Path]) -> None:
        for path in map(_absolute, paths):
            self.before.setdefault(path, _stamp(path))


_SETS: list[_Set] = []  # the sets being written now


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute, ``..`` taken out (one file, however it is spelt)."""
    return Path(os.path.abspath(path))


def _first_of_set(path: Path) -> None:
    """Before the first new file of a set being written takes its place, the earlier versions of the others go:
    a process killed between two renames (SIGKILL, where nothing cleans up) leaves some of the new set alone,
    never beside files of an earlier one."""
    target = _absolute(path)
    for written in _SETS:
        if target in written.before and not written.placed:
            written.placed = True
            for other, stamp in written.before.items():
                if other != target and stamp is not None and _stamp(other) == stamp:
                    other.unlink(missing_ok=True)


@contextlib.contextmanager
def written_together(paths: Iterable[str | Path]) -> Iterator[Callable[[Iterable[str | Path]], None]]:
    """The files ``paths`` that one command writes as a set (a table, its summary and page; the block may add the
    names it learns on the way with the function it is given, before it writes them). When the first of them
    (written with :func:`atomic_path`) takes its place, the earlier versions of the others are removed; should
    the block end by an error or an interruption once it wrote any of them, every one of them is removed: no set
    is left partly new that reads as complete, even by a process killed outright."""
    written = _Set()
    written.add(paths)
    _SETS.append(written)
    try:
        yield written.add
    except BaseException:
        if any(_stamp(path) != stamp for path, stamp in written.before.items()):
            for path in written.before:
                path.unlink(missing_ok=True)
        raise
    finally:
        _SETS.remove(written)


@contextlib.contextmanager
def _writing(path: Path, directory: bool) -> Iterator[Path]:
    """:func:`partials.partial_place` for ``path``, a file-system error in writing it (full disk, read-only folder)
    being an :class:`OutputError` naming ``path``; an error about another file (an input) is raised as it is."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partials.partial_place(path, directory) as partial:
            yield partial
    except (OutputError, storage.StorageError):
        raise
    except OSError as err:
        if err.filename is not None and not partials.on_the_way(Path(os.fsdecode(err.filename)), path):
            raise
        raise refused(path, err) from err
