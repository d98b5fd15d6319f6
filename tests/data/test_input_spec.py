"""InputSpec: the input the audio and features sections describe, its crops and its JSON form."""
from __future__ import annotations

import json

from audiotune.config import AudioConfig, FeatureConfig
from audiotune.data.input_spec import InputSpec


def test_the_sections_as_they_are_with_unset_widths_and_minimum_filled() -> None:
    audio = AudioConfig(resample_rate=8000, channel_select=[2, 3], clip_length=4.0)
    features = FeatureConfig(features="fbank", num_mel_bins=40, dataset_mean=-4.0, dataset_std=2.0)
    spec = InputSpec.from_sections(audio, features)
    assert (spec.resample_rate, spec.channel_select, spec.num_mel_bins, spec.dataset_mean) == (8000, (2, 3), 40, -4.0)
    assert (spec.freqm, spec.timem) == (0, 0)  # an unset SpecAugment width masks nothing
    assert spec.min_samples == 200  # one 25 ms frame at 8 kHz
    assert InputSpec.from_sections(AudioConfig(min_samples=999), features).min_samples == 999  # given: kept
    assert InputSpec.from_sections(audio, FeatureConfig(features="mfcc", n_fft=512)).min_samples == 257
    assert InputSpec.from_sections(audio, FeatureConfig(features="waveform")).min_samples == 0
    # the sections are read, never written
    assert (features.freqm, audio.min_samples, audio.eval_clip_length) == (None, 0, -1.0)


def test_training_and_scoring_crops() -> None:
    same = InputSpec.from_sections(AudioConfig(clip_length=3.0), FeatureConfig())
    assert (same.audio(train=True).clip_length, same.audio().clip_length) == (3.0, 3.0)  # -1: the training crop
    whole = InputSpec.from_sections(AudioConfig(clip_length=3.0, eval_clip_length=0.0, remove_dc=True),
                                    FeatureConfig())
    assert (same.audio().remove_dc, whole.audio(train=True).remove_dc, whole.audio().remove_dc) == (False, True, True)
    assert (whole.audio(train=True).clip_length, whole.audio().clip_length) == (3.0, 0.0)
    assert whole.training_crop().audio().clip_length == 3.0
    every_frame = whole.whole_clips()
    assert (every_frame.audio(train=True).clip_length, every_frame.audio().clip_length) == (0.0, 0.0)
    assert whole.eval_clip_length == 0.0  # replacing gives a new spec; this one is unchanged


def test_the_json_form_lists_every_field() -> None:
    spec = InputSpec.from_sections(AudioConfig(channel_select=[1]), FeatureConfig(num_mel_bins=24))
    read = json.loads(json.dumps(spec.to_dict()))
    assert read["channel_select"] == [1] and read["vtlp_range"] == [0.9, 1.1] and read["num_mel_bins"] == 24
    assert set(read) == set(InputSpec.__dataclass_fields__)
