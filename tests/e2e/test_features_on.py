"""``--features_on``: training, validation and scoring give the same results whether the data workers or the
model's device compute the features; under ``device`` the loaders hand the model's device padded waveforms."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import small_train_args
from safetensors.torch import load_file

from audiotune.cli import build_parser, config_from_args, main
from audiotune.data.batch_features import WAVEFORMS
from audiotune.data.device_augment import EQ_IMPULSES, GAINS
from audiotune.engine.train import train
from audiotune.outputs import METRICS_FILE, MODEL_FILE, PREDICTIONS_FILE


class FirstBatches(pl.Callback):
    """The training loader's first batch as the loader gives it, and as the training step receives it."""

    def __init__(self) -> None:
        self.loaded: dict = {}
        self.received: dict = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: dict,
                             batch_idx: int) -> None:
        if not self.received:
            self.loaded = next(iter(trainer.train_dataloader))
            self.received = {key: value for key, value in batch.items()}


def run(ds: dict, out: Path, place: str, *extra: str) -> FirstBatches:
    args = small_train_args(ds, out, "--accelerator", "cpu", "--features_on", place, "--report", "False", *extra)
    if "mfcc" in extra:  # MFCCs are sized by --n_mels: the small fbank's --num_mel_bins goes
        del args[args.index("--num_mel_bins"):args.index("--num_mel_bins") + 2]
    recorder = FirstBatches()
    train(config_from_args(build_parser().parse_args(args)), callbacks=[recorder])
    return recorder


@pytest.mark.slow
@pytest.mark.parametrize("features", [[], pytest.param(["--features", "mfcc", "--n_mfcc", "24", "--n_mels", "40",
                                                        "--utterance_norm", "meanvar"],
                                                       marks=pytest.mark.slow, id="mfcc")])
def test_training_and_scoring_give_the_same_results_either_way(uid_dataset: dict, tmp_path: Path,
                                                               features: list[str]) -> None:
    workers = run(uid_dataset, tmp_path / "workers", "workers", *features)
    device = run(uid_dataset, tmp_path / "device", "device", *features)
    # where the work happens: the workers' loader gives features; the device's gives padded waveforms
    assert "inputs" in workers.loaded and WAVEFORMS not in workers.loaded
    assert WAVEFORMS in device.loaded and "inputs" not in device.loaded
    # the training step receives the same inputs either way
    assert device.received["uid"] == workers.received["uid"]
    assert torch.equal(device.received["lengths"], workers.received["lengths"])
    torch.testing.assert_close(device.received["inputs"], workers.received["inputs"], atol=1e-4, rtol=0)
    # an epoch of training steps and the validation and test scoring give the same weights and logits
    trained = {name: load_file(str(tmp_path / name / MODEL_FILE)) for name in ("workers", "device")}
    for key, value in trained["workers"].items():
        torch.testing.assert_close(trained["device"][key], value, atol=1e-4, rtol=1e-4)
    scored = {name: pd.read_parquet(tmp_path / name / PREDICTIONS_FILE) for name in ("workers", "device")}
    assert list(scored["device"]["uid"]) == list(scored["workers"]["uid"])
    numbers = [column for column in scored["workers"].columns if pd.api.types.is_float_dtype(scored["workers"][column])]
    assert numbers
    difference = (scored["device"][numbers] - scored["workers"][numbers]).abs().to_numpy().max()
    assert difference <= 1e-4


@pytest.mark.slow
def test_ssast_pretraining_gives_the_same_results_either_way(uid_dataset: dict, tmp_path: Path) -> None:
    """SSAST's fbank (dataset normalisation, silence padding to target_length) through pretraining's own module."""
    small = ["--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape", "16", "--tshape",
             "16", "--fstride", "16", "--tstride", "16", "-bs", "4", "--seed", "2", "--mask_patch", "3",
             "--cluster_factor", "2", "-e", "1", "-lr", "1e-3", "--accelerator", "cpu", "--pad", "silence"]
    for place in ("workers", "device"):
        assert main(["pretrain", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]),
                     "-o", str(tmp_path / place), *small, "--features_on", place]) == 0
    losses = {place: json.loads((tmp_path / place / METRICS_FILE).read_text())["best_val_loss"]
              for place in ("workers", "device")}
    assert losses["device"] == pytest.approx(losses["workers"], abs=1e-4)
    trained = {place: load_file(str(tmp_path / place / MODEL_FILE)) for place in ("workers", "device")}
    for key, value in trained["workers"].items():
        torch.testing.assert_close(trained["device"][key], value, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_equalisation_and_gain_on_the_device_train_as_in_the_workers(uid_dataset: dict, tmp_path: Path) -> None:
    """The workers leave --eq and --gain to the device (the loader's batches carry their draws, and the clips
    unfinished); the training step receives the features the workers would have computed, and trains alike."""
    augment = ["--eq", "1.0", "--gain", "1.0"]
    workers = run(uid_dataset, tmp_path / "workers", "workers", *augment)
    device = run(uid_dataset, tmp_path / "device", "device", *augment)
    assert {EQ_IMPULSES, GAINS} <= device.loaded.keys()
    assert not {EQ_IMPULSES, GAINS} & device.received.keys()
    assert device.received["uid"] == workers.received["uid"]
    torch.testing.assert_close(device.received["inputs"], workers.received["inputs"], atol=1e-4, rtol=0)
    trained = {name: load_file(str(tmp_path / name / MODEL_FILE)) for name in ("workers", "device")}
    for key, value in trained["workers"].items():
        torch.testing.assert_close(trained["device"][key], value, atol=1e-4, rtol=1e-4)
