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
  they record the *pretraining* input size, which the fine-tuning loader needs to lay out ``pos_embed``.
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

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiotune.config import AT_LEAST_1, RunConfig, option
from audiotune.models.backbones import Backbone, backbone_options, register
from audiotune.models.backbones.ssast_masking import (
    adapt_pos_embed,
    default_rng,
    info_nce,
    mask_frames,
    mask_patches_clustered,
    patch_grid,
)
from audiotune.models.backbones.vit import DeiT
from audiotune.models.state_dict import (
    CheckpointMismatchError,
    flatten_state_dict,
    load_checked,
    read_state_dict,
)
from audiotune.outputs import MODEL_FILE, ORIGINAL_SSAST_FILE, atomic_path
from audiotune.storage import Role

log = logging.getLogger(__name__)

__all__ = [
    "FINETUNE_TASKS", "PRETRAIN_TASKS", "SSASTBackbone", "SSASTModel", "adapt_pos_embed", "build_ssast",
    "load_ssast_checkpoint", "patch_grid", "resolve_ssast", "ssast_state_dict",
]

# model_size -> (embed_dim, num_heads, cls_token_num); every size has 12 blocks (DeiT tiny/small/base)
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 3, 2), "small": (384, 6, 2), "base": (768, 12, 2), "base_nokd": (768, 12, 1),
}
# older upstream revisions named the sizes after the DeiT image size
_ALIASES = {"tiny224": "tiny", "small224": "small", "base224": "base", "base384": "base", "base384_nokd": "base_nokd"}
FINETUNE_TASKS = ("ft_avgtok", "ft_cls")
PRETRAIN_TASKS = ("pretrain_mpc", "pretrain_mpg", "pretrain_joint")
_PROJ = "v.patch_embed.proj.weight"


# --------------------------------------------------------------------------- the model


class SSASTModel(nn.Module):
    """SSAST ViT with the original parameter names, pretraining objectives and hidden states.

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

    def __init__(self, model_size: str = "base", fshape: int = 128, tshape: int = 2, fstride: int | None = None,
                 tstride: int | None = None, input_fdim: int = 128, input_tdim: int = 1024, *, depth: int = 12,
                 pretrain_input_fdim: int | None = None, pretrain_input_tdim: int | None = None,
                 drop_rate: float = 0.0, head_classes: int = 1000) -> None:
        super().__init__()
        self.model_size = _ALIASES.get(model_size, model_size)
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
                      jitter: bool = False) -> dict[str, Tensor]:
        """``{"loss", ...}`` of an objective: mpc (``acc``, ``nce``), mpg (``mse``) or joint = nce + 10 mse.

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
        loss = result.get("nce", 0.0) + 10.0 * result.get("mse", 0.0)
        assert isinstance(loss, Tensor)  # every task in PRETRAIN_TASKS computes nce or mse
        result["loss"] = loss
        return result


# --------------------------------------------------------------------------- checkpoints


def ssast_state_dict(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Tensor], str]:
    """Read an SSAST checkpoint and strip whatever prefix sits before ``v.`` (``module.``, ``backbone.model.``).

    Keys outside that prefix (e.g. a classifier's heads) are dropped. Returns the state dict and its name.
    """
    raw, name = read_state_dict(source)
    state = flatten_state_dict(raw)
    prefixes = sorted((k[: -len(_PROJ)] for k in state if k.endswith(_PROJ)), key=len)
    if not prefixes:
        raise CheckpointMismatchError(f"{name}: not an SSAST checkpoint (no '{_PROJ}' key)")
    prefix = prefixes[0]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, name


def _describe(state: Mapping[str, Tensor]) -> str:
    dim = state["v.cls_token"].shape[-1] if "v.cls_token" in state else "?"
    depth = len({k.split(".")[2] for k in state if k.startswith("v.blocks.")})
    return f"{dim}-d, {depth} blocks, {1 + ('v.dist_token' in state)} cls token(s)"


