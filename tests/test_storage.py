"""gs:// paths end to end, against a Google Cloud Storage emulator on 127.0.0.1 (real protocol, no mocks)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import BUCKET, HF_TINY, SMALL_ECAPA, Emulator, make_uid_dataset, save_hf_checkpoint
from safetensors.torch import load

from audiotune import storage
from audiotune.cli import main
from audiotune.outputs import CONFIG_FILE
from audiotune.staging import staging_folder


def upload_dataset(root: Path, fs) -> None:
    """The uid dataset as a manifest split in the bucket: audio/UID.wav, split/*.csv with relative paths."""
    ds = make_uid_dataset(root)
    for name in ("train", "val", "test"):
        table = pd.read_csv(ds["split"] / f"{name}.csv", dtype={"uid": str})
        table["path"] = [f"../audio/{uid}.wav" for uid in table["uid"]]
        fs.pipe(f"{BUCKET}/data/split/{name}.csv", table.to_csv(index=False).encode())
    for uid in ds["table"].index:
        fs.put_file(str(ds["prefix"] / uid / "waveform.wav"), f"{BUCKET}/data/audio/{uid}.wav")
    fs.pipe(f"{BUCKET}/labels.txt", b"pitch\nloud,long\n")


def test_paths_and_urls() -> None:
    assert storage.is_remote("gs://b/x") and not storage.is_remote("/tmp/x") and not storage.is_remote("file:///x")
    assert storage.resolve("../audio/a.wav", "gs://b/data/split") == "gs://b/data/audio/a.wav"
    assert storage.resolve("/abs/a.wav", "gs://b/split") == "/abs/a.wav"
    assert storage.resolve("gs://c/a.wav", "/local") == "gs://c/a.wav"
    assert storage.parent("gs://b/run/model.safetensors") == "gs://b/run"
    assert storage.join("gs://b/run/", "evaluate") == "gs://b/run/evaluate"
    assert storage.relative("gs://b/data/audio/a.wav", "gs://b/data/split") == "../audio/a.wav"
    assert storage.relative("gs://other/a.wav", "gs://b/split") == "gs://other/a.wav"
    assert storage.relative("/data/a.wav", "gs://b/split") == "/data/a.wav"


def test_staged_folder_maps_to_its_remote_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOTUNE_CACHE", str(tmp_path))
    folder = staging_folder("gs://b/exp")
    (folder / "fold_1").mkdir()
    assert storage.final_place(folder / "fold_1") == "gs://b/exp/fold_1"
    # a local split of remote audio, written in a folder that goes to the same bucket: relative paths
    assert storage.relative("gs://b/audio/a.wav", folder / "fold_1") == "../../audio/a.wav"
    assert storage.final_place(tmp_path) == str(tmp_path.resolve())
    # what a run records of its paths: the URLs they stand for
    copy = storage.cache_folder() / "files" / "gs" / "b" / "models" / "ck"
    assert storage.remote_name(str(copy)) == "gs://b/models/ck"
    assert storage.remote_name(str(folder / "fold_1" / "config.yaml")) == "gs://b/exp/fold_1/config.yaml"
    for other in (str(tmp_path / "data.csv"), "mean", "", "gs://b/x"):
        assert storage.remote_name(other) == other


def test_read_by_range_and_local_copies_follow_changes(gcs: Emulator, tmp_path: Path) -> None:
    fs = gcs.fs()
    fs.pipe(f"{BUCKET}/t/x.bin", bytes(range(256)) * 4)
    with storage.open_input(f"gs://{BUCKET}/t/x.bin") as stream:
        stream.seek(300)
        assert stream.read(4) == bytes([44, 45, 46, 47])
    first = storage.local_copy(f"gs://{BUCKET}/t")
    assert Path(first, "x.bin").read_bytes() == bytes(range(256)) * 4
    fs.pipe(f"{BUCKET}/t/x.bin", b"changed")  # a new generation is downloaded again
    assert Path(storage.local_copy(f"gs://{BUCKET}/t/x.bin")).read_bytes() == b"changed"
    with pytest.raises(FileNotFoundError, match="not found"):
        storage.local_copy(f"gs://{BUCKET}/missing")


def test_an_object_read_by_range_that_grew_is_read_again_whole(gcs: Emulator) -> None:
    """A table or audio file replaced by a longer one: its earlier blocks' file was too short to map the new
    object ("mmap length is greater than file size"), on every read until the cache was deleted by hand."""
    fs = gcs.fs()
    fs.pipe(f"{BUCKET}/t/grow.bin", bytes(range(256)))
    with storage.open_input(f"gs://{BUCKET}/t/grow.bin") as stream:
        assert stream.read() == bytes(range(256))
    fs.pipe(f"{BUCKET}/t/grow.bin", bytes(range(256)) * 3)
    with storage.open_input(f"gs://{BUCKET}/t/grow.bin") as stream:
        assert stream.read() == bytes(range(256)) * 3
    fs.pipe(f"{BUCKET}/t/grow.bin", b"short")
    with storage.open_input(f"gs://{BUCKET}/t/grow.bin") as stream:
        assert stream.read() == b"short"


def test_an_object_replaced_by_a_shorter_one_is_read_whole_by_the_next_process(gcs: Emulator,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The next process read a table replaced by a shorter one with the earlier one's tail after it: fsspec's block
    file of the earlier object, whole, was read as it was (an evaluation of 10 rows scored 30)."""
    fs = gcs.fs()
    fs.pipe(f"{BUCKET}/t/table.csv", b"uid\n" + b"".join(b"row%d\n" % i for i in range(30)))
    with storage.open_input(f"gs://{BUCKET}/t/table.csv") as stream:
        assert stream.read().count(b"\n") == 31
    fs.pipe(f"{BUCKET}/t/table.csv", b"uid\nrow0\n")
    with storage.open_input(f"gs://{BUCKET}/t/table.csv") as stream:  # this process sees the change
        assert stream.read() == b"uid\nrow0\n"
    monkeypatch.setattr(storage, "_BLOCK_CACHES", {})  # another process: the block cache as it is on disk
    monkeypatch.setattr(storage, "_BLOCKS_CHECKED", set())
    with storage.open_input(f"gs://{BUCKET}/t/table.csv") as stream:
        assert stream.read() == b"uid\nrow0\n"


def test_a_local_copy_of_a_folder_loses_the_files_its_remote_folder_lost(gcs: Emulator) -> None:
    """A checkpoint rewritten in place as shards: the old single weights file must not stay in the copy (the
    loader would read it first); files kept, and their nested folders, stay."""
    fs = gcs.fs()
    fs.pipe(f"{BUCKET}/ck/config.json", b"{}")
    fs.pipe(f"{BUCKET}/ck/model.safetensors", b"old")
    fs.pipe(f"{BUCKET}/ck/sub/keep.txt", b"kept")
    copy = Path(storage.local_copy(f"gs://{BUCKET}/ck"))
    assert (copy / "model.safetensors").read_bytes() == b"old"
    fs.rm(f"{BUCKET}/ck/model.safetensors")
    fs.pipe(f"{BUCKET}/ck/model-00001-of-00001.safetensors", b"new")
    assert Path(storage.local_copy(f"gs://{BUCKET}/ck")) == copy
    files = sorted(path.relative_to(copy).as_posix() for path in copy.rglob("*") if path.is_file())
    assert files == [".config.json.version", ".model-00001-of-00001.safetensors.version", "config.json",
                     "model-00001-of-00001.safetensors", "sub/.keep.txt.version", "sub/keep.txt"]


def _train(out: str, *extra: str) -> list[str]:
    return ["train", "-d", f"gs://{BUCKET}/data/split", "-l", f"gs://{BUCKET}/labels.txt", "-o", out,
            *SMALL_ECAPA, "-e", "1", "-bs", "4", "--seed", "1", *extra]


@pytest.mark.slow
def test_a_run_written_into_a_bucket_folder_of_other_files_leaves_them_when_overwritten(
        gcs: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """What a bucket folder held before a run was first written there is recorded as found, and --overwrite's
    upload, which deletes what the new run no longer holds, leaves it, as on a local disk."""
    fs = gcs.fs()
    upload_dataset(tmp_path / "data", fs)
    fs.pipe(f"{BUCKET}/mine/notes.txt", b"mine")
    fs.pipe(f"{BUCKET}/mine/sub/data.csv", b"a\n")
    run = f"gs://{BUCKET}/mine"
    assert main(_train(run)) == 0, capsys.readouterr().err
    assert json.loads(fs.cat_file(f"{BUCKET}/mine/command.json"))[0]["found"] == ["notes.txt", "sub"]
    fs.pipe(f"{BUCKET}/mine/skipped.csv", b"uid\nold\n")  # the old run's, gone with it
    assert main(_train(run, "--overwrite")) == 0, capsys.readouterr().err
    assert fs.cat_file(f"{BUCKET}/mine/notes.txt") == b"mine" and fs.cat_file(f"{BUCKET}/mine/sub/data.csv") == b"a\n"
    assert not fs.exists(f"{BUCKET}/mine/skipped.csv") and fs.isfile(f"{BUCKET}/mine/model.safetensors")
    history = json.loads(fs.cat_file(f"{BUCKET}/mine/command.json"))
    assert len(history) == 1 and history[0]["found"] == ["notes.txt", "sub"]


@pytest.mark.slow
def test_train_evaluate_extract_in_a_bucket(gcs: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fs = gcs.fs()
    upload_dataset(tmp_path / "data", fs)
    run = f"gs://{BUCKET}/runs/r1"
    assert main(_train(run)) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert f"run directory: {run}\nreport: {run}/report.html" in printed.err  # stdout: the metrics
    names = {Path(p).name for p in fs.find(f"{BUCKET}/runs/r1")}
    assert {"config.yaml", "metrics.json", "model.safetensors", "command.json"} <= names
    assert not any(name.startswith(".") for name in names)  # no lock, no partial file, no staging note
    config = yaml.safe_load(fs.cat_file(f"{BUCKET}/runs/r1/config.yaml"))
    assert config["data"]["data_split_root"] == f"gs://{BUCKET}/data/split"

    # the same run trained from a local copy of the data gives the same metrics
    local = tmp_path / "local"
    fs.get(f"{BUCKET}/data", str(local), recursive=True)
    assert main(["train", "-d", str(local / "split"), "-l", str(storage.local_copy(f"gs://{BUCKET}/labels.txt")),
                 "-o", str(tmp_path / "r_local"), *SMALL_ECAPA, "-e", "1", "-bs", "4", "--seed", "1"]) == 0
    remote_weights = load(fs.cat_file(f"{BUCKET}/runs/r1/model.safetensors"))
    local_weights = load((tmp_path / "r_local" / "model.safetensors").read_bytes())
    assert remote_weights.keys() == local_weights.keys()
    assert all(torch.allclose(remote_weights[k], local_weights[k], atol=1e-6) for k in local_weights)
    remote_metrics = json.loads(fs.cat_file(f"{BUCKET}/runs/r1/metrics.json"))
    assert remote_metrics["test"]["n"] == 4
    # the kept weights are named where the run is, not in the staging folder it was written in
    kept = remote_metrics["weights"]
    assert kept.startswith("best validation") and f"({run}/checkpoints/" in kept

    # a second train into the same remote run is refused before any work, as on a local disk
    assert main(_train(run)) == 2
    assert "already holds a run" in capsys.readouterr().err

    for _ in range(2):  # the second replaces the first: its folder still names the bucket, not a staging folder
        assert main(["evaluate", "--run", run, "-d", f"gs://{BUCKET}/data/split/test.csv"]) == 0
        assert f"report: {run}/evaluate/report.html" in capsys.readouterr().err  # where it is, not where staged
    assert fs.isfile(f"{BUCKET}/runs/r1/evaluate/metrics.json")
    # the run by its URL (another machine has no copy of it in its cache), the page titled by the folder's name
    evaluation = json.loads(fs.cat_file(f"{BUCKET}/runs/r1/evaluate/evaluation.json"))
    assert evaluation["run"] == run and "run_relative" not in evaluation
    assert b"<h1>evaluation: evaluate</h1>" in fs.cat_file(f"{BUCKET}/runs/r1/evaluate/report.html")
    assert main(["export", "--run", run, "-o", f"gs://{BUCKET}/deploy/m.onnx"]) == 0
    assert f"onnx model: gs://{BUCKET}/deploy/m.onnx (" in capsys.readouterr().out
    assert json.loads(fs.cat_file(f"{BUCKET}/deploy/m.onnx.json"))["run"] == run
    for report in ("runs/r1/report.html", "runs/r1/evaluate/report.html"):  # clips in the bucket: linked
        page = fs.cat_file(f"{BUCKET}/{report}")
        assert b"<audio controls" not in page and f'<a class="source" href="{gcs.url}/download/'.encode() in page
    assert main(["extract", "--run", run, "-d", f"gs://{BUCKET}/data/split/test.csv"]) == 0
    assert f"embeddings: {run}/embeddings_ft.parquet" in capsys.readouterr().out
    with fs.open(f"{BUCKET}/runs/r1/embeddings_ft.parquet", "rb") as stream:
        embeddings = pd.read_parquet(stream)
    assert len(embeddings) == 4 and np.isfinite(np.stack(embeddings["embedding"])).all()


@pytest.mark.slow
async def _no_wait(seconds: float) -> None:
    """gcsfs's back-off between retries (about half a minute per failed request), not waited."""


def test_upload_that_fails_leaves_no_run_and_keeps_the_output(gcs: Emulator, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    fs = gcs.fs()
    upload_dataset(tmp_path / "data", fs)
    sent: list[str] = []
    put_file = fs.put_file  # the instance audiotune uses (fsspec caches it)

    def failing_put(local, remote, *args, **kwargs):  # the emulator stops after two objects
        if "runs/r2" in str(remote):
            if len(sent) == 2:
                gcs.stop()
            sent.append(str(remote))
        return put_file(local, remote, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", failing_put)
    import gcsfs.retry  # here: gcsfs reads STORAGE_EMULATOR_HOST when first imported

    monkeypatch.setattr(gcsfs.retry, "asyncio", SimpleNamespace(sleep=_no_wait))  # retries, without back-off
    assert main(_train(f"gs://{BUCKET}/runs/r2")) == 2
    err = capsys.readouterr().err
    assert "upload failed (2 of" in err and "no config.yaml" in err
    kept = Path(err.split("kept in ")[1].split(";")[0])
    assert (kept / "config.yaml").is_file() and (kept / "model.safetensors").is_file()
    assert not any(Path(p).name in storage.LAST for p in sent[:2])  # markers go last
    gcs.start()  # the bucket as the failed upload left it: no run in it
    left = fs.find(f"{BUCKET}/runs/r2")
    assert 0 < len(left) <= 2 and not any(Path(p).name in storage.LAST for p in left)
    assert main(["evaluate", "--run", f"gs://{BUCKET}/runs/r2", "-d", f"gs://{BUCKET}/data/split/test.csv"]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_seed_cloud_flags_are_not_read_as_other_flags() -> None:
    from audiotune.cli import build_parser

    args = build_parser().parse_args(["train", "-b", "12", "-p", "proj", "--cloud", "--cloud_dir", "runs/x"])
    assert (args.bucket_name, args.project_name, args.cloud, args.cloud_dir) == ("12", "proj", True, "runs/x")
    assert "train.batch_size" not in vars(args)  # -b is the bucket, not a prefix of -bs


def test_a_run_records_the_urls_of_its_remote_inputs_and_its_config_runs_again(gcs: Emulator, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    """config.yaml names the bucket's encoder, label file and run directory, not this machine's copies of them or
    the staging folder it was written in (gone once uploaded); --config with it reads them again from the bucket."""
    import transformers

    fs = gcs.fs()
    upload_dataset(tmp_path / "data", fs)
    torch.manual_seed(0)
    encoder = save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)), tmp_path / "ck")
    fs.put(str(encoder), f"{BUCKET}/models/ck", recursive=True)
    run = f"gs://{BUCKET}/runs/r1"
    flags = ["-d", f"gs://{BUCKET}/data/split", "-l", f"gs://{BUCKET}/labels.txt", "--model", "hf",
             "-c", f"gs://{BUCKET}/models/ck", "-e", "1", "-bs", "4"]
    assert main(["train", *flags, "-o", run]) == 0, capsys.readouterr().err
    config = yaml.safe_load(fs.cat_file(f"{BUCKET}/runs/r1/{CONFIG_FILE}"))
    assert (config["exp_dir"], config["model"]["checkpoint"], config["data"]["label_txt"]) == \
        (run, f"gs://{BUCKET}/models/ck", f"gs://{BUCKET}/labels.txt")

    # resumed with the same flags: the local copies are the same inputs, not changed options
    assert main(["train", *flags, "-e", "2", "-o", run, "--resume"]) == 0, capsys.readouterr().err
    shutil.rmtree(storage.cache_folder() / "files", ignore_errors=True)  # another machine: no copies yet
    local_config = tmp_path / "config.yaml"
    fs.get(f"{BUCKET}/runs/r1/{CONFIG_FILE}", str(local_config))
    again = tmp_path / "again"
    assert main(["train", "--config", str(local_config), "-o", str(again), "-e", "1"]) == 0, capsys.readouterr().err
    assert yaml.safe_load((again / CONFIG_FILE).read_text())["model"]["checkpoint"] == f"gs://{BUCKET}/models/ck"


@pytest.mark.slow
def test_cloud_flag_uploads_the_local_run(gcs: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fs = gcs.fs()
    upload_dataset(tmp_path / "data", fs)
    local = tmp_path / "run"
    assert main([*_train(str(local)), "--cloud", "-b", BUCKET, "--cloud_dir", "seed/run"]) == 0
    uploaded = {Path(p).relative_to(f"{BUCKET}/seed/run").as_posix() for p in fs.find(f"{BUCKET}/seed/run")}
    on_disk = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file() and
               not any(part.startswith(".") for part in p.relative_to(local).parts)}
    assert uploaded == on_disk and "config.yaml" in uploaded
    assert main([*_train(str(tmp_path / "r2")), "--cloud", "-b", BUCKET]) == 2
    assert "--cloud_dir" in capsys.readouterr().err


@pytest.mark.slow
def test_a_feature_cache_in_a_bucket_is_filled_once_and_reused(gcs: Emulator, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    fs = gcs.fs()
    upload_dataset(tmp_path / "data", fs)
    cache = f"gs://{BUCKET}/feature-cache"
    assert main(_train(str(tmp_path / "r1"), "--freeze", "--clip_length", "0", "--cache_dir", cache)) == 0
    first = json.loads((tmp_path / "r1" / "metrics.json").read_text())["feature_cache"]
    assert first["encoded"] == 24 and first["reused"] == 0
    entries = [p for p in fs.find(f"{BUCKET}/feature-cache") if p.endswith(".safetensors")]
    assert len(entries) == 24  # one per clip, uploaded when the command finished

    # another machine: an empty local cache; the entries come from the bucket
    monkeypatch.setenv("AUDIOTUNE_CACHE", str(tmp_path / "other-machine"))
    assert main(_train(str(tmp_path / "r2"), "--freeze", "--clip_length", "0", "--cache_dir", cache)) == 0
    second = json.loads((tmp_path / "r2" / "metrics.json").read_text())["feature_cache"]
    assert second["encoded"] == 0 and second["reused"] == 24
    generations = {p: fs.info(p)["generation"] for p in entries}
    assert main(_train(str(tmp_path / "r3"), "--freeze", "--clip_length", "0", "--cache_dir", cache)) == 0
    assert {p: fs.info(p)["generation"] for p in entries} == generations  # entries it had are not sent again


def test_project_flag_reaches_the_file_system(gcs: Emulator, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setattr(storage, "_OPTIONS", {})
    assert main(["train", "-d", str(tmp_path / "none"), "-o", str(tmp_path / "r"), "-p", "my-project"]) == 2
    assert storage.filesystem(f"gs://{BUCKET}/x")[0].project == "my-project"


def test_browser_urls_of_objects_other_urls_and_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    assert storage.browser_url("gs://b/a dir/x#1.wav") == "https://storage.cloud.google.com/b/a%20dir/x%231.wav"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9023")
    assert storage.browser_url("gs://b/a dir/x.wav") == \
        "http://127.0.0.1:9023/download/storage/v1/b/b/o/a%20dir%2Fx.wav?alt=media"
    assert storage.browser_url("https://example.org/x.wav") == "https://example.org/x.wav"
    assert storage.browser_url(tmp_path / "x y.wav") == (tmp_path / "x y.wav").resolve().as_uri()


def test_a_remote_path_holding_a_placeholder_is_left_for_its_command_to_fill_in_and_copy(gcs: Emulator) -> None:
    from audiotune.storage import Role, local_inputs

    gcs.fs().pipe(f"{BUCKET}/enc_fold_1/config.json", b"{}")
    assert local_inputs(f"gs://{BUCKET}/enc_{{fold}}", Role.INPUT) == f"gs://{BUCKET}/enc_{{fold}}"  # no such object
    copied = Path(local_inputs(f"gs://{BUCKET}/enc_fold_1", Role.INPUT))
    assert (copied / "config.json").read_bytes() == b"{}"


def test_a_table_cell_is_made_absolute_by_name_keeping_links(tmp_path: Path) -> None:
    """A relative cell was resolved through links: two takes linked to one blob became one file (duplicate segment
    uids), and messages named a file the table does not."""
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "3f2a").write_bytes(b"")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "take1.wav").symlink_to("../blobs/3f2a")
    assert storage.resolve("take1.wav", tmp_path / "data") == str(tmp_path / "data" / "take1.wav")
    assert storage.resolve("../data/./take1.wav", tmp_path / "data") == str(tmp_path / "data" / "take1.wav")
    assert storage.resolve("/elsewhere/x.wav", tmp_path) == "/elsewhere/x.wav"
    assert [storage.relative_to(tmp_path / "data")(path) for path in (str(tmp_path / "blobs" / "3f2a"),
                                                                      "gs://b/x.wav")] == ["../blobs/3f2a",
                                                                                           "gs://b/x.wav"]


def test_a_resumed_run_sent_again_that_fails_leaves_none_of_its_earlier_markers(
        gcs: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run's upload (which replaces nothing) stopped after its checkpoints: the earlier config.yaml,
    weights and metrics stayed beside them, and the folder read as a finished run of mixed epochs."""
    from audiotune import uploads

    fs = gcs.fs()
    for name in ("config.yaml", "metrics.json", "model.safetensors", "checkpoints/last.ckpt"):
        fs.pipe(f"{BUCKET}/runs/r/{name}", b"epoch 1")
    local = tmp_path / "r"
    (local / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "metrics.json", "model.safetensors", "checkpoints/last.ckpt"):
        (local / name).write_text("epoch 2")
    put_file = fs.put_file

    def stopped_after_one(source, target, *args, **kwargs):  # noqa: ANN001, ANN202
        if not target.endswith("last.ckpt"):
            raise OSError("connection reset")
        return put_file(source, target, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", stopped_after_one)
    with pytest.raises(storage.StorageError, match="1 of 4 files sent"):
        uploads.upload(local, f"gs://{BUCKET}/runs/r")
    assert sorted(path.split("runs/r/")[1] for path in fs.find(f"{BUCKET}/runs/r")) == ["checkpoints/last.ckpt"]
