"""SSAST patch-grid helpers: grid size, positional-embedding adaptation, which patches to mask, the MPC loss.

Patches are numbered as the patch-embedding convolution lays them out: ``(B, D, f_dim, t_dim)`` flattened
frequency-major, so patch ``n`` sits at row ``n // t_dim`` (frequency) and column ``n % t_dim`` (time).

Differences from the original ``gen_maskid_patch`` (YuanGongND/ssast), all deliberate:

* ``cluster_factor`` really sets the block side (the original ignored ``--cluster_factor`` and always drew
  ``randrange(3) + 3``); ``jitter=True`` restores that draw as ``cluster_factor + randrange(3)``, which equals
  the original for the default ``cluster_factor=3``.
* Blocks are clipped at the right and bottom edges of the grid; the original's ``start + t_dim * i + j``
  wrapped columns past the last time step into the next frequency row.
* Patch 0 can be masked (the original's ``mask_cand > 0`` excluded it).
* Exactly ``mask_size`` indices: the last block is truncated in row-major order (the original's
  ``list(set(ids))[:mask_size]`` dropped the *largest* indices, since small-int sets iterate roughly sorted).
* A block starts on a patch not masked yet, so every block adds at least one patch and the loop ends.

Randomness comes only from the ``random.Random`` passed in; :func:`default_rng` derives one from torch's
global generator so ``torch.manual_seed`` (or Lightning's ``seed_everything``) makes masks reproducible.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "adapt_pos_embed", "default_rng", "info_nce", "mask_frames", "mask_patches_clustered", "patch_grid",
]


def patch_grid(input_fdim: int, input_tdim: int, fshape: int, tshape: int, fstride: int,
               tstride: int) -> tuple[int, int]:
    """Patch grid ``(f_dim, t_dim)`` of an ``input_fdim x input_tdim`` spectrogram; clear errors when impossible."""
    for name, value in (("fshape", fshape), ("tshape", tshape), ("fstride", fstride), ("tstride", tstride)):
        if value < 1:
            raise ValueError(f"SSAST {name} must be >= 1, got {value}")
    if fstride > fshape or tstride > tshape:  # a stride beyond the patch would skip input
        raise ValueError(f"SSAST stride ({fstride}, {tstride}) exceeds the patch shape ({fshape}, {tshape})")
    if fshape > input_fdim:
        raise ValueError(f"SSAST fshape={fshape} exceeds the {input_fdim} mel bins of the input (num_mel_bins)")
    if tshape > input_tdim:
        raise ValueError(f"SSAST tshape={tshape} exceeds the {input_tdim} frames of the input (target_length)")
    return (input_fdim - fshape) // fstride + 1, (input_tdim - tshape) // tstride + 1


def adapt_pos_embed(patch_pos: Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> Tensor:
    """Positional embeddings of a ``src_grid`` patch layout -> ``dst_grid``: (1, Fs*Ts, D) -> (1, Fd*Td, D).

    Per axis: centre-crop where the new size is smaller, bilinear interpolation (``align_corners=False``, as
    upstream) where it is larger, untouched where equal. Time is handled first, then frequency, as upstream.
    Fixed upstream bugs: (1) the time step (taken whenever ``t_dim >= p_t_dim``, even when equal) interpolated
    to the hard-coded frequency size 8: exact for 16x16 patches on 128 mel bins and harmless for frame models
    (1 -> 8 -> 1 identical rows), but any other ``p_f_dim`` had its rows smeared together; (2) the frequency
    crop used ``t_dim`` as its length, which broke whenever ``f_dim < p_f_dim`` and ``t_dim != f_dim``.
    """
    (pf, pt), (f, t) = src_grid, dst_grid
    _, n, dim = patch_pos.shape
    if n != pf * pt:
        raise ValueError(f"positional embedding has {n} patch tokens, not {pf} x {pt}")
    grid = patch_pos.detach().float().transpose(1, 2).reshape(1, dim, pf, pt)
    if t < pt:
        start = pt // 2 - t // 2
        grid = grid[:, :, :, start:start + t]
    elif t > pt:
        grid = F.interpolate(grid, size=(grid.shape[2], t), mode="bilinear", align_corners=False)
    if f < pf:
        start = pf // 2 - f // 2
        grid = grid[:, :, start:start + f, :]
    elif f > pf:
        grid = F.interpolate(grid, size=(f, grid.shape[3]), mode="bilinear", align_corners=False)
    return grid.reshape(1, dim, f * t).transpose(1, 2).to(patch_pos.dtype).contiguous()


def default_rng() -> random.Random:
    """A ``random.Random`` seeded from torch's global generator (reproducible under ``torch.manual_seed``)."""
    return random.Random(int(torch.randint(0, 2**62, (1,)).item()))


