"""Outputs written aside and renamed when whole; a refusal of the file system names the output."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from audiotune.atomic import OutputError, atomic_path


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
