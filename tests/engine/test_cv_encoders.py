"""cv's encoder per fold ({fold} in an encoder path, local or gs://) and the refusal of a fold whose encoder was
pretrained on its test clips (as the pretraining run's record of the clips it read says)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import HF_TINY, emotion_folds, save_hf_checkpoint

from audiotune.cli import build_parser, main
from audiotune.cli.config_args import config_from_args
from audiotune.config import RunConfig, save_config
from audiotune.data.errors import DataError
from audiotune.data.folds import FoldOptions, build_folds
from audiotune.engine.clips_read import COLUMNS
from audiotune.engine.cv_encoders import encoder_paths, fold_config, fold_configs, shared_clips
from audiotune.outputs import CLIPS_READ_FILE, CONFIG_FILE


def tiny_wav2vec2(path: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(**HF_TINY, codevector_dim=16, proj_codevector_dim=16, mask_time_length=2)
    return save_hf_checkpoint(transformers.Wav2Vec2ForPreTraining(config), path)


def cv_args(audio: Path, folds: Path, out: Path, checkpoint: str, *extra: str) -> list[str]:
    return ["cv", "--model", "hf", "-c", checkpoint, "--freeze", "False", "-d", str(folds), "--audio_dir", str(audio),
            "-o", str(out), "-e", "1", "-bs", "4", "--clip_length", "0", "--num_workers", "0", *extra]


def test_a_fold_placeholder_names_each_folds_encoder_path() -> None:
    config = RunConfig()
    config.model.model, config.model.checkpoint = "ssast", "runs/a_{fold}/model.safetensors"
    config.model.options = {"pretrained_mdl_path": "runs/{fold}/ssast_original.pth", "model_size": "tiny"}
    resolved = fold_config(config, "fold_2")
    assert encoder_paths(resolved) == {"checkpoint": "runs/a_fold_2/model.safetensors",
                                       "pretrained_mdl_path": "runs/fold_2/ssast_original.pth"}
    assert resolved.model.options["model_size"] == "tiny"
    assert encoder_paths(config)["checkpoint"] == "runs/a_{fold}/model.safetensors"  # the given config is kept


def test_clips_are_shared_when_their_file_and_span_overlap() -> None:
    test = pd.DataFrame({"path": ["/a.wav", "/a.wav", "/b.wav", "/c.wav"], "offset": [0, 5, 0, 0],
                         "duration": [2, 2, 1, None]})
    pretrained = pd.DataFrame({"path": ["/a.wav", "/c.wav"], "offset": [1, 3], "duration": [2, None]})
    assert shared_clips(test, pretrained) == 2  # /a.wav 0-2 meets 1-3 (5-7 does not); /c.wav from 3 on meets all
    assert shared_clips(test, pretrained[["path"]]) == 3  # whole files: every clip of /a.wav and /c.wav
    assert shared_clips(test, pd.DataFrame({"path": ["/d.wav"]})) == 0


def test_missing_fold_encoders_are_named_together_before_anything_is_written(
        tmp_path: Path, hf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    audio, folds = emotion_folds(tmp_path, sessions=4, per_session=3, name="fold{}.json")
    for fold in ("fold_1", "fold_3"):
        shutil.copytree(hf_checkpoints["w2v_group"], tmp_path / f"enc_{fold}")
    out = tmp_path / "cv"
    assert main(cv_args(audio, folds, out, str(tmp_path / "enc_{fold}"))) == 2
    err = capsys.readouterr().err
    assert "2 of the folds' encoders not found" in err
    assert f"fold_2: --checkpoint {tmp_path / 'enc_fold_2'}" in err and "fold_4: --checkpoint" in err
    assert "enc_fold_1" not in err and not out.exists()


@pytest.mark.slow
def test_each_fold_fine_tunes_its_own_encoder_and_one_pretrained_on_its_test_clips_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    audio, folds = emotion_folds(tmp_path, per_session=3, name="fold{}.json")
    base = tiny_wav2vec2(tmp_path / "w2v2")
    for k in (1, 2, 3):  # an encoder per fold, pretrained on that fold's Train part only (relative paths)
        monkeypatch.chdir(tmp_path)
        assert main(["pretrain", "--model", "hf", "-c", str(base), "--objective", "tapt", "-d", f"labels/fold{k}.json",
                     "-i", "wavs", "-o", f"runs/tapt_fold_{k}", "-bs", "4", "--training_steps", "1", "--clip_length",
                     "0", "--val_size", "0", "--num_workers", "0"]) == 0
    monkeypatch.chdir(tmp_path.parent)  # the pretrain runs' data is found from the folder they were run in
    out = tmp_path / "cv"
    assert main(cv_args(audio, folds, out, str(tmp_path / "runs/tapt_{fold}/encoder"))) == 0
    for k in (1, 2, 3):
        config = yaml.safe_load((out / f"fold_{k}" / "run_1" / "config.yaml").read_text())
        assert config["model"]["checkpoint"] == str(tmp_path / f"runs/tapt_fold_{k}/encoder")
    recorded = json.loads((out / "folds.json").read_text())["fold_2"]
    assert recorded["encoder"] == {"checkpoint": str(tmp_path / "runs/tapt_fold_2/encoder")}
    capsys.readouterr()

    # fold 1's encoder pretrained on sessions 2 and 3: the folds testing them would be scored on what it heard
    leaking = str(tmp_path / "runs/tapt_fold_1/encoder")
    assert main(cv_args(audio, folds, tmp_path / "one", leaking)) == 2
    err = capsys.readouterr().err
    assert f"fold_2: --checkpoint {leaking} was pretrained ({tmp_path / 'runs/tapt_fold_1'}) on 3 of this fold's 3 " \
           "test clips" in err
    assert "fold_3: " in err and "fold_1: " not in err and not (tmp_path / "one").exists()
    # --allow_overlap scores them anyway, and folds.json says how many clips each fold's encoder heard
    args = build_parser().parse_args(cv_args(audio, folds, tmp_path / "one", leaking, "--allow_overlap"))
    built = build_folds(str(folds), FoldOptions(audio_dir=str(audio)))
    fold_configs(config_from_args(args), built)
    assert [fold.info.get("encoder_pretrained_on_test_clips") for fold in built] == [None, 3, 3]
    # a run written before it recorded its clips, whose pretraining source cannot be read any more: cannot tell
    (tmp_path / "runs/tapt_fold_1" / CLIPS_READ_FILE).unlink()
    (folds / "fold1.json").rename(tmp_path / "moved.json")
    assert main(cv_args(audio, folds, tmp_path / "two", leaking)) == 2
    assert "cannot be read now" in capsys.readouterr().err


def fake_pretrain_run(run: Path, encoder: Path, rows: list[dict]) -> Path:
    """A run directory as `audiotune pretrain` leaves it: config.yaml (an objective), encoder/, clips_read.csv."""
    config = RunConfig()
    config.model.model, config.model.objective = "hf", "tapt"
    save_config(config, run / CONFIG_FILE)
    shutil.copytree(encoder, run / "encoder")
    pd.DataFrame(rows, columns=COLUMNS).to_csv(run / CLIPS_READ_FILE, index=False)
    return run


def session_rows(audio: Path, sessions: tuple[int, ...], stage: str, run: str, per_session: int = 3) -> list[dict]:
    return [{"stage": stage, "run": run, "split": "train", "uid": f"Ses0{s}_{k}.wav",
             "path": str(audio / f"Ses0{s}_{k}.wav")} for s in sessions for k in range(per_session)]


def test_pretrain_records_the_clips_it_read_and_a_changed_table_does_not_fool_cv(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    audio, folds = emotion_folds(tmp_path, per_session=3, name="fold{}.json")
    (audio / "Ses02_9.wav").write_bytes(b"not audio")
    split = json.loads((folds / "fold1.json").read_text())  # Train: sessions 2 and 3
    split["Train"]["Ses02_9.wav"] = "sad"
    source = tmp_path / "pretrain.json"
    source.write_text(json.dumps(split))
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "--model", "hf", "-c", str(tiny_wav2vec2(tmp_path / "w2v2")), "--objective", "tapt",
                 "-d", "pretrain.json", "-i", "wavs", "-o", "runs/tapt", "-bs", "4", "--training_steps", "1",
                 "--clip_length", "0", "--val_size", "0", "--num_workers", "0", "--on_error", "skip"]) == 0
    run = tmp_path / "runs" / "tapt"
    record = pd.read_csv(run / CLIPS_READ_FILE)
    read = sorted(uid for uid in split["Train"] if uid != "Ses02_9.wav")  # the unreadable clip was skipped
    assert sorted(record.uid) == read and set(record.split) == {"train"} and set(record.stage) == {"pretrain"}
    assert sorted(record.path) == [str(audio / uid) for uid in read]  # absolute: found from any folder
    monkeypatch.chdir(tmp_path.parent)

    # the pretraining's table now names session 1's clips; the encoder heard sessions 2 and 3 all the same
    split["Train"] = json.loads((folds / "fold1.json").read_text())["Test"]
    source.write_text(json.dumps(split))
    encoder = str(run / "encoder")
    assert main(cv_args(audio, folds, tmp_path / "cv", encoder)) == 2
    err = capsys.readouterr().err
    assert f"fold_2: --checkpoint {encoder} was pretrained ({run}) on 3 of this fold's 3 test clips" in err
    assert "fold_3: " in err and "fold_1: " not in err and not (tmp_path / "cv").exists()
    # a run written before the record: its config's data as read now (the changed table) is all there is
    (run / CLIPS_READ_FILE).unlink()
    assert main(cv_args(audio, folds, tmp_path / "cv", encoder)) == 2
    err = capsys.readouterr().err
    assert f"fold_1: --checkpoint {encoder} was pretrained ({run}) on 3 of this fold's 3 test clips" in err
    assert "fold_2: " not in err
    source.unlink()
    assert main(cv_args(audio, folds, tmp_path / "cv", encoder)) == 2
    assert f"it was written before runs recorded {CLIPS_READ_FILE}" in capsys.readouterr().err


def test_ptapt_encoders_whose_stage_1_trained_on_a_folds_test_clips_are_refused_naming_that_run(
        tmp_path: Path, hf_checkpoints: dict[str, Path]) -> None:
    audio, folds = emotion_folds(tmp_path, per_session=3, name="fold{}.json")
    run = tmp_path / "ptapt"
    stage1 = str(tmp_path / "stage1")  # trained on every session: fold 1's test clips too
    fake_pretrain_run(run, hf_checkpoints["w2v_group"], session_rows(audio, (2, 3), "pretrain", str(run))
                      + session_rows(audio, (1, 2, 3), "train", stage1))
    args = build_parser().parse_args(cv_args(audio, folds, tmp_path / "cv", str(run / "encoder")))
    with pytest.raises(DataError) as refused:
        fold_configs(config_from_args(args), build_folds(str(folds), FoldOptions(audio_dir=str(audio))))
    message = str(refused.value)
    assert f"fold_1: --checkpoint {run / 'encoder'} was pretrained ({run}) on 3 of this fold's 3 test clips (read 3 " \
           f"by {stage1} (train))" in message
    assert f"fold_2: --checkpoint {run / 'encoder'} was pretrained ({run}) on 3 of this fold's 3 test clips (read 3 " \
           f"by {stage1} (train))" in message


def upload(gcs, local: Path, prefix: str) -> None:
    from conftest import BUCKET

    for file in local.rglob("*"):
        if file.is_file():
            gcs.fs().put_file(str(file), f"{BUCKET}/{prefix}/{file.relative_to(local).as_posix()}")


def test_a_remote_encoder_per_fold_is_copied_per_fold_and_checked(
        gcs, tmp_path: Path, hf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    from conftest import BUCKET

    audio, folds = emotion_folds(tmp_path, per_session=3, name="fold{}.json")
    for k in (1, 3):
        upload(gcs, hf_checkpoints["w2v_group"], f"enc_fold_{k}")
    url = f"gs://{BUCKET}/enc_{{fold}}"
    out = tmp_path / "cv"
    assert main(cv_args(audio, folds, out, url)) == 2  # staging leaves the pattern whole: cv names each missing one
    err = capsys.readouterr().err
    assert "1 of the folds' encoders not found" in err and f"fold_2: --checkpoint gs://{BUCKET}/enc_fold_2" in err
    assert not out.exists()

    upload(gcs, hf_checkpoints["w2v_group"], "enc_fold_2")
    gcs.fs().pipe(f"{BUCKET}/enc_fold_2/marker", b"fold 2's own")
    built = build_folds(str(folds), FoldOptions(audio_dir=str(audio)))
    configs = fold_configs(config_from_args(build_parser().parse_args(cv_args(audio, folds, out, url))), built)
    local = Path(configs["fold_2"].model.checkpoint)
    assert local.is_dir() and (local / "marker").read_bytes() == b"fold 2's own"  # each fold's own copy
    assert not (Path(configs["fold_1"].model.checkpoint) / "marker").exists()
    assert [fold.info["encoder"]["checkpoint"] for fold in built] == [f"gs://{BUCKET}/enc_fold_{k}" for k in (1, 2, 3)]
    save_config(configs["fold_2"], tmp_path / "run.yaml")  # a run's config names the bucket, not the local copy
    assert yaml.safe_load((tmp_path / "run.yaml").read_text())["model"]["checkpoint"] == f"gs://{BUCKET}/enc_fold_2"

    # remote pretraining runs: their records are read there; fold 2's encoder heard its own test clips
    for k, heard in ((1, (2, 3)), (2, (1, 2, 3)), (3, (1, 2))):
        run = fake_pretrain_run(tmp_path / f"tapt_fold_{k}", hf_checkpoints["w2v_group"],
                                session_rows(audio, heard, "pretrain", f"gs://{BUCKET}/tapt_fold_{k}"))
        upload(gcs, run, f"tapt_fold_{k}")
    assert main(cv_args(audio, folds, out, f"gs://{BUCKET}/tapt_{{fold}}/encoder")) == 2
    err = capsys.readouterr().err
    assert f"fold_2: --checkpoint gs://{BUCKET}/tapt_fold_2/encoder was pretrained (gs://{BUCKET}/tapt_fold_2) on 3 " \
           "of this fold's 3 test clips" in err
    assert "fold_1: " not in err and "fold_3: " not in err and not out.exists()


@pytest.mark.slow
def test_cv_fine_tunes_each_folds_own_encoder_from_a_bucket(gcs, tmp_path: Path,
                                                            hf_checkpoints: dict[str, Path]) -> None:
    from conftest import BUCKET

    audio, folds = emotion_folds(tmp_path, per_session=2, name="fold{}.json")
    for k in (1, 2, 3):
        upload(gcs, hf_checkpoints["w2v_group"], f"enc/fold_{k}")
    out = tmp_path / "cv"
    assert main(cv_args(audio, folds, out, f"gs://{BUCKET}/enc/{{fold}}")) == 0
    for k in (1, 2, 3):
        config = yaml.safe_load((out / f"fold_{k}" / "run_1" / "config.yaml").read_text())
        assert config["model"]["checkpoint"] == f"gs://{BUCKET}/enc/fold_{k}"
    recorded = yaml.safe_load((out / "cv_config.yaml").read_text())["config"]["model"]["checkpoint"]
    assert recorded == f"gs://{BUCKET}/enc/{{fold}}"  # the pattern as given: a rerun asks for the same
