"""Peak memory of one training step of a Hugging Face encoder with and without ``--gradient_checkpointing``.

The model is a small wav2vec2-shaped encoder with random weights (``Wav2Vec2Config``: the full 7-layer conv
stack, ``--layers`` transformer layers ``--width`` wide; no hub), saved to a temporary folder and loaded by
audiotune's ``HFBackbone`` exactly as ``--model hf -c DIR`` loads it, with the option off and on. One training
step: every hidden state, the last one mean-pooled over real frames, a linear head, cross-entropy, backward,
AdamW step; the whole encoder trains (as with ``--freeze false``).

Each mode runs in its own subprocess, so neither inherits the other's allocator. Memory:
- GPU (``--device cuda``): ``torch.cuda.max_memory_allocated`` during the step, minus what was allocated
  before it (weights; the optimiser's state is created in the step and counted);
- CPU: the process's peak resident set size (``VmHWM``) during the step, minus its resident size before it.
The step time is the mean of ``--steps`` further steps after that first one.

    python benchmarks/gradient_checkpointing.py                      # CPU, minutes on 2 cores
    python benchmarks/gradient_checkpointing.py --device cuda --batch 8 --seconds 10 --layers 12 --width 768
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RATE = 16000


def _resident_kib(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process, in KiB (Linux); ru_maxrss for VmHWM elsewhere."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def save_model(folder: Path, layers: int, width: int) -> Path:
    """A random wav2vec2-shaped encoder and its feature extractor, as ``save_pretrained`` writes them."""
    import transformers

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(hidden_size=width, num_hidden_layers=layers,
                                         num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
                                         conv_dim=(width,) * 7,
                                         feat_extract_norm="layer", do_stable_layer_norm=True)
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True,
                                          return_attention_mask=True).save_pretrained(folder)
    return folder


def measure(folder: str, checkpointing: bool, device_name: str, batch: int, seconds: float, steps: int) -> dict:
    """One mode, in this process: peak memory of the first training step over the memory before it, step time."""
    from audiotune.models.backbones.huggingface import HFBackbone, HFOptions
    from audiotune.models.classifier import masked_pool

    device = torch.device(device_name)
    torch.manual_seed(0)
    backbone = HFBackbone(HFOptions(folder, gradient_checkpointing=checkpointing)).to(device).train()
    head = torch.nn.Linear(backbone.embedding_dim, 4).to(device)
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=1e-4)
    waves = 0.1 * torch.randn(batch, round(seconds * RATE), device=device)
    lengths = torch.full((batch,), waves.shape[1], device=device)
    targets = torch.arange(batch, device=device) % 4

    def step() -> float:
        states, mask = backbone.hidden_states(waves, lengths)
        loss = torch.nn.functional.cross_entropy(head(masked_pool(states[-1], mask, "mean")), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    if device.type == "cuda":  # the device given (--device cuda:1), not the current one
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        loss = step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        before = _resident_kib("VmRSS") * 1024
        loss = step()
        peak = _resident_kib("VmHWM") * 1024 - before
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"checkpointing": checkpointing, "peak_bytes": peak, "first_loss": loss,
            "step_seconds": (time.perf_counter() - start) / max(1, steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=4, help="clips per step")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per clip")
    parser.add_argument("--layers", type=int, default=6, help="transformer layers")
    parser.add_argument("--width", type=int, default=384, help="hidden size")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after the measured one")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--_mode", choices=("off", "on"), help=argparse.SUPPRESS)  # a child process: one mode
    parser.add_argument("--_model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._mode:
        print(json.dumps(measure(args._model, args._mode == "on", args.device, args.batch, args.seconds, args.steps)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_model(Path(tmp) / "encoder", args.layers, args.width)
        results = {}
        for mode in ("off", "on"):
            command = [sys.executable, __file__, "--_mode", mode, "--_model", str(folder), "--device", args.device,
                       "--batch", str(args.batch), "--seconds", str(args.seconds), "--steps", str(args.steps)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    off, on = results["off"], results["on"]
    kind = "GPU max_memory_allocated" if args.device.startswith("cuda") else "CPU peak RSS"
    print(f"{args.layers} layers x {args.width}, batch {args.batch} x {args.seconds:g} s, {args.device} ({kind} "
          "of one training step over the memory before it)")
    for name, result in (("without --gradient_checkpointing", off), ("with --gradient_checkpointing", on)):
        print(f"  {name:34s} {result['peak_bytes'] / 2**20:9.1f} MiB   step {result['step_seconds']:.2f} s   "
              f"loss {result['first_loss']:.6f}")
    print(f"  memory ratio (with / without): {on['peak_bytes'] / off['peak_bytes']:.2f}; "
          f"step time ratio: {on['step_seconds'] / off['step_seconds']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
