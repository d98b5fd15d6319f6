"""SSAST backbone: original key layout, checkpoint loading and positional-embedding adaptation (with the
upstream bugs fixed), hidden states and pooling, masking, pretraining losses, registry."""
from __future__ import annotations

import random
import warnings
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from audiotune.config import ClassifierConfig, HeadSpec, RunConfig
from audiotune.models.backbones import build_backbone, input_spec, resolve_config
from audiotune.models.backbones.ssast import (
    FRAMES,
    MEL_BINS,
    SSASTBackbone,
    SSASTOptions,
    SSASTSettings,
)
from audiotune.models.backbones.ssast_checkpoint import load_ssast_checkpoint
from audiotune.models.backbones.ssast_masking import (
    adapt_pos_embed,
    info_nce,
    mask_frames,
    mask_patches_clustered,
    patch_grid,
)
from audiotune.models.backbones.ssast_model import SSASTModel
from audiotune.models.classifier import Classifier, masked_pool
from audiotune.models.state_dict import CheckpointMismatchError

# 1 x 32 frame patches and 4 x 8 square patches: small enough for 2 CPU cores
FRAME = {"model_size": "tiny", "fshape": 32, "tshape": 2, "input_fdim": 32, "input_tdim": 64, "depth": 2}
PATCH = {"model_size": "tiny", "fshape": 16, "tshape": 16, "input_fdim": 64, "input_tdim": 128, "depth": 2}
PATCH_OPTIONS = {**PATCH, "fstride": 16, "tstride": 16}  # the options' strides default to the frame model's

# hand-written original (timm 0.4.5 DeiT + SSAST pretrain branch) key names, per block and outside the blocks
BLOCK_KEYS = {
    "norm1.weight": ("D",), "norm1.bias": ("D",),
    "attn.qkv.weight": ("3D", "D"), "attn.qkv.bias": ("3D",),
    "attn.proj.weight": ("D", "D"), "attn.proj.bias": ("D",),
    "norm2.weight": ("D",), "norm2.bias": ("D",),
    "mlp.fc1.weight": ("4D", "D"), "mlp.fc1.bias": ("4D",),
    "mlp.fc2.weight": ("D", "4D"), "mlp.fc2.bias": ("D",),
}


def original_shapes(dim: int, depth: int, tokens: int, kernel: tuple[int, int], distilled: bool = True
                    ) -> dict[str, tuple[int, ...]]:
    """The key -> shape table of an original SSAST SSL checkpoint (without ``module.``)."""
    sizes = {"D": dim, "3D": 3 * dim, "4D": 4 * dim}
    shapes: dict[str, tuple[int, ...]] = {
        "v.cls_token": (1, 1, dim), "v.pos_embed": (1, tokens, dim),
        "v.patch_embed.proj.weight": (dim, 1, *kernel), "v.patch_embed.proj.bias": (dim,),
        "v.norm.weight": (dim,), "v.norm.bias": (dim,),
        "v.head.weight": (1000, dim), "v.head.bias": (1000,),
        "cpredlayer.0.weight": (dim, dim), "cpredlayer.0.bias": (dim,),
        "cpredlayer.2.weight": (256, dim), "cpredlayer.2.bias": (256,),
        "gpredlayer.0.weight": (dim, dim), "gpredlayer.0.bias": (dim,),
        "gpredlayer.2.weight": (256, dim), "gpredlayer.2.bias": (256,),
        "mask_embed": (1, 1, dim), "p_input_fdim": (), "p_input_tdim": (),
    }
    if distilled:
        shapes.update({"v.dist_token": (1, 1, dim), "v.head_dist.weight": (1000, dim), "v.head_dist.bias": (1000,)})
    for i in range(depth):
        for name, shape in BLOCK_KEYS.items():
            shapes[f"v.blocks.{i}.{name}"] = tuple(sizes[s] for s in shape)
    return shapes


