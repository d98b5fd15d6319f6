"""segment, manifest and taps with gs:// inputs and outputs (storage emulator on loopback): the same output as
the same command on local copies of the same files."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from conftest import BUCKET, Emulator, tone

from audiotune import remote_lock
from audiotune.cli import main

RATE = 8000
ROOT = Path(__file__).resolve().parents[2]
URL = f"gs://{BUCKET}"


def _wav(path: Path, seconds: float, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(440, seconds, RATE, channels=channels), RATE)


def _upload(local: Path, gcs: Emulator, prefix: str) -> None:
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        gcs.fs().put_file(str(file), f"{BUCKET}/{prefix}/{file.relative_to(local).as_posix()}")


def _remote_text(gcs: Emulator, key: str) -> str:
    return gcs.fs().cat_file(f"{BUCKET}/{key}").decode()


def test_segment_reads_and_writes_a_bucket_as_a_local_folder(gcs: Emulator, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    _wav(data / "audio" / "a.wav", 2.0)
    _wav(data / "audio" / "b.wav", 1.3, channels=2)
    pd.DataFrame([{"path": "audio/a.wav", "time": 0.5, "label": "tap"},
                  {"path": "audio/a.wav", "time": 1.9, "label": "key"},  # leaves the file: skipped
                  {"path": "audio/b.wav", "time": 0.75, "label": "tap"}]).to_csv(data / "events.csv", index=False)
    _upload(data, gcs, "data")
    events = ["--before", "0.25", "--after", "0.5", "--on_error", "skip"]
    assert main(["segment", f"{URL}/data/events.csv", "--out", f"{URL}/segments/events.csv", *events]) == 0
    printed = capsys.readouterr().out
    assert f"{URL}/segments/events.csv: 2 segments" in printed and f"{URL}/segments/events.skipped.csv" in printed
    assert main(["segment", str(data / "events.csv"), "--out", str(tmp_path / "segments" / "events.csv"),
                 *events]) == 0
    assert _remote_text(gcs, "segments/events.csv") == (tmp_path / "segments" / "events.csv").read_text()
    assert "../data/audio/a.wav" in _remote_text(gcs, "segments/events.csv")
    with gcs.fs().open(f"{BUCKET}/segments/events.skipped.csv") as stream:
        skipped = pd.read_csv(stream)
    assert skipped["path"].tolist() == [f"{URL}/data/audio/a.wav"] and skipped["time"].tolist() == [1.9]

    # windows of audio in a bucket written to a local table: full URLs, which read_table resolves
    pd.DataFrame([{"path": "audio/a.wav"}, {"path": "audio/b.wav"}]).to_csv(data / "recordings.csv", index=False)
    _upload(data, gcs, "data")
    local_out = tmp_path / "local" / "windows.csv"
    assert main(["segment", f"{URL}/data/recordings.csv", "--out", str(local_out), "--window", "0.5"]) == 0
    windows = pd.read_csv(local_out)
    assert set(windows["path"]) == {f"{URL}/data/audio/a.wav", f"{URL}/data/audio/b.wav"} and len(windows) == 6


@pytest.fixture()
def tap_data(tmp_path: Path) -> Path:
    """Two synthetic tap recordings, their touch log and key centres (examples/make_tap_data.py)."""
    out = tmp_path / "taps"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_tap_data.py"), "--out", str(out),
                    "--recordings", "2", "--seconds", "4", "--seed", "3"], check=True, capture_output=True)
    return out


@pytest.mark.slow
def test_taps_detect_reads_recordings_by_range_and_writes_to_a_bucket(gcs: Emulator, tap_data: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    _upload(tap_data, gcs, "taps")
    names = sorted(p.name for p in (tap_data / "01.acoustic").glob("*.wav"))
    remote = [f"{URL}/taps/01.acoustic/{name}" for name in names]
    assert main(["taps", "detect", *remote, "--out", f"{URL}/out/taps.csv", "--plot", f"{URL}/out/plots"]) == 0
    printed = capsys.readouterr().out
    assert f"{remote[0]}: " in printed and f"{URL}/out/taps.csv: " in printed and f"plots in {URL}/out/plots" in printed
    local = tmp_path / "local"  # the bucket's layout on a local disk
    gcs.fs().get(f"{BUCKET}/taps", str(local / "taps"), recursive=True)
    assert main(["taps", "detect", *(str(local / "taps" / "01.acoustic" / n) for n in names),
                 "--out", str(local / "out" / "taps.csv"), "--plot", str(local / "out" / "plots")]) == 0
    assert _remote_text(gcs, "out/taps.csv") == (local / "out" / "taps.csv").read_text()
    assert len(pd.read_csv(local / "out" / "taps.csv")) > 0
    plots = sorted(Path(p).name for p in gcs.fs().find(f"{BUCKET}/out/plots"))
    assert plots == sorted(p.name for p in (local / "out" / "plots").iterdir()) == [
        f"{Path(n).stem}_taps.png" for n in names]


@pytest.mark.slow
def test_taps_align_reads_its_tables_in_place_and_writes_to_a_bucket(gcs: Emulator, tap_data: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    _upload(tap_data, gcs, "taps")
    names = sorted(p.name for p in (tap_data / "01.acoustic").glob("*.wav"))
    local = tmp_path / "local"  # the bucket's layout on a local disk

    def detect_and_align(root: str) -> None:
        recordings = [f"{root}/taps/01.acoustic/{name}" for name in names]
        assert main(["taps", "detect", *recordings, "--out", f"{root}/out/taps.csv"]) == 0
        assert main(["taps", "align", f"{root}/out/taps.csv",
                     "--touch_log", f"{root}/taps/02.neonode/session_nnode.csv", "--keys", f"{root}/taps/keys.csv",
                     "--out", f"{root}/out/segments.csv", "--plot", f"{root}/out/plots"]) == 0

    detect_and_align(URL)
    printed = capsys.readouterr().out
    assert f"{URL}/out/segments.csv: " in printed and f"plots in {URL}/out/plots" in printed
    gcs.fs().get(f"{BUCKET}/taps", str(local / "taps"), recursive=True)
    detect_and_align(str(local))
    for name in ("segments.csv", "segments.report.json"):
        assert _remote_text(gcs, f"out/{name}") == (local / "out" / name).read_text(), name
    assert len(pd.read_csv(local / "out" / "segments.csv")) > 0
    # the touches' source column names each log where it was read: the same up to its folder
    assert _remote_text(gcs, "out/segments.unmatched.csv") == (local / "out" / "segments.unmatched.csv").read_text(
    ).replace(str(local), URL)
    assert sorted(Path(p).name for p in gcs.fs().find(f"{BUCKET}/out/plots")) == [
        f"{Path(n).stem}_align.png" for n in names]


@pytest.mark.slow
def test_manifest_lists_a_bucket_folder_and_writes_to_a_bucket(gcs: Emulator, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    for name in ("low/ann_1.wav", "low/bob_2.wav", "high/sub/ann_3.wav", "high/notes.wav"):
        _wav(data / "audio" / name, 0.2)
    (data / "audio" / "readme.txt").write_text("not audio")
    _upload(data, gcs, "data")
    flags = ["--pattern", r"(?P<subject>[a-z]+)_\d\.wav", "--folder_label", "pitch", "--on_error", "skip"]
    assert main(["manifest", f"{URL}/data/audio", "--out", f"{URL}/tables/manifest.csv", *flags]) == 0
    assert f"{URL}/tables/manifest.csv: 3 files, 1 skipped" in capsys.readouterr().out
    local = tmp_path / "local"  # the bucket's layout on a local disk
    gcs.fs().get(f"{BUCKET}/data", str(local / "data"), recursive=True)
    assert main(["manifest", str(local / "data" / "audio"), "--out", str(local / "tables" / "manifest.csv"),
                 *flags]) == 0
    assert _remote_text(gcs, "tables/manifest.csv") == (local / "tables" / "manifest.csv").read_text()
    manifest = pd.read_csv(local / "tables" / "manifest.csv")
    assert manifest["path"].tolist() == ["../data/audio/high/sub/ann_3.wav", "../data/audio/low/ann_1.wav",
                                         "../data/audio/low/bob_2.wav"]
    assert _remote_text(gcs, "tables/manifest.skipped.csv").splitlines()[1].startswith(
        f"{URL}/data/audio/high/notes.wav,")

    # audio in a bucket, a local manifest: full URLs
    assert main(["manifest", f"{URL}/data/audio/", "--out", str(tmp_path / "m.csv"), *flags]) == 0
    assert pd.read_csv(tmp_path / "m.csv")["path"].tolist()[0] == f"{URL}/data/audio/high/sub/ann_3.wav"
    assert main(["manifest", f"{URL}/data/missing", "--out", str(tmp_path / "n.csv")]) == 2
    assert f"{URL}/data/missing: audio folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_json_splits_and_bare_audio_folders_read_from_a_bucket_as_from_a_folder(gcs: Emulator, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    """-d as a JSON split file, a folder of JSON split files (cv) or a bare audio folder (stats), in a bucket:
    the same numbers as from the same files on a local disk."""
    import json

    from conftest import SMALL_ECAPA

    data = tmp_path / "data"
    names = {}
    for session in ("Ses01", "Ses02"):
        for k in range(4):
            name = f"{session}/utt{k}.wav"
            (data / "wavs" / session).mkdir(parents=True, exist_ok=True)
            sf.write(data / "wavs" / name, tone(300 + 500 * (k % 2), 0.5, RATE, seed=k), RATE)
            names[name] = ["neutral", "happy"][k % 2]
    (data / "folds").mkdir()
    for number, held_out in enumerate(("Ses01", "Ses02"), start=1):
        split = {"Train": {n: v for n, v in names.items() if not n.startswith(held_out)}, "Val": {},
                 "Test": {n: v for n, v in names.items() if n.startswith(held_out)}}
        (data / "folds" / f"fold{number}.json").write_text(json.dumps(split))
    _upload(data, gcs, "data")
    common = [*SMALL_ECAPA, "-e", "1", "-bs", "4", "--seed", "1"]
    for where, root in (("remote", f"{URL}/data"), ("local", str(data))):
        assert main(["train", "-d", f"{root}/folds/fold1.json", "-i", f"{root}/wavs", "-o", str(tmp_path / where),
                     "--val_size", "1", *common]) == 0
        assert main(["cv", "-d", f"{root}/folds", "--audio_dir", f"{root}/wavs", "--val_group", "none", "-o",
                     str(tmp_path / f"cv_{where}"), *common]) == 0
        assert main(["stats", "-d", f"{root}/wavs", "--out", str(tmp_path / f"stats_{where}.json")]) == 0
    capsys.readouterr()
    scores = [pd.read_parquet(tmp_path / where / "predictions.parquet").filter(like="score:") for where in
              ("remote", "local")]
    pd.testing.assert_frame_equal(*scores, atol=1e-6)
    summaries = [json.loads((tmp_path / f"cv_{where}" / "cv_summary.json").read_text())["statistics"]
                 for where in ("remote", "local")]
    assert summaries[0] == summaries[1]
    # and into the bucket: the fold tables name the audio relative to where they end up, and are read so while
    # they wait in their staging folder
    assert main(["cv", "-d", f"{URL}/data/folds", "--audio_dir", f"{URL}/data/wavs", "--val_group", "none", "-o",
                 f"{URL}/cv", *common]) == 0
    assert json.loads(_remote_text(gcs, "cv/cv_summary.json"))["statistics"] == summaries[1]
    assert pd.read_csv(io.StringIO(_remote_text(gcs, "cv/fold_1/test.csv")))["path"].str.startswith("../../").all()
    stats = [json.loads((tmp_path / f"stats_{where}.json").read_text()) for where in ("remote", "local")]
    assert stats[0]["clips"] == stats[1]["clips"] == 8
    assert abs(stats[0]["dataset_mean"] - stats[1]["dataset_mean"]) < 1e-6


@pytest.mark.slow
def test_two_machines_training_into_one_bucket_folder_at_once_one_is_refused(gcs: Emulator, tmp_path: Path) -> None:
    from conftest import make_uid_dataset, small_train_args

    ds = make_uid_dataset(tmp_path)
    run = f"{URL}/runs/same"
    with remote_lock.RemoteLock(run, "train"):  # another machine is writing it
        assert main(small_train_args(ds, run)) == 2
    assert not gcs.fs().exists(f"{BUCKET}/runs/same/config.yaml")
    commands = [[sys.executable, "-m", "audiotune", *small_train_args(ds, run, "--seed", str(seed))] for seed in (1, 2)]
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "another audiotune command is writing this folder" in refused or "already holds a run" in refused
    assert not gcs.fs().exists(f"{BUCKET}/runs/same{remote_lock.LOCK_SUFFIX}")
