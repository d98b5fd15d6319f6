"""Features on the model's device: loaders of an ``on_device`` dataset give padded waveforms, and
:class:`BatchFeatures` turns each batch into what the workers' per-clip features and the collator give."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import tone
from torch.utils.data import DataLoader

from audiotune.config import RunConfig
from audiotune.data.audio import AudioError
from audiotune.data.batch_features import COUNTS, NUM_SAMPLES, WAVEFORMS, BatchFeatures
from audiotune.data.checked_audio import scan_audio
from audiotune.data.input_spec import InputSpec
from audiotune.data.loading import batch_features, make_dataset, make_loader

SECONDS = [0.31, 0.93, 0.5, 0.72, 0.26, 1.1, 0.64]  # mixed lengths in every batch


@pytest.fixture()
def clips(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for k, seconds in enumerate(SECONDS):
        path = tmp_path / f"clip{k}.wav"
        sf.write(path, tone(250 + 90 * k, seconds, 16000, seed=k), 16000)
        rows.append({"uid": f"c{k}", "path": str(path)})
    return pd.DataFrame(rows).set_index("uid")


def table_loader(table: pd.DataFrame, inputs: InputSpec, on_device: bool, train: bool = False,
                 **options: object) -> DataLoader:
    """The table's loader in batches of 3, with ``options`` (``section__name``: value) set in its config."""
    config = RunConfig()
    config.train.batch_size = 3
    for key, value in options.items():
        section, name = key.split("__")
        setattr(getattr(config, section), name, value)
    scanned, _ = scan_audio(table, inputs.audio(train=train), "t")
    targets = np.eye(len(scanned), dtype=np.float32)
    dataset = make_dataset(config, inputs, scanned, targets, train=train, on_device=on_device)
    return make_loader(config, dataset, scanned, train, device=torch.device("cpu"))


def batches(table: pd.DataFrame, inputs: InputSpec, on_device: bool, train: bool = False, **options: object
            ) -> list[dict]:
    """Every batch of the table's loader as the model receives it (features computed after the loader for an
    ``on_device`` dataset), with the loader's own batch first where it holds waveforms."""
    loader = table_loader(table, inputs, on_device, train, **options)
    features = batch_features(loader)
    assert (features is not None) == on_device
    received = []
    for batch in loader:
        if on_device:
            assert WAVEFORMS in batch and "inputs" not in batch  # the workers computed no features
            assert batch[WAVEFORMS].dim() == 2 and batch[WAVEFORMS].dtype == torch.float32
            batch = features(batch)
        received.append(batch)
    return received


def assert_same_batches(got: list[dict], want: list[dict], tolerance: float = 1e-4) -> None:
    assert len(got) == len(want)
    for device_batch, worker_batch in zip(got, want):
        assert device_batch["uid"] == worker_batch["uid"]
        assert torch.equal(device_batch["lengths"], worker_batch["lengths"])
        assert torch.equal(device_batch["targets"], worker_batch["targets"])
        assert device_batch["inputs"].shape == worker_batch["inputs"].shape
        assert float((device_batch["inputs"] - worker_batch["inputs"]).abs().max()) <= tolerance


