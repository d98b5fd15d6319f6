"""The last waveform augmentations on the model's device: what a data worker draws and the device applies to the
padded batch is what the worker would have applied to each clip (the Gaussian noise's values aside)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import tone
from test_batch_features import batches, table_loader

from audiotune.config import AugmentConfig
from audiotune.data.augment import WaveformAugmenter
from audiotune.data.batch_features import WAVEFORMS
from audiotune.data.device_augment import (
    EQ_IMPULSES,
    GAINS,
    NOISE_SEEDS,
    TAIL_KEYS,
    collate_tails,
    convolved,
    finish_tails,
    impulse_response,
)
from audiotune.data.input_spec import InputSpec

LENGTHS = [0.4, 1.3, 0.05, 0.9]  # seconds: mixed lengths in one batch, one clip shorter than the filters' memory


def finished(waves: list[np.ndarray], augmenter: WaveformAugmenter, rate: int) -> tuple[torch.Tensor, list]:
    """The clips as the device finishes them: split by ``augmenter``, batched, collated, finished."""
    parts = [augmenter.split(wave, rate) for wave in waves]
    counts = [len(wave) for wave, _ in parts]
    batch = torch.zeros(len(waves), max(counts))
    for row, (wave, _) in enumerate(parts):
        batch[row, :len(wave)] = torch.from_numpy(wave)
    entries = collate_tails([tail for _, tail in parts], counts)
    return finish_tails(batch, torch.tensor(counts), counts, entries), counts


@pytest.mark.parametrize("rate", [16000, 44100])
def test_the_device_finishes_each_clip_as_its_worker_would(rate: int) -> None:
    waves = [tone(180 + 70 * k, seconds, rate, seed=k) for k, seconds in enumerate(LENGTHS)]
    config = AugmentConfig(eq=0.7, gain=0.7, tshift=0.5)
    in_workers, on_device = WaveformAugmenter(config, seed=5), WaveformAugmenter(config, seed=5)
    drawn = {"eq": 0, "gain": 0, "neither": 0}
    for _ in range(6):
        want = [in_workers(wave, rate) for wave in waves]
        got, counts = finished(waves, on_device, rate)
        for row, wave in enumerate(want):
            assert counts[row] == len(wave)
            scale = max(float(np.abs(wave).max()), 1e-3)
            assert float(np.abs(got[row, :len(wave)].numpy() - wave).max()) <= 2e-7 * scale  # float32's last bit
            assert not got[row, len(wave):].any()  # the padding stays zeros
        params = in_workers.last_params
        drawn["eq"] += "eq_highpass_hz" in params
        drawn["gain"] += "gain_db" in params
        drawn["neither"] += not ({"eq_highpass_hz", "gain_db"} & params.keys())
    assert all(drawn.values())  # clips with the equalisation, the gain and neither


def test_in_float32_the_equalisation_is_within_float32s_rounding() -> None:
    """Where the device has no float64 (MPS), the convolution runs in float32: within 1e-6 of each clip's peak."""
    rate = 16000
    waves = [tone(200 + 90 * k, seconds, rate, seed=k) for k, seconds in enumerate(LENGTHS)]
    augmenter = WaveformAugmenter(AugmentConfig(eq=1.0), seed=2)
    parts = [augmenter.split(wave, rate) for wave in waves]
    counts = [len(wave) for wave in waves]
    batch = torch.zeros(len(waves), max(counts))
    for row, wave in enumerate(waves):
        batch[row, :len(wave)] = torch.from_numpy(wave)
    entries = collate_tails([tail for _, tail in parts], counts)
    exact, rounded = convolved(batch, entries), convolved(batch, entries, float64=False)
    for row, count in enumerate(counts):
        scale = float(exact[row, :count].abs().max())
        assert 0 < float((rounded[row, :count] - exact[row, :count]).abs().max()) <= 1e-6 * scale


def test_an_impulse_response_is_cut_where_it_has_decayed() -> None:
    augmenter = WaveformAugmenter(AugmentConfig(eq=1.0), seed=0)
    sections = augmenter.split(tone(200, 1.0, 16000), 16000)[1].sections
    assert sections is not None
    full = impulse_response(sections, 16000)
    longest = impulse_response(sections, 10**9)
    assert len(full) < 16000 and len(longest) == len(full)  # decayed well before a second
    assert len(impulse_response(sections, 50)) == 50  # no longer than the clip it filters
    impulse = np.zeros(3 * len(full))
    impulse[0] = 1.0
    from scipy import signal
    tail = signal.sosfilt(sections, impulse)[len(full):]
    assert float(np.abs(tail).sum()) < 1e-7 * float(np.abs(full).sum())


