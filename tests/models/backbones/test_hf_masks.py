"""Where masked time spans go: each clip's own (clip) or counted from the batch's padded length (batch); drawn on the
tensors' device and applied inside the encoder without reading anything back."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from audiotune.models.backbones.hf_masks import host_time_mask, install_masks, time_mask


def draw(rule: str, frames: list[int], total: int, prob: float, length: int, seed: int, **kw: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    rounding = float(torch.rand((), generator=generator))
    return time_mask(rule, frames, total, prob, length, rounding, generator=generator, **kw).numpy()


def test_clip_spans_stay_inside_each_clip_and_a_clip_too_short_gets_none() -> None:
    for seed in range(20):
        mask = draw("clip", [50, 20, 3, 1], total=50, prob=0.2, length=4, seed=seed, at_least=2)
        assert mask[0].sum() >= 2 * 4 - 3 and not mask[1, 20:].any()  # two spans at least; padding never masked
        assert mask[1, :20].sum() >= 4 and not mask[2].any() and not mask[3].any()  # 3 and 1 frames: < a span
        one = draw("clip", [30], total=40, prob=0.0, length=4, seed=seed, min_masks=1)  # one span of 4 frames
        assert one.shape == (1, 40) and one.sum() == 4 and np.ptp(np.flatnonzero(one)) == 3
        assert np.flatnonzero(one)[-1] < 30


def test_clip_rule_counts_and_places_spans_as_transformers_does() -> None:
    """transformers' _compute_mask_indices (the clip rule): one rounding draw per batch, so clips of one length get
    the same number of spans, and the same share of masked frames on average; every start position as likely."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

    ours, theirs, where = [], [], np.zeros(40)
    np.random.seed(0)
    for seed in range(300):
        mask = draw("clip", [40, 40, 40], 40, 0.13, 1, seed, min_masks=0)  # spans of 1 frame never overlap
        assert len(set(mask.sum(1))) == 1
        ours.append(mask.mean())
        where += mask.sum(0)
        hf = _compute_mask_indices((3, 40), mask_prob=0.13, mask_length=1, min_masks=0)
        assert len(set(hf.sum(1))) == 1
        theirs.append(hf.mean())
    assert np.mean(ours) == pytest.approx(np.mean(theirs), abs=0.01) and np.mean(ours) == pytest.approx(0.13, abs=0.01)
    assert where.min() > 0.5 * where.mean() and where.max() < 1.5 * where.mean()  # no start favoured


def test_a_clip_gets_as_many_span_starts_as_transformers_gives_it() -> None:
    """spans = min(max(min_masks, int(p n / L + u)), T // L, n - L + 1), as _compute_mask_indices counts them: with
    spans of one frame, the masked frames are the count."""
    for seed in range(50):
        generator = torch.Generator().manual_seed(seed)
        rounding = float(torch.rand((), generator=generator))
        frames = [60, 23, 7, 2]
        mask = time_mask("clip", frames, 60, 0.3, 1, rounding, min_masks=2, generator=generator).numpy()
        assert mask.sum(1).tolist() == [min(max(2, int(0.3 * n + rounding)), 60, n) for n in frames]


def test_batch_spans_are_counted_from_the_padded_length_so_short_clips_get_few_as_the_emotion_seed() -> None:
    """transformers 4.10's rule: one count from the batch's padded length, starts over the whole width, cut to each
    clip's frames. A 50-frame clip beside a 500-frame one gets about a tenth of the masked frames it gets alone."""
    clip_share, batch_share, alone_share = [], [], []
    for seed in range(200):
        clip_share.append(draw("clip", [50, 500], 500, 0.08, 15, seed)[0, :50].mean())
        batch = draw("batch", [50, 500], 500, 0.08, 15, seed)
        assert not batch[0, 50:].any()  # padding never masked
        batch_share.append(batch[0, :50].mean())
        alone_share.append(draw("batch", [50], 50, 0.08, 15, seed).mean())
    assert np.mean(batch_share) < 0.2 * np.mean(clip_share)
    assert np.mean(alone_share) == pytest.approx(np.mean(clip_share), abs=0.05)  # alone: the batch is the clip
    # every clip of a batch gets the same number of span starts: the long clip's masked share follows the batch's
    long = draw("batch", [500, 500], 500, 0.08, 15, 1)
    assert 0 < long[0].mean() <= 0.08 * 1.1 + 2 * 15 / 500


def test_a_batch_shorter_than_one_span_gets_no_mask_and_rules_are_declared() -> None:
    for rule in ("clip", "batch"):
        assert not draw(rule, [5, 3], 5, 0.5, 10, 0).any()
    with pytest.raises(ValueError, match="--mask_spans"):
        draw("frame", [5], 5, 0.5, 2, 0)


