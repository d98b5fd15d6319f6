"""A run directory written by an earlier release (before the runtime section and before backbones declared their
own options: its config.yaml lists every backbone's options flat and the device options under train) loads,
evaluates and extracts, and scores its test clips as it did when it was trained; a resumed run keeps the loss of the
config version it was written with."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import HF_TINY, make_uid_dataset, save_hf_checkpoint, small_train_args

from audiotune.cli import main
from audiotune.config import WEIGHTED_MEAN_VERSION
from audiotune.models.backbones import input_spec
from audiotune.models.checkpoint import load_run

EARLIER = Path(__file__).parents[1] / "fixtures" / "earlier_release_run"


def test_a_run_of_an_earlier_release_scores_as_it_did(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(EARLIER, run)
    config, _ = load_run(run)
    assert config.runtime.num_workers == 0 and config.model.options["lin_neurons"] == 16
    # its config.yaml holds the input its backbone resolved then: that is its input as it is
    inputs = input_spec(config)
    assert (inputs.num_mel_bins, inputs.freqm, inputs.timem, inputs.min_samples) == (24, 8, 10, 720)
    ds = make_uid_dataset(tmp_path)  # the same generated clips the run was trained and tested on
    test = ds["table"].loc[pd.read_csv(ds["split"] / "test.csv", dtype={"uid": str})["uid"]].copy()
    test["path"] = [str(ds["prefix"] / uid / "waveform.wav") for uid in test.index]
    table = tmp_path / "test.csv"
    test.to_csv(table, index_label="uid")
    assert main(["evaluate", "--run", str(run), "-d", str(table)]) == 0
    assert main(["extract", "--run", str(run), "-d", str(table)]) == 0
    then = pd.read_parquet(EARLIER / "predictions.parquet").query("split == 'test'").set_index("uid")
    now = pd.read_parquet(run / "evaluate" / "predictions.parquet").set_index("uid").loc[then.index]
    scores = [c for c in then.columns if c.startswith("score:")]
    np.testing.assert_allclose(now[scores].to_numpy(), then[scores].to_numpy(), atol=1e-5)
    assert len(pd.read_parquet(run / "embeddings_ft.parquet")) == len(then)


@pytest.mark.parametrize("version", [WEIGHTED_MEAN_VERSION - 1, 1])
def test_a_resumed_run_of_an_earlier_config_version_keeps_its_class_weighted_loss(tmp_path: Path,
                                                                                   version: int) -> None:
    """A run written before config version 6 resumes with the class-weighted loss it trained with (the plain mean of
    its weighted rows: training and validation share the loss); a run of this version with the weighted mean. A
    frozen encoder and a zero learning rate keep the weights, so only the loss's normalisation moves the validation
    loss. Version 1 (its audio and features sections held the resolved input) too."""
    ds = make_uid_dataset(tmp_path)
    split = ds["split"]
    train = pd.read_csv(split / "train.csv", dtype={"uid": str})
    train[~train.uid.isin(["cat1", "dan1", "dan3"])].to_csv(split / "train.csv", index=False)  # 8 low, 5 high
    val = pd.read_csv(split / "val.csv", dtype={"uid": str})
    val[val.uid.isin(["eve0", "eve1", "eve2"])].to_csv(split / "val.csv", index=False)  # low, high, low: one batch
    ds["labels"].write_text("pitch\n")
    fixed = ("--class_weights", "balanced", "--freeze", "true", "-lr", "0")
    earlier, current = tmp_path / "earlier", tmp_path / "current"
    assert main(small_train_args(ds, current, *fixed)) == 0
    shutil.copytree(current, earlier)
    saved = yaml.safe_load((earlier / "config.yaml").read_text())
    if version == 1:  # the input the backbone resolved, as version 1 saved it
        resolved = input_spec(load_run(current)[0]).to_dict()
        for section in ("audio", "features"):
            saved[section].update({k: resolved[k] for k in saved[section] if k in resolved})
    (earlier / "config.yaml").write_text(yaml.safe_dump({**saved, "version": version}))
    for run in (earlier, current):
        assert main([*small_train_args(ds, run, *fixed), "-e", "2", "--resume"]) == 0

    def val_loss(run: Path) -> np.ndarray:
        log = pd.read_csv(run / "logs" / "metrics.csv")
        return log.dropna(subset=["val_loss"]).groupby("epoch")["val_loss"].last().to_numpy()

    weights = np.array([1 / 8, 1 / 5]) / np.mean([1 / 8, 1 / 5])  # low, high
    first, resumed = val_loss(current)
    assert resumed == pytest.approx(first, rel=1e-5)
    # the weighted mean (divided by the rows' summed weights) becomes the mean over the three rows
    assert val_loss(earlier)[1] == pytest.approx(first * (2 * weights[0] + weights[1]) / 3, rel=1e-5)
    assert yaml.safe_load((earlier / "config.yaml").read_text())["version"] == max(version, 2)


def test_a_run_made_before_backbone_options_were_added_resumes_with_the_same_command(tmp_path: Path) -> None:
    """Options added to a backbone since a run was made are not in its config.yaml: resumed with the command that
    made it, they resolve as the run went without them (no change to allow); one given anew is a change."""
    transformers = pytest.importorskip("transformers")
    encoder = save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)),
                                 tmp_path / "encoder")
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--model", "hf", "-c", str(encoder), "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l",
            str(ds["labels"]), "-o", str(run), "-bs", "4", "--freeze", "false"]
    assert main([*args, "-e", "1"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    added = ("layerdrop", "gradient_checkpointing", "mask_spans", "tapt_loss")  # not there before
    assert all(name in saved["model"] for name in added)
    saved["model"] = {k: v for k, v in saved["model"].items() if k not in added}
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert main([*args, "-e", "2", "--resume", "--layerdrop", "0.5"]) == 2  # given anew: a change
    assert main([*args, "-e", "2", "--resume"]) == 0
    assert len(pd.read_csv(run / "logs" / "metrics.csv").dropna(subset=["train_loss_epoch"])) == 2


def test_a_run_of_version_3_resumes_with_its_features_named(tmp_path: Path) -> None:
    """Version 3 saved --features fbank for ECAPA-TDNN's own input (read back as unset): resumed with the command that
    made it, `--features fbank` is no change; `--features mfcc` is."""
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    args = [*small_train_args(ds, run), "--features", "fbank"]
    assert main(args) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["features"]["features"] = "fbank"
    (run / "config.yaml").write_text(yaml.safe_dump({**saved, "version": 3}))
    assert main([*args, "--features", "mfcc", "-e", "2", "--resume"]) == 2
    assert main([*args, "-e", "2", "--resume"]) == 0
