"""Seed arguments become a config through the train command's own flags."""
from __future__ import annotations

from pathlib import Path

import pytest

from audiotune.cli.import_ import seed_config


def test_seed_arguments_are_read_as_the_train_flags_of_their_names() -> None:
    config, applied, left = seed_config({"model": "ecapa_tdnn", "learning_rate": 1e-3, "scheduler": "None",
                                         "reduce": False, "layer": -1, "lin_neurons": 96, "fbank": True,
                                         "label_groups": [["a"]], "n_class": [1]}, "exp/args.pkl")
    assert (config.train.learning_rate, config.train.scheduler, config.audio.channel_mode) == (1e-3, "none", "none")
    assert (config.model.options["lin_neurons"], config.features.features) == (96, "fbank")
    assert left == ["label_groups", "n_class"] and "learning_rate" in applied


def test_the_seeds_reduce_is_read_by_the_train_flag_as_their_sum_of_the_channels() -> None:
    summed, applied, _ = seed_config({"model": "ecapa_tdnn", "reduce": True}, "exp/args.pkl")
    assert summed.audio.channel_mode == "sum" and applied == ["model", "reduce"]
    assert seed_config({"model": "ecapa_tdnn", "reduce": "True", "mono": "mean"}, "args.pkl")[0].audio.channel_mode \
        == "mean"


def test_a_value_the_train_flag_refuses_names_the_file() -> None:
    with pytest.raises(ValueError, match="exp/args.pkl: a seed argument is not a valid train flag: .*--optim"):
        seed_config({"model": "ecapa_tdnn", "optim": "sgd"}, "exp/args.pkl")
    with pytest.raises(ValueError, match="exp/args.pkl: invalid option"):
        seed_config({"model": "ecapa_tdnn", "final_dropout": 1.5}, "exp/args.pkl")


def test_a_seed_argument_that_acts_only_in_pretraining_is_left_out_of_the_imported_run() -> None:
    """The SSAST seed saved --mask_patch with every run; a fine-tuning run never used it, and train refuses it."""
    config, applied, left = seed_config({"model": "ssast", "task": "ft_cls", "mask_patch": 300, "cluster_factor": 3,
                                         "fstride": 64}, "args.pkl")
    assert {"mask_patch", "cluster_factor"} <= set(left) and {"task", "fstride"} <= set(applied)
    assert "mask_patch" not in config.model.options and config.model.options["fstride"] == 64


def test_import_clusters_takes_the_seeds_datadir_as_cv_does(tmp_path, capsys: pytest.CaptureFixture) -> None:
    """--datadir is --audio_dir in both commands: one declaration, one role (audio, which may be gs://)."""
    import json

    import numpy as np
    import soundfile as sf

    from audiotune.cli import build_parser, main
    from audiotune.cli.flags import path_roles

    cluster_args = ["import", "clusters", "all.json", "--num_clusters", "4", "--out", "l.parquet"]
    for command in (cluster_args, ["cv", "-d", "folds", "-o", "cv"]):
        args = build_parser().parse_args([*command, "--datadir", "wavs"])
        assert (args.audio_dir, path_roles(args)["audio_dir"].value) == ("wavs", "audio")
    (tmp_path / "wavs").mkdir()
    sf.write(tmp_path / "wavs" / "a.wav", np.zeros(16000, dtype=np.float32), 16000)  # 49 wav2vec2 frames
    labels = tmp_path / "all.json"
    labels.write_text(json.dumps({"a.wav": [[0] * 49]}))
    out = tmp_path / "l.parquet"
    assert main(["import", "clusters", str(labels), "--num_clusters", "4", "--out", str(out),
                 "--datadir", str(tmp_path / "wavs")]) == 0
    assert "not checked" not in capsys.readouterr().out
    labels.write_text(json.dumps({"a.wav": [[0] * 5]}))
    assert main(["import", "clusters", str(labels), "--num_clusters", "4", "--out", str(tmp_path / "m.parquet"),
                 "--datadir", str(tmp_path / "wavs")]) != 0
    assert "'a.wav' has 5 frame labels, but its audio makes 49 wav2vec2 frames" in capsys.readouterr().err


