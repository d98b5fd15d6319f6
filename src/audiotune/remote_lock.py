"""One writing command at a time for a remote folder, across machines (a local folder has ``flock``)."""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from audiotune.storage import StorageError, _protocol, filesystem

LOCK_SUFFIX = ".audiotune-lock"  # FOLDER.audiotune-lock, beside the folder: replacing its contents keeps it
LOCK_BEAT_S = 60.0  # the holder rewrites its lock this often
LOCK_STALE_S = 600.0  # a lock not rewritten for this long was left by a command that died


def locks_remotely(url: str) -> bool:
    """Whether :class:`RemoteLock` can lock ``url``: Google Cloud Storage, whose writes take preconditions."""
    return _protocol(url) in ("gs", "gcs")


class RemoteLock:
    """An exclusive lock on a remote folder, for one command on one machine at a time (as ``flock`` does for a
    local one): an object beside the folder, created only if absent (the object store's own create-only write,
    a generation precondition), rewritten every :data:`LOCK_BEAT_S` by its holder and removed at the end. A lock
    not rewritten for :data:`LOCK_STALE_S` is taken over (removed only in the generation that was read), and so is
    one whose holder was a process of this machine that runs no more (killed: it could not remove it)."""

    def __init__(self, url: str, command: str):
        self.url, self.lock_url = url.rstrip("/"), url.rstrip("/") + LOCK_SUFFIX
        import socket

        self.body = json.dumps({"command": command, "host": socket.gethostname(), "pid": os.getpid()}).encode()
        self._stop: Any = None

    def __enter__(self) -> RemoteLock:
        import threading
        import time

        fs, inner = filesystem(self.lock_url)
        for _ in range(2):
            try:
                fs.pipe_file(inner, self.body, mode="create")
                break
            except FileExistsError:
                holder, age, generation, held = self._holder(fs, inner, time.time())
                if age < LOCK_STALE_S and not _gone_from_here(held):
                    raise StorageError(f"{self.url}: another audiotune command is writing this folder ({holder}, "
                                       f"lock renewed {age:.0f} s ago); wait for it to finish or choose another "
                                       "place") from None
                with contextlib.suppress(FileNotFoundError, FileExistsError):  # another taker was first
                    bucket, key, _ = fs.split_path(inner)
                    fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=generation)
        else:
            raise StorageError(f"{self.url}: another audiotune command took this folder over first")
        self._stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(fs, inner), daemon=True)
        thread.start()
        return self

    @staticmethod
    def _holder(fs: Any, inner: str, now: float) -> tuple[str, float, str, dict]:
        import datetime

        try:
            info = fs.info(inner, refresh=True)
            held = json.loads(fs.cat_file(inner))
        except (FileNotFoundError, ValueError):
            return "a command that just ended", LOCK_STALE_S, "0", {}
        updated = datetime.datetime.fromisoformat(str(info.get("updated")).replace("Z", "+00:00")).timestamp()
        return (f"`audiotune {held.get('command')}` on {held.get('host')}, process {held.get('pid')}",
                max(now - updated, 0.0), str(info.get("generation")), held)

    def _beat(self, fs: Any, inner: str) -> None:
        while not self._stop.wait(LOCK_BEAT_S):
            with contextlib.suppress(OSError):
                fs.pipe_file(inner, self.body)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        fs, inner = filesystem(self.lock_url)
        with contextlib.suppress(FileNotFoundError, OSError):
            fs.rm_file(inner)


def _gone_from_here(held: dict) -> bool:
    """Whether the holder named in a lock's body was a process of this machine that runs no more."""
    import socket

    pid = held.get("pid")
    if held.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it runs
        return False
    return False