def upstream_adapt(pos: torch.Tensor, p_grid: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """The original fine-tuning adaptation, verbatim (hard-coded height 8, t_dim in the frequency crop)."""
    (p_f_dim, p_t_dim), (f_dim, t_dim) = p_grid, grid
    dim = pos.shape[-1]
    new = pos.transpose(1, 2).reshape(1, dim, p_f_dim, p_t_dim)
    if t_dim < p_t_dim:
        new = new[:, :, :, int(p_t_dim / 2) - int(t_dim / 2): int(p_t_dim / 2) - int(t_dim / 2) + t_dim]
    else:
        new = F.interpolate(new, size=(8, t_dim), mode="bilinear")
    if f_dim < p_f_dim:
        new = new[:, :, int(p_f_dim / 2) - int(f_dim / 2): int(p_f_dim / 2) - int(f_dim / 2) + t_dim, :]
    else:
        new = F.interpolate(new, size=(f_dim, t_dim), mode="bilinear")
    return new.reshape(1, dim, f_dim * t_dim).transpose(1, 2)


def grid_pos(f: int, t: int, dim: int = 3) -> torch.Tensor:
    """(1, f*t, dim) embeddings whose value encodes the position: 100*row + column (+ 1000*channel)."""
    rows = torch.arange(f, dtype=torch.float32).view(f, 1) * 100
    cols = torch.arange(t, dtype=torch.float32).view(1, t)
    grid = torch.stack([rows + cols + 1000 * d for d in range(dim)])  # (dim, f, t)
    return grid.reshape(1, dim, f * t).transpose(1, 2)


def as_grid(pos: torch.Tensor, f: int, t: int) -> torch.Tensor:
    """(1, f*t, D) -> (D, f, t)."""
    return pos[0].transpose(0, 1).reshape(-1, f, t)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models gain nothing from more, and on a shared 2-core machine
    spinning OpenMP threads slow the training loops down a hundredfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FixedRng(random.Random):
    """``randrange`` returns the given values in turn (to place a mask block exactly)."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self.values = list(values)

    def randrange(self, *args, **kwargs) -> int:  # type: ignore[override]
        return self.values.pop(0)


# --------------------------------------------------------------------------- layout


@pytest.fixture(scope="module")
def tiny_frame_pretrained() -> SSASTModel:
    """A tiny 12-block frame model built for pretraining on 128 x 1024 fbanks (the original layout)."""
    torch.manual_seed(0)
    return SSASTModel("tiny", fshape=128, tshape=2, input_fdim=128, input_tdim=1024, depth=12)


def test_tiny_12_block_state_dict_is_the_original_key_set(tiny_frame_pretrained: SSASTModel) -> None:
    model = tiny_frame_pretrained
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == original_shapes(192, 12, 514, (128, 2))
    assert model.p_input_fdim.dtype == torch.int64 and int(model.p_input_tdim) == 1024
    assert not model.p_input_fdim.requires_grad and not model.v.head.weight.requires_grad
    assert model.v.blocks[0].attn.num_heads == 3 and model.v.blocks[0].norm1.eps == 1e-6


def test_sizes_and_base_nokd_layout() -> None:
    small = SSASTModel("small", 16, 16, input_fdim=32, input_tdim=32, depth=1)
    assert (small.embed_dim, small.num_heads, small.cls_token_num) == (384, 6, 2)
    nokd = SSASTModel("base_nokd", 16, 16, input_fdim=32, input_tdim=32, depth=1)
    got = {k: tuple(v.shape) for k, v in nokd.state_dict().items()}
    assert got == original_shapes(768, 1, 4 + 1, (16, 16), distilled=False)
    assert SSASTModel("base384", 16, 16, input_fdim=16, input_tdim=16, depth=1).model_size == "base"
    with pytest.raises(ValueError, match="model_size"):
        SSASTModel("huge", 16, 16, input_fdim=16, input_tdim=16, depth=1)


def test_patch_grid_and_geometry_errors() -> None:
    assert patch_grid(128, 1024, 128, 2, 128, 2) == (1, 512)
    assert patch_grid(128, 1024, 16, 16, 16, 16) == (8, 64)
    assert patch_grid(128, 100, 128, 2, 128, 1) == (1, 99)
    with pytest.raises(ValueError, match="num_mel_bins"):
        patch_grid(80, 1024, 128, 2, 128, 2)
    with pytest.raises(ValueError, match="exceeds the patch shape"):
        patch_grid(128, 1024, 16, 16, 16, 32)


# --------------------------------------------------------------------------- positional embedding


def test_pos_embed_frame_model_longer_time() -> None:
    """p_f_dim = 1 -> f_dim = 1, longer t: one row, linearly interpolated along time only."""
    pos = grid_pos(1, 8)
    out = adapt_pos_embed(pos, (1, 8), (1, 12))
    expected = F.interpolate(as_grid(pos, 1, 8)[None], size=(1, 12), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(as_grid(out, 1, 12), expected)
    # upstream's detour through height 8 is harmless here (1 -> 8 -> 1 rows of copies): same result
    torch.testing.assert_close(upstream_adapt(pos, (1, 8), (1, 12)), out)


def test_pos_embed_time_interpolation_keeps_frequency_rows() -> None:
    """p_f_dim = 4 (not 8) with longer t: each row is interpolated on its own (upstream smeared rows via 8)."""
    pos = grid_pos(4, 6)
    out = as_grid(adapt_pos_embed(pos, (4, 6), (4, 10)), 4, 10)
    for row in range(4):
        line = as_grid(pos, 4, 6)[:, row:row + 1, :]  # (D, 1, 6)
        expected = F.interpolate(line[None], size=(1, 10), mode="bilinear", align_corners=False)[0, :, 0]
        torch.testing.assert_close(out[:, row], expected)
    assert not torch.allclose(upstream_adapt(pos, (4, 6), (4, 10)), adapt_pos_embed(pos, (4, 6), (4, 10)))
    # the same grid is left untouched (upstream went through height 8 even then)
    torch.testing.assert_close(adapt_pos_embed(pos, (4, 6), (4, 6)), pos)
    assert not torch.allclose(upstream_adapt(pos, (4, 6), (4, 6)), pos)


def test_pos_embed_frequency_crop_keeps_central_rows() -> None:
    """p_f_dim = 8 -> f_dim = 4, t unchanged: rows 2..5 exactly (upstream cropped t_dim rows and crashed)."""
    pos = grid_pos(8, 6)
    out = as_grid(adapt_pos_embed(pos, (8, 6), (4, 6)), 4, 6)
    torch.testing.assert_close(out, as_grid(pos, 8, 6)[:, 2:6, :])
    with pytest.raises(RuntimeError):
        upstream_adapt(pos, (8, 6), (4, 6))


def test_pos_embed_frequency_grows_time_shrinks() -> None:
    """(2, 8) -> (4, 4): central time columns 2..5, then rows interpolated 2 -> 4."""
    pos = grid_pos(2, 8)
    out = as_grid(adapt_pos_embed(pos, (2, 8), (4, 4)), 4, 4)
    cropped = as_grid(pos, 2, 8)[:, :, 2:6]
    r0, r1 = cropped[:, 0], cropped[:, 1]
    expected = torch.stack([r0, 0.75 * r0 + 0.25 * r1, 0.25 * r0 + 0.75 * r1, r1], dim=1)
    torch.testing.assert_close(out, expected)


def test_pos_embed_frequency_shrinks_time_grows() -> None:
    """(8, 4) -> (4, 8): central rows 2..5, each interpolated along time (upstream crashed here too)."""
    pos = grid_pos(8, 4)
    out = as_grid(adapt_pos_embed(pos, (8, 4), (4, 8)), 4, 8)
    rows = as_grid(pos, 8, 4)[:, 2:6, :]
    expected = F.interpolate(rows[None], size=(4, 8), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[0, :, 0] - out[0, 0, 0], torch.tensor([0.0, 100.0, 200.0, 300.0]))
    with pytest.raises(RuntimeError):
        upstream_adapt(pos, (8, 4), (4, 8))


# --------------------------------------------------------------------------- checkpoints


def test_original_checkpoint_loads_strictly_then_finetunes(tmp_path: Path, tiny_frame_pretrained: SSASTModel) -> None:
    """Exact original key set (tiny, 12 blocks, module.) -> strict load into a model with another stride and
    input length -> a few optimizer steps reduce a loss."""
    pretrained = tiny_frame_pretrained
    state = {f"module.{k}": v for k, v in pretrained.state_dict().items()}
    assert set(state) == {f"module.{k}" for k in original_shapes(192, 12, 514, (128, 2))}
    path = tmp_path / "SSAST-Tiny-Frame-400.pth"
    torch.save(state, path)

    torch.manual_seed(1)
    model = SSASTModel("tiny", fshape=128, tshape=2, fstride=128, tstride=1, input_fdim=128, input_tdim=48,
                       depth=12)
    assert (model.f_dim, model.t_dim) == (1, 47)
    load_ssast_checkpoint(model, path, strict=True)
    src = pretrained.state_dict()
    torch.testing.assert_close(model.v.blocks[11].mlp.fc2.weight, src["v.blocks.11.mlp.fc2.weight"])
    torch.testing.assert_close(model.v.patch_embed.proj.weight, src["v.patch_embed.proj.weight"])
    assert model.v.patch_embed.proj.stride == (128, 1)
    assert (int(model.p_input_fdim), int(model.p_input_tdim)) == (128, 94)  # the adapted grid (1, 47) of 128x2
    pos = model.v.pos_embed.detach()
    torch.testing.assert_close(pos[:, :2], src["v.pos_embed"][:, :2])  # cls and dist kept
    start = 512 // 2 - 47 // 2  # centre crop of 512 time positions to 47
    torch.testing.assert_close(pos[:, 2:], src["v.pos_embed"][:, 2 + start: 2 + start + 47])

    head = torch.nn.Linear(192, 1)
    features, target = torch.randn(2, 48, 128), torch.tensor([[1.0], [0.0]])
    optim = torch.optim.Adam([*filter(lambda p: p.requires_grad, model.parameters()), *head.parameters()], lr=3e-4)
    losses = []
    for _ in range(4):
        loss = F.binary_cross_entropy_with_logits(head(model(features, task="ft_avgtok")), target)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_load_without_prefix_safetensors_and_nested_prefix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = SSASTModel(**PATCH)
    path = tmp_path / "ssast.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = load_ssast_checkpoint(SSASTModel(**PATCH), path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    # a package checkpoint: the backbone nested in a classifier, plus keys that are not SSAST's
    nested = {f"backbone.model.{k}": v for k, v in source.state_dict().items()}
    nested["classifiers.0.weight"] = torch.zeros(2, 2)
    torch.testing.assert_close(load_ssast_checkpoint(SSASTModel(**PATCH), nested).v.pos_embed, source.v.pos_embed)
    # a fine-tuned checkpoint (pos_embed already on the fine-tuning grid) reloads as is
    finetuned = SSASTModel(**{**PATCH, "input_tdim": 96}, tstride=8, pretrain_input_tdim=128)
    again = load_ssast_checkpoint(SSASTModel(**{**PATCH, "input_tdim": 96}, tstride=8), finetuned.state_dict())
    torch.testing.assert_close(again.v.pos_embed, finetuned.v.pos_embed)


def test_a_model_adapted_from_a_checkpoint_writes_one_that_loads_again_at_any_size(
        tiny_frame_pretrained: SSASTModel) -> None:
    """An original checkpoint adapted to a stride of 1, then written (a continued pretraining's or a fine-tuned
    run's weights): read into another stride and length, its positional embedding is adapted from the grid it has,
    and read into the same geometry it is kept as it is."""
    original = tiny_frame_pretrained.state_dict()
    geometry = {"model_size": "tiny", "fshape": 128, "tshape": 2, "fstride": 128, "input_fdim": 128, "depth": 12}
    first = load_ssast_checkpoint(SSASTModel(**geometry, tstride=1, input_tdim=48), original)
    written = first.state_dict()
    again = load_ssast_checkpoint(SSASTModel(**geometry, tstride=1, input_tdim=48), written)
    torch.testing.assert_close(again.v.pos_embed, first.v.pos_embed, rtol=0, atol=0)
    other = load_ssast_checkpoint(SSASTModel(**geometry, tstride=2, input_tdim=64), written)  # (1, 47) -> (1, 32)
    start = 47 // 2 - 32 // 2
    torch.testing.assert_close(other.v.pos_embed[:, 2:], first.v.pos_embed[:, 2 + start: 2 + start + 32])


def test_load_errors_are_clear(tmp_path: Path) -> None:
    state = SSASTModel(**PATCH).state_dict()
    with pytest.raises(CheckpointMismatchError, match="patch shape"):
        load_ssast_checkpoint(SSASTModel(**{**PATCH, "fshape": 32, "tshape": 8}), state)
    with pytest.raises(CheckpointMismatchError, match="model_size 'small'"):
        load_ssast_checkpoint(SSASTModel(**{**PATCH, "model_size": "small"}), state)
    extra = {**state, "v.fc_norm.weight": torch.ones(192)}
    path = tmp_path / "extra.pth"
    torch.save(extra, path)
    with pytest.raises(CheckpointMismatchError, match=r"extra\.pth[\s\S]*unexpected keys.*v\.fc_norm\.weight"):
        load_ssast_checkpoint(SSASTModel(**PATCH), path)
    missing = {k: v for k, v in state.items() if k != "mask_embed"}
    with pytest.raises(CheckpointMismatchError, match="missing keys.*mask_embed"):
        load_ssast_checkpoint(SSASTModel(**PATCH), missing)
    with pytest.raises(CheckpointMismatchError, match="not an SSAST checkpoint"):
        load_ssast_checkpoint(SSASTModel(**PATCH), {"weight": torch.zeros(1)})


# --------------------------------------------------------------------------- hidden states


def test_hidden_states_layout_and_pooling() -> None:
    torch.manual_seed(0)
    backbone = SSASTBackbone(SSASTOptions(**PATCH_OPTIONS)).eval()
    model = backbone.model
    x = torch.randn(2, 128, 64)
    states, mask = backbone.hidden_states(x, torch.tensor([128, 100]))
    assert len(states) == backbone.num_hidden_states == 4 and backbone.num_layers == 2
    assert all(s.shape == (2, 2 + 32, 192) for s in states) and backbone.embedding_dim == 192
    patches = model.v.patch_embed.proj(x.unsqueeze(1).transpose(2, 3)).flatten(2).transpose(1, 2)
    tokens = torch.cat([model.v.cls_token.expand(2, -1, -1), model.v.dist_token.expand(2, -1, -1), patches], 1)
    torch.testing.assert_close(states[0], tokens + model.v.pos_embed)
    torch.testing.assert_close(states[-1], model.v.norm(states[-2]))
    last = states[-1]
    torch.testing.assert_close(masked_pool(last, mask, "mean"), (last[:, 0] + last[:, 1]) / 2)
    backbone.task = "ft_avgtok"
    _, mask = backbone.hidden_states(x, None)
    torch.testing.assert_close(masked_pool(last, mask, "mean"), last[:, 2:].mean(1))
    torch.testing.assert_close(model(x, task="ft_avgtok"), last[:, 2:].mean(1))
    # a clip's states do not depend on its batch
    torch.testing.assert_close(backbone.hidden_states(x[1:], None)[0][-1], last[1:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="target_length"):
        backbone.hidden_states(torch.randn(2, 100, 64), None)
    nokd = SSASTModel(**{**FRAME, "model_size": "base_nokd", "depth": 1}).eval()
    out = nokd.hidden_states(torch.randn(1, 64, 32))[-1]
    torch.testing.assert_close(nokd.pool(out, "ft_cls"), out[:, 0])


def test_attention_weights_match_the_fused_path() -> None:
    torch.manual_seed(0)
    model = SSASTModel(**FRAME).eval()
    x = torch.randn(2, 64, 32)
    states, attentions = model.forward_with_attention(x)
    assert len(attentions) == 2 and attentions[0].shape == (2, 3, 34, 34)
    torch.testing.assert_close(attentions[1].sum(-1), torch.ones(2, 3, 34))
    for fused, explicit in zip(model.hidden_states(x), states):
        torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_classifier_on_ssast_backbone() -> None:
    torch.manual_seed(0)
    backbone = SSASTBackbone(SSASTOptions(**PATCH_OPTIONS, task="ft_avgtok"))
    heads = [HeadSpec("h", "binary", ["a", "b"])]
    clf = Classifier(backbone, heads, ClassifierConfig(weighted=True))
    out = clf(torch.randn(2, 128, 64), torch.tensor([128, 128]))
    assert out.shape == (2, 2)
    out.sum().backward()
    assert backbone.model.v.blocks[0].attn.qkv.weight.grad is not None
    assert backbone.model.cpredlayer[0].weight.grad is None  # pretext heads frozen while fine-tuning


def test_weighted_sum_leaves_the_final_norm_out_as_the_seed_did() -> None:
    """--weighted sums the embedded tokens and each block (the seed's 13 states for base); the final v.norm is a
    --layer choice only, so changing it moves layer -1 and not the weighted sum."""
    torch.manual_seed(0)
    backbone = SSASTBackbone(SSASTOptions(**PATCH_OPTIONS, task="ft_avgtok")).eval()
    heads = [HeadSpec("h", "binary", ["a", "b"])]
    weighted = Classifier(backbone, heads, ClassifierConfig(weighted=True)).eval()
    last = Classifier(backbone, heads, ClassifierConfig(layer=-1)).eval()
    assert backbone.num_hidden_states == PATCH["depth"] + 2
    assert weighted.layer_weights is not None and weighted.layer_weights.numel() == PATCH["depth"] + 1
    x, lengths = torch.randn(2, 128, 64), torch.tensor([128, 128])
    with torch.no_grad():
        before = (weighted.extract_embedding(x, lengths, "wt"), last.extract_embedding(x, lengths, "pt"))
        backbone.model.v.norm.weight.mul_(3.0)
        after = (weighted.extract_embedding(x, lengths, "wt"), last.extract_embedding(x, lengths, "pt"))
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1])


@pytest.mark.parametrize("version, summed", [(3, 14), (4, 13)])
def test_runs_saved_before_declared_weighted_states_keep_every_state(version: int, summed: int) -> None:
    from audiotune.models.checkpoint import build_classifier

    config = ssast_config()  # tiny: 12 blocks
    config.classifier.weighted = True
    config.heads = [HeadSpec("h", "binary", ["a", "b"])]
    config.version = version
    resolve_config(config)
    model = build_classifier(config, pretrained=False)
    assert model.layer_weights is not None and model.layer_weights.numel() == summed


# --------------------------------------------------------------------------- masking


@pytest.mark.parametrize("mask_size", [1, 100, 400, 512])
def test_clustered_mask_count_unique_range(mask_size: int) -> None:
    for seed in range(5):
        idx = mask_patches_clustered(512, 64, mask_size, 3, random.Random(seed))
        assert idx.shape == (mask_size,) and idx.unique().numel() == mask_size
        assert int(idx.min()) >= 0 and int(idx.max()) < 512
    a = mask_patches_clustered(512, 64, 100, 3, random.Random(7), jitter=True)
    b = mask_patches_clustered(512, 64, 100, 3, random.Random(7), jitter=True)
    assert torch.equal(a, b) and a.numel() == 100


def test_clustered_mask_forms_blocks() -> None:
    """cluster_factor=2 on 8 x 64: masked patches come in 2x2 blocks, so they have masked neighbours."""
    share = []
    for seed in range(10):
        idx = set(mask_patches_clustered(512, 64, 100, 2, random.Random(seed)).tolist())
        neighbours = 0
        for i in idx:
            row, col = divmod(i, 64)
            near = [(row + dr, col + dc) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))]
            neighbours += sum(0 <= r < 8 and 0 <= c < 64 and r * 64 + c in idx for r, c in near) >= 2
        share.append(neighbours / len(idx))
    assert sum(share) / len(share) > 0.8  # random masking gives ~0.2


def test_cluster_factor_sets_block_side_without_wrapping() -> None:
    start = 2 * 64 + 10  # row 2, column 10
    block = mask_patches_clustered(512, 64, 9, 3, FixedRng([start])).tolist()
    assert block == [start + 64 * i + j for i in range(3) for j in range(3)]
    block = mask_patches_clustered(512, 64, 4, 2, FixedRng([start])).tolist()
    assert block == [start, start + 1, start + 64, start + 65]
    # a block starting in the last time column is clipped, not wrapped into the next frequency row
    assert mask_patches_clustered(512, 64, 2, 2, FixedRng([63])).tolist() == [63, 127]
    assert 0 in mask_patches_clustered(512, 64, 1, 3, FixedRng([0])).tolist()  # upstream never masked 0
    # the last block is truncated to reach mask_size exactly
    assert len(mask_patches_clustered(512, 64, 5, 2, FixedRng([start, 300]))) == 5


def test_mask_frames_and_errors() -> None:
    idx = mask_frames(512, 400, random.Random(0))
    assert idx.shape == (400,) and idx.unique().numel() == 400 and 0 <= int(idx.min()) and int(idx.max()) < 512
    assert torch.equal(idx, mask_frames(512, 400, random.Random(0)))
    assert mask_frames(10, 0, random.Random(0)).numel() == 0
    with pytest.raises(ValueError, match="cannot mask"):
        mask_frames(10, 11, random.Random(0))
    with pytest.raises(ValueError, match="cannot mask"):
        mask_patches_clustered(512, 64, 513, 3, random.Random(0))
    with pytest.raises(ValueError, match="full rows"):
        mask_patches_clustered(500, 64, 10, 3, random.Random(0))


# --------------------------------------------------------------------------- pretraining losses


def test_info_nce_matches_upstream_loop() -> None:
    torch.manual_seed(0)
    targets, preds = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    nce, correct = torch.tensor(0.0), torch.tensor(0.0)
    for i in range(3):  # upstream mpc's loop
        total = torch.mm(targets[i], preds[i].T)
        correct += torch.sum(torch.eq(torch.argmax(torch.softmax(total, dim=-1), dim=0), torch.arange(5)))
        nce += torch.sum(torch.diag(torch.log_softmax(total, dim=-1)))
    acc, loss = info_nce(targets, preds)
    torch.testing.assert_close(acc, correct / 15)
    torch.testing.assert_close(loss, nce / -15)


def test_losses_finite_and_gradients_reach_encoder() -> None:
    torch.manual_seed(0)
    model = SSASTModel(**PATCH)
    x = torch.randn(2, 128, 64)
    acc, nce = model.mpc(x, mask_patch=6, rng=random.Random(0))  # clustered (patch model) by default
    assert 0.0 <= float(acc) <= 1.0 and torch.isfinite(nce)
    nce.backward()
    for param in (model.v.blocks[0].attn.qkv.weight, model.v.patch_embed.proj.weight, model.mask_embed,
                  model.cpredlayer[2].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert model.gpredlayer[0].weight.grad is None
    mse = model.mpg(x, mask_patch=6, cluster=False, rng=random.Random(0))
    assert torch.isfinite(mse) and mse > 0
    model.eval()
    joint = model.pretrain_loss(x, "pretrain_joint", mask_patch=6, rng=random.Random(5))
    rng = random.Random(5)
    _, nce = model.mpc(x, mask_patch=6, rng=rng)
    torch.testing.assert_close(joint["loss"], nce + 10 * model.mpg(x, mask_patch=6, rng=rng))
    with pytest.raises(ValueError, match="cannot mask"):
        model.mpc(x, mask_patch=33)
    with pytest.raises(ValueError, match="stride == patch shape"):
        SSASTModel(**{**PATCH, "tstride": 8}).mpg(x, mask_patch=4)


def test_mpg_loss_decreases_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = SSASTModel(**FRAME)
    x = torch.randn(2, 64, 32)
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(10):
        loss = model.mpg(x, mask_patch=8, rng=random.Random(0))  # same mask each step: memorisable
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_mpc_accuracy_rises_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = SSASTModel(**FRAME)
    x = torch.randn(2, 64, 32)
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    accs, losses = [], []
    rng = random.Random(1)  # a new mask every step
    for _ in range(30):
        acc, nce = model.mpc(x, mask_patch=8, rng=rng)
        optim.zero_grad()
        nce.backward()
        optim.step()
        accs.append(acc.item())
        losses.append(nce.item())
    first, last = sum(accs[:3]) / 3, sum(accs[-5:]) / 5
    assert last > first and last >= 0.75
    assert sum(losses[-5:]) < sum(losses[:5])


# --------------------------------------------------------------------------- registry


def ssast_config(**model: object) -> RunConfig:
    config = RunConfig()
    config.model.model = "ssast"
    config.features.num_mel_bins = 32
    config.model.freeze = model.pop("freeze", None)  # type: ignore[assignment]
    config.model.options = {"model_size": "tiny", "fshape": 16, "tshape": 16, "fstride": 16, "tstride": 16,
                            "task": "ft_avgtok", **model}
    return config


def test_resolve_ssast_defaults_and_errors(caplog) -> None:
    config = ssast_config()
    resolve_config(config)
    with caplog.at_level("WARNING"):
        build_backbone(config)  # frozen and nothing to load: the user is told
    assert "stays random" in caplog.text
    inputs = input_spec(config)
    assert inputs.features == "fbank" and inputs.target_length == 1024 and config.features.target_length == 0
    assert config.model.freeze is True
    config = ssast_config(task="pretrain_joint")
    config.features.target_length = 64
    resolve_config(config)
    assert config.model.freeze is False and input_spec(config).target_length == 64
    with pytest.raises(ValueError, match="num_mel_bins"):
        resolve_config(ssast_config(fshape=128, fstride=128, tshape=2, tstride=2))
    with pytest.raises(ValueError, match="no overlapping"):
        resolve_config(ssast_config(task="pretrain_mpc", tstride=8))
    config = ssast_config()
    config.features.features = "waveform"
    with pytest.raises(ValueError, match="fbank"):
        resolve_config(config)
    with pytest.raises(ValueError, match="--task"):
        resolve_config(ssast_config(task="classify"))
    config = ssast_config(task="pretrain_joint")
    config.train.max_seconds = 2.0  # a Hugging Face encoder's pretraining crop: SSAST reads its fixed frames
    with pytest.raises(ValueError, match=r"^--max_seconds 2.0: crops a Hugging Face encoder's pretraining clips"):
        resolve_config(config)


def test_build_ssast_loads_pretrained_with_overlap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    source = SSASTModel("tiny", 16, 16, input_fdim=32, input_tdim=64, depth=12)
    path = tmp_path / "tiny_patch.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    config = ssast_config(tstride=8, pretrained_mdl_path=str(path), freeze=False)
    config.features.target_length = 96
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pretrained path: no random-encoder warning
        resolve_config(config)
    with caplog.at_level("WARNING"):
        backbone = build_backbone(config, pretrained=True)
    # the checkpoint's inputs were normalised; these are not: said
    assert f"--model ssast from {path} with features not normalised (no --dataset_mean/--dataset_std)" in caplog.text
    caplog.clear()
    config.features.dataset_mean, config.features.dataset_std = -4.2677393, 4.5689974
    with caplog.at_level("WARNING"):
        build_backbone(config, pretrained=True)
    assert "not normalised" not in caplog.text
    assert isinstance(backbone, SSASTBackbone) and backbone.num_hidden_states == 14
    assert (backbone.model.f_dim, backbone.model.t_dim) == (2, 11)
    torch.testing.assert_close(backbone.model.v.blocks[3].attn.qkv.weight, source.v.blocks[3].attn.qkv.weight)
    states, mask = backbone.hidden_states(torch.randn(1, 96, 32), torch.tensor([96]))
    assert states[-1].shape == (1, 2 + 22, 192) and int(mask.sum()) == 22


def test_features_other_than_fbank_are_an_error_except_in_a_config_of_an_earlier_release() -> None:
    config = RunConfig()
    config.model.model, config.features.features = "ssast", "mfcc"  # e.g. the seeds' --fbank False
    with pytest.raises(ValueError, match="--features mfcc: --model ssast reads fbank features"):
        input_spec(config)
    config.version = 2  # a run saved when the option was ignored: it read its fbank, and still does
    assert input_spec(config).features == "fbank"
    config.features.features = "waveform"
    with pytest.raises(ValueError, match="--model ssast reads fbank features"):
        input_spec(config)


def test_options_built_directly_are_those_of_a_config_left_at_its_defaults() -> None:
    """SSASTOptions' defaults are the options' (SSASTSettings) and the released checkpoints' input."""
    settings = SSASTSettings()
    direct = SSASTOptions()
    shared = {spec.name for spec in fields(SSASTOptions)} & {spec.name for spec in fields(SSASTSettings)}
    assert shared >= {"task", "fstride"} and all(getattr(direct, name) == getattr(settings, name) for name in shared)
    config = RunConfig()
    config.model.model = "ssast"
    resolve_config(config)
    assert SSASTOptions.from_config(config) == direct
    assert (direct.input_fdim, direct.input_tdim) == (MEL_BINS, FRAMES)


def test_the_attention_layout_names_the_frames_its_patches_read() -> None:
    """70 frames in patches of 16 every 16: four columns read frames 0-63; the last 6 frames no patch reads."""
    options = {**PATCH_OPTIONS, "input_tdim": 70}
    backbone = SSASTBackbone(SSASTOptions(**options))
    prefix, grid, covered = backbone.attention_layout()
    assert grid == (backbone.model.f_dim, 4) and covered == (backbone.model.f_dim * 16, 64)