def test_the_device_adds_noise_of_the_drawn_share_of_each_clips_peak() -> None:
    rate = 16000
    waves = [tone(200 + 50 * k, seconds, rate, seed=k) for k, seconds in enumerate([2.0, 1.0, 1.5])]
    config = AugmentConfig(gauss=1.0, gain=1.0)
    augmenter = WaveformAugmenter(config, seed=3)
    parts = [augmenter.split(wave, rate) for wave in waves]
    got, counts = finished(waves, WaveformAugmenter(config, seed=3), rate)
    again, _ = finished(waves, WaveformAugmenter(config, seed=3), rate)
    assert torch.equal(got, again)  # the same seed, the same noise
    for row, (wave, tail) in enumerate(parts):
        clean = wave * np.float32(tail.gain)
        noise = got[row, :counts[row]].numpy() - clean
        std = tail.noise_share * max(float(np.abs(clean).max()), 1e-3)
        assert float(noise.std()) == pytest.approx(std, rel=0.05)
        assert abs(float(noise.mean())) < 0.05 * std
        assert not got[row, counts[row]:].any()
    # a clip's noise is its own: alone in a batch it gets the same
    alone = finish_tails(torch.from_numpy(parts[1][0])[None].clone(), torch.tensor([counts[1]]), [counts[1]],
                         collate_tails([parts[1][1]], [counts[1]]))
    assert torch.equal(alone[0], got[1, :counts[1]])
    # and differs from the others'
    first = got[0, :counts[1]] - torch.from_numpy(parts[0][0][:counts[1]] * np.float32(parts[0][1].gain))
    second = got[1, :counts[1]] - torch.from_numpy(parts[1][0] * np.float32(parts[1][1].gain))
    assert abs(float(torch.corrcoef(torch.stack([first, second]))[0, 1])) < 0.1


def test_split_draws_what_the_call_draws_but_the_noises_values() -> None:
    """Without the Gaussian noise, the same seed gives the same draws whether the tail is applied or left; with
    it, everything up to its values."""
    wave = tone(220, 1.0, 16000)
    config = AugmentConfig(eq=0.5, gain=0.5, gauss=0.5, speed=0.5)
    applied, left = WaveformAugmenter(config, seed=11), WaveformAugmenter(config, seed=11)
    for _ in range(20):
        applied(wave, 16000)
        left.split(wave, 16000)
        shared = {key: value for key, value in applied.last_params.items() if key != "gauss_std"}
        assert shared == {key: value for key, value in left.last_params.items() if key != "gauss_share"}
        if "gauss_std" in applied.last_params:
            return  # from here on the noise's values were drawn in one stream and not the other
    pytest.fail("no clip drew the noise")


@pytest.fixture()
def clips(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for k, seconds in enumerate([0.31, 0.93, 0.5, 0.72, 0.26, 1.1]):
        path = tmp_path / f"clip{k}.wav"
        sf.write(path, tone(250 + 90 * k, seconds, 16000, seed=k), 16000)
        rows.append({"uid": f"c{k}", "path": str(path)})
    return pd.DataFrame(rows).set_index("uid")


def test_training_features_on_the_device_are_the_workers_with_the_tail_there(clips: pd.DataFrame) -> None:
    """Equalised and gained clips give the features the workers give, and the workers sent them unfinished."""
    inputs = InputSpec(features="fbank", num_mel_bins=32, utterance_norm="mean", clip_length=0.0).with_min_samples()
    options = {"augment__eq": 0.8, "augment__gain": 0.8, "augment__tshift": 0.5}
    want = batches(clips, inputs, on_device=False, train=True, **options)
    got = batches(clips, inputs, on_device=True, train=True, **options)
    plain = batches(clips, inputs, on_device=True, train=True)
    assert len(got) == len(want)
    for device_batch, worker_batch, plain_batch in zip(got, want, plain):
        assert device_batch["uid"] == worker_batch["uid"]
        assert torch.equal(device_batch["lengths"], worker_batch["lengths"])
        assert float((device_batch["inputs"] - worker_batch["inputs"]).abs().max()) <= 1e-4
        assert not torch.equal(device_batch["inputs"], plain_batch["inputs"])
        assert not TAIL_KEYS & device_batch.keys()


def loader_batches(clips: pd.DataFrame, **options: object) -> list[dict]:
    """The loader's own training batches of an ``on_device`` dataset (before the device finishes them)."""
    inputs = InputSpec(features="fbank", num_mel_bins=32, clip_length=0.0).with_min_samples()
    return list(table_loader(clips, inputs, on_device=True, train=True, **options))


def test_the_workers_leave_the_tail_to_the_device_unless_mixup_mixes_finished_clips(clips: pd.DataFrame) -> None:
    tails = loader_batches(clips, augment__eq=1.0, augment__gain=1.0, augment__gauss=1.0)
    assert all(EQ_IMPULSES in batch and GAINS in batch and len(batch[NOISE_SEEDS]) == 3 for batch in tails)
    plain = loader_batches(clips)
    for left, clean in zip(tails, plain):  # the workers sent the clips as read
        assert torch.equal(left[WAVEFORMS], clean[WAVEFORMS])
    mixed = loader_batches(clips, augment__eq=1.0, augment__gain=1.0, data__mixup=0.5)
    assert not any(TAIL_KEYS & batch.keys() for batch in mixed)
    assert any(not torch.equal(batch[WAVEFORMS], clean[WAVEFORMS]) for batch, clean in zip(mixed, plain))
    assert not any(TAIL_KEYS & batch.keys() for batch in loader_batches(clips, augment__tshift=1.0))
