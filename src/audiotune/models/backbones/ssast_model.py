"""SSAST (self-supervised Audio Spectrogram Transformer) in plain torch, with the original parameter names.

``SSASTModel`` reproduces YuanGongND/ssast's ``ASTModel`` (timm 0.4.5 DeiT inside ``self.v``) key for key, so an
original SSL checkpoint (``SSAST-Base-Frame-400.pth``: every key prefixed ``module.``) loads with ``strict=True``:
``v.cls_token``, ``v.dist_token`` (not for ``base_nokd``), ``v.pos_embed``, ``v.patch_embed.proj``,
``v.blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``v.norm``, ``v.head``, ``v.head_dist``,
``cpredlayer``, ``gpredlayer``, ``mask_embed``, ``p_input_fdim``, ``p_input_tdim``.

* ``v.head`` / ``v.head_dist`` are DeiT's ImageNet heads (Linear(D, 1000)), never used by SSAST. They are kept
  as real modules (frozen, ``requires_grad=False``) so the exact original key set loads strictly and the state
  dicts this package writes keep that key set.
* ``p_input_fdim`` / ``p_input_tdim`` are int64 scalar Parameters (``requires_grad=False``), as in the original:
  they record the input size whose non-overlapping patches lay out ``pos_embed`` (the *pretraining* input size
  of an original checkpoint; after :func:`load_ssast_checkpoint` adapted it, the model's grid), which the
  fine-tuning loader needs to lay out ``pos_embed``.
  Being integer, ``module.requires_grad_(True)`` on the whole model would fail; use ``requires_grad_(False)``
  (freezing) freely, and unfreeze floating-point parameters only.

Geometry: features arrive as (B, T, F); the model sees (B, 1, F, T) and cuts ``fshape x tshape`` patches with
stride ``(fstride, tstride)``: ``f_dim = (F - fshape) // fstride + 1`` (likewise ``t_dim``). Pretraining needs
stride == shape (no overlap: a masked patch must not leak through its neighbours); fine-tuning may overlap and
may use another input size: :func:`load_ssast_checkpoint` adapts the positional embedding (see
:func:`adapt_pos_embed`, which fixes two bugs of the original adaptation).

Padding: SSAST consumes exactly ``target_length`` frames; clips are zero-padded / cropped by the data pipeline
and, as in the original, the padding frames are ordinary input (no attention mask).
"""
from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiotune.models.backbones.ssast_masking import (
    default_rng,
    info_nce,
    mask_frames,
    mask_patches_clustered,
    patch_grid,
)
from audiotune.models.backbones.vit import DeiT

__all__ = ["FINETUNE_TASKS", "PRETRAIN_TASKS", "SIZES", "SIZE_ALIASES", "SSASTModel"]

# model_size -> (embed_dim, num_heads, cls_token_num); every size has 12 blocks (DeiT tiny/small/base)
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 3, 2), "small": (384, 6, 2), "base": (768, 12, 2), "base_nokd": (768, 12, 1),
}
# older upstream revisions named the sizes after the DeiT image size
SIZE_ALIASES = {
    "tiny224": "tiny", "small224": "small", "base224": "base", "base384": "base", "base384_nokd": "base_nokd",
}
FINETUNE_TASKS = ("ft_avgtok", "ft_cls")
PRETRAIN_TASKS = ("pretrain_mpc", "pretrain_mpg", "pretrain_joint")



