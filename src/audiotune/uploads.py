"""Whole folders to and from their remote place: :func:`upload` sends a finished local file or folder (run
markers last, so an interrupted upload never reads as a finished run), :func:`sync_down` brings back what a local
folder lacks (resuming a remote run). Like :mod:`audiotune.storage`, it imports nothing else of audiotune."""
from __future__ import annotations

import posixpath
from pathlib import Path

from audiotune.storage import CONFIG_FILE, LAST, StorageError, filesystem, storage_error


def sync_down(url: str, folder: str | Path) -> int:
    """Copy every object under ``url`` that ``folder`` lacks into it (resuming a remote run); the count."""
    fs, inner = filesystem(url)
    count = 0
    try:
        if not fs.isdir(inner):
            return 0
        for remote, info in fs.find(inner, detail=True).items():
            target = Path(folder) / posixpath.relpath(remote, inner.rstrip("/"))
            if target.is_file() and target.stat().st_size == info.get("size"):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target))
            count += 1
    except Exception as err:
        raise storage_error(url, "be downloaded", err) from err
    return count


def remove_remote(urls: list[str]) -> None:
    """Delete remote files (a skip list the command no longer has)."""
    for url in urls:
        fs, inner = filesystem(url)
        try:
            fs.rm_file(inner)
        except Exception as err:
            raise storage_error(url, "be deleted", err) from err


def _upload_order(files: list[Path], root: Path) -> list[Path]:
    """Run markers after everything else, each folder's ``config.yaml`` the very last of them."""
    def rank(file: Path) -> tuple[int, int, str]:
        marker = LAST.index(file.name) + 1 if file.name in LAST else 0
        return marker, -len(file.relative_to(root).parts), str(file)
    return sorted(files, key=rank)


def _is_temporary(file: Path) -> bool:
    return any(part.startswith(".") for part in file.parts)  # locks, partial writes, version stamps


def upload(local: str | Path, url: str, *, replace: bool = False, only_new: bool = False,
           keep: tuple[str, ...] = ()) -> int:
    """Send a finished local file or folder to ``url``; the number of objects written.

    A folder is sent file by file, run markers last (see :data:`LAST`); its hidden files (locks, partial
    writes) stay local. With ``replace``, remote objects under ``url`` that the folder no longer holds are
    deleted, and an earlier ``config.yaml`` there first of all, so the remote folder is never a mix that
    reads as one complete run. With ``only_new`` (a shared cache, whose entries never change), files the
    remote folder already holds at the same size are not sent again. On failure the error names ``url``,
    what was sent and the local copy. ``keep``: entries of the remote folder (names under ``url``) that
    ``replace`` never deletes, with what they hold (what the folder held before any command wrote there). Without
    ``replace`` (a resumed run sent again), the earlier run markers the folder sends are deleted first: they are
    sent last, so a failed upload leaves new files beside none of the earlier markers.
    """
    local = Path(local)
    fs, inner = filesystem(url)
    if local.is_file():
        try:
            fs.put_file(str(local), inner)
        except Exception as err:
            raise storage_error(url, f"be uploaded from {local}", err) from err
        return 1
    files = _upload_order([f for f in local.rglob("*") if f.is_file() and not _is_temporary(f.relative_to(local))],
                          local)
    sent = 0
    try:
        if only_new and fs.isdir(inner):
            sizes = {path: info.get("size") for path, info in fs.find(inner, detail=True).items()}
            files = [f for f in files if sizes.get(f"{inner.rstrip('/')}/{f.relative_to(local).as_posix()}")
                     != f.stat().st_size]
        markers = [f"{inner.rstrip('/')}/{f.relative_to(local).as_posix()}" for f in files if f.name in LAST]
        earlier = [marker for marker in markers if fs.exists(marker)] if not replace and not only_new else []
        if earlier:  # sent last: the earlier ones go first, so that a failed upload leaves none beside new files
            fs.rm(earlier)
        if replace and fs.isdir(inner):
            root = inner.rstrip("/")
            kept = tuple(f"{root}/{name}" for name in keep)
            existing = {p for p in fs.find(inner) if not any(p == k or p.startswith(f"{k}/") for k in kept)
                        and not any(part.startswith(".") for part in posixpath.relpath(p, root).split("/"))}
            sent_here = {f"{root}/{f.relative_to(local).as_posix()}" for f in files}
            configs = [p for p in existing if posixpath.basename(p) == CONFIG_FILE]
            if configs:
                fs.rm(configs)
            stale = sorted(existing - sent_here - set(configs))
            if stale:
                fs.rm(stale)
        for file in files:
            target = f"{inner.rstrip('/')}/{file.relative_to(local).as_posix()}"
            fs.put_file(str(file), target)
            sent += 1
    except Exception as err:
        done = f"{sent} of {len(files)} files sent" + (", run markers not among them" if sent < len(files) else "")
        raise StorageError(f"{url}: upload failed ({done}; {type(err).__name__}: {str(err).strip()[:200]}). "
                           f"The complete output is kept in {local}; the remote folder has no config.yaml from "
                           "this upload, so audiotune does not read it as a finished run") from err
    return sent
