"""The one front end (waveform batch → model inputs): per clip it gives what the per-clip feature code gave before
it (kept below as the reference), and in a padded batch each clip gets what it gets alone."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tone

from audiotune.data.audio import AudioError
from audiotune.data.dataset import FeatureExtractor
from audiotune.data.features import kaldi_fbank, mfcc, normalize
from audiotune.data.frontend import FrontEnd, check_feature_config, waveform_batch
from audiotune.data.input_spec import InputSpec
from audiotune.data.spec_augment import draw_masks


def reference_features(config: InputSpec, clip: np.ndarray, rate: int, warp: float = 1.0) -> torch.Tensor:
    """The per-clip feature code the front end replaced (``FeatureExtractor.__call__`` as it was)."""
    waveform = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))
    if config.features == "waveform":
        if config.waveform_norm:
            waveform = (waveform - waveform.mean()) / torch.sqrt(waveform.var(unbiased=False) + 1e-7)
        return waveform
    if config.features == "fbank":
        assert config.num_mel_bins is not None
        feats = kaldi_fbank(waveform, rate, num_mel_bins=config.num_mel_bins, warp=warp)
    else:
        feats = mfcc(waveform, rate, n_mfcc=config.n_mfcc, n_fft=config.n_fft, n_mels=config.n_mels)
    if config.utterance_norm != "none":
        centred = feats - feats.mean(dim=0, keepdim=True)
        if config.utterance_norm == "meanvar":
            centred = centred / torch.sqrt(feats.var(dim=0, unbiased=False, keepdim=True) + 1e-5)
        feats = centred
    if config.dataset_std is not None:
        feats = normalize(feats, config.dataset_mean or 0.0, config.dataset_std)
    return feats


def reference_fitted(inputs: torch.Tensor, target: int) -> tuple[torch.Tensor, int]:
    """The fixed-length padding ``audiotune attention`` did itself: zero frames appended or frames cropped."""
    length = inputs.shape[0]
    if not target or inputs.dim() != 2:
        return inputs, length
    padded = inputs.new_zeros((target, inputs.shape[1]))
    padded[: min(length, target)] = inputs[:target]
    return padded, min(length, target)


CONFIGS = {
    "fbank": InputSpec(features="fbank", num_mel_bins=40),
    "fbank_mean": InputSpec(features="fbank", num_mel_bins=40, utterance_norm="mean"),
    "fbank_meanvar": InputSpec(features="fbank", num_mel_bins=40, utterance_norm="meanvar"),
    "fbank_dataset": InputSpec(features="fbank", num_mel_bins=128, dataset_mean=-4.27, dataset_std=4.57),
    "fbank_meanvar_dataset": InputSpec(features="fbank", num_mel_bins=24, utterance_norm="meanvar",
                                           dataset_mean=-3.0, dataset_std=2.5),
    "fbank_target_length": InputSpec(features="fbank", num_mel_bins=32, target_length=64, dataset_mean=-4.0,
                                         dataset_std=4.0),
    "mfcc": InputSpec(features="mfcc", n_mfcc=40, n_mels=64),
    "mfcc_mean": InputSpec(features="mfcc", n_mfcc=13, n_mels=40, utterance_norm="mean"),
    "mfcc_meanvar": InputSpec(features="mfcc", utterance_norm="meanvar"),
    "mfcc_dataset_target_length": InputSpec(features="mfcc", n_mfcc=20, n_mels=40, n_fft=512, target_length=50,
                                                dataset_mean=1.0, dataset_std=30.0),
    "waveform": InputSpec(features="waveform"),
    "waveform_norm": InputSpec(features="waveform", waveform_norm=True),
}
# the same arithmetic gives the same bits; a variance over masked frames differs by float32 rounding only
EXACT = {"fbank", "fbank_mean", "fbank_dataset", "fbank_target_length", "mfcc", "mfcc_mean",
         "mfcc_dataset_target_length", "waveform"}
CLIPS = [(16000, 300, 0.5), (16000, 700, 0.93), (16000, 220, 1.31), (8000, 400, 0.77), (22050, 500, 0.61)]


def largest_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype
    return float((got - want).abs().max()) if want.numel() else 0.0


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_clip_gets_what_the_per_clip_code_gave(name: str) -> None:
    config = CONFIGS[name]
    extract = FeatureExtractor(config)
    for seed, (rate, pitch, seconds) in enumerate(CLIPS):
        clip = tone(pitch, seconds, rate, seed=seed)
        want = reference_features(config, clip, rate)
        got = extract(clip, rate, "clip.wav")  # the dataset's path: a batch of one, no target_length
        # the model's input as `attention` and an exported graph give it: fitted to target_length
        fitted, lengths = FrontEnd(config, rate)(*waveform_batch([clip]))
        want_fitted, want_length = reference_fitted(want, config.target_length)
        assert int(lengths[0]) == want_length
        if name in EXACT:
            assert torch.equal(got, want) and torch.equal(fitted[0], want_fitted), (name, rate)
        else:
            assert largest_difference(got, want) <= 2e-5 * max(1.0, float(want.abs().max())), (name, rate)
            assert largest_difference(fitted[0], want_fitted) <= 2e-5 * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("warp", [0.9, 1.07, 1.1])
def test_a_vtlp_warp_gives_what_the_per_clip_code_gave(warp: float) -> None:
    for norm in ("none", "meanvar"):
        config = InputSpec(features="fbank", num_mel_bins=40, utterance_norm=norm, vtlp=1.0)
        clip = tone(450, 0.8, 16000, seed=7)
        got = FeatureExtractor(config)(clip, 16000, "clip.wav", warp)
        want = reference_features(config, clip, 16000, warp)
        if norm == "none":
            assert torch.equal(got, want)
        else:
            assert largest_difference(got, want) <= 1e-5
        assert not torch.equal(got, FeatureExtractor(config)(clip, 16000, "clip.wav"))


def test_per_clip_warps_in_a_padded_batch_give_each_clip_its_own_features() -> None:
    config = InputSpec(features="fbank", num_mel_bins=24, utterance_norm="mean")
    clips = [tone(300, 0.5, 16000, seed=1), tone(700, 0.93, 16000, seed=2), tone(500, 0.7, 16000, seed=3)]
    warps = [0.92, 1.0, 1.08]
    inputs, lengths = FrontEnd(config, 16000).extract(*waveform_batch(clips), warps)
    for row, (clip, warp) in enumerate(zip(clips, warps)):
        alone = reference_features(config, clip, 16000, warp)
        assert int(lengths[row]) == alone.shape[0]
        assert largest_difference(inputs[row, :alone.shape[0]], alone) <= 1e-5
        assert not inputs[row, alone.shape[0]:].any()  # zero past the clip, as the collator pads
    with pytest.raises(ValueError, match="2 VTLP warps for a batch of 3"):
        FrontEnd(config, 16000).extract(*waveform_batch(clips), [1.0, 1.1])
    with pytest.raises(ValueError, match="--features mfcc has none"):
        FrontEnd(InputSpec(features="mfcc"), 16000).extract(*waveform_batch(clips), warps)


def test_the_silence_frame_is_unchanged() -> None:
    for name in ("fbank", "fbank_meanvar_dataset", "mfcc", "mfcc_mean"):
        config = CONFIGS[name]
        silence = FeatureExtractor(replace(config, pad="silence")).pad_frame(16000)
        want = reference_features(config, np.zeros(1600, dtype=np.float32), 16000)
        assert silence is not None
        assert largest_difference(silence, want[want.shape[0] // 2]) <= 1e-5, name
    assert FeatureExtractor(replace(CONFIGS["waveform"], pad="silence")).pad_frame() is None


def test_the_pad_frame_is_computed_once_per_front_end_and_pads_to_target_length() -> None:
    for pad in ("silence", "zero_before_norm"):
        front = FrontEnd(InputSpec(features="fbank", num_mel_bins=24, target_length=40, pad=pad, dataset_mean=-4.0,
                                   dataset_std=4.0), 16000)
        frame = front.pad_frame()
        assert frame is not None and frame is front.pad_frame() and "padding" not in front.state_dict()
        inputs, lengths = front(*waveform_batch([tone(300, 0.2, 16000)]))
        assert inputs.shape == (1, 40, 24) and int(lengths[0]) == 18
        assert torch.equal(inputs[0, 18:], frame.expand(22, 24)), pad
    assert FrontEnd(InputSpec(features="fbank", num_mel_bins=24, target_length=40), 16000).pad_frame() is None


def test_clips_too_short_for_one_frame_are_errors_naming_the_file() -> None:
    with pytest.raises(AudioError, match="short.wav: clip of 399 samples is shorter than one 25 ms fbank frame"):
        FeatureExtractor(CONFIGS["fbank"])(np.ones(399, dtype=np.float32), 16000, "short.wav")
    assert FeatureExtractor(CONFIGS["fbank"])(np.ones(400, dtype=np.float32), 16000, "ok.wav").shape == (1, 40)
    with pytest.raises(AudioError, match="short.wav: clip of 200 samples is too short for n_fft=400"):
        FeatureExtractor(CONFIGS["mfcc"])(np.ones(200, dtype=np.float32), 16000, "short.wav")
    with pytest.raises(ValueError, match=r"n_mfcc \(80\) cannot exceed n_mels \(40\)"):
        FeatureExtractor(InputSpec(features="mfcc", n_mels=40))
    with pytest.raises(ValueError, match="--dataset_mean -4.0: acts only with --dataset_std"):
        FrontEnd(InputSpec(features="fbank", num_mel_bins=8, dataset_mean=-4.0), 16000)


SSAST_MEAN, SSAST_STD = -4.2677393, 4.5689974


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("norm", ["none", "meanvar"])
def test_specaugment_masks_before_the_dataset_normalisation(norm: str) -> None:
    """As the seeds and the original SSAST: a masked cell is a zero normalised like every cell, (0 - mean) / (2 std),
    and the cells outside the masks are the unmasked features."""
    config = InputSpec(features="fbank", num_mel_bins=40, utterance_norm=norm, freqm=20, timem=30,
                       dataset_mean=SSAST_MEAN, dataset_std=SSAST_STD)
    clip = torch.from_numpy(tone(420, 0.8, 16000, seed=3))
    front_end = FrontEnd(config, 16000)
    plain = front_end.clip(clip)
    masked = front_end.clip(clip, 1.0, seeded(5))
    (bin_start, bin_end), (frame_start, frame_end) = draw_masks(40, plain.shape[0], 20, 30, seeded(5))
    assert bin_end > bin_start and frame_end > frame_start  # both masks have a width
    fill = (0.0 - SSAST_MEAN) / (2.0 * SSAST_STD)  # +0.467
    assert torch.allclose(masked[:, bin_start:bin_end], torch.tensor(fill))
    assert torch.allclose(masked[frame_start:frame_end], torch.tensor(fill))
    kept = torch.ones_like(plain, dtype=torch.bool)
    kept[:, bin_start:bin_end] = kept[frame_start:frame_end] = False
    assert torch.equal(masked[kept], plain[kept])
    unnormalised = FrontEnd(replace(config, dataset_mean=None, dataset_std=None), 16000).clip(clip, 1.0, seeded(5))
    assert not unnormalised[~kept].any()  # without dataset statistics a masked cell stays 0


def test_batched_masks_are_each_clips_own_masks() -> None:
    """``extract`` with one generator per clip of a padded batch gives each clip what ``clip`` gives it alone."""
    config = InputSpec(features="fbank", num_mel_bins=24, utterance_norm="mean", freqm=10, timem=20,
                       dataset_mean=-3.0, dataset_std=2.5)
    clips = [tone(300, 0.5, 16000, seed=1), tone(700, 0.93, 16000, seed=2), tone(500, 0.3, 16000, seed=3)]
    front_end = FrontEnd(config, 16000)
    inputs, lengths = front_end.extract(*waveform_batch(clips), generators=[seeded(k) for k in range(3)])
    for row, clip in enumerate(clips):
        alone = front_end.clip(torch.from_numpy(clip), 1.0, seeded(row))
        assert int(lengths[row]) == alone.shape[0]
        assert largest_difference(inputs[row, :alone.shape[0]], alone) <= 1e-5
        assert not inputs[row, alone.shape[0]:].any()  # zero past the clip, as the collator pads
    with pytest.raises(ValueError, match="2 SpecAugment generators for a batch of 3"):
        front_end.extract(*waveform_batch(clips), generators=[seeded(0), seeded(1)])


def test_the_time_mask_is_drawn_over_the_target_length_frames() -> None:
    """As the seeds, which padded or cut the fbank to target_length before masking: the time mask's span is drawn
    over those frames, and the part of it past a short clip's own frames masks nothing (padding stays padding)."""
    config = InputSpec(features="fbank", num_mel_bins=16, timem=60, target_length=100)
    clip = torch.from_numpy(tone(350, 0.4, 16000, seed=4))  # 38 frames
    front_end = FrontEnd(config, 16000)
    plain = front_end.clip(clip)
    for seed in range(6):
        _, (start, end) = draw_masks(16, 100, 0, 60, seeded(seed))
        masked = front_end.clip(clip, 1.0, seeded(seed))
        zero_frames = (masked == 0).all(dim=1).nonzero().flatten()
        assert torch.equal(zero_frames, torch.arange(min(start, plain.shape[0]), min(end, plain.shape[0])))
    own = replace(config, target_length=0)  # without target_length: over the clip's own frames
    _, (start, end) = draw_masks(16, plain.shape[0], 0, 60, seeded(0))
    zero_frames = (FrontEnd(own, 16000).clip(clip, 1.0, seeded(0)) == 0).all(dim=1).nonzero().flatten()
    assert torch.equal(zero_frames, torch.arange(start, end))


