"""Where ``--cloud`` sends each kind of output (the uploads themselves: tests/e2e/test_scoring_commands.py and
tests/test_storage.py, against the storage emulator), and how a remote run directory holding a run is refused."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import BUCKET

from audiotune.cli import build_parser, main
from audiotune.cli.flags import path_roles
from audiotune.staging import _cloud_plan, _cloud_uploads, cloud_url

CLOUD = ["--cloud", "-b", "bucket", "--cloud_dir", "seed/out"]
URL = "gs://bucket/seed/out"


def _uploads(*argv: str) -> list[tuple[Path, str]]:
    args = build_parser().parse_args([*argv, *CLOUD])
    roles = path_roles(args)
    assert cloud_url(args, roles) == URL
    return _cloud_uploads(args, _cloud_plan(args, roles, URL))


def test_cloud_sends_run_folders_whole_and_other_outputs_by_name(tmp_path: Path) -> None:
    run, evaluation = tmp_path / "run", tmp_path / "eval_test"
    assert _uploads("train", "-d", "split", "-l", "labels.txt", "-o", str(run), "--cache_dir", "cache") == \
        [(run, URL)]  # the run's files straight into DIR, the feature cache not at all
    assert _uploads("sweep", "--space", "space.yaml", "-d", "split", "-l", "labels.txt", "-o", str(run)) == \
        [(run, URL)]
    out = tmp_path / "stats.json"
    out.write_text("{}")
    (tmp_path / "stats.skipped.csv").write_text("path\n")  # a sidecar of the output file
    (tmp_path / "other.csv").write_text("path\n")
    assert _uploads("stats", "-d", "split", "--out", str(out)) == [
        (out, f"{URL}/stats.json"), (tmp_path / "stats.skipped.csv", f"{URL}/stats.skipped.csv")]
    assert _uploads("evaluate", "--run", str(run), "-d", "test.csv", "-o", str(evaluation)) == \
        [(evaluation, f"{URL}/eval_test")]

def test_cloud_needs_its_bucket_and_folder() -> None:
    args = build_parser().parse_args(["extract", "--run", "run", "-d", "test.csv", "--cloud", "-b", "bucket"])
    with pytest.raises(ValueError, match="--cloud_dir"):
        cloud_url(args, path_roles(args))


def test_cloud_dir_without_cloud_is_refused() -> None:
    args = build_parser().parse_args(["evaluate", "--run", "run", "-d", "test.csv", "--cloud_dir", "runs/r1"])
    with pytest.raises(ValueError, match=r"--cloud_dir runs/r1: the folder that --cloud uploads .* add --cloud"):
        cloud_url(args, path_roles(args))


def test_cloud_dir_without_cloud_is_refused_but_for_a_resumed_run() -> None:
    """A run made with --cloud_dir alone (it uploaded nothing) goes on with the command line that made it."""
    made = ["train", "-d", "split", "-l", "labels.txt", "-o", "run", "--cloud_dir", "runs/r1"]
    args = build_parser().parse_args(made)
    with pytest.raises(ValueError, match=r"--cloud_dir runs/r1: .* add --cloud"):
        cloud_url(args, path_roles(args))
    args = build_parser().parse_args([*made, "--resume"])
    assert cloud_url(args, path_roles(args)) is None


@pytest.mark.parametrize(("command", "goes_on"), [
    ("probe", "pass --overwrite to replace it (probe cannot continue a run)"),
    ("train", "pass --resume to continue it, --overwrite to replace it,"),
])
def test_a_remote_run_directory_holding_a_run_is_refused_naming_what_the_command_takes(
        gcs, capsys: pytest.CaptureFixture, command: str, goes_on: str) -> None:
    """As a local one: probe, which cannot continue a run, is not told to pass --resume (which it refuses)."""
    url = f"gs://{BUCKET}/runs/earlier"
    gcs.fs().pipe(f"{BUCKET}/runs/earlier/config.yaml", b"{}\n")  # an earlier run's
    assert main([command, "-d", "split", "-l", "labels.txt", "-o", url]) == 2
    error = capsys.readouterr().err
    assert f"{url}: already holds a run; {goes_on} or choose another -o/--exp_dir" in error
    assert ("--resume" in error) is (command == "train")


def test_a_remote_experiment_folder_is_refused_to_a_command_that_writes_one_run(gcs, capsys) -> None:
    url = f"gs://{BUCKET}/runs/folds"
    gcs.fs().pipe(f"{BUCKET}/runs/folds/cv_config.yaml", b"{}\n")  # a cross-validation's, its runs inside
    assert main(["train", "-d", "split", "-l", "labels.txt", "-o", url, "--overwrite"]) == 2
    assert f"{url}: holds a cross-validation, which train does not write; choose another -o/--exp_dir" in \
        capsys.readouterr().err


def test_a_remote_file_given_to_report_is_refused_before_anything_is_read(gcs, capsys: pytest.CaptureFixture) -> None:
    """A taps table is drawn again from the files beside it, which staging the one file would not bring: a remote
    one is refused with what to do, nothing written beside it."""
    url = f"gs://{BUCKET}/taps/taps.csv"
    gcs.fs().pipe(f"{BUCKET}/taps/taps.csv", b"path,time,height\n")
    gcs.fs().pipe(f"{BUCKET}/taps/taps.report.json", b"{}\n")
    assert main(["report", url]) == 2
    assert f"{url}: a file in remote storage; the page of a taps table is drawn again from a local copy of its " \
           "folder" in capsys.readouterr().err
    assert sorted(gcs.fs().ls(f"{BUCKET}/taps")) == [f"{BUCKET}/taps/taps.csv", f"{BUCKET}/taps/taps.report.json"]


def test_a_stopped_experiment_whose_upload_fails_keeps_its_local_copy(gcs, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """A stopped cv sends its folder up; should that fail, the stop still ends the command, and the folder it wrote
    stays where the error says (it was deleted with the staging folders)."""
    import argparse

    import audiotune.staging as staging
    from audiotune.storage import Role, StorageError

    def refused(local: Path, url: str, **kwargs: object) -> int:
        raise StorageError(f"{url}: could not be uploaded; the complete local copy is {local}")

    monkeypatch.setattr(staging, "upload", refused)
    args = argparse.Namespace(command="cv", exp_dir=f"gs://{BUCKET}/exp/stopped")
    with pytest.raises(KeyboardInterrupt), staging.staged(args, {"exp_dir": Role.EXPERIMENT}, resumable=False):
        (Path(args.exp_dir) / "fold_1").mkdir()
        raise KeyboardInterrupt
    assert (Path(args.exp_dir) / "fold_1").is_dir()
    assert capsys.readouterr().err.startswith(f"audiotune: gs://{BUCKET}/exp/stopped: could not be uploaded")


def test_a_remote_output_folder_is_checked_and_replaced_as_a_local_one(gcs, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """split into a bucket's folder sees what that folder holds: folds of an earlier split that it would not
    replace are refused there too, and a plain split sent there leaves none of the earlier split's files."""
    table = tmp_path / "table.csv"
    pd.DataFrame({"path": [f"{i}.wav" for i in range(12)], "subject": [f"s{i % 6}" for i in range(12)]}).to_csv(
        table, index=False)
    url, fs = f"gs://{BUCKET}/splits/s", gcs.fs()
    assert main(["split", str(table), "--out", url, "--folds", "3"]) == 0
    assert main(["split", str(table), "--out", url, "--folds", "2"]) == 2
    assert "holds folds of an earlier split (['fold_3'])" in capsys.readouterr().err
    assert main(["split", str(table), "--out", f"gs://{BUCKET}/splits/p"]) == 0
    fs.pipe(f"{BUCKET}/splits/p/val.csv", b"path\nold.wav\n")  # as an earlier split with a val part left it
    assert main(["split", str(table), "--out", f"gs://{BUCKET}/splits/p", "--val_fraction", "0"]) == 0
    assert sorted(Path(p).name for p in fs.find(f"{BUCKET}/splits/p")) == ["test.csv", "train.csv"]


def test_an_output_file_inside_an_output_folder_in_a_bucket_is_kept(gcs) -> None:
    """`taps detect --out gs://B/t/taps.csv --plot gs://B/t`: the folder is sent as the command left it, and the
    file written beside its plots (through its own staging folder) stays."""
    import argparse

    from audiotune.staging import staged
    from audiotune.storage import Role

    fs = gcs.fs()
    fs.pipe(f"{BUCKET}/t/old_plot.png", b"earlier")
    args = argparse.Namespace(command="taps", out=f"gs://{BUCKET}/t/taps.csv", plot=f"gs://{BUCKET}/t")
    with staged(args, {"out": Role.OUTPUT_FILE, "plot": Role.OUTPUT_DIR}, resumable=False):
        Path(args.out).write_text("path,time\n")
        (Path(args.plot) / "new_plot.png").write_bytes(b"plot")
        (Path(args.plot) / "old_plot.png").unlink()  # the command replaced its plots
    assert sorted(Path(p).name for p in fs.find(f"{BUCKET}/t")) == ["new_plot.png", "taps.csv"]
