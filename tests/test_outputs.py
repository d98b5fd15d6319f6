"""Run-directory names: what a ``--run`` value names; the command lines a run directory records."""
from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

import pytest

from audiotune import __version__, storage
from audiotune.outputs import (
    COMMAND_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    RUN_MARKERS,
    SKIPPED_SUFFIX,
    TAPS_SUMMARY_SUFFIX,
    UNMATCHED_SUFFIX,
    invoked,
    own_run_dir,
    run_dir_of,
    sidecar,
)


def test_a_model_file_names_its_run_directory(tmp_path: Path) -> None:
    assert run_dir_of(f"runs/w2v/{MODEL_FILE}") == "runs/w2v"  # need not exist yet (staged from a bucket)
    assert run_dir_of(f"gs://bucket/runs/w2v/{MODEL_FILE}") == "gs://bucket/runs/w2v"
    assert run_dir_of("gs://bucket/runs/w2v/") == "gs://bucket/runs/w2v" and run_dir_of("runs/w2v/") == "runs/w2v"
    other = tmp_path / "run" / "best.pt"  # any existing file names the folder it is in
    other.parent.mkdir()
    other.write_bytes(b"")
    assert run_dir_of(other) == str(tmp_path / "run") and run_dir_of(tmp_path / "run") == str(tmp_path / "run")


def test_the_names_are_those_earlier_releases_wrote() -> None:
    # runs and tables already on disk are found by these names: they never change
    assert sorted(RUN_MARKERS) == ["config.yaml", "metrics.json", "model.safetensors"]
    assert storage.LAST[-1] == CONFIG_FILE  # an upload sends the config last of all
    assert [sidecar("out/segments.csv", suffix).name for suffix in (SKIPPED_SUFFIX, UNMATCHED_SUFFIX,
            TAPS_SUMMARY_SUFFIX)] == ["segments.skipped.csv", "segments.unmatched.csv", "segments.report.json"]
    assert sidecar("gs://b/emb.parquet", SKIPPED_SUFFIX).name == "emb.skipped.csv"


def test_a_run_directory_records_each_command_that_wrote_it(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    typed = ["train", "-d", "my data/split", "-o", "run"]
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    with invoked(typed), own_run_dir(run) as owned:
        assert not (run / COMMAND_FILE).exists()  # nothing is written before the inputs are checked
        owned.start()
        (run / CONFIG_FILE).write_text("{}")
    [first] = json.loads((run / COMMAND_FILE).read_text())
    assert first["argv"] == ["audiotune", *typed] and first["cwd"] == os.getcwd() == str(tmp_path)
    assert first["command_line"] == "audiotune train -d 'my data/split' -o run"  # pastes back into a shell
    assert first["version"] == __version__
    assert before <= datetime.datetime.fromisoformat(first["started"]) <= datetime.datetime.now(datetime.UTC)

    with invoked(["train", "-o", "run", "--resume"]), own_run_dir(run, resume=True) as owned:
        owned.start()  # a resumed run adds its command; the first entry is the one that made the run
    assert [e["argv"][-1] for e in json.loads((run / COMMAND_FILE).read_text())] == ["run", "--resume"]
    with invoked(["train", "-o", "run", "--overwrite"]), own_run_dir(run, overwrite=True) as owned:
        owned.start()  # an overwritten run starts its history again
    assert [e["argv"][-1] for e in json.loads((run / COMMAND_FILE).read_text())] == ["--overwrite"]

    with own_run_dir(tmp_path / "api") as owned:  # called from Python: this process's own command line
        owned.start()
    [entry] = json.loads((tmp_path / "api" / COMMAND_FILE).read_text())
    assert entry["argv"] == [sys.executable, *sys.argv]
    with own_run_dir(tmp_path / "follower", follower=True) as owned:  # another DDP process: rank 0 records it
        owned.start()
    assert not (tmp_path / "follower").exists()


def test_a_folder_a_stopped_command_left_without_a_run_is_cleared_by_the_next_that_overwrites(
        tmp_path: Path) -> None:
    """An evaluation stopped after its first plots left no run marker, so the next evaluation into the folder
    kept the stopped one's plots beside its own; what the folder held before any command wrote there stays."""
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")  # before any command
    with invoked(["evaluate", "--run", "run", "-o", "eval"]), own_run_dir(folder, overwrite=True,
                                                                          command="evaluate") as owned:
        owned.start()
        (folder / "plots").mkdir()
        (folder / "plots" / "confusion_val_word.png").write_bytes(b"png")  # then stopped: no metrics.json
    with invoked(["evaluate", "--run", "run", "-o", "eval"]), own_run_dir(folder, overwrite=True,
                                                                          command="evaluate") as owned:
        owned.start()
    assert sorted(path.name for path in folder.iterdir()) == [".audiotune.lock", COMMAND_FILE, "notes.txt"]


@pytest.mark.parametrize("killed_at", [1, 2, None])
def test_an_output_and_its_skip_list_are_one_set_even_for_a_process_killed_between_them(tmp_path: Path,
                                                                                         killed_at) -> None:
    """An output written over an earlier one with its list of skipped inputs: a process killed outright after the
    list took its place leaves the list alone (no output: nothing reads a list as an output), never the new
    output beside the earlier list or the new list beside the earlier output; with nothing skipped, the new
    output takes the earlier list away."""
    import subprocess
    import sys

    out = tmp_path / "win.csv"
    script = f"""
import os, sys
import pandas as pd
from audiotune import atomic
from audiotune.outputs import write_csv, write_with_skip_list
out = {str(out)!r}
write_with_skip_list(out, pd.DataFrame({{"path": ["earlier.wav"], "reason": ["missing"]}}),
                     lambda p: write_csv(pd.DataFrame({{"x": ["earlier"]}}), p, index=False))
renames, real = [0], os.replace
def replace(source, destination):
    real(source, destination)
    renames[0] += 1
    if renames[0] == {killed_at}:
        os._exit(9)  # SIGKILL: nothing cleans up
atomic.os.replace = replace
skipped = pd.DataFrame({{"path": ["new.wav"], "reason": ["unreadable"]}}) if sys.argv[1] == "skips" else \\
    pd.DataFrame(columns=["path", "reason"])
write_with_skip_list(out, skipped, lambda p: write_csv(pd.DataFrame({{"x": ["new"]}}), p, index=False))
"""
    for case in ("skips", "none"):
        for path in tmp_path.iterdir():
            path.unlink()
        done = subprocess.run([sys.executable, "-c", script, case], capture_output=True, text=True)
        listed = out.with_name("win.skipped.csv")
        if killed_at == 1 and case == "skips":  # the new list took its place: the earlier output went with it
            assert done.returncode == 9 and not out.exists() and "new.wav" in listed.read_text()
        elif killed_at == 1 or killed_at is None:  # the new output took its place, alone or with its list
            assert done.returncode == (9 if killed_at else 0), done.stderr
            assert "new" in out.read_text()
            assert ("new.wav" in listed.read_text()) if case == "skips" else not listed.exists()
        else:  # killed after both
            assert "new" in out.read_text() and (("new.wav" in listed.read_text()) if case == "skips"
                                                 else not listed.exists())
