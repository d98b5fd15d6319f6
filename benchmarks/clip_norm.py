"""A group-norm feature encoder's first GroupNorm over a padded scoring batch: each clip normalised over its own
frames (audiotune's ``ClipGroupNorm``) against ``nn.GroupNorm`` over the whole padded tensor (transformers'
module, which lets the padding into every clip's statistics), side by side on the same tensor.

The input is what wav2vec2-base's first convolution gives for ``--batch`` clips whose longest lasts ``--seconds``
at 16 kHz (512 channels, one frame per 5 samples), the clips' lengths spread evenly from ``--shortest`` of it to
all of it; float32, and bfloat16 under autocast (as ``--precision bf16`` scores). Per side: the median of
``--repeats`` calls after one untimed, scoring (no autograd), and the memory it takes beyond its input: CUDA's
peak allocation on a GPU; on the CPU the growth of the peak resident memory of a fresh process that makes one call.
Each side's output is also compared, over the clips' own frames, with ``nn.GroupNorm`` on each clip alone.

    python benchmarks/clip_norm.py                      # 8 clips of up to 3 s, on the CPU
    python benchmarks/clip_norm.py --device cuda --batch 32 --seconds 10
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from data_pipeline import machine  # benchmarks/data_pipeline.py
from torch import nn

from audiotune.models.backbones.hf_own_frames import ClipGroupNorm

CHANNELS, STRIDE, KERNEL = 512, 5, 10  # wav2vec2-base's first convolution
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SIDES = ("GroupNorm", "ClipGroupNorm")


def frames_of(args: argparse.Namespace) -> tuple[int, torch.Tensor]:
    """(padded frames, each clip's own frames)."""
    longest = (int(args.seconds * 16000) - KERNEL) // STRIDE + 1
    own = torch.linspace(args.shortest * longest, longest, args.batch).round().long()
    return longest, own


def module(side: str, device: torch.device, own: torch.Tensor) -> nn.GroupNorm:
    norm = (ClipGroupNorm if side == "ClipGroupNorm" else nn.GroupNorm)(CHANNELS, CHANNELS).to(device).eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.1, 0.1)
    if isinstance(norm, ClipGroupNorm):
        norm.frames = own.to(device)
    return norm


def call(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    low = x.dtype != torch.float32
    with torch.no_grad(), torch.autocast(x.device.type, dtype=x.dtype, enabled=low):
        return norm(x)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inputs(args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    longest, own = frames_of(args)
    generator = torch.Generator(device).manual_seed(args.seed)
    x = torch.randn(args.batch, CHANNELS, longest, generator=generator, device=device, dtype=dtype)
    return x, own


def cpu_peak(args: argparse.Namespace, side: str, dtype: str) -> float:
    """MB by which one call grows the peak resident memory of a fresh process (the input made before)."""
    command = [sys.executable, __file__, "--peak_of", side, dtype, "--batch", str(args.batch), "--seconds",
               str(args.seconds), "--shortest", str(args.shortest), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the memory of {side} {dtype} was not measured: {done.stderr.strip()}")
    return float(done.stdout.strip())


def peak_resident_kb() -> int:
    """This process's peak resident memory (Linux; not getrusage's, which a process started by one with more
    memory resident begins at)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def peak_of(args: argparse.Namespace) -> None:
    side, dtype = args.peak_of
    x, own = inputs(args, DTYPES[dtype], torch.device("cpu"))
    norm = module(side, torch.device("cpu"), own)
    if isinstance(norm, ClipGroupNorm):  # the first call's own set-up, left out of the measure
        norm.frames = torch.tensor([100])
    call(norm, x[:1, :, :100].contiguous())
    if isinstance(norm, ClipGroupNorm):
        norm.frames = own
    before = peak_resident_kb()
    call(norm, x)
    print((peak_resident_kb() - before) / 1024)


def diff_vs_alone(norm: nn.GroupNorm, x: torch.Tensor, own: torch.Tensor) -> float:
    """Largest |difference| over the clips' own frames between ``norm`` on the padded batch and ``nn.GroupNorm``
    (the same weights, float32) on each clip alone: what the padding changed."""
    out = call(norm, x).float()
    largest = 0.0
    with torch.no_grad():
        for row, frames in enumerate(own.tolist()):
            alone = nn.functional.group_norm(x[row:row + 1, :, :frames].float(), norm.num_groups, norm.weight,
                                             norm.bias, norm.eps)
            largest = max(largest, float((out[row:row + 1, :, :frames] - alone).abs().max()))
    return largest


def measure(args: argparse.Namespace, dtype: str, device: torch.device) -> list[dict]:
    x, own = inputs(args, DTYPES[dtype], device)
    norms = {side: module(side, device, own) for side in SIDES}
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats + 1):
        for side in SIDES:  # interleaved
            synchronize(device)
            start = time.perf_counter()
            call(norms[side], x)
            synchronize(device)
            if repeat:
                times[side].append(time.perf_counter() - start)
    rows = []
    copy_mb = x.numel() * 4 / 2**20
    for side in SIDES:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            call(norms[side], x)
            synchronize(device)
            peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            peak = cpu_peak(args, side, dtype)
        rows.append({"side": side, "dtype": dtype, "ms": 1000 * statistics.median(times[side]), "peak_mb": peak,
                     "float32_copies": peak / copy_mb, "max_diff_vs_alone": diff_vs_alone(norms[side], x, own)})
    for row in rows:
        row["vs_GroupNorm"] = row["ms"] / rows[0]["ms"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="the longest clip's length")
    parser.add_argument("--shortest", type=float, default=0.3, help="the shortest clip, a share of the longest")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--peak_of", nargs=2, metavar=("SIDE", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_of:
        peak_of(args)
        return
    device = torch.device(args.device)
    longest, own = frames_of(args)
    print(json.dumps(machine()))
    print(f"{args.batch} clips x {CHANNELS} channels x {longest} frames (own frames {int(own.min())}-{longest}), "
          f"{device}; time: median of {args.repeats}; memory beyond the input (one float32 copy: "
          f"{args.batch * CHANNELS * longest * 4 / 2**20:.0f} MB)")
    rows = [row for dtype in args.dtypes for row in measure(args, dtype, device)]
    print(f"{'side':<14} {'input':<9} {'ms':>8} {'vs GroupNorm':>13} {'peak MB':>8} {'copies':>7} "
          f"{'max|diff| vs alone':>19}")
    for row in rows:
        print(f"{row['side']:<14} {row['dtype']:<9} {row['ms']:8.1f} {row['vs_GroupNorm']:12.2f}x "
              f"{row['peak_mb']:8.0f} {row['float32_copies']:7.2f} {row['max_diff_vs_alone']:19.2e}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine(), "device": str(device), "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
