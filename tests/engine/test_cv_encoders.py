"""cv's encoder per fold ({fold} in an encoder path) and the refusal of a fold whose encoder was pretrained on its
test clips."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import HF_TINY, emotion_folds, save_hf_checkpoint

from audiotune.cli import build_parser, main
from audiotune.cli.flags import config_from_args
from audiotune.config import RunConfig
from audiotune.data.folds import FoldOptions, build_folds
from audiotune.engine.cv_encoders import encoder_paths, fold_config, fold_configs, shared_clips


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
    # a pretraining source that cannot be read any more: cannot tell, so refused
    (folds / "fold1.json").rename(tmp_path / "moved.json")
    assert main(cv_args(audio, folds, tmp_path / "two", leaking)) == 2
    assert "cannot be read now" in capsys.readouterr().err