def test_import_naip_names_a_missing_weights_file_before_its_arguments(tmp_path, capsys: pytest.CaptureFixture) -> None:
    from audiotune.cli import main

    weights = tmp_path / "nope_mdl.pt"
    assert main(["import", "naip", str(weights), "-o", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{weights}: not found" in err and "args.pkl" not in err


def test_import_naip_with_an_unreachable_c_hub_id_asks_for_a_local_copy(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    import argparse
    import pickle

    import torch
    from huggingface_hub import constants

    from audiotune.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    weights = tmp_path / "exp" / "split_1_mdl.pt"
    weights.parent.mkdir()
    torch.save({"model.wav2vec2.feature_extractor.conv.weight": torch.zeros(1),
                "classifiers.0.head.outproj.weight": torch.zeros(1, 4)}, weights)
    with open(weights.parent / "args.pkl", "wb") as handle:
        pickle.dump(argparse.Namespace(checkpoint="facebook/wav2vec2-base", label_groups=[["a"]]), handle)
    hub_id = "facebook/wav2vec2-base-960h"
    assert main(["import", "naip", str(weights), "-c", hub_id, "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"(-c {hub_id}: that hub id cannot be reached offline; pass a local copy" in err
    assert "pass -c with" not in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("kind", ["naip", "tap2key"])
def test_an_import_writes_its_run_with_the_run_directory_and_overwrite_flags_of_train(kind: str) -> None:
    """-o/--exp_dir is the run directory to write and --overwrite [BOOL] replaces it, in train and every import
    that writes a run; tap2key's first spelling, --out, still reads."""
    from audiotune.cli import build_parser
    from audiotune.cli.flags import path_roles
    from audiotune.storage import Role

    spellings = ["-o", "--exp_dir", "--exp-dir", *(["--out"] if kind == "tap2key" else [])]
    for flag in spellings:
        args = build_parser().parse_args(["import", kind, "seed", flag, "r"])
        assert (args.exp_dir, path_roles(args)["exp_dir"], vars(args)["train.overwrite"]) == \
            ("r", Role.RUN_OUTPUT, False)
    for given, expected in (([], True), (["True"], True), (["False"], False)):
        for command in (["import", kind, "seed", "-o", "r"], ["train", "-o", "r"]):
            assert vars(build_parser().parse_args([*command, "--overwrite", *given]))["train.overwrite"] is expected


def test_import_ser_names_what_it_writes_with_o_as_every_import_does() -> None:
    from audiotune.cli import build_parser
    from audiotune.cli.flags import path_roles
    from audiotune.storage import Role

    for flag in ("--out", "-o"):
        args = build_parser().parse_args(["import", "ser", "c.ckpt", flag, "encoder"])
        assert (args.out, path_roles(args)["out"]) == ("encoder", Role.OUTPUT_DIR)


def test_import_ser_takes_overwrite_as_train_does() -> None:
    from audiotune.cli import build_parser

    for given, expected in (([], True), (["yes"], True), (["False"], False)):
        args = build_parser().parse_args(["import", "ser", "c.ckpt", "--out", "r", "--classes", "a", "--overwrite",
                                          *given])
        assert vars(args)["train.overwrite"] is expected


def test_import_ser_with_classes_refuses_a_run_in_a_bucket_as_a_local_one(gcs, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """With --classes, --out is a run directory: one in a bucket that holds a run is refused without --overwrite
    before anything is read or written (an encoder folder without --classes is not a run directory)."""
    from conftest import BUCKET

    from audiotune.cli import build_parser, main
    from audiotune.cli.flags import path_roles
    from audiotune.cli.import_ import default_paths
    from audiotune.outputs import RUN_MARKERS
    from audiotune.storage import Role

    url = f"gs://{BUCKET}/runs/vft"
    for classes, role in (([], Role.OUTPUT_DIR), (["--classes", "a", "b"], Role.RUN_OUTPUT)):
        args = build_parser().parse_args(["import", "ser", "c.ckpt", "--out", url, *classes])
        default_paths(args)
        assert path_roles(args)["out"] is role
    marker = tmp_path / RUN_MARKERS[0]
    marker.write_text("{}")
    gcs.fs().put_file(str(marker), f"{BUCKET}/runs/vft/{marker.name}")
    assert main(["import", "ser", str(tmp_path / "vft.ckpt"), "--out", url, "--classes", "a", "b"]) == 2
    assert f"{url}: " in capsys.readouterr().err
