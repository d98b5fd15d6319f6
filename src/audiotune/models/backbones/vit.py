"""The vision-transformer layers of DeiT in plain torch, with timm 0.4.5's module and parameter names
(``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``), so
checkpoints written with timm load unchanged. Attention runs through ``scaled_dot_product_attention``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """1-channel patch projection: (B, 1, F, T) -> (B, f_dim * t_dim, D), frequency-major."""

    def __init__(self, dim: int, kernel: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=kernel, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm ViT attention (fused qkv with bias); SDPA unless the probabilities are asked for."""

    def __init__(self, dim: int, num_heads: int, drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """(B, N, D) -> output (B, N, D) and, with ``need_weights``, softmax(QK^T/sqrt(d)) (B, heads, N, N)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        weights = None
        if need_weights:  # explicit path for visualisation; numerically the same as SDPA
            weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C))), weights


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (ratio 4)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block, LayerNorm eps 1e-6."""

    def __init__(self, dim: int, num_heads: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4, drop)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        attn, weights = self.attn(self.norm1(x), need_weights)
        x = x + attn
        return x + self.mlp(self.norm2(x)), weights


class DeiT(nn.Module):
    """The ``v`` container: tokens, positional embedding, blocks, final norm and DeiT's unused heads."""

    def __init__(self, dim: int, depth: int, num_heads: int, cls_token_num: int, num_patches: int,
                 kernel: tuple[int, int], stride: tuple[int, int], drop: float, head_classes: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(dim, kernel, stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token_num == 2 else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + cls_token_num, dim))
        self.pos_drop = nn.Dropout(drop)
        self.blocks = nn.ModuleList(Block(dim, num_heads, drop) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # DeiT's ImageNet heads: present in every original checkpoint, never used (frozen, see module docstring)
        self.head = nn.Linear(dim, head_classes)
        self.head_dist = nn.Linear(dim, head_classes) if cls_token_num == 2 else None
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():  # timm's ViT init; the patch conv keeps torch's default, as upstream
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for param in (self.pos_embed, self.cls_token, self.dist_token):
            if param is not None:
                nn.init.trunc_normal_(param, std=0.02)
        for head in (self.head, self.head_dist):
            if head is not None:
                head.requires_grad_(False)
