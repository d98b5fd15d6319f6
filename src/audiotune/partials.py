"""Files and folders written aside under a ``.NAME.XXXX.partial`` name, then renamed onto NAME when whole."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # ".NAME.XXXX.partial": a file or folder being written, renamed onto NAME when whole


def _umask() -> int:
    try:
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
        os.umask(mask)
        return mask


def give_usual_mode(path: str | Path, directory: bool = False) -> None:
    """The mode ``open``/``mkdir`` would have given (0666/0777 less the umask): temporary files are created
    private (0600/0700), and a finished output must be as readable as any other file the user writes."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


_SWEPT_FOLDERS: set[Path] = set()  # the crowded folders whose abandoned partials this process removed


def remove_abandoned_partials(target: Path, crowded: bool = False) -> None:
    """Remove ``.TARGET.*.partial`` files and folders beside ``target`` whose writer is gone: a writer holds an
    exclusive lock on its partial until it ends, so one that can be locked was left by a killed process.
    ``crowded``: ``target`` is one of many entries of its folder (a cache), written one after another: every
    abandoned partial of the folder is removed, once per process (listing the folder for each entry made filling it
    quadratic in its entries)."""
    import fcntl

    folder = target.parent.absolute()
    if crowded and folder in _SWEPT_FOLDERS:
        return
    prefix = "." if crowded else f".{target.name}."
    try:
        entries = [entry for entry in folder.iterdir()
                   if entry.name.startswith(prefix) and entry.name.endswith(PARTIAL_SUFFIX)]
    except OSError:
        return
    if crowded:
        _SWEPT_FOLDERS.add(folder)
    for entry in entries:
        try:
            handle = os.open(entry, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            continue  # still being written
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        finally:
            os.close(handle)


@contextlib.contextmanager
def partial_place(target: Path, directory: bool = False, crowded: bool = False) -> Iterator[Path]:
    """A new, locked ``.TARGET.XXXX.partial`` file (or folder) beside ``target``, given the usual mode; the caller
    renames it onto ``target`` when it is whole. Whatever is left of it at the end of the block is removed, and
    partials of killed writers of ``target`` are removed first (``crowded``: of any entry of the folder, once per
    process: :func:`remove_abandoned_partials`). The lock holds the file made here: a writer into a crowded folder
    writes into it (``write_bytes``), as one that puts a new file in its place (safetensors' ``save_file``) leaves
    it unlocked, for another writer's sweep to take for abandoned."""
    import fcntl

    remove_abandoned_partials(target, crowded)
    while True:
        if directory:
            partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent))
            try:
                handle = os.open(partial, os.O_RDONLY)
            except FileNotFoundError:
                continue
        else:
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent)
            partial = Path(name)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            named = _named(partial, handle)
        except BaseException:  # no lock (a file system without them): nothing of it is left
            _remove(partial, directory, handle)
            raise
        if named:
            break
        os.close(handle)  # another writer's sweep took it for abandoned between its making and its lock: anew
    try:
        give_usual_mode(partial, directory)
        yield partial
    finally:
        _remove(partial, directory, handle)


def _remove(partial: Path, directory: bool, handle: int) -> None:
    if directory:
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.unlink(missing_ok=True)
    os.close(handle)


def _named(partial: Path, handle: int) -> bool:
    """Whether ``partial`` still names the file (or folder) open as ``handle``."""
    try:
        return os.stat(partial).st_ino == os.fstat(handle).st_ino
    except FileNotFoundError:
        return False


def on_the_way(file: Path, target: Path) -> bool:
    """Whether ``file`` is on the way to writing ``target``: ``target`` itself, a folder above it, or its partial
    (:func:`partial_place`) or a file inside that."""
    file, target = file.absolute(), target.absolute()
    if file == target or file in target.parents:
        return True
    inside = file.relative_to(target.parent).parts if file.is_relative_to(target.parent) else ()
    return bool(inside) and inside[0].startswith(f".{target.name}.")
