"""Resampling: soxr's own samples, one resampler kept per thread, and the count of a resampled span (the seeds')."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import tone

from audiotune.data.audio import AudioSpec, check_clip, load_clip, prepared_length
from audiotune.data.resample import resample, resampled_count


@pytest.mark.parametrize(("rate", "target"), [(8000, 16000), (44100, 16000), (22050, 16000), (16000, 8000),
                                              (11025, 44100), (96000, 16000)])
def test_the_kept_resampler_gives_soxr_s_own_samples_clip_after_clip(rate: int, target: int) -> None:
    """``round``: soxr's own samples; ``ceil``: the same samples, and where soxr rounds the last output instant
    inside the clip away, that instant too, as soxr gives it for the clip followed by silence."""
    rng = np.random.default_rng(rate)
    for length in (1, 37, 4001, 30000, 5, 8192):  # long then short: nothing of one clip reaches the next
        clip = (0.3 * rng.standard_normal(length)).astype(np.float32)
        own = soxr.resample(clip, rate, target)
        assert np.array_equal(resample(clip, rate, target, "round"), own)
        ours = resample(clip, rate, target)
        assert ours.dtype == np.float32 and len(ours) == -(-length * target // rate) == resampled_count(length, rate,
                                                                                                         target)
        assert np.array_equal(ours[:len(own)], own)
        followed = soxr.resample(np.concatenate([clip, np.zeros(rate // 10, np.float32)]), rate, target)
        assert np.array_equal(ours, followed[:len(ours)])
    stereo = (0.3 * rng.standard_normal((2, 4001))).astype(np.float32)  # channels: soxr's own call
    assert np.array_equal(resample(stereo, rate, target, "round"), soxr.resample(stereo.T, rate, target).T)
    assert np.array_equal(resample(stereo, rate, target), np.stack([resample(row, rate, target) for row in stereo]))


def test_a_tap_of_8192_samples_at_96_khz_gives_the_seed_s_1366_samples_per_channel(tmp_path: Path) -> None:
    """tap2key: 8192 samples at 96 kHz resampled to 16 kHz (librosa in the seed) are 1366 per channel, 10928
    interleaved, which its training script asserts; soxr's own count is 1365 (runs of config version 5)."""
    path = tmp_path / "tap_8chan.wav"
    sf.write(path, tone(400, 8192 / 96000, 96000, channels=8)[:8192], 96000, subtype="FLOAT")
    for length, per_channel in (("ceil", 1366), ("round", 1365)):
        spec = AudioSpec(channel_mode="interleave", clip_length=0, resampled_length=length)
        clip, rate = load_clip(str(path), spec)
        assert rate == 16000 and len(clip) == 8 * per_channel == prepared_length(8192, 96000, spec, 8)
        assert check_clip(str(path), spec) == len(clip)
    with pytest.raises(ValueError, match="resampled length 'floor': choose one of"):
        AudioSpec(resampled_length="floor")
