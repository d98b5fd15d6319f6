"""ECAPA-TDNN speaker-embedding backbone, a plain-torch twin of SpeechBrain's.

The modules below reproduce ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN``
(SpeechBrain 0.5 / 1.0) layer for layer, with the same parameter and buffer
names, so a SpeechBrain checkpoint (``embedding_model.ckpt``) loads with
``strict=True``: SpeechBrain's ``Conv1d`` wraps an ``nn.Conv1d`` as ``.conv``
and its ``BatchNorm1d`` wraps an ``nn.BatchNorm1d`` as ``.norm``, hence keys
such as ``blocks.0.conv.conv.weight`` or ``blocks.0.norm.norm.running_mean``.

Padding and batch independence
------------------------------
``lengths`` (relative lengths in (0, 1]) make a clip's output independent of
the batch it is padded in.  SpeechBrain's "same" padding reflects at the
*tensor's* edge, so in a zero-padded batch the last real frames of a short
clip would be convolved with padding instead of with their own reflection.
With ``lengths``, every convolution reflects at each clip's own last frame
(one gather): the frames past a clip's end are read only by its padded
frames, which the squeeze-excitation means and the attentive statistics
pooling mask out (masked mean/std, ``-inf`` attention).  In ``eval()`` mode a
clip's embedding in any padded batch is therefore its embedding alone; in
training, BatchNorm's batch statistics see every frame of the batch, as in
SpeechBrain.  Without ``lengths`` every clip is taken as long as the batch.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiotune.models.state_dict import load_checked

__all__ = [
    "AttentiveStatisticsPooling", "BatchNorm1d", "Conv1d", "ECAPA_TDNN", "Res2NetBlock", "SEBlock",
    "SERes2NetBlock", "TDNNBlock", "clip_reflect_index", "frames_to_relative_lengths", "length_to_mask",
    "load_speechbrain_state_dict",
]


def length_to_mask(length: Tensor, max_len: int, device: torch.device | None = None) -> Tensor:
    """SpeechBrain's mask: ``arange(max_len) < length``, in ``length``'s dtype (float stays float)."""
    # broadcast, not expand(len(length), ...): a Python batch size would freeze the batch axis of an export
    mask = torch.arange(max_len, device=length.device, dtype=length.dtype)[None, :] < length.unsqueeze(1)
    mask = mask.to(length.dtype)
    return mask if device is None or torch.device(device) == mask.device else mask.to(device)


def frames_to_relative_lengths(lengths: Tensor, total: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Integer frame counts -> SpeechBrain relative lengths ``lengths / total``.

    In float32 ``(n / T) * T`` can round to just above ``n`` (e.g. n=7, T=13),
    which SpeechBrain's ``arange < rel * T`` would turn into an extra valid
    frame; such values are scaled down by a few ulps, so ``rel * T`` lies in
    ``(n - 1, n]`` and the mask has exactly ``n`` frames (a full clip stays 1).
    """
    n = lengths.to(dtype)
    rel = n / total
    # one elementwise select, no data-dependent branch: the graph exports (ONNX has no nextafter)
    return torch.where(rel * total > n, rel * (1 - 4 * torch.finfo(dtype).eps), rel)


# the reflect-padding positions computed in one forward pass, by (total, pad), with the lengths they are of
_REFLECT_INDICES: contextvars.ContextVar[dict[tuple[int, int], tuple[Tensor, Tensor]] | None] = contextvars.ContextVar(
    "reflect_indices", default=None)


@contextlib.contextmanager
def reflect_indices_shared() -> Iterator[None]:
    """Within the block, the convolutions that pad alike share one :func:`clip_reflect_index` of the same lengths
    (one forward pass: two dozen convolutions, three paddings), instead of a dozen small kernels each."""
    if torch.compiler.is_compiling():  # traced (torch.export, torch.compile): each convolution computes its own
        yield
        return
    token = _REFLECT_INDICES.set({})
    try:
        yield
    finally:
        _REFLECT_INDICES.reset(token)