def load_ssast_checkpoint(model: SSASTModel, source: str | Path | Mapping[str, Any],
                          strict: bool = True) -> SSASTModel:
    """Load an SSAST SSL checkpoint into ``model``, adapting it to the model's patch stride and input size.

    ``source``: a ``.pth``/``.pt`` (``torch.load(weights_only=True)``), ``.safetensors`` or a state dict, keys
    with or without ``module.``. The pretraining patch shape comes from ``v.patch_embed.proj.weight.shape[2:]`` and
    must equal the model's; the conv weights load whatever the model's stride (their shape does not depend on it).
    The pretraining input size (``p_input_fdim/tdim``) gives the stored positional-embedding grid, which
    :func:`adapt_pos_embed` crops / interpolates to the model's grid; cls/dist embeddings are kept. A
    checkpoint whose ``pos_embed`` already has the model's grid (e.g. written after fine-tuning) loads as is.
    Raises :class:`CheckpointMismatchError` on a different size, patch shape, or (``strict``) key set.
    """
    state, name = ssast_state_dict(source)
    kernel = tuple(state[_PROJ].shape[2:])
    if kernel != (model.fshape, model.tshape):
        raise CheckpointMismatchError(
            f"{name}: pretrained with {kernel[0]}x{kernel[1]} patches (fshape x tshape) but the model uses "
            f"{model.fshape}x{model.tshape}; fine-tuning must keep the pretraining patch shape (strides may differ)")
    has_dist = "v.dist_token" in state
    if state["v.cls_token"].shape[-1] != model.embed_dim or 1 + has_dist != model.cls_token_num:
        raise CheckpointMismatchError(f"{name}: checkpoint is {_describe(state)}; model_size '{model.model_size}' "
                                      f"is {model.embed_dim}-d with {model.cls_token_num} cls token(s)")
    pos = state["v.pos_embed"]
    cls_num = model.cls_token_num
    stored = pos.shape[1] - cls_num
    src_grid = None
    if "p_input_fdim" in state and "p_input_tdim" in state:
        p_in = int(state["p_input_fdim"].item()), int(state["p_input_tdim"].item())
        src_grid = patch_grid(*p_in, *kernel, *kernel)  # pretraining: stride == shape
    dst_grid = (model.f_dim, model.t_dim)
    if src_grid is not None and src_grid[0] * src_grid[1] == stored:
        state["v.pos_embed"] = torch.cat([pos[:, :cls_num], adapt_pos_embed(pos[:, cls_num:], src_grid, dst_grid)], 1)
    elif stored != model.num_patches:
        raise CheckpointMismatchError(
            f"{name}: pos_embed has {stored} patch tokens, neither the pretraining grid {src_grid} "
            f"(p_input_fdim/p_input_tdim) nor the model's {dst_grid}")
    try:
        load_checked(model, state, strict=strict)
    except CheckpointMismatchError as error:  # name the file, not "<state dict>"
        raise CheckpointMismatchError(str(error).replace("<state dict>", name, 1)) from None
    return model


# --------------------------------------------------------------------------- package backbone


@dataclass
class SSASTSettings:
    """The options of ``--model ssast`` (flags shown with it; ``config.model.options`` in a run)."""

    pretrained_mdl_path: str = option("", "self-supervised checkpoint to fine-tune (original .pth, with or "
                                          "without 'module.', or one written by `audiotune pretrain`)",
                                          role=Role.INPUT)
    model_size: str = option("base", "size", choices=("tiny", "small", "base", "base_nokd"))
    task: str = option("ft_cls", "pooled tokens for fine-tuning (ft_cls, ft_avgtok) or the objective of "
                                 "`audiotune pretrain` (pretrain_mpc, pretrain_mpg, pretrain_joint = nce + 10 mse)",
                       choices=("ft_cls", "ft_avgtok", "pretrain_mpc", "pretrain_mpg", "pretrain_joint"))
    fshape: int = option(128, "patch height in mel bins (128 with tshape 2: frame model; 16x16: patch model)",
                         valid=AT_LEAST_1)
    tshape: int = option(2, "patch width in frames", valid=AT_LEAST_1)
    fstride: int = option(128, "patch stride in mel bins (pretraining: = fshape)", valid=AT_LEAST_1)
    tstride: int = option(2, "patch stride in frames (pretraining: = tshape)", valid=AT_LEAST_1)
    mask_patch: int = option(400, "pretraining: patches masked per clip", valid=AT_LEAST_1)
    cluster_factor: int = option(3, "pretraining: side of the square blocks of masked patches (patch models)",
                                 valid=AT_LEAST_1)