SPECS = {
    "fbank": InputSpec(features="fbank", num_mel_bins=40),
    "mfcc": InputSpec(features="mfcc", n_mfcc=20, n_mels=40),
    "fbank_normalised_silence": InputSpec(features="fbank", num_mel_bins=24, utterance_norm="meanvar",
                                          dataset_mean=-3.0, dataset_std=2.5, pad="silence"),
    "mfcc_normalised_target_length": InputSpec(features="mfcc", n_mfcc=13, n_mels=40, utterance_norm="mean",
                                               dataset_mean=1.0, dataset_std=30.0, target_length=60, pad="silence"),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_device_features_are_the_workers_features(clips: pd.DataFrame, name: str) -> None:
    inputs = SPECS[name].with_min_samples()
    want = batches(clips, inputs, on_device=False)
    got = batches(clips, inputs, on_device=True)
    assert any(len(set(batch["lengths"].tolist())) > 1 for batch in want)  # clips of several lengths share a batch
    assert_same_batches(got, want)


def test_training_draws_are_the_workers_draws(clips: pd.DataFrame) -> None:
    """Per-clip VTLP warps, mixup and SpecAugment masks are drawn as the workers draw them."""
    inputs = InputSpec(features="fbank", num_mel_bins=32, utterance_norm="mean", vtlp=1.0, freqm=8, timem=12,
                       clip_length=0.0).with_min_samples()
    want = batches(clips, inputs, on_device=False, train=True, data__mixup=0.5)
    got = batches(clips, inputs, on_device=True, train=True, data__mixup=0.5)
    assert_same_batches(got, want)
    plain = batches(clips, InputSpec(features="fbank", num_mel_bins=32, utterance_norm="mean",
                                     clip_length=0.0).with_min_samples(), on_device=True, train=True)
    assert not torch.equal(got[0]["inputs"], plain[0]["inputs"])  # the draws did change the features
    for batch in got:  # every clip got its own masks: no two clips masked alike
        masked_bins = [tuple((row == 0).all(dim=0).nonzero().flatten().tolist()) for row in batch["inputs"]]
        assert len(set(masked_bins)) > 1


@pytest.mark.parametrize("target_length", [0, 60])
def test_masks_before_the_dataset_normalisation_on_the_device_and_in_the_workers(clips: pd.DataFrame,
                                                                                 target_length: int) -> None:
    """Both places mask before the dataset normalisation (the seeds' order), with the same draws: a masked cell is
    (0 - mean) / (2 std), the same on the device as in the workers, whatever the padding and target_length."""
    mean, std = -4.2677393, 4.5689974
    inputs = InputSpec(features="fbank", num_mel_bins=32, utterance_norm="meanvar", freqm=12, timem=20,
                       dataset_mean=mean, dataset_std=std, target_length=target_length, pad="silence",
                       clip_length=0.0).with_min_samples()
    want = batches(clips, inputs, on_device=False, train=True)
    got = batches(clips, inputs, on_device=True, train=True)
    assert_same_batches(got, want)
    fill = (0.0 - mean) / (2.0 * std)
    masked_clips = 0
    for batch in got:
        for row, frames in enumerate(batch["lengths"].tolist()):
            own = batch["inputs"][row, :frames]
            masked_bins = torch.isclose(own, torch.tensor(fill)).all(dim=0)
            masked_clips += bool(masked_bins.any())
            assert not (own == 0).all(dim=0).any()  # no bin masked with an unnormalised 0
    assert masked_clips >= len(SECONDS) // 2


def test_noise_moves_each_clips_own_frames_on_the_device(clips: pd.DataFrame) -> None:
    base = InputSpec(features="fbank", num_mel_bins=24, clip_length=0.0).with_min_samples()
    noisy = InputSpec(features="fbank", num_mel_bins=24, clip_length=0.0, noise=True).with_min_samples()
    plain = batches(clips, base, on_device=True, train=True)
    first = batches(clips, noisy, on_device=True, train=True)
    again = batches(clips, noisy, on_device=True, train=True)
    for clean, moved, repeated in zip(plain, first, again):
        assert torch.equal(moved["inputs"], repeated["inputs"])  # the same seed, the same noise
        assert torch.equal(moved["lengths"], clean["lengths"])
        for row, frames in enumerate(clean["lengths"].tolist()):
            assert not torch.allclose(moved["inputs"][row, :frames], clean["inputs"][row, :frames])
            assert not moved["inputs"][row, frames:].any()  # padding stays padding


def test_a_clip_too_short_for_one_frame_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, tone(300, 0.02, 16000), 16000)
    table = pd.DataFrame({"path": [str(path)]}, index=pd.Index(["s"], name="uid"))
    dataset = make_dataset(RunConfig(), InputSpec(features="fbank", num_mel_bins=24), table,
                           np.zeros((1, 0), np.float32), on_device=True)
    with pytest.raises(AudioError, match=r"short.wav: clip of 320 samples is shorter than one 25 ms fbank frame"):
        dataset[0]


def test_one_rate_per_file_cannot_be_batched() -> None:
    with pytest.raises(ValueError, match="--resample_rate 0"):
        BatchFeatures(InputSpec(features="fbank", num_mel_bins=24, resample_rate=0))


def test_a_batch_of_model_inputs_passes_unchanged() -> None:
    batch = {"uid": ["a"], "inputs": torch.ones(1, 3, 4), "lengths": torch.tensor([3])}
    assert BatchFeatures(InputSpec(features="fbank", num_mel_bins=4))(batch) is batch


