"""Where a command's model runs: the accelerator/devices flags turned into one torch device, autocast that
follows that device, batches moved onto it and results copied back without stopping it.

The flags have Lightning's spelling (``--accelerator auto|cpu|gpu|cuda|mps``, ``--devices auto|N|0,1|[1]``)
so ``train`` (Lightning) and the single-process commands (evaluate, extract, the feature cache, probe's
predictions, stats, attention) read the same options the same way.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor

from audiotune.config.sections import ACCELERATORS, ONE_DEVICE

BF16_PRECISIONS = ("bf16", "bf16-mixed")
FP16_PRECISIONS = ("16", "16-mixed")  # float16 autocast; the seeds' 16 is Lightning's 16-mixed
TF32 = "tf32"  # float32 tensors, their products on an NVIDIA GPU's tensor cores in TensorFloat-32


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def parse_devices(devices: str | int | list[int]) -> str | int | list[int]:
    """Lightning's ``devices`` from the config string: "auto", a count (int) or a list of indices.

    Accepts "auto", "N", "-1" (all), "0,1", "1," and "[1]" / "[0, 1]"; anything else is a ValueError.
    """
    if isinstance(devices, (int, list)):
        return devices
    text = devices.strip()
    if text.lower() == "auto":
        return "auto"
    bracketed = text.startswith("[") and text.endswith("]")
    body = text[1:-1] if bracketed else text
    try:
        if bracketed or "," in body:
            indices = [int(part) for part in body.split(",") if part.strip()]
            if not indices or min(indices) < 0:
                raise ValueError
            return indices
        count = int(body)
    except ValueError:
        raise ValueError(f"--devices {devices!r}: expected auto, a count (1, 2, -1 for all) or a list of "
                         f"device indices (0,1 or [1])") from None
    if count == 0 or count < -1:
        raise ValueError(f"--devices {devices!r}: a count must be at least 1 (or -1 for all devices)")
    return count


def check_one_process(devices: str | int | list[int], strategy: str = "auto", num_nodes: int = 1,
                      command: str = "", hint: str = "") -> None:
    """A command that runs in one process on one device refuses several devices, nodes or a strategy (a ValueError
    naming ``command`` and what to give; ``hint``: how to use several devices instead)."""
    parsed = parse_devices(devices)
    several = parsed == -1 or (isinstance(parsed, int) and parsed > 1) or (isinstance(parsed, list) and len(parsed) > 1)
    if several or num_nodes > 1 or strategy != "auto":
        raise ValueError(f"{command} runs in one process on one device: give --devices {ONE_DEVICE}, and no "
                         f"--strategy or --num_nodes{f'; {hint}' if hint else ''}")


def _device_index(devices: str | int | list[int], available: int, kind: str) -> int:
    """The one device index single-process inference uses: the first listed index, else 0."""
    parsed = parse_devices(devices)
    if isinstance(parsed, list):
        index = parsed[0]
        if max(parsed) >= available:
            raise ValueError(f"--devices {devices!r}: {kind} device index {max(parsed)} does not exist "
                             f"({available} {kind} device(s) visible: indices 0..{available - 1})")
        return index
    if isinstance(parsed, int) and parsed > available:
        raise ValueError(f"--devices {devices!r}: {parsed} {kind} devices asked for, {available} visible")
    return 0


def _cuda_missing(accelerator: str) -> str:
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"--accelerator {accelerator}: no CUDA GPU is available (torch.cuda.is_available() is False; "
            f"torch {torch.__version__} is {build}). Use --accelerator cpu or auto, or run on a machine with a GPU")


def resolve_device(accelerator: str = "auto", devices: str | int | list[int] = "auto") -> torch.device:
    """The torch device of ``--accelerator`` / ``--devices`` for single-process inference.

    ``auto``: CUDA when available, else MPS, else the CPU. ``gpu``: CUDA, else MPS (as Lightning reads it),
    else a ValueError; ``cuda``: CUDA or a ValueError; ``cpu``: the CPU. ``devices`` picks the CUDA index:
    the first index of a list, index 0 for a count or "auto"; an index or count beyond the visible devices
    is a ValueError.
    """
    name = accelerator.strip().lower()
    if name not in ACCELERATORS:
        raise ValueError(f"--accelerator {accelerator!r}: choose one of {', '.join(ACCELERATORS)}")
    if name == "cpu":
        parse_devices(devices)  # a malformed value is an error on every accelerator
        return torch.device("cpu")
    if name in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", _device_index(devices, torch.cuda.device_count(), "CUDA"))
    if name in ("auto", "gpu", "mps") and _mps_available():
        return torch.device("mps", _device_index(devices, 1, "MPS"))
    if name == "auto":
        parse_devices(devices)
        return torch.device("cpu")
    if name == "mps":
        raise ValueError("--accelerator mps: the MPS backend (Apple GPU) is not available on this machine")
    raise ValueError(_cuda_missing(accelerator))


MixedOrFull = Literal["bf16-mixed", "16-mixed", "32-true"]


def lightning_precision(precision: str) -> MixedOrFull:
    """Lightning's ``precision`` for ``--precision``: bf16-mixed, 16-mixed (also for the seeds' 16) or 32-true
    (32 and tf32, whose products :func:`float32_products` sets)."""
    if precision in BF16_PRECISIONS:
        return "bf16-mixed"
    return "16-mixed" if precision in FP16_PRECISIONS else "32-true"


def check_precision(device: torch.device, precision: str) -> None:
    """A ValueError when ``device`` cannot run ``precision``: float16 mixed precision needs a CUDA or MPS GPU
    (Lightning would silently train in bf16 on the CPU instead)."""
    if precision in FP16_PRECISIONS and device.type not in ("cuda", "mps"):
        raise ValueError(f"--precision {precision}: 16-bit mixed precision (float16 autocast with loss scaling) "
                         f"needs a GPU, and this command runs on the {device.type.upper()}; use --precision bf16 "
                         "(bfloat16 autocast, what Lightning falls back to on a CPU) or 32")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 or float16 autocast on ``device``'s type when ``precision`` asks for it, TensorFloat-32 products for
    tf32 (:func:`float32_products`), else a context that does nothing."""
    if precision in BF16_PRECISIONS:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision in FP16_PRECISIONS:
        return torch.autocast(device.type, dtype=torch.float16)
    return float32_products(device, precision)


