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