def clip_reflect_index(lengths: Tensor, total: int, pad: int) -> Tensor:
    """(B, total + 2 * pad) frame positions that reflect-pad each clip at its own edges.

    ``lengths`` are relative (SpeechBrain's, as :func:`length_to_mask` reads them): a clip has
    ``ceil(length * total)`` valid frames ``n``. Position ``-j`` reads frame ``j`` and position ``n - 1 + j``
    reads frame ``n - 1 - j``, as ``F.pad(mode="reflect")`` of the clip alone; positions further out read frame 0
    (they feed only padded frames). Every position reads a valid frame of its own clip. Inside
    :func:`reflect_indices_shared`, computed once per padding for the same ``lengths`` tensor.
    """
    shared = None if torch.compiler.is_compiling() else _REFLECT_INDICES.get()
    if shared is not None:
        known = shared.get((total, pad))
        if known is not None and known[0] is lengths:
            return known[1]
    index = _reflect_index(lengths, total, pad)
    if shared is not None:
        shared[total, pad] = (lengths, index)
    return index


def _reflect_index(lengths: Tensor, total: int, pad: int) -> Tensor:
    frames = torch.ceil(lengths * total).to(torch.long).clamp(1, total)[:, None]
    positions = torch.arange(-pad, total + pad, device=lengths.device).abs()[None, :]
    reflected = torch.where(positions > frames - 1, 2 * (frames - 1) - positions, positions)
    return reflected.clamp(min=0)


class Conv1d(nn.Module):
    """SpeechBrain ``Conv1d`` (skip_transpose): "same" reflect padding for the dilation, inner ``.conv``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, groups: int = 1,
        bias: bool = True, padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding_mode = padding_mode
        # get_padding_elem for stride 1: L_in - L_out = d * (k - 1), split evenly.
        self.pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=0, groups=groups, bias=bias
        )

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, C_in, L), relative lengths (B,) or None -> (B, C_out, L); with ``lengths`` each clip is
        reflect-padded at its own edges (:func:`clip_reflect_index`), else at the tensor's."""
        if self.pad > 0:
            if x.shape[-1] <= self.pad:
                raise ValueError(
                    f"input of {x.shape[-1]} frames is too short for reflect padding of {self.pad}"
                )
            if lengths is not None and self.padding_mode == "reflect":
                index = clip_reflect_index(lengths, x.shape[-1], self.pad)
                x = torch.gather(x, 2, index[:, None, :].expand(x.shape[0], x.shape[1], -1))
            else:
                x = F.pad(x, (self.pad, self.pad), mode=self.padding_mode)
        return self.conv(x)