def test_training_batches_carry_their_clips_lengths_as_plain_numbers_for_the_masks(clips: pd.DataFrame) -> None:
    """SpecAugment's masks are drawn on the host: the counts come with the batch, and the features computed
    from them are those computed from the lengths read back from the batch's device."""
    inputs = InputSpec(features="fbank", num_mel_bins=32, freqm=8, timem=12, clip_length=0.0).with_min_samples()
    config = RunConfig()
    config.train.batch_size = 3
    scanned, _ = scan_audio(clips, inputs.audio(train=True), "t")
    dataset = make_dataset(config, inputs, scanned, np.eye(len(scanned), dtype=np.float32), train=True,
                           on_device=True)
    loader = make_loader(config, dataset, scanned, True, device=torch.device("cpu"))
    features = batch_features(loader)
    for batch in loader:
        assert batch[COUNTS] == batch[NUM_SAMPLES].tolist() and len(set(batch[COUNTS])) > 1
        without = {key: value for key, value in batch.items() if key != COUNTS}
        assert torch.equal(features(batch)["inputs"], features(without)["inputs"])


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("train", [False, True])
def test_features_are_queued_on_the_device_without_waiting_for_it(clips: pd.DataFrame, name: str,
                                                                   train: bool) -> None:
    """Scoring and training batches carry their clips' lengths as plain numbers: the features (MFCC's check of the
    shortest clip too) are computed from a batch on an accelerator without reading a value back from it."""
    from conftest import OnDevice

    loader = table_loader(clips, SPECS[name].with_min_samples(), on_device=True, train=train)
    features = batch_features(loader)
    for batch in loader:
        assert batch[COUNTS] == batch[NUM_SAMPLES].tolist()
        on_device = {**batch, WAVEFORMS: batch[WAVEFORMS].as_subclass(OnDevice),
                     NUM_SAMPLES: batch[NUM_SAMPLES].as_subclass(OnDevice)}
        computed = features(on_device)
        with OnDevice.read_back():
            assert torch.equal(computed["inputs"], features(batch)["inputs"])


def test_a_batch_whose_host_lengths_fill_it_is_read_as_unpadded() -> None:
    from audiotune.data.batch_features import batch_lengths
    from audiotune.data.dataset import Collator

    def items(*lengths: int) -> list[dict]:
        return [{"uid": str(n), "inputs": torch.ones(n, 3), "length": n, "targets": torch.zeros(1)} for n in lengths]

    assert batch_lengths(Collator()(items(7, 7))) is None  # no clip padded: the backbone needs no mask
    assert batch_lengths(Collator(target_length=5)(items(7, 5))) is None  # cropped to the batch's length
    for padded in (Collator()(items(7, 3)), Collator(target_length=9)(items(7, 7))):
        assert torch.equal(batch_lengths(padded), padded["lengths"])
    features = {"inputs": torch.ones(2, 4, 3), "lengths": torch.tensor([4, 4])}  # computed on the device
    assert batch_lengths(features) is features["lengths"]  # no host lengths: the device's, as they are


@pytest.mark.parametrize("target_length", [0, 40, 200])
def test_device_features_of_clips_of_one_length_say_so_on_the_host(tmp_path: Path, target_length: int) -> None:
    """Features computed on the device of a batch of one clip length carry each clip's frames as plain numbers
    (so the batch reads as unpadded where it fills its width); a batch of several lengths does not guess them."""
    from audiotune.data.batch_features import HOST_LENGTHS, batch_lengths

    rows = []
    for k, seconds in enumerate([0.8, 0.8, 0.8, 0.5, 0.8, 0.8]):
        path = tmp_path / f"one{k}.wav"
        sf.write(path, tone(300 + 50 * k, seconds, 16000, seed=k), 16000)
        rows.append({"uid": f"o{k}", "path": str(path)})
    inputs = InputSpec(features="fbank", num_mel_bins=24, target_length=target_length).with_min_samples()
    got = batches(pd.DataFrame(rows).set_index("uid"), inputs, on_device=True)
    equal = [batch for batch in got if len(set(batch["lengths"].tolist())) == 1 and HOST_LENGTHS in batch]
    assert len(equal) == 1 and all(HOST_LENGTHS not in batch for batch in got if batch not in equal)
    batch = equal[0]
    assert batch[HOST_LENGTHS] == batch["lengths"].tolist()
    assert (batch_lengths(batch) is None) == (int(batch["lengths"][0]) == batch["inputs"].shape[1])
    assert (batch_lengths(batch) is None) == (target_length in (0, 40))  # 0.8 s: 78 frames, cropped or padded