def test_the_host_draw_repeats_with_its_generator() -> None:
    first = host_time_mask("clip", [40, 30], 40, 0.3, 3, np.random.default_rng(4), at_least=2)
    again = host_time_mask("clip", [40, 30], 40, 0.3, 3, np.random.default_rng(4), at_least=2)
    other = host_time_mask("clip", [40, 30], 40, 0.3, 3, np.random.default_rng(5), at_least=2)
    assert first.dtype == bool and np.array_equal(first, again) and not np.array_equal(first, other)


def encoder(hf_checkpoints: dict[str, Path], rule: str, **masking: float) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(hf_checkpoints["w2v_layer"])
    for key, value in {"mask_time_min_masks": 2, "mask_feature_min_masks": 1, "apply_spec_augment": True,
                       **masking}.items():
        setattr(config, key, value)
    model = AutoModel.from_config(config)
    install_masks(model, rule)
    return model


@contextlib.contextmanager
def reading_nothing_back() -> Iterator[None]:
    """Reading a tensor's values on the host (on a GPU: waiting for the device) fails the block."""
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("a value was read back from the tensors")
    with contextlib.ExitStack() as patches:
        for name in ("item", "tolist", "__bool__", "nonzero"):
            patches.enter_context(mock.patch.object(torch.Tensor, name, refused))
        yield


def test_the_encoder_masks_time_spans_of_each_clips_frames_and_reads_nothing_back(
        hf_checkpoints: dict[str, Path]) -> None:
    model = encoder(hf_checkpoints, "clip", mask_time_prob=0.5, mask_time_length=2).train()
    hidden = torch.randn(2, 12, model.config.hidden_size)
    frames = torch.tensor([[1] * 12, [1] * 5 + [0] * 7])  # the frame attention mask transformers passes
    with reading_nothing_back():
        out = model._mask_hidden_states(hidden.clone(), attention_mask=frames)
    masked = (out == model.masked_spec_embed).all(-1)
    kept = (out == hidden).all(-1)
    assert torch.equal(masked | kept, torch.ones(2, 12, dtype=torch.bool))  # each frame the embedding or itself
    assert bool(masked[0].any().numpy()) and not masked[1, 5:].numpy().any()  # the padding never masked
    assert torch.equal(model.eval()._mask_hidden_states(hidden.clone(), attention_mask=frames), hidden)
    copy = deepcopy(model)  # an EMA or adaptation copy masks with its own embedding and mode
    assert copy._mask_hidden_states.__self__ is copy


def test_given_time_spans_and_channel_spans_are_applied_without_a_boolean_index(
        hf_checkpoints: dict[str, Path]) -> None:
    model = encoder(hf_checkpoints, "batch", mask_time_prob=0.0, mask_feature_prob=0.3, mask_feature_length=2)
    model.masked_spec_embed = torch.nn.Parameter(torch.rand(model.config.hidden_size))
    hidden = torch.randn(2, 6, model.config.hidden_size) + 5.0
    given = torch.zeros(2, 6, dtype=torch.bool)
    given[0, 1:3] = True
    with reading_nothing_back():
        out = model.eval()._mask_hidden_states(hidden.clone(), mask_time_indices=given)  # outside training too
        zeroed = (model.train()._mask_hidden_states(hidden.clone()) == 0).all(1)  # (rows, channels) in every frame
    assert torch.equal(out[0, 1:3], model.masked_spec_embed.expand(2, -1)) and torch.equal(out[1], hidden[1])
    assert zeroed.numpy().sum(1).min() >= 2  # at least one span of 2 channels per clip


def test_the_encoders_masks_follow_torchs_seed_only(hf_checkpoints: dict[str, Path]) -> None:
    """Each epoch seeds torch from the run's seed: the masks of a step are then the same whatever numpy drew before
    (a resumed run starts numpy afresh), and other seeds draw other masks."""
    model = encoder(hf_checkpoints, "clip", mask_time_prob=0.3, mask_time_length=1, mask_feature_prob=0.3,
                    mask_feature_length=1).train()
    hidden = torch.randn(2, 40, model.config.hidden_size)

    def masks(torch_seed: int, numpy_seed: int) -> torch.Tensor:
        torch.manual_seed(torch_seed)
        np.random.seed(numpy_seed)
        return model._mask_hidden_states(hidden.clone()) == hidden

    first = masks(0, 0)
    assert all(torch.equal(first, masks(0, numpy_seed)) for numpy_seed in range(1, 20))
    assert not all(torch.equal(first, masks(torch_seed, 0)) for torch_seed in range(1, 5))
