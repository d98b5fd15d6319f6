"""SSAST checkpoints: read one (``.pth``, ``.safetensors`` or a state dict, whatever the key prefix) and load it
into an :class:`~audiotune.models.backbones.ssast_model.SSASTModel`, adapting the positional embedding to the model's
patch stride and input size."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from audiotune.models.backbones.ssast_masking import adapt_pos_embed, patch_grid
from audiotune.models.backbones.ssast_model import SSASTModel
from audiotune.models.state_dict import (
    CheckpointMismatchError,
    flatten_state_dict,
    load_checked,
    read_state_dict,
)

__all__ = ["load_ssast_checkpoint", "ssast_state_dict"]

_PROJ = "v.patch_embed.proj.weight"


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
    checkpoint whose ``pos_embed`` already has the model's grid (e.g. written after fine-tuning) loads as is. The
    model's ``p_input_fdim/tdim`` then describe its grid (the input whose non-overlapping patches lay it out), so
    that what it writes is read back at any other size or stride, as an original checkpoint is.
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
    if "p_input_fdim" in state and "p_input_tdim" in state:
        # pos_embed is now on the model's grid: p_input says so (the input whose patches at stride = shape give that
        # grid), so that the checkpoint the model writes loads again, here and in the original code, at any size
        for key, size in (("p_input_fdim", dst_grid[0] * kernel[0]), ("p_input_tdim", dst_grid[1] * kernel[1])):
            state[key] = torch.tensor(size, dtype=state[key].dtype)
    try:
        load_checked(model, state, strict=strict)
    except CheckpointMismatchError as error:  # name the file, not "<state dict>"
        raise CheckpointMismatchError(str(error).replace("<state dict>", name, 1)) from None
    return model
