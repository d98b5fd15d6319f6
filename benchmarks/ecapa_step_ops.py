"""Operations an ECAPA-TDNN training step launches, and its time, with each padding's reflect positions shared by
the convolutions of a forward pass and no dropout module at dropout 0 (now), against every convolution computing
its own positions and a Dropout1d of p 0 in each block (before), side by side on the same model and batches.

On a GPU a small model's step is bound by launching kernels (the GPU suite's part b: ECAPA-TDNN kept an H100
1-17 % busy), so the operations per step are the figure that carries over; on the CPU the time of a small batch
shows the same overhead. Default: the ECAPA-TDNN of ``--model ecapa_tdnn`` (512 channels), 80-bin fbank, a
batch of clips of mixed lengths (lengths given: every convolution pads each clip at its own edges).

    python benchmarks/ecapa_step_ops.py                      # CPU, batch 4 x 2 s
    python benchmarks/ecapa_step_ops.py --device cuda --batch 32 --frames 500
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from audiotune.config import HeadSpec, RunConfig
from audiotune.models.backbones import ecapa_model
from audiotune.models.checkpoint import build_classifier


def before(model: torch.nn.Module) -> Callable[[], contextlib.AbstractContextManager]:
    """The model as it ran before: a Dropout1d of p 0 in each block (the modules that now are Identity), and the
    shared positions turned off (returned: the context to run a step in)."""
    for module in model.modules():
        if isinstance(module, ecapa_model.TDNNBlock) and isinstance(module.dropout, torch.nn.Identity):
            module.dropout = torch.nn.Dropout1d(p=0.0)

    @contextlib.contextmanager
    def unshared() -> contextlib.AbstractContextManager:
        original = ecapa_model.reflect_indices_shared
        ecapa_model.reflect_indices_shared = contextlib.nullcontext
        try:
            yield
        finally:
            ecapa_model.reflect_indices_shared = original
    return unshared


def step_of(model: torch.nn.Module, batch: dict, device: torch.device) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = model.forward_batch(batch).float().logsumexp(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return step


def operations(step: Callable[[], None], device: torch.device) -> int:
    """Operator calls of one step: the forward's and the optimiser's ATen calls at the top of their stack, and the
    backward's functions (autograd's ``evaluate_function`` events, each one or more kernels)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()

    def counted(event: object) -> bool:
        name = event.name  # type: ignore[attr-defined]
        return (name.startswith("aten::") and event.cpu_parent is None) or \
            name.startswith("autograd::engine::evaluate_function")  # type: ignore[attr-defined]
    return sum(1 for event in prof.events() if counted(event))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=200, help="frames of the longest clip (100 per second)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per side, alternating")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = RunConfig()
    config.features.features, config.features.num_mel_bins = "fbank", 80
    config.heads = [HeadSpec("word", "categorical", ["word"], [str(k) for k in range(10)])]
    torch.manual_seed(0)
    lengths = torch.linspace(args.frames // 2, args.frames, args.batch).round().long()
    batch = {"inputs": torch.randn(args.batch, args.frames, 80, device=device), "lengths": lengths.to(device)}
    sides = {}
    for name in ("before", "now"):
        torch.manual_seed(0)
        model = build_classifier(config).to(device).train()
        context = before(model) if name == "before" else contextlib.nullcontext
        sides[name] = (context, step_of(model, batch, device))
    counts, seconds = {}, {name: [] for name in sides}
    for name, (context, step) in sides.items():
        with context():
            step()  # warm-up
            counts[name] = operations(step, device)
    for _ in range(args.repeats):
        for name, (context, step) in sides.items():
            with context():
                start = time.perf_counter()
                step()
                seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"ECAPA-TDNN (--model ecapa_tdnn defaults), batch {args.batch} x up to {args.frames} frames, {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| side | operations per step | median step s |\n| --- | ---: | ---: |")
    for name in sides:
        print(f"| {name} | {counts[name]} | {medians[name]:.4f} |")
    print(f"now / before: {counts['now'] / counts['before']:.2f}x the operations, "
          f"{medians['before'] / medians['now']:.2f}x as fast")


if __name__ == "__main__":
    main()