class SSASTModel(nn.Module):
    """SSAST ViT with the original parameter names, pretraining objectives and hidden states.

    Its size, patches, input and depth are given (the defaults of ``--model ssast`` are its options', in
    :mod:`audiotune.models.backbones.ssast`).

    Args:
        model_size: ``tiny`` (192-d, 3 heads), ``small`` (384, 6), ``base`` (768, 12) — all with cls + dist
            tokens — or ``base_nokd`` (768, 12, cls token only). Upstream's older names (``base384``...) work too.
        fshape, tshape: patch size in mel bins x frames (128x2: frame model, 16x16: patch model).
        fstride, tstride: patch stride; ``None`` = the patch size (no overlap, required to pretrain).
        input_fdim, input_tdim: mel bins and frames of the input (``num_mel_bins``, ``target_length``).
        depth: transformer blocks (12 for every released checkpoint; smaller only for tests).
        pretrain_input_fdim, pretrain_input_tdim: stored in ``p_input_fdim/tdim``; default the input size.
            :func:`load_ssast_checkpoint` overwrites them with the checkpoint's values.
        drop_rate: dropout after the positional embedding, attention projection and MLP (0 upstream).
        head_classes: output size of the unused DeiT heads (1000 in every original checkpoint).
    """

    def __init__(self, model_size: str, fshape: int, tshape: int, *, input_fdim: int, input_tdim: int, depth: int,
                 fstride: int | None = None, tstride: int | None = None, pretrain_input_fdim: int | None = None,
                 pretrain_input_tdim: int | None = None, drop_rate: float = 0.0, head_classes: int = 1000) -> None:
        super().__init__()
        self.model_size = SIZE_ALIASES.get(model_size, model_size)
        if self.model_size not in SIZES:
            raise ValueError(f"SSAST model_size '{model_size}' is not one of {sorted(SIZES)}")
        self.embed_dim, self.num_heads, self.cls_token_num = SIZES[self.model_size]
        self.depth = depth
        self.fshape, self.tshape = fshape, tshape
        self.fstride = fshape if fstride is None else fstride
        self.tstride = tshape if tstride is None else tstride
        self.input_fdim, self.input_tdim = input_fdim, input_tdim
        self.f_dim, self.t_dim = patch_grid(input_fdim, input_tdim, fshape, tshape, self.fstride, self.tstride)
        self.num_patches = self.f_dim * self.t_dim
        dim = self.embed_dim
        self.v = DeiT(dim, depth, self.num_heads, self.cls_token_num, self.num_patches, (fshape, tshape),
                      (self.fstride, self.tstride), drop_rate, head_classes)
        patch_size = fshape * tshape  # upstream hard-coded 256 (= 16*16 = 128*2)
        self.cpredlayer = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, patch_size))
        self.gpredlayer = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, patch_size))
        self.mask_embed = nn.Parameter(nn.init.xavier_normal_(torch.zeros(1, 1, dim)))
        # int64 scalars in the state dict, as upstream: the pretraining input size travels with the weights
        self.p_input_fdim = nn.Parameter(torch.tensor(pretrain_input_fdim or input_fdim), requires_grad=False)
        self.p_input_tdim = nn.Parameter(torch.tensor(pretrain_input_tdim or input_tdim), requires_grad=False)

    @property
    def can_pretrain(self) -> bool:
        """Whether the masked objectives apply: stride == shape (no overlapping patches)."""
        return (self.fstride, self.tstride) == (self.fshape, self.tshape)

    # ----------------------------------------------------------------------- encoder
    def _image(self, features: Tensor) -> Tensor:
        """(B, T, F) features -> (B, 1, F, T), checking the size the positional embedding was built for."""
        if features.dim() != 3 or tuple(features.shape[1:]) != (self.input_tdim, self.input_fdim):
            raise ValueError(f"SSAST expects features (B, {self.input_tdim} frames, {self.input_fdim} mel bins) "
                             f"(target_length, num_mel_bins), got {tuple(features.shape)}")
        return features.unsqueeze(1).transpose(2, 3)

    def _add_tokens(self, patches: Tensor) -> Tensor:
        """Prepend cls (+ dist) tokens, add the positional embedding, dropout: hidden state 0."""
        B = patches.shape[0]
        tokens = [self.v.cls_token.expand(B, -1, -1)]
        if self.v.dist_token is not None:
            tokens.append(self.v.dist_token.expand(B, -1, -1))
        x = torch.cat([*tokens, patches], dim=1) + self.v.pos_embed
        return self.v.pos_drop(x)

    def _encode(self, x: Tensor, need_weights: bool = False) -> tuple[list[Tensor], list[Tensor]]:
        """Hidden state 0 -> [state 0, block outputs..., v.norm(last)] and the per-block attention weights."""
        states, attentions = [x], []
        for block in self.v.blocks:
            x, weights = block(x, need_weights)
            states.append(x)
            if weights is not None:
                attentions.append(weights)
        states.append(self.v.norm(x))
        return states, attentions

    def hidden_states(self, features: Tensor) -> list[Tensor]:
        """Features (B, T, F) -> ``depth + 2`` tensors (B, cls + N, D): embeddings, each block, ``v.norm``(last)."""
        return self._encode(self._add_tokens(self.v.patch_embed(self._image(features))))[0]

    def forward_with_attention(self, features: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Hidden states as :meth:`hidden_states` plus each block's attention probabilities (B, heads, N', N')."""
        return self._encode(self._add_tokens(self.v.patch_embed(self._image(features))), need_weights=True)

    def pool(self, last: Tensor, task: str = "ft_avgtok") -> Tensor:
        """(B, cls + N, D) -> (B, D): mean of the cls token(s) (``ft_cls``) or of the patch tokens (``ft_avgtok``)."""
        if task == "ft_cls":
            return last[:, :self.cls_token_num].mean(1)  # = upstream (x[:, 0] + x[:, 1]) / 2
        if task == "ft_avgtok":
            return last[:, self.cls_token_num:].mean(1)
        raise ValueError(f"SSAST pooling task '{task}' is not one of {FINETUNE_TASKS}")

    def forward(self, features: Tensor, task: str = "ft_avgtok", **pretrain: Any) -> Any:
        """``ft_*``: pooled clip embedding (B, D); ``pretrain_*``: see :meth:`pretrain_loss`."""
        if task in PRETRAIN_TASKS:
            return self.pretrain_loss(features, task, **pretrain)
        return self.pool(self.hidden_states(features)[-1], task)

    # ----------------------------------------------------------------------- pretraining
    def mask_indices(self, batch: int, mask_patch: int, cluster: bool | None = None, cluster_factor: int = 3,
                     rng: random.Random | None = None, jitter: bool = False) -> Tensor:
        """(B, mask_patch) patch indices per clip: square blocks (``cluster``; default for patch models,
        ``f_dim > 1``) or random frames (frame models), see :mod:`.ssast_masking`."""
        rng = rng or default_rng()
        cluster = self.f_dim > 1 if cluster is None else cluster
        rows = [mask_patches_clustered(self.num_patches, self.t_dim, mask_patch, cluster_factor, rng, jitter)
                if cluster else mask_frames(self.num_patches, mask_patch, rng) for _ in range(batch)]
        return torch.stack(rows)

    def _masked(self, features: Tensor, mask_patch: int, cluster: bool | None, cluster_factor: int,
                rng: random.Random | None, jitter: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Encode with masked patches replaced by ``mask_embed`` -> (normed output, indices, target patches)."""
        if not self.can_pretrain:
            raise ValueError(f"SSAST pretraining needs stride == patch shape (no overlap), got stride "
                             f"({self.fstride}, {self.tstride}) for patches ({self.fshape}, {self.tshape})")
        image = self._image(features)
        # (B, N, fshape*tshape): the raw patches, same order as the conv's tokens
        patches = F.unfold(image, (self.fshape, self.tshape), stride=(self.fstride, self.tstride)).transpose(1, 2)
        x = self.v.patch_embed(image)
        index = self.mask_indices(x.shape[0], mask_patch, cluster, cluster_factor, rng, jitter).to(x.device)
        masked = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device).scatter_(1, index, True)
        x = torch.where(masked.unsqueeze(-1), self.mask_embed.to(x.dtype), x)  # BEiT-style learnable mask token
        out = self._encode(self._add_tokens(x))[0][-1]
        targets = patches.gather(1, index.unsqueeze(-1).expand(-1, -1, patches.shape[-1])).detach()
        return out, index, targets

    def _at(self, out: Tensor, index: Tensor) -> Tensor:
        """Output tokens at the masked patches (skipping the cls token(s))."""
        pos = (index + self.cls_token_num).unsqueeze(-1).expand(-1, -1, out.shape[-1])
        return out.gather(1, pos)

    def mpc(self, x: Tensor, mask_patch: int = 400, cluster: bool | None = None, cluster_factor: int = 3,
            rng: random.Random | None = None, jitter: bool = False) -> tuple[Tensor, Tensor]:
        """Masked patch classification on features (B, T, F) -> ``(acc, nce)`` (see :func:`info_nce`)."""
        out, index, targets = self._masked(x, mask_patch, cluster, cluster_factor, rng, jitter)
        return info_nce(targets, self.cpredlayer(self._at(out, index)))

    def mpg(self, x: Tensor, mask_patch: int = 400, cluster: bool | None = None, cluster_factor: int = 3,
            rng: random.Random | None = None, jitter: bool = False) -> Tensor:
        """Masked patch generation on features (B, T, F) -> MSE between predicted and true masked patches."""
        out, index, targets = self._masked(x, mask_patch, cluster, cluster_factor, rng, jitter)
        return F.mse_loss(self.gpredlayer(self._at(out, index)), targets)

    def pretrain_loss(self, x: Tensor, task: str = "pretrain_joint", mask_patch: int = 400,
                      cluster: bool | None = None, cluster_factor: int = 3, rng: random.Random | None = None,
                      jitter: bool = False, mpg_weight: float = 1.0) -> dict[str, Tensor]:
        """``{"loss", ...}`` of an objective: mpc (``acc``, ``nce``; loss = nce), mpg (``mse``; loss =
        ``mpg_weight`` x mse: 1 as upstream, 10 for runs written when mpg shared joint's weight) or joint (loss =
        nce + 10 mse: the weight applies to the joint objective only, as upstream).

        The joint objective runs two passes with independent masks, as upstream.
        """
        if task not in PRETRAIN_TASKS:
            raise ValueError(f"SSAST pretraining task '{task}' is not one of {PRETRAIN_TASKS}")
        rng = rng or default_rng()
        options: dict[str, Any] = {"mask_patch": mask_patch, "cluster": cluster, "cluster_factor": cluster_factor,
                                   "rng": rng, "jitter": jitter}
        result: dict[str, Tensor] = {}
        if task in ("pretrain_mpc", "pretrain_joint"):
            result["acc"], result["nce"] = self.mpc(x, **options)
        if task in ("pretrain_mpg", "pretrain_joint"):
            result["mse"] = self.mpg(x, **options)
        if task == "pretrain_joint":
            result["loss"] = result["nce"] + 10.0 * result["mse"]
        else:
            result["loss"] = result["nce"] if task == "pretrain_mpc" else mpg_weight * result["mse"]
        return result