@dataclass(frozen=True)
class SSASTOptions:
    """What builds an :class:`SSASTBackbone`, read from a run config by :meth:`from_config`."""

    model_size: str = "base"
    fshape: int = 128
    tshape: int = 2
    fstride: int | None = None  # None: = fshape (no overlap, as pretraining)
    tstride: int | None = None
    input_fdim: int = 128  # mel bins
    input_tdim: int = 1024  # frames
    task: str = "ft_avgtok"
    depth: int = 12

    @classmethod
    def from_config(cls, config: RunConfig) -> SSASTOptions:
        m = backbone_options(config)
        assert config.features.num_mel_bins is not None  # resolve_ssast sets it
        return cls(m.model_size, m.fshape, m.tshape, m.fstride, m.tstride, config.features.num_mel_bins,
                   config.features.target_length or 1024, m.task)


class SSASTBackbone(Backbone):
    """Package backbone over :class:`SSASTModel` (``self.model``).

    ``hidden_states`` returns ``depth + 2`` states (B, cls + N, D) and a token mask choosing what the classifier's
    masked mean pools: the cls token(s) for ``ft_cls`` (= upstream ``(x0 + x1) / 2``), the patch tokens otherwise
    (``ft_avgtok``; also for the pretraining tasks). ``lengths`` are ignored: inputs are padded / cropped to
    ``target_length`` frames and the padding is part of the input, as in the original.
    """

    input_kind = "features"  # (B, T, F) fbank: T = target_length, F = num_mel_bins
    needs_equal_length = False  # fixed-size inputs: a clip's result does not depend on its batch

    def __init__(self, options: SSASTOptions, pretrained_path: str | Path | None = None) -> None:
        super().__init__()
        o = options
        if o.task not in FINETUNE_TASKS + PRETRAIN_TASKS:
            raise ValueError(f"SSAST task '{o.task}' is not one of {FINETUNE_TASKS + PRETRAIN_TASKS}")
        self.options = options
        self.task = o.task
        self.model = SSASTModel(o.model_size, o.fshape, o.tshape, o.fstride, o.tstride, o.input_fdim, o.input_tdim,
                                depth=o.depth)
        if o.task in FINETUNE_TASKS:  # the pretext heads and mask token get no gradient while fine-tuning
            for param in (*self.model.cpredlayer.parameters(), *self.model.gpredlayer.parameters(),
                          self.model.mask_embed):
                param.requires_grad_(False)
        if pretrained_path:
            self.load_pretrained(pretrained_path)

    @property
    def embedding_dim(self) -> int:
        """Token width D."""
        return self.model.embed_dim

    @property
    def num_layers(self) -> int:
        """Transformer blocks."""
        return self.model.depth

    @property
    def num_hidden_states(self) -> int:
        """Blocks + 2: the embedded tokens, each block, and the final ``v.norm``."""
        return self.model.depth + 2

    def _mask(self, batch: int, device: torch.device) -> Tensor:
        tokens = self.model.cls_token_num + self.model.num_patches
        mask = torch.zeros(batch, tokens, dtype=torch.bool, device=device)
        if self.task == "ft_cls":
            mask[:, :self.model.cls_token_num] = True
        else:
            mask[:, self.model.cls_token_num:] = True
        return mask

    def hidden_states(self, features: Tensor, lengths: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """Features (B, T, F) -> (``num_hidden_states`` tensors (B, tokens, D), pooling mask (B, tokens))."""
        return self.model.hidden_states(features), self._mask(features.shape[0], features.device)

    def hidden_states_with_attention(self, features: Tensor, lengths: Tensor | None = None
                                     ) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        """As :meth:`hidden_states`, plus each block's attention probabilities (B, heads, tokens, tokens)."""
        states, attentions = self.model.forward_with_attention(features)
        return states, self._mask(features.shape[0], features.device), attentions

    def attention_layout(self) -> tuple[int, tuple[int, int]]:
        """Class tokens before the patches, and the patch grid (frequency rows, time columns)."""
        return self.model.cls_token_num, (self.model.f_dim, self.model.t_dim)

    # ------------------------------------------------------------------ self-supervised pretraining

    def pretrain_objectives(self) -> tuple[str, ...]:
        """Masked-patch classification, generation, or both; this backbone's ``--task`` first when it is one."""
        first = self.task if self.task in PRETRAIN_TASKS else "pretrain_joint"
        return (first, *(task for task in PRETRAIN_TASKS if task != first))

    def start_pretraining(self, objective: str, config: RunConfig) -> None:
        """Every parameter trainable (pretext heads and mask token too); masking from ``--mask_patch`` and
        ``--cluster_factor``."""
        self.task = objective
        settings = backbone_options(config)
        self.mask_options = {"mask_patch": settings.mask_patch, "cluster_factor": settings.cluster_factor}
        for param in self.parameters():
            if param.is_floating_point():
                param.requires_grad_(True)

    def pretrain_loss(self, batch: dict[str, Any], objective: str, step: int = 0,
                      rng: random.Random | None = None) -> dict[str, Tensor]:
        """:meth:`SSASTModel.pretrain_loss` of the batch's fbank ``inputs`` (``step`` is not used)."""
        options = getattr(self, "mask_options", {})
        return self.model.pretrain_loss(batch["inputs"], task=objective, rng=rng, **options)

    def save_pretrained_outputs(self, folder: Path) -> list[Path]:
        """``model.safetensors`` (original key names, no prefix: ``--pretrained_mdl_path`` reads it) and
        ``ssast_original.pth`` (the original ``module.`` keys, tensors only, for the original code)."""
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        written = [Path(folder) / MODEL_FILE, Path(folder) / ORIGINAL_SSAST_FILE]
        with atomic_path(written[0]) as partial:
            save_file(state, str(partial))
        with atomic_path(written[1]) as partial:
            torch.save({f"module.{k}": v for k, v in state.items()}, partial)
        return written

    def load_pretrained(self, path: str | Path | Mapping[str, Any]) -> None:
        """Original SSL checkpoint (with or without ``module.``) or one written by this package; see
        :func:`load_ssast_checkpoint`."""
        load_ssast_checkpoint(self.model, path, strict=True)


def resolve_ssast(config: RunConfig) -> None:
    """SSAST reads fbank features of a fixed length; frozen by default (the seed's ``--freeze True``).

    Sets ``features=fbank`` (package default is mfcc; waveform is rejected), ``target_length`` 0 -> 1024, and
    ``freeze`` None -> True for fine-tuning (False for the pretraining tasks). Checks size, task and patch
    geometry against ``num_mel_bins`` / ``target_length``.
    """
    f, m, s = config.features, config.model, backbone_options(config)
    if f.features == "waveform":
        raise ValueError("--model ssast reads fbank features, not waveforms")
    f.features = "fbank"
    if f.num_mel_bins is None:
        f.num_mel_bins = 128  # the SSAST checkpoints' input
    if f.target_length == 0:
        f.target_length = 1024
    if f.target_length < 0:
        raise ValueError(f"--target_length must be positive for --model ssast, got {f.target_length}")
    size = s.model_size
    if _ALIASES.get(size, size) not in SIZES:
        raise ValueError(f"--model_size {size}: SSAST sizes are {sorted(SIZES)}")
    task = s.task
    if task not in FINETUNE_TASKS + PRETRAIN_TASKS:
        raise ValueError(f"--task {task}: SSAST tasks are {FINETUNE_TASKS + PRETRAIN_TASKS}")
    fshape, tshape, fstride, tstride = s.fshape, s.tshape, s.fstride, s.tstride
    try:
        patch_grid(f.num_mel_bins, f.target_length, fshape, tshape, fstride, tstride)
    except ValueError as error:
        raise ValueError(f"--model ssast: {error} (--fshape/--tshape/--fstride/--tstride vs --num_mel_bins "
                         f"{f.num_mel_bins} / --target_length {f.target_length})") from None
    if task in PRETRAIN_TASKS and (fstride, tstride) != (fshape, tshape):
        raise ValueError(f"--task {task}: pretraining needs --fstride = --fshape and --tstride = --tshape "
                         f"(no overlapping patches), got stride ({fstride}, {tstride}), shape ({fshape}, {tshape})")
    if m.freeze is None:
        m.freeze = task in FINETUNE_TASKS


@register("ssast", resolve=resolve_ssast, options=SSASTSettings)
def build_ssast(config: RunConfig, pretrained: bool = True) -> SSASTBackbone:
    """SSAST over ``num_mel_bins x target_length`` fbanks; loads ``pretrained_mdl_path`` (or ``--checkpoint``)."""
    m, s = config.model, backbone_options(config)
    backbone = SSASTBackbone(SSASTOptions.from_config(config))
    path = s.pretrained_mdl_path or m.checkpoint
    if pretrained and path:
        backbone.load_pretrained(path)
    elif pretrained and m.freeze and s.task in FINETUNE_TASKS:
        log.warning("--model ssast with a frozen backbone and no --pretrained_mdl_path: the encoder stays random")
    return backbone
