"""Where masked time spans go: each clip's own (clip) or counted from the batch's padded length (batch)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from audiotune.models.backbones.hf_masks import draws_time_mask, time_mask, time_mask_indices


def test_clip_spans_stay_inside_each_clip_and_a_clip_too_short_gets_none() -> None:
    rng = np.random.default_rng(0)
    mask = time_mask("clip", [50, 20, 3, 1], total=50, prob=0.2, length=4, rng=rng, at_least=2)
    assert mask[0].sum() >= 2 * 4 - 3 and not mask[1, 20:].any()  # two spans at least; padding never masked
    assert mask[1, :20].sum() >= 4 and not mask[2].any() and not mask[3].any()  # 3 and 1 frames: shorter than a span


def test_clip_rule_counts_spans_as_transformers_does() -> None:
    """transformers' _compute_mask_indices (the clip rule it draws in fine-tuning): one rounding draw per batch, so
    clips of one length get the same number of spans, and the same share of masked frames on average."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

    rng, ours, theirs = np.random.default_rng(0), [], []
    np.random.seed(0)
    for _ in range(300):
        mask = time_mask("clip", [40, 40, 40], 40, 0.13, 1, rng, min_masks=0)  # spans of 1 frame never overlap
        assert len(set(mask.sum(1))) == 1
        ours.append(mask.mean())
        hf = _compute_mask_indices((3, 40), mask_prob=0.13, mask_length=1, min_masks=0)
        assert len(set(hf.sum(1))) == 1
        theirs.append(hf.mean())
    assert np.mean(ours) == pytest.approx(np.mean(theirs), abs=0.01) and np.mean(ours) == pytest.approx(0.13, abs=0.01)


def test_batch_spans_are_counted_from_the_padded_length_so_short_clips_get_few_as_the_emotion_seed() -> None:
    """transformers 4.10's rule: one count from the batch's padded length, starts over the whole width, cut to each
    clip's frames. A 50-frame clip beside a 500-frame one gets about a tenth of the masked frames it gets alone."""
    rng = np.random.default_rng(0)
    clip_share, batch_share, alone_share = [], [], []
    for _ in range(200):
        clip_share.append(time_mask("clip", [50, 500], 500, 0.08, 15, rng)[0, :50].mean())
        batch = time_mask("batch", [50, 500], 500, 0.08, 15, rng)
        assert not batch[0, 50:].any()  # padding never masked
        batch_share.append(batch[0, :50].mean())
        alone_share.append(time_mask("batch", [50], 50, 0.08, 15, rng).mean())
    assert np.mean(batch_share) < 0.2 * np.mean(clip_share)
    assert np.mean(alone_share) == pytest.approx(np.mean(clip_share), abs=0.05)  # alone: the batch is the clip
    # every clip of a batch gets the same number of span starts: the long clip's masked share follows the batch's
    long = time_mask("batch", [500, 500], 500, 0.08, 15, np.random.default_rng(1))
    assert 0 < long[0].mean() <= 0.08 * 1.1 + 2 * 15 / 500


def test_a_batch_shorter_than_one_span_gets_no_mask_and_rules_are_declared() -> None:
    rng = np.random.default_rng(0)
    for rule in ("clip", "batch"):
        assert not time_mask(rule, [5, 3], 5, 0.5, 10, rng).any()
    with pytest.raises(ValueError, match="--mask_spans"):
        time_mask("frame", [5], 5, 0.5, 2, rng)


def test_the_clip_frames_are_read_back_only_for_a_mask_drawn_here() -> None:
    """transformers draws the clip rule on a batch longer than a span itself: the frames are not needed then."""
    config = SimpleNamespace(mask_time_prob=0.05, mask_time_length=10, mask_time_min_masks=2)
    model = SimpleNamespace(training=True, device="cpu", config=config)
    assert not draws_time_mask(model, 50, "clip") and time_mask_indices(model, [50, 20], 50, "clip") == {}
    assert draws_time_mask(model, 50, "batch") and draws_time_mask(model, 8, "clip")
    assert time_mask_indices(model, [8, 5], 8, "clip")["mask_time_indices"].shape == (2, 8)
    model.training = False
    assert not draws_time_mask(model, 50, "batch")
    model.training, model.config.mask_time_prob = True, 0.0
    assert not draws_time_mask(model, 8, "clip")
