"""Partial files: written aside, locked while written, removed when their writer died; the usual mode."""
from __future__ import annotations

from pathlib import Path


def test_partials_of_killed_writers_go_and_finished_files_get_the_usual_mode(tmp_path: Path) -> None:
    import fcntl
    import os
    import stat

    from audiotune.atomic import atomic_dir
    from audiotune.outputs import write_bytes

    target = tmp_path / "emb.parquet"
    abandoned = tmp_path / ".emb.parquet.k1ll3d.partial"  # left by a writer killed half-way
    abandoned.write_bytes(b"half")
    live = tmp_path / ".emb.parquet.w0rk1ng.partial"  # another process still writing
    live.write_bytes(b"busy")
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    other = tmp_path / ".other.csv.x.partial"  # another output's partial is not this writer's business
    other.write_bytes(b"")
    old_mask = os.umask(0o022)
    try:
        write_bytes(target, b"data")
        with atomic_dir(tmp_path / "plots") as folder:
            (folder / "a.png").write_bytes(b"png")
    finally:
        os.umask(old_mask)
        os.close(holder)
    assert not abandoned.exists() and live.exists() and other.exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "plots").stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == [".emb.parquet.w0rk1ng.partial", ".other.csv.x.partial",
                                                          "emb.parquet", "plots"]


def test_a_crowded_folder_is_swept_of_every_abandoned_partial_once_per_process(tmp_path: Path,
                                                                                monkeypatch) -> None:
    """Entries of a cache are written one after another into one folder: its abandoned partials (of any entry) are
    removed on the first write of this process, and the folder is not listed again for each later entry (which
    made filling a cache of n entries cost n listings of up to n names)."""
    import fcntl
    import os

    from audiotune import partials

    folder = tmp_path / "cache"
    folder.mkdir()
    abandoned = [folder / ".k1.safetensors.x.partial", folder / ".k2.safetensors.y.partial"]
    for partial in abandoned:
        partial.write_bytes(b"half")
    live = folder / ".k3.safetensors.z.partial"
    live.write_bytes(b"busy")
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    listed = []
    iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: listed.append(self) or iterdir(self))
    monkeypatch.setattr(partials, "_SWEPT_FOLDERS", set())
    try:
        for k in range(5):
            with partials.partial_place(folder / f"e{k}.safetensors", crowded=True) as partial:
                partial.write_bytes(b"entry")
                partial.replace(folder / f"e{k}.safetensors")
    finally:
        os.close(holder)
    assert not any(partial.exists() for partial in abandoned) and live.exists()
    assert listed == [folder]
    assert sorted(p.name for p in folder.iterdir()) == [".k3.safetensors.z.partial",
                                                        *(f"e{k}.safetensors" for k in range(5))]


def test_a_partial_another_writer_swept_before_it_was_locked_is_made_anew(tmp_path: Path, monkeypatch) -> None:
    """A partial is made, then locked: another writer's sweep of the folder could take it for abandoned in between
    and remove it, and the write failed (`No such file or directory`); the writer makes a new one."""
    import os
    import tempfile

    from audiotune import partials

    made = []
    real = tempfile.mkstemp

    def swept_first(*args, **kwargs):  # noqa: ANN002, ANN003
        handle, name = real(*args, **kwargs)
        made.append(name)
        if len(made) == 1:
            os.unlink(name)  # the other writer's sweep, between the making and the lock
        return handle, name

    monkeypatch.setattr(partials.tempfile, "mkstemp", swept_first)
    target = tmp_path / "e.safetensors"
    with partials.partial_place(target, crowded=True) as partial:
        partial.write_bytes(b"entry")
        partial.replace(target)
    assert len(made) == 2 and target.read_bytes() == b"entry" and sorted(os.listdir(tmp_path)) == ["e.safetensors"]


def test_a_partial_that_cannot_be_locked_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    """A file system without locks (ENOLCK): the write fails, and neither the partial nor its handle is left."""
    import errno
    import fcntl

    import pytest

    from audiotune.outputs import write_json

    def no_locks(handle: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(OSError, match="No locks available"):
        write_json(tmp_path / "out.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []
