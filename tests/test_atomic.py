"""Outputs written aside and renamed when whole; a refusal of the file system names the output."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from audiotune.atomic import OutputError, atomic_path, written_together


def test_an_output_that_cannot_be_written_names_itself_and_an_inputs_error_stays_the_inputs(tmp_path: Path) -> None:
    out = tmp_path / "run" / "scores.parquet"
    with pytest.raises(OutputError, match=r"scores.parquet: could not be written \(No space left on device\)"):
        with atomic_path(out) as partial:
            raise OSError(errno.ENOSPC, "No space left on device", str(partial))
    with pytest.raises(OutputError, match="could not be written"):  # a write without a file name: the output's
        with atomic_path(out):
            raise OSError(errno.ENOSPC, "No space left on device")
    missing = tmp_path / "run" / "clip.wav"  # an input the block reads, even beside the output
    with pytest.raises(FileNotFoundError) as raised:
        with atomic_path(out):
            missing.read_bytes()
    assert raised.value.filename == str(missing)
    assert not out.exists() and list((tmp_path / "run").iterdir()) == []


def test_weights_written_private_by_their_writer_get_the_usual_mode(tmp_path: Path) -> None:
    """safetensors writes its file 0600 (a new file in place of the partial): the finished model is as readable as
    every other output of the run, in a file and in a folder alike."""
    import os
    import stat

    import torch
    from safetensors.torch import save_file

    from audiotune.atomic import atomic_dir

    old_mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.safetensors") as partial:
            save_file({"w": torch.zeros(2)}, str(partial))
        with atomic_dir(tmp_path / "encoder") as folder:
            save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "encoder" / "model.safetensors").stat().st_mode) == 0o644


def test_the_first_file_of_a_set_to_take_its_place_takes_the_earlier_set_with_it(tmp_path: Path) -> None:
    """A table, its summary and its page written as a set over an earlier set: a process killed after the table was
    renamed (nothing cleans up after SIGKILL) left the new table beside the earlier summary and page, which read as
    theirs. Files of the set the block has not written yet, and files outside the set, are as they were until then."""
    table, summary, page, other = (tmp_path / name for name in ("t.csv", "t.report.json", "t.report.html", "x.csv"))
    for path in (table, summary, page, other):
        path.write_text("earlier")
    with written_together([table, summary, page]):
        assert all(path.read_text() == "earlier" for path in (table, summary, page))  # nothing written yet
        with atomic_path(table) as partial:
            partial.write_text("new")
        assert table.read_text() == "new" and not summary.exists() and not page.exists()  # killed here: alone
        assert other.read_text() == "earlier"
        with atomic_path(summary) as partial:
            partial.write_text("new")
    assert table.read_text() == summary.read_text() == "new" and not page.exists()


def test_an_earlier_folder_left_aside_by_a_killed_writer_goes_with_the_next_write(tmp_path: Path, monkeypatch) -> None:
    """A folder output replaces the earlier one by moving it aside first: a process killed between the two moves
    left the earlier folder under a hidden name that nothing ever removed."""
    import os

    from audiotune import atomic

    target = tmp_path / "encoder"
    for _ in range(2):
        with atomic.atomic_dir(target) as partial:
            (partial / "weights").write_text("w")
    real = os.replace

    def killed_after_the_first(source, destination) -> None:  # noqa: ANN001
        real(source, destination)
        raise SystemExit  # stands for SIGKILL: the folder written aside stays as it is

    monkeypatch.setattr(atomic.os, "replace", killed_after_the_first)
    with pytest.raises(SystemExit), atomic.atomic_dir(target) as partial:
        (partial / "weights").write_text("w")
    monkeypatch.undo()
    assert [entry.name.endswith(".old.partial") for entry in tmp_path.iterdir()] == [True]
    with atomic.atomic_dir(target) as partial:
        (partial / "weights").write_text("w")
    assert [entry.name for entry in tmp_path.iterdir()] == ["encoder"]
