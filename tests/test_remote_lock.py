"""Remote folders: one writer across machines (storage emulator with generation preconditions)."""
from __future__ import annotations

import json

import pytest
from conftest import BUCKET, Emulator

from audiotune import remote_lock
from audiotune.storage import StorageError


def test_a_remote_folder_has_one_writer_and_a_dead_writers_lock_is_taken_over(
        gcs: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"gs://{BUCKET}/runs/r"
    with remote_lock.RemoteLock(url, "train"):
        with pytest.raises(StorageError, match=r"runs/r: another audiotune command is writing this folder "
                                                       r"\(`audiotune train` on .*, process \d+"):
            with remote_lock.RemoteLock(url, "cv"):
                pass
    assert not gcs.fs().exists(f"{BUCKET}/runs/r{remote_lock.LOCK_SUFFIX}")  # released
    with remote_lock.RemoteLock(url, "cv"):
        pass
    remote_lock.RemoteLock(url, "train").__enter__()  # a command killed while holding it: never released
    monkeypatch.setattr(remote_lock, "LOCK_STALE_S", 0.0)
    with remote_lock.RemoteLock(url, "evaluate"):
        held = json.loads(gcs.fs().cat_file(f"{BUCKET}/runs/r{remote_lock.LOCK_SUFFIX}"))
        assert held["command"] == "evaluate"


def test_a_lock_of_a_killed_process_of_this_machine_is_taken_over_at_once(gcs: Emulator) -> None:
    """kill -9 leaves the lock behind: a process of this machine that runs no more holds nothing, so the next
    command need not wait out the stale time; a live one's lock (or another machine's) still refuses."""
    import socket
    import subprocess
    import sys

    url = f"gs://{BUCKET}/runs/killed"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    body = {"command": "train", "host": socket.gethostname(), "pid": gone.pid}
    gcs.fs().pipe(f"{BUCKET}/runs/killed{remote_lock.LOCK_SUFFIX}", json.dumps(body).encode())
    with remote_lock.RemoteLock(url, "evaluate"):
        pass
    for held in ({**body, "host": "elsewhere"}, {**body, "pid": 1}):
        gcs.fs().pipe(f"{BUCKET}/runs/killed{remote_lock.LOCK_SUFFIX}", json.dumps(held).encode())
        with pytest.raises(StorageError, match="another audiotune command is writing this folder"):
            with remote_lock.RemoteLock(url, "evaluate"):
                pass
