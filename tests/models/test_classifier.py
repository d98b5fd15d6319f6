"""The common classifier: heads, shared dense, pooling, embeddings, padding independence."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import tone

from audiotune.config import ClassifierConfig, HeadSpec, RunConfig
from audiotune.data.checked_audio import scan_audio
from audiotune.data.loading import make_dataset, make_loader
from audiotune.models.backbones import input_spec
from audiotune.models.backbones.ecapa import EcapaBackbone, EcapaOptions
from audiotune.models.checkpoint import build_classifier
from audiotune.models.classifier import Classifier, masked_pool, without_last_frame

HEADS = [HeadSpec("word", "categorical", ["word"], ["a", "b", "c"]), HeadSpec("x+y", "binary", ["x", "y"])]


class ToyBackbone(torch.nn.Module):
    """Three hidden states of a linear map, so layer choice and weighting are visible."""

    num_layers = 2
    num_hidden_states = weighted_states = 3
    embedding_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def hidden_states(self, inputs: torch.Tensor, lengths: torch.Tensor):
        first = self.proj(inputs)
        mask = torch.arange(inputs.shape[1])[None] < lengths[:, None]
        return [first, 2 * first, 3 * first + 1], mask

    def load_pretrained(self, path: str) -> None:
        raise NotImplementedError


def small_backbone() -> EcapaBackbone:
    return EcapaBackbone(EcapaOptions(12, lin_neurons=8, channels=(16, 16, 48), kernel_sizes=(5, 3, 1),
                                      dilations=(1, 2, 1), attention_channels=8, res2net_scale=2, se_channels=8))


def test_heads_follow_the_seed_layout_and_concatenate_outputs() -> None:
    model = Classifier(small_backbone(), HEADS, ClassifierConfig(clf_bottleneck=5, layernorm=True))
    keys = set(model.state_dict())
    assert {"classifiers.0.head.dense.weight", "classifiers.0.head.norm.weight", "classifiers.0.head.outproj.weight",
            "classifiers.1.head.outproj.bias"} <= keys
    assert model.classifiers[0].head.outproj.out_features == 3 and model.classifiers[1].head.outproj.out_features == 2
    out = model.eval()(torch.randn(2, 30, 12), torch.tensor([30, 20]))
    assert out.shape == (2, 5)


def test_options_change_the_architecture() -> None:
    plain = Classifier(small_backbone(), HEADS, ClassifierConfig(clf_bottleneck=5))
    assert isinstance(plain.dense, torch.nn.Identity) and "norm" not in dict(plain.classifiers[0].head.named_children())
    shared = Classifier(small_backbone(), HEADS, ClassifierConfig(shared_dense=True, sd_bottleneck=6, clf_bottleneck=5,
                                                                  activation="gelu", final_dropout=0.5))
    assert shared.dense.dense.out_features == 6 and shared.classifiers[0].head.dense.in_features == 6
    assert isinstance(shared.classifiers[0].head.gelu, torch.nn.GELU)
    assert shared.classifiers[0].head.dropout.p == 0.5
    no_act = Classifier(small_backbone(), HEADS, ClassifierConfig(activation="none"))
    assert [n for n, _ in no_act.classifiers[0].head.named_children()] == ["dense", "dropout", "outproj"]


def test_masked_pooling_ignores_padded_frames() -> None:
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_pool(hidden, mask, "mean").item() == 2.0
    assert masked_pool(hidden, mask, "sum").item() == 4.0
    assert masked_pool(hidden, mask, "max").item() == 3.0


def test_layer_selection_and_weighted_sum() -> None:
    torch.manual_seed(0)
    inputs, lengths = torch.randn(2, 5, 4), torch.tensor([5, 3])
    chosen = Classifier(ToyBackbone(), HEADS, ClassifierConfig(layer=0))
    last = Classifier(ToyBackbone(), HEADS, ClassifierConfig(layer=-1))
    last.backbone.load_state_dict(chosen.backbone.state_dict())
    pt0 = chosen.extract_embedding(inputs, lengths, "pt")
    assert torch.allclose(last.extract_embedding(inputs, lengths, "pt"), 3 * pt0 + 1, atol=1e-5)
    assert torch.allclose(chosen.extract_embedding(inputs, lengths, "pt", layer=1), 2 * pt0, atol=1e-5)
    with pytest.raises(ValueError, match="--layer 3"):
        Classifier(ToyBackbone(), HEADS, ClassifierConfig(layer=3))
    weighted = Classifier(ToyBackbone(), HEADS, ClassifierConfig(weighted=True))
    weighted.backbone.load_state_dict(chosen.backbone.state_dict())
    # zero logits: the plain average of the three states
    assert torch.allclose(weighted.extract_embedding(inputs, lengths, "wt"), (6 * pt0 + 1) / 3, atol=1e-5)
    with pytest.raises(ValueError, match="--weighted"):
        chosen.extract_embedding(inputs, lengths, "wt")


def test_frame_activation_and_dropping_the_last_frame_change_what_is_pooled() -> None:
    torch.manual_seed(0)
    inputs, lengths = torch.randn(2, 5, 4), torch.tensor([5, 3])
    plain = Classifier(ToyBackbone(), HEADS, ClassifierConfig(layer=0))
    first = plain.backbone.hidden_states(inputs, lengths)[0][0]
    relu = Classifier(ToyBackbone(), HEADS, ClassifierConfig(layer=0, frame_activation="relu"))
    drop = Classifier(ToyBackbone(), HEADS, ClassifierConfig(layer=0, pool_drop_last=True))
    for model in (relu, drop):
        model.load_state_dict(plain.state_dict())
    expected_relu = torch.stack([first[0].relu().mean(0), first[1, :3].relu().mean(0)])
    expected_drop = torch.stack([first[0, :4].mean(0), first[1, :2].mean(0)])  # the seed's out_len - 1 frames
    assert torch.allclose(relu.extract_embedding(inputs, lengths, "pt"), expected_relu, atol=1e-6)
    assert torch.allclose(drop.extract_embedding(inputs, lengths, "pt"), expected_drop, atol=1e-6)
    logits = {name: model.eval()(inputs, lengths) for name, model in (("plain", plain), ("relu", relu),
                                                                          ("drop", drop))}
    assert not torch.allclose(logits["plain"], logits["relu"]) and not torch.allclose(logits["plain"], logits["drop"])
    # cached pooled states (every state pooled apart) give the logits of the whole forward pass
    weighted = Classifier(ToyBackbone(), HEADS, ClassifierConfig(weighted=True, frame_activation="relu",
                                                                 pool_drop_last=True)).eval()
    assert torch.allclose(weighted.forward_pooled(weighted.pooled_states(inputs, lengths)), weighted(inputs, lengths),
                          atol=1e-6)
    one_frame = torch.tensor([[True, False, False]])  # a clip of one frame keeps it
    assert torch.equal(without_last_frame(one_frame), one_frame)
    assert without_last_frame(torch.tensor([[True, True, True, False]])).tolist() == [[True, True, False, False]]


class SignedBackbone(ToyBackbone):
    """Hidden states whose frame maxima are not those of their sum."""

    def hidden_states(self, inputs: torch.Tensor, lengths: torch.Tensor):
        states, mask = super().hidden_states(inputs, lengths)
        return [states[0], -states[0], states[0].pow(2)], mask


def test_raw_layer_weights_weigh_each_pooled_state_as_the_seeds_did() -> None:
    torch.manual_seed(0)
    inputs, lengths = torch.randn(2, 5, 4), torch.tensor([5, 3])
    softmax = Classifier(SignedBackbone(), HEADS, ClassifierConfig(weighted=True, pooling_mode="max")).eval()
    raw = Classifier(SignedBackbone(), HEADS, ClassifierConfig(weighted=True, pooling_mode="max",
                                                               layer_weights="raw")).eval()
    raw.load_state_dict(softmax.state_dict() | {"layer_weights": torch.full((3,), 1 / 3)})
    assert torch.allclose(Classifier(ToyBackbone(), HEADS, raw.config).layer_weights.detach(), torch.full((3,), 1 / 3))
    states, mask = raw.backbone.hidden_states(inputs, lengths)
    pooled = torch.stack([masked_pool(state, mask, "max") for state in states])  # (3, B, D)
    with torch.no_grad():
        raw.layer_weights.copy_(torch.tensor([0.7, -0.2, 1.4]))  # free weights, one below zero
    expected = torch.einsum("s,sbd->bd", torch.tensor([0.7, -0.2, 1.4]), pooled)
    assert torch.allclose(raw.extract_embedding(inputs, lengths, "wt"), expected, atol=1e-5)
    assert torch.equal(raw.state_weights(), raw.layer_weights)
    # the softmax sum max-pools the summed states: another embedding, and cached pooled states cannot give it
    softmax_wt = softmax.extract_embedding(inputs, lengths, "wt")
    assert not torch.allclose(softmax_wt, pooled.mean(0), atol=1e-3)
    assert torch.allclose(softmax_wt, masked_pool(sum(states) / 3, mask, "max"), atol=1e-5)
    # raw weights on pooled states: the cache's pooled states give the whole forward pass's logits
    assert torch.allclose(raw.forward_pooled(raw.pooled_states(inputs, lengths)), raw(inputs, lengths), atol=1e-6)


def test_weighted_sum_weights_train() -> None:
    torch.manual_seed(0)
    model = Classifier(ToyBackbone(), HEADS, ClassifierConfig(weighted=True, final_dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    inputs, lengths = torch.randn(8, 5, 4), torch.full((8,), 5)
    for _ in range(5):
        optimizer.zero_grad()
        model(inputs, lengths).pow(2).mean().backward()
        optimizer.step()
    assert not torch.allclose(model.layer_weights.detach(), torch.zeros(3))


def test_embedding_kinds() -> None:
    model = Classifier(small_backbone(), HEADS, ClassifierConfig(shared_dense=True, sd_bottleneck=6,
                                                                 clf_bottleneck=5)).eval()
    inputs, lengths = torch.randn(3, 25, 12), torch.full((3,), 25)
    assert model.extract_embedding(inputs, lengths, "pt").shape == (3, 8)
    assert model.extract_embedding(inputs, lengths, "st").shape == (3, 6)
    ft_mean = model.extract_embedding(inputs, lengths, "ft", pooling="mean")
    ft_sum = model.extract_embedding(inputs, lengths, "ft", pooling="sum")
    assert ft_mean.shape == (3, 5) and torch.allclose(ft_sum, 2 * ft_mean, atol=1e-6)
    shared = model.dense(model.extract_embedding(inputs, lengths, "pt"))
    expected = (model.classifiers[0].head.dense(shared) + model.classifiers[1].head.dense(shared)) / 2
    assert torch.allclose(ft_mean, expected, atol=1e-6)
    with pytest.raises(ValueError, match="embedding type"):
        model.extract_embedding(inputs, lengths, "xx")
    # the seeds' extraction merged the heads by its own --pooling_mode, mean unless given: not by the run's
    for trained_pooling in ("sum", "max"):
        summed = Classifier(small_backbone(), HEADS, ClassifierConfig(shared_dense=True, sd_bottleneck=6,
                                                                      clf_bottleneck=5, pooling_mode=trained_pooling))
        summed.load_state_dict(model.state_dict())
        assert torch.allclose(summed.eval().extract_embedding(inputs, lengths, "ft"), expected, atol=1e-6)
    # as the seeds, which asserted it: without a shared dense layer st would be the pt embedding
    unshared = Classifier(small_backbone(), HEADS, ClassifierConfig(clf_bottleneck=5)).eval()
    with pytest.raises(ValueError, match="embedding type 'st' needs a model trained with --shared_dense"):
        unshared.extract_embedding(inputs, lengths, "st")


def test_a_clips_output_does_not_depend_on_its_batch(tmp_path) -> None:
    """Through the real loader: each clip alone vs. in one batch of mixed lengths (ECAPA's padding is exact):
the same embeddings and logits."""
    rows = []
    for i, seconds in enumerate([0.5, 0.5, 0.9, 1.3, 0.5, 1.3]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, tone(200 + 90 * i, seconds, 16000, seed=i), 16000)
        rows.append({"uid": f"c{i}", "path": str(path), "expected_rate": np.nan})
    table = pd.DataFrame(rows).set_index("uid")
    config = RunConfig()
    config.features.features, config.features.num_mel_bins = "fbank", 12
    config.model.options.update(channels=[16, 16, 48], kernel_sizes=[5, 3, 1], dilations=[1, 2, 1],
                                attention_channels=8, se_channels=8, res2net_scale=2, lin_neurons=8)
    config.heads = HEADS[:1]
    inputs = input_spec(config)
    table, _ = scan_audio(table, inputs.audio(), "x")
    model = build_classifier(config).eval()
    targets = np.zeros((len(table), 3), np.float32)

    def embeddings(frame: pd.DataFrame, batch_size: int) -> dict[str, torch.Tensor]:
        config.train.batch_size = batch_size
        loader = make_loader(config, make_dataset(config, inputs, frame, targets[: len(frame)]), frame, False,
                             model.backbone.padding, device=torch.device("cpu"))
        result = {}
        with torch.no_grad():
            for batch in loader:
                if batch_size > 1:
                    assert len(set(batch["lengths"].tolist())) == 3  # one batch of three lengths
                out = torch.cat([model.extract_embedding(batch["inputs"], batch["lengths"], "pt"),
                                 model.forward_batch(batch)], dim=1)
                result.update(zip(batch["uid"], out))
        return result

    batched = embeddings(table, batch_size=6)
    for uid in table.index:
        alone = embeddings(table.loc[[uid]], batch_size=1)[uid]
        torch.testing.assert_close(batched[uid], alone, atol=1e-5, rtol=0)


def test_a_batch_without_padding_reaches_the_backbone_without_lengths() -> None:
    """A loader batch whose clips all fill it gives the backbone no lengths (it may then run without a mask); the
    logits are those of full lengths; a padded batch gives its lengths."""
    from audiotune.data.dataset import Collator

    seen: list[torch.Tensor | None] = []

    class Recording(ToyBackbone):
        def hidden_states(self, inputs: torch.Tensor, lengths: torch.Tensor | None):
            seen.append(lengths)
            return super().hidden_states(inputs, torch.full((inputs.shape[0],), inputs.shape[1]) if lengths is None
                                         else lengths)

    model = Classifier(Recording(), HEADS, ClassifierConfig()).eval()
    items = [{"uid": str(n), "inputs": torch.randn(5, 4), "length": n, "targets": torch.zeros(5)} for n in (5, 5)]
    whole = Collator()(items)
    logits = model.forward_batch(whole)
    assert seen == [None]
    torch.testing.assert_close(logits, model(whole["inputs"], whole["lengths"]), atol=0, rtol=0)
    padded = Collator(target_length=6)(items)
    model.forward_batch(padded)
    assert torch.equal(seen[-1], torch.tensor([5, 5]))


def test_a_frozen_backbone_in_training_mode_follows_the_classifier_and_learns_nothing() -> None:
    fixed = Classifier(ToyBackbone(), HEADS, ClassifierConfig(), freeze_backbone=True).train()
    moving = Classifier(ToyBackbone(), HEADS, ClassifierConfig(), freeze_backbone=True, frozen_train_mode=True)
    moving.train()
    assert not fixed.backbone.training and moving.backbone.training
    assert not any(p.requires_grad for p in moving.backbone.parameters())
    assert not moving.eval().backbone.training
    # BatchNorm in training passes normalises by the batch, but a frozen encoder's statistics stay as loaded
    ecapa = Classifier(small_backbone(), HEADS, ClassifierConfig(), freeze_backbone=True, frozen_train_mode=True)
    loaded = {k: v.clone() for k, v in ecapa.backbone.state_dict().items()}
    inputs, lengths = torch.randn(3, 30, 12) * 3 + 1, torch.full((3,), 30)
    evaluated = ecapa.eval()(inputs, lengths)
    assert not torch.allclose(ecapa.train()(inputs, lengths), evaluated)
    moved = [k for k, v in loaded.items() if not torch.equal(v, ecapa.backbone.state_dict()[k])]
    assert moved and all(k.endswith("num_batches_tracked") for k in moved)  # a counter only
    assert torch.equal(ecapa.eval()(inputs, lengths), evaluated)