def _check_size(num_patches: int, mask_size: int) -> None:
    if num_patches <= 0:
        raise ValueError(f"num_patches must be positive, got {num_patches}")
    if not 0 <= mask_size <= num_patches:
        raise ValueError(f"cannot mask {mask_size} patches out of {num_patches} (need 0 <= mask_size <= num_patches)")


def mask_patches_clustered(num_patches: int, t_dim: int, mask_size: int, cluster_factor: int = 3,
                           rng: random.Random | None = None, jitter: bool = False) -> Tensor:
    """``mask_size`` distinct patch indices in ``[0, num_patches)``, in square blocks of adjacent patches.

    Args:
        num_patches: patches in the grid, ``f_dim * t_dim``.
        t_dim: patches along time (the grid's row length).
        mask_size: how many indices to return (exactly).
        cluster_factor: block side in patches: blocks are ``cluster_factor x cluster_factor`` (clipped at the
            grid's edges, and the last block truncated to reach ``mask_size``).
        rng: source of randomness; ``None`` draws one with :func:`default_rng`.
        jitter: draw the side once per call as ``cluster_factor + randrange(3)`` like the original SSAST.

    Returns:
        Sorted ``int64`` tensor of shape ``(mask_size,)``.
    """
    _check_size(num_patches, mask_size)
    if t_dim <= 0 or num_patches % t_dim:
        raise ValueError(f"t_dim={t_dim} does not divide num_patches={num_patches} into full rows")
    if cluster_factor < 1:
        raise ValueError(f"cluster_factor must be >= 1, got {cluster_factor}")
    rng = rng or default_rng()
    f_dim = num_patches // t_dim
    side = cluster_factor + (rng.randrange(3) if jitter else 0)
    chosen: dict[int, None] = {}  # insertion-ordered set: the last block is the one truncated
    while len(chosen) < mask_size:
        start = rng.randrange(num_patches)
        if start in chosen:  # rejection keeps the start uniform over unmasked patches; guarantees progress
            continue
        row, col = divmod(start, t_dim)
        # clip at the grid's edges instead of wrapping into the next frequency row
        for r in range(row, min(row + side, f_dim)):
            for c in range(col, min(col + side, t_dim)):
                if len(chosen) == mask_size:
                    break
                chosen.setdefault(r * t_dim + c)
    return torch.tensor(sorted(chosen), dtype=torch.long)


def mask_frames(num_patches: int, mask_size: int, rng: random.Random | None = None) -> Tensor:
    """``mask_size`` distinct indices drawn uniformly from ``[0, num_patches)`` (the original frame masking).

    Used for frame models (``f_dim == 1``), where clustering hurt performance in the SSAST paper.
    Returns a sorted ``int64`` tensor of shape ``(mask_size,)``.
    """
    _check_size(num_patches, mask_size)
    rng = rng or default_rng()
    return torch.tensor(sorted(rng.sample(range(num_patches), mask_size)), dtype=torch.long)


def info_nce(targets: Tensor, predictions: Tensor) -> tuple[Tensor, Tensor]:
    """SSAST's masked patch classification loss and accuracy, batched.

    Args:
        targets: ``(B, M, P)`` flattened input patches at the masked positions (detached).
        predictions: ``(B, M, P)`` ``cpredlayer`` outputs at the same positions.

    Returns:
        ``(acc, nce)``: ``scores[b] = targets[b] @ predictions[b].T`` is (M, M); the negatives of a patch are the
        other masked patches of the same clip. ``nce = -mean(diag(log_softmax(scores, dim=-1)))``. ``acc`` is
        upstream's ``argmax(softmax(scores, dim=-1), dim=0) == arange(M)``: per prediction ``k``, whether its
        own target ``k`` wins after each target's row was softmax-normalised. The softmax runs over ``dim=-1``
        (over predictions for each target) as in the original code, although Eq. 1 of the paper normalises the
        other way: upstream issue #13, kept for reproducibility (the author reports similar performance).
    """
    scores = torch.bmm(targets, predictions.transpose(1, 2))
    log_probs = F.log_softmax(scores, dim=-1)
    nce = -torch.diagonal(log_probs, dim1=1, dim2=2).mean()
    arange = torch.arange(scores.shape[1], device=scores.device)
    # argmax over targets (dim 0 of each clip's matrix) of the row-normalised scores, exactly as upstream
    acc = (log_probs.detach().argmax(dim=1) == arange).float().mean()
    return acc, nce