class BatchNorm1d(nn.Module):
    """SpeechBrain ``BatchNorm1d`` (skip_transpose): an ``nn.BatchNorm1d`` held as ``.norm``."""

    def __init__(self, input_size: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(input_size, eps=eps, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, L) -> (B, C, L)."""
        return self.norm(x)


class TDNNBlock(nn.Module):
    """Conv1d -> activation -> BatchNorm1d -> channel dropout."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int,
        activation: type[nn.Module] = nn.ReLU, groups: int = 1, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv = Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups)
        self.activation = activation()
        self.norm = BatchNorm1d(out_channels)
        # no dropout: no module (a Dropout1d of p 0 still runs its kernels in training)
        self.dropout: nn.Module = nn.Dropout1d(p=dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, C_in, L), relative lengths (B,) or None -> (B, C_out, L)."""
        return self.dropout(self.norm(self.activation(self.conv(x, lengths))))


class Res2NetBlock(nn.Module):
    """Res2Net with dilation: ``scale`` channel chunks, each (but the first) fed its predecessor's output."""

    def __init__(
        self, in_channels: int, out_channels: int, scale: int = 8, kernel_size: int = 3, dilation: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_channels % scale or out_channels % scale:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by scale {scale}")
        self.blocks = nn.ModuleList(
            TDNNBlock(in_channels // scale, out_channels // scale, kernel_size, dilation, dropout=dropout)
            for _ in range(scale - 1)
        )
        self.scale = scale

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, C, L), relative lengths (B,) or None -> (B, C, L)."""
        ys: list[Tensor] = []
        y_i = x
        for i, x_i in enumerate(torch.chunk(x, self.scale, dim=1)):
            if i == 0:
                y_i = x_i  # the first chunk is passed through untouched
            elif i == 1:
                y_i = self.blocks[0](x_i, lengths)
            else:
                y_i = self.blocks[i - 1](x_i + y_i, lengths)
            ys.append(y_i)
        return torch.cat(ys, dim=1)


class SEBlock(nn.Module):
    """Squeeze-excitation whose squeeze is a mean over the valid frames only."""

    def __init__(self, in_channels: int, se_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = Conv1d(in_channels, se_channels, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = Conv1d(se_channels, out_channels, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, C, L), relative lengths (B,) -> (B, C, L)."""
        L = x.shape[-1]
        if lengths is not None:
            mask = length_to_mask(lengths * L, max_len=L, device=x.device).unsqueeze(1)
            s = (x * mask).sum(dim=2, keepdim=True) / mask.sum(dim=2, keepdim=True)
        else:
            s = x.mean(dim=2, keepdim=True)
        s = self.sigmoid(self.conv2(self.relu(self.conv1(s))))
        return s * x


class AttentiveStatisticsPooling(nn.Module):
    """Channel-wise attentive mean/std pooling; ``global_context`` adds the masked utterance mean/std."""

    def __init__(self, channels: int, attention_channels: int = 128, global_context: bool = True) -> None:
        super().__init__()
        self.eps = 1e-12
        self.global_context = global_context
        self.tdnn = TDNNBlock(channels * 3 if global_context else channels, attention_channels, 1, 1)
        self.tanh = nn.Tanh()
        self.conv = Conv1d(attention_channels, channels, kernel_size=1)

    def _statistics(self, x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        # Weighted mean/std by hand: torch.std's backward is unstable (pytorch#4320).
        mean = (m * x).sum(2)
        std = torch.sqrt((m * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(self.eps))
        return mean, std

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, C, L), relative lengths (B,) -> pooled (B, 2C, 1)."""
        L = x.shape[-1]
        if lengths is None:
            lengths = torch.ones(x.shape[0], device=x.device)
        mask = length_to_mask(lengths * L, max_len=L, device=x.device).unsqueeze(1)
        if self.global_context:
            total = mask.sum(dim=2, keepdim=True).float()
            mean, std = self._statistics(x, mask / total)
            attn = torch.cat([x, mean.unsqueeze(2).repeat(1, 1, L), std.unsqueeze(2).repeat(1, 1, L)], dim=1)
        else:
            attn = x
        attn = self.conv(self.tanh(self.tdnn(attn)))  # 1x1 convolutions: no padding to mask
        attn = attn.masked_fill(mask == 0, float("-inf"))  # padded frames get zero weight
        attn = F.softmax(attn, dim=2)
        mean, std = self._statistics(x, attn)
        return torch.cat((mean, std), dim=1).unsqueeze(2)


class SERes2NetBlock(nn.Module):
    """TDNN(1x1) -> Res2Net -> TDNN(1x1) -> SE, plus a (projected) residual."""

    def __init__(
        self, in_channels: int, out_channels: int, res2net_scale: int = 8, se_channels: int = 128,
        kernel_size: int = 1, dilation: int = 1, activation: type[nn.Module] = nn.ReLU, groups: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.tdnn1 = TDNNBlock(in_channels, out_channels, 1, 1, activation, groups, dropout)
        # SpeechBrain passes no dropout to the Res2Net block.
        self.res2net_block = Res2NetBlock(out_channels, out_channels, res2net_scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(out_channels, out_channels, 1, 1, activation, groups, dropout)
        self.se_block = SEBlock(out_channels, se_channels, out_channels)
        self.shortcut = Conv1d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, C_in, L), relative lengths (B,) -> (B, C_out, L)."""
        residual = self.shortcut(x) if self.shortcut is not None else x
        x = self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x), lengths)), lengths)
        return x + residual