@contextlib.contextmanager
def float32_products(device: torch.device, precision: str) -> Iterator[None]:
    """With ``--precision tf32`` on a CUDA GPU: float32 matrix products (and convolutions, as torch already
    does by default) computed in TensorFloat-32 on the tensor cores (Ampere or newer: 10 mantissa bits in the
    products, float32 sums; many times float32's speed) while the block runs, and the process's settings put
    back after it. Anything else (32, or tf32 on another device): float32 throughout, nothing changed."""
    if precision != TF32 or device.type != "cuda":
        yield
        return
    # torch's process-wide switch, in the spelling Lightning reads (its newer per-backend one cannot be mixed
    # with it)
    matmul, convolutions = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = convolutions


def move_batch(batch: dict, device: torch.device) -> dict:
    """The batch with every tensor on ``device`` (asynchronous from pinned memory); other values unchanged."""
    return {key: value.to(device, non_blocking=True) if isinstance(value, Tensor) else value
            for key, value in batch.items()}



def to_host(tensor: Tensor) -> Callable[[], Tensor]:
    """Start copying ``tensor`` to the CPU as float32; returns what waits for the copy and gives it. On CUDA the copy
    goes into pinned memory behind the work already queued, and waiting for it waits for that work only, not for
    anything queued after this call (the next batch's forward pass); elsewhere the copy is made now."""
    values = tensor.detach().float()
    if values.device.type != "cuda":
        host = values.cpu()
        return lambda: host
    host = values.to("cpu", non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(values.device))  # the copy's own GPU, which need not be the current one

    def landed() -> Tensor:
        copied.synchronize()
        return host

    return landed
