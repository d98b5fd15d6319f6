"""SpecAugment's masks (one band of bins and one of frames per clip, drawn as torchaudio draws them) and SSAST's
noise on features."""
from __future__ import annotations

import pytest
import torch

from audiotune.data.spec_augment import apply_masks, draw_masks, spec_noise


def test_masks_are_one_band_of_bins_and_one_of_frames_per_clip() -> None:
    feats = torch.rand(2, 1024, 128) + 1.0  # strictly positive, so zeros come only from masks
    masks = [draw_masks(128, 1024, 48, 192, torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    out = apply_masks(feats, masks)
    assert torch.all(feats >= 1.0)  # input untouched
    for row, ((freq_start, freq_end), (time_start, time_end)) in enumerate(masks):
        zero_cols = (out[row] == 0).all(dim=0).nonzero().flatten()
        zero_rows = (out[row] == 0).all(dim=1).nonzero().flatten()
        assert 0 < len(zero_cols) < 48 and 0 < len(zero_rows) < 192
        assert torch.equal(zero_cols, torch.arange(freq_start, freq_end))  # one contiguous band
        assert torch.equal(zero_rows, torch.arange(time_start, time_end))
    assert masks[0] != masks[1]  # each clip its own draws
    assert masks[0] == draw_masks(128, 1024, 48, 192, torch.Generator().manual_seed(0))


def test_no_masks_without_widths_and_none_past_the_frames() -> None:
    feats = torch.rand(1, 100, 128) + 1.0
    assert draw_masks(128, 100, 0, 0, torch.Generator().manual_seed(0)) == ((0, 0), (0, 0))
    out = apply_masks(feats, [((0, 0), (0, 0))])
    assert torch.equal(out, feats) and out is not feats
    past = apply_masks(feats, [((0, 0), (90, 130))])  # a time mask drawn over more frames than the clip has
    assert (past[0, 90:] == 0).all() and torch.equal(past[0, :90], feats[0, :90])
    with pytest.raises(ValueError, match="2 mask spans"):
        apply_masks(feats, [((0, 0), (0, 0))] * 2)


def test_spec_noise_changes_features() -> None:
    feats = torch.rand(100, 128)
    out = spec_noise(feats, generator=torch.Generator().manual_seed(0))
    assert out.shape == feats.shape and not torch.equal(out, feats)
    assert torch.equal(out, spec_noise(feats, generator=torch.Generator().manual_seed(0)))


def test_a_mask_wider_than_its_axis_is_said_with_how_often_it_covers_all_of_it() -> None:
    from audiotune.data.spec_augment import oversized_masks

    assert oversized_masks(8, 10, 24, 0) == []  # within the bins; frames unknown (whole clips)
    said = oversized_masks(100, 1000, 24, 200)
    assert said[0].startswith("--freqm 100: wider than the 24 bins it masks;") and "76 % of the masks" in said[0]
    assert said[1].startswith("--timem 1000: wider than the 200 frames it masks;") and "80 % of the masks" in said[1]
    generator = torch.Generator().manual_seed(0)
    spans = [draw_masks(24, 100, 100, 0, generator)[0] for _ in range(2000)]
    whole = sum(start <= 0 and end >= 24 for start, end in spans) / len(spans)
    assert abs(whole - 0.76) < 0.03  # what the warning says is what the draws do