class ECAPA_TDNN(nn.Module):  # noqa: N801 - SpeechBrain's class name
    """ECAPA-TDNN (Desplanques et al., 2020) with SpeechBrain's exact module tree.

    ``forward(x (B, T, F), lengths (B,) relative in (0, 1] or None) -> (B, 1, lin_neurons)``.
    With ``lengths``, a clip's embedding does not depend on the padding of its batch (module docstring).
    """

    def __init__(
        self,
        input_size: int,
        lin_neurons: int = 192,
        activation: type[nn.Module] = nn.ReLU,
        channels: Sequence[int] = (512, 512, 512, 512, 1536),
        kernel_sizes: Sequence[int] = (5, 3, 3, 3, 1),
        dilations: Sequence[int] = (1, 2, 3, 4, 1),
        attention_channels: int = 128,
        res2net_scale: int = 8,
        se_channels: int = 128,
        global_context: bool = True,
        groups: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, kernel_sizes, dilations = list(channels), list(kernel_sizes), list(dilations)
        groups = [1] * len(channels) if groups is None else list(groups)
        if not len(channels) == len(kernel_sizes) == len(dilations) == len(groups):
            raise ValueError(f"channels ({len(channels)}), kernel_sizes ({len(kernel_sizes)}), dilations "
                             f"({len(dilations)}) and groups ({len(groups)}) must have the same length")
        if len(channels) < 3:
            raise ValueError("ECAPA-TDNN needs at least 3 channel entries (TDNN, SE-Res2Net..., MFA)")
        self.channels = channels
        self.blocks = nn.ModuleList(
            [TDNNBlock(input_size, channels[0], kernel_sizes[0], dilations[0], activation, groups[0], dropout)]
        )
        for i in range(1, len(channels) - 1):
            self.blocks.append(
                SERes2NetBlock(
                    channels[i - 1], channels[i], res2net_scale, se_channels, kernel_sizes[i], dilations[i],
                    activation, groups[i], dropout,
                )
            )
        # Multi-layer feature aggregation over all SE-Res2Net outputs.
        self.mfa = TDNNBlock(
            channels[-2] * (len(channels) - 2), channels[-1], kernel_sizes[-1], dilations[-1],
            activation, groups[-1], dropout,
        )
        self.asp = AttentiveStatisticsPooling(channels[-1], attention_channels, global_context)
        self.asp_bn = BatchNorm1d(channels[-1] * 2)
        self.fc = Conv1d(channels[-1] * 2, lin_neurons, kernel_size=1)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Features (B, T, F) and relative lengths (B,) or None -> embeddings (B, 1, lin_neurons)."""
        x = x.transpose(1, 2)
        xl: list[Tensor] = []
        with reflect_indices_shared():
            for layer in self.blocks:
                x = layer(x, lengths=lengths)
                xl.append(x)
            x = self.mfa(torch.cat(xl[1:], dim=1), lengths)
        x = self.asp_bn(self.asp(x, lengths=lengths))
        return self.fc(x).transpose(1, 2)


def load_speechbrain_state_dict(
    model: nn.Module, path_or_state_dict: str | Path | Mapping[str, Any], strict: bool = True
) -> Any:
    """Load a SpeechBrain-layout ECAPA checkpoint (``.ckpt``/``.pt``/``.safetensors`` or a dict).

    ``model`` is an :class:`ECAPA_TDNN` or anything holding one as ``.ecapa``; see
    :func:`audiotune.models.state_dict.load_checked` for prefixes, nesting and errors.
    """
    ecapa = getattr(model, "ecapa", None)
    target = ecapa if isinstance(ecapa, ECAPA_TDNN) else model
    return load_checked(target, path_or_state_dict, strict=strict)
