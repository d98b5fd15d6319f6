"""A batch's items prepared stage by stage equal the items prepared one by one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import tone

from audiotune.data.audio import AudioError
from audiotune.data.augment import AugmentConfig
from audiotune.data.dataset import AudioDataset
from audiotune.data.frontend import FrontEnd
from audiotune.data.input_spec import InputSpec


def clips(folder: Path, rates: list[int], seconds: list[float]) -> pd.DataFrame:
    paths = []
    for i, (rate, length) in enumerate(zip(rates, seconds)):
        paths.append(folder / f"clip{i}.wav")
        sf.write(paths[-1], tone(200 + 37 * i, length, rate, seed=i), rate)
    return pd.DataFrame({"path": [str(p) for p in paths]}, index=pd.Index([f"c{i}" for i in range(len(paths))]))


def assert_same_items(batched: list[dict], single: list[dict], tolerance: float) -> None:
    assert [item["uid"] for item in batched] == [item["uid"] for item in single]
    for ours, theirs in zip(batched, single):
        assert ours["length"] == theirs["length"] and ours["inputs"].shape == theirs["inputs"].shape
        assert float((ours["inputs"] - theirs["inputs"]).abs().max()) <= tolerance
        assert torch.equal(ours["targets"], theirs["targets"])


@pytest.mark.parametrize("norm", [{}, {"utterance_norm": "meanvar", "dataset_mean": -4.0, "dataset_std": 3.0}])
def test_scored_fbank_items_of_a_batch_equal_the_items_one_by_one(tmp_path: Path, norm: dict) -> None:
    table = clips(tmp_path, [8000, 8000, 16000, 44100], [0.3, 1.1, 0.05, 0.7])  # resampled to 16 kHz
    targets = np.arange(8, dtype=np.float32).reshape(4, 2)
    dataset = AudioDataset(table, targets, InputSpec(features="fbank", num_mel_bins=40, clip_length=0, **norm))
    order = [3, 0, 2, 1]
    single = [dataset[i] for i in order]
    calls = []
    real = FrontEnd.extract
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FrontEnd, "extract", lambda self, *args, **kw: calls.append(args[0].shape) or real(self, *args,
                                                                                                      **kw))
        batched = dataset.__getitems__(order)
    assert calls == [(4, 17600)]  # one padded batch of the four clips, the longest 1.1 s at 16 kHz
    assert_same_items(batched, single, 1e-5)


def test_files_of_several_rates_are_prepared_clip_by_clip(tmp_path: Path) -> None:
    table = clips(tmp_path, [8000, 16000, 8000], [0.4, 0.3, 0.5])
    dataset = AudioDataset(table, np.zeros((3, 0)), InputSpec(features="fbank", num_mel_bins=40, resample_rate=0,
                                                              clip_length=0))
    assert_same_items(dataset.__getitems__([0, 1, 2]), [dataset[i] for i in range(3)], 0.0)


def test_a_clip_too_short_for_a_frame_names_its_file_in_a_batch(tmp_path: Path) -> None:
    table = clips(tmp_path, [16000, 16000], [0.5, 0.01])
    dataset = AudioDataset(table, np.zeros((2, 0)), InputSpec(features="fbank", num_mel_bins=40, clip_length=0))
    with pytest.raises(AudioError, match=r"clip1\.wav: clip of 160 samples is shorter than one 25 ms fbank frame"):
        dataset.__getitems__([0, 1])


def test_training_items_keep_their_draws(tmp_path: Path) -> None:
    table = clips(tmp_path, [8000] * 3, [0.4, 0.5, 0.6])
    inputs = InputSpec(features="fbank", num_mel_bins=40, clip_length=0, freqm=8, timem=10)

    first, second = (AudioDataset(table, np.eye(3, dtype=np.float32), inputs, AugmentConfig(gauss=1.0),
                                  mixup_p=0.5, train=True) for _ in range(2))  # the same seed: the same draws
    assert_same_items(first.__getitems__([2, 0, 1]), [second[i] for i in [2, 0, 1]], 0.0)


def test_a_drawn_rows_draws_do_not_depend_on_what_the_process_prepared_before(tmp_path: Path) -> None:
    """A clip's augmentation, mixup and SpecAugment come from the run's seed, the epoch and the row: the same in a
    loader worker that prepared other batches first, or in a run resumed at that epoch."""
    from torch.utils.data import DataLoader

    from audiotune.data.draws import DrawnBatches
    from audiotune.data.samplers import FixedBatches

    table = clips(tmp_path, [8000] * 4, [0.4, 0.5, 0.6, 0.7])
    inputs = InputSpec(features="fbank", num_mel_bins=40, clip_length=0, freqm=8, timem=10)

    def dataset() -> AudioDataset:
        return AudioDataset(table, np.eye(4, dtype=np.float32), inputs, AugmentConfig(gauss=1.0, gain=0.5),
                            mixup_p=0.5, train=True)

    batches = DrawnBatches(FixedBatches([[2, 0], [1, 3], [0, 2]]), seed=7)
    batches.set_epoch(3)
    drawn = list(batches)
    assert drawn[2][0].draw == (7, 3, 0, 1) and drawn[0][1].draw == (7, 3, 0, 0)  # row 0's second draw of epoch 3
    busy, fresh = dataset(), dataset()
    busy.__getitems__([1, 3])  # draws of other clips first
    assert_same_items(busy.__getitems__(drawn[2]), fresh.__getitems__(drawn[2]), 0.0)
    again = busy.__getitems__(drawn[0])  # row 0 drawn a second time in the epoch: new draws
    assert not torch.equal(again[1]["inputs"], busy.__getitems__(drawn[2])[0]["inputs"])

    def loaded(workers: int) -> list[dict]:
        loader = DataLoader(dataset(), batch_sampler=batches, collate_fn=list, num_workers=workers,
                            generator=torch.Generator().manual_seed(0))
        return [item for batch in loader for item in batch]

    assert_same_items(loaded(2), loaded(0), 0.0)  # with or without worker processes
