"""An encoder without heads: pt embeddings of one hidden state pooled over frames or over SSAST's tokens, wt as the
plain average of the hidden states, and what it refuses."""
from __future__ import annotations

import pytest
import torch

from audiotune.models.backbones.ecapa import EcapaBackbone, EcapaOptions
from audiotune.models.backbones.ssast import SSASTBackbone, SSASTOptions
from audiotune.models.classifier import masked_pool
from audiotune.models.encoder import EncoderEmbedder

# a 2-block SSAST over 32 bins x 64 frames: 2 x 4 patches after the cls and dist tokens
SMALL_SSAST = {"model_size": "tiny", "fshape": 16, "tshape": 16, "fstride": 16, "tstride": 16, "input_fdim": 32,
               "input_tdim": 64, "depth": 2}


def ssast(task: str = "ft_cls") -> SSASTBackbone:
    torch.manual_seed(0)
    return SSASTBackbone(SSASTOptions(**{**SMALL_SSAST, "task": task})).eval()


def small_ecapa() -> EcapaBackbone:
    torch.manual_seed(0)
    return EcapaBackbone(EcapaOptions(12, lin_neurons=8, channels=(16, 16, 48), kernel_sizes=(5, 3, 1),
                                      dilations=(1, 2, 1), attention_channels=8, res2net_scale=2, se_channels=8)).eval()


def test_ssast_token_pools_average_the_cls_tokens_or_the_patches_of_the_chosen_state() -> None:
    backbone = ssast()
    features, lengths = torch.randn(3, 64, 32), torch.full((3,), 64)
    states = backbone.model.hidden_states(features)
    embedder = EncoderEmbedder(backbone, layer=-1)
    cls = embedder.extract_embedding(features, lengths, "pt", layer=2, pooling="cls")
    avgtok = embedder.extract_embedding(features, lengths, "pt", layer=2, pooling="avgtok")
    torch.testing.assert_close(cls, (states[2][:, 0] + states[2][:, 1]) / 2)  # the original (x0 + x1) / 2
    torch.testing.assert_close(avgtok, states[2][:, 2:].mean(1))
    assert (cls - avgtok).abs().max() > 1e-3
    # a frame pooling follows the backbone's own task (ft_cls: the cls tokens), as the classifier does
    torch.testing.assert_close(embedder.extract_embedding(features, lengths, "pt", layer=2), cls)
    torch.testing.assert_close(EncoderEmbedder(ssast("ft_avgtok")).extract_embedding(features, lengths, "pt", 2),
                               avgtok)


def test_wt_is_the_plain_average_of_every_hidden_state() -> None:
    backbone = ssast("ft_avgtok")
    inputs, lengths = torch.randn(2, 64, 32), torch.full((2,), 64)
    states, mask = backbone.hidden_states(inputs, lengths)
    embedder = EncoderEmbedder(backbone, pooling="max")
    expected = masked_pool(torch.stack(states[:backbone.weighted_states]).mean(0), mask, "max")
    torch.testing.assert_close(embedder.extract_embedding(inputs, lengths, "wt"), expected)
    torch.testing.assert_close(embedder.extract_embedding(inputs, lengths, "pt", layer=0),
                               masked_pool(states[0], mask, "max"))


def test_an_encoder_of_one_pooled_state_refuses_the_poolings_and_sum_that_give_it_back() -> None:
    backbone = small_ecapa()
    inputs, lengths = torch.randn(2, 50, 12), torch.tensor([50, 30])
    states, mask = backbone.hidden_states(inputs, lengths)
    embedder = EncoderEmbedder(backbone)
    pt = embedder.extract_embedding(inputs, lengths, "pt")
    for pooling in ("sum", "max"):
        assert torch.equal(masked_pool(states[0], mask, pooling), pt)  # what it would give: the same vectors
        with pytest.raises(ValueError, match=f"--pooling_mode {pooling}: this backbone's hidden state is one vector "
                                             "per clip, pooled by the model .*leave --pooling_mode out"):
            embedder.check("pt", pooling)
        with pytest.raises(ValueError, match=f"--pooling_mode {pooling}: this backbone's hidden state is one"):
            EncoderEmbedder(backbone, pooling=pooling)
    assert torch.equal(torch.stack(states[:backbone.weighted_states]).mean(0)[:, 0], pt)  # wt: the same too
    with pytest.raises(ValueError, match="--embedding_type wt: this backbone has one hidden state.*use "
                                         "--embedding_type pt"):
        embedder.check("wt", None)


def test_what_an_encoder_without_heads_refuses() -> None:
    backbone = small_ecapa()
    with pytest.raises(ValueError, match="--pooling_mode cls: this backbone pools by mean, sum, max"):
        EncoderEmbedder(backbone, pooling="cls")
    with pytest.raises(ValueError, match="--layer 9: the backbone has hidden states"):
        EncoderEmbedder(backbone, layer=9)
    embedder = EncoderEmbedder(backbone)
    for kind in ("st", "ft"):
        with pytest.raises(ValueError, match=f"--embedding_type {kind}: without a trained classifier"):
            embedder.check(kind, None)
    with pytest.raises(ValueError, match="--pooling_mode median"):
        EncoderEmbedder(ssast()).check("pt", "median")


def test_a_trained_run_of_one_pooled_state_refuses_the_poolings_and_sum_that_give_it_back(trained_run: dict) -> None:
    """ECAPA-TDNN's run: pt and st embeddings pooled otherwise than by mean, and wt ones, are its one pooled state
    again (refused before anything is read); ft embeddings merge the heads by --pooling_mode (sum acts)."""
    from audiotune.models.encoder import load_embedder

    for kind, pooling in (("pt", "max"), ("st", "sum")):
        with pytest.raises(ValueError, match=f"--pooling_mode {pooling}: this backbone's hidden state is one vector"):
            load_embedder(str(trained_run["run"]), kind=kind, pooling=pooling)
    with pytest.raises(ValueError, match="--embedding_type wt: this backbone has one hidden state"):
        load_embedder(str(trained_run["run"]), kind="wt")
    load_embedder(str(trained_run["run"]), kind="ft", pooling="sum")
    load_embedder(str(trained_run["run"]), kind="pt", pooling="mean")
