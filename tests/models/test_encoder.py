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
    backbone = small_ecapa()
    inputs, lengths = torch.randn(2, 50, 12), torch.tensor([50, 30])
    states, mask = backbone.hidden_states(inputs, lengths)
    embedder = EncoderEmbedder(backbone, pooling="max")
    expected = masked_pool(torch.stack(states).mean(0), mask, "max")
    torch.testing.assert_close(embedder.extract_embedding(inputs, lengths, "wt"), expected)
    torch.testing.assert_close(embedder.extract_embedding(inputs, lengths, "pt", layer=0),
                               masked_pool(states[0], mask, "max"))


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