def test_a_dataset_mean_without_its_std_names_both_flags() -> None:
    """--dataset_mean alone (a command that reads the features without the train checks: probe, extract -c)."""
    with pytest.raises(ValueError, match=r"^--dataset_mean -4.0: acts only with --dataset_std: the two go together"):
        check_feature_config(InputSpec(features="fbank", num_mel_bins=40, dataset_mean=-4.0))
    check_feature_config(InputSpec(features="fbank", num_mel_bins=40, dataset_mean=-4.0, dataset_std=2.0))


@pytest.mark.parametrize("target_length", [0, 64])
@pytest.mark.parametrize("pad", ["silence", "zero_before_norm"])
def test_a_clip_padded_with_a_pad_frame_gets_in_a_batch_what_it_gets_alone(pad: str, target_length: int) -> None:
    """With --pad silence (or zero_before_norm), the frames between a short clip's end and the batch's widest
    clip were zeros, the pad frame only after it: an exported SSAST scored a clip by the clips beside it."""
    front = FrontEnd(InputSpec(features="fbank", num_mel_bins=32, target_length=target_length or None, pad=pad,
                               dataset_mean=-5.0, dataset_std=4.0), 16000)
    clips = [tone(300, 0.3, 16000), tone(500, 0.62, 16000)]
    batch, lengths = front(*waveform_batch(clips))
    for index, clip in enumerate(clips):
        alone, frames = front(*waveform_batch([clip]))
        width = alone.shape[1]
        assert int(frames[0]) == int(lengths[index])
        assert torch.equal(batch[index, :width], alone[0])
        assert torch.equal(batch[index, width:], front.pad_frame().expand_as(batch[index, width:]))
