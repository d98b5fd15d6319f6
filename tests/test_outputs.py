"""Run-directory names: what a ``--run`` value names."""
from __future__ import annotations

from pathlib import Path

from audiotune.outputs import MODEL_FILE, run_dir_of


def test_a_model_file_names_its_run_directory(tmp_path: Path) -> None:
    assert run_dir_of(f"runs/w2v/{MODEL_FILE}") == "runs/w2v"  # need not exist yet (staged from a bucket)
    assert run_dir_of(f"gs://bucket/runs/w2v/{MODEL_FILE}") == "gs://bucket/runs/w2v"
    assert run_dir_of("gs://bucket/runs/w2v/") == "gs://bucket/runs/w2v" and run_dir_of("runs/w2v/") == "runs/w2v"
    other = tmp_path / "run" / "best.pt"  # any existing file names the folder it is in
    other.parent.mkdir()
    other.write_bytes(b"")
    assert run_dir_of(other) == str(tmp_path / "run") and run_dir_of(tmp_path / "run") == str(tmp_path / "run")
