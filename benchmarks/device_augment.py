"""The last waveform augmentations (equalisation, gain, Gaussian noise) finished on the model's device against the
data workers applying them, side by side on the same clips.

What a data worker spends per batch on them, both ways: applying them to each clip (``WaveformAugmenter``, the
workers' way with ``--features_on workers`` or ``--mixup``) against drawing them and collating the draws
(``WaveformAugmenter.split`` + ``collate_tails``, the workers' share with ``--features_on device``); and what
finishing the batch takes on ``--device`` (``finish_tails``, timed to its end). Each augmentation on with
probability 1, so every clip takes the longest path; every clip of a batch is drawn anew. Medians of ``--repeats``
batches after one untimed.

    python benchmarks/device_augment.py                 # 32 clips of 5 s at 44.1 kHz, and of 3 s at 16 kHz
    python benchmarks/device_augment.py --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from data_pipeline import machine  # benchmarks/data_pipeline.py

from audiotune.config import AugmentConfig
from audiotune.data.augment import WaveformAugmenter
from audiotune.data.device_augment import collate_tails, finish_tails

CASES = ((44100, 5.0), (16000, 3.0))  # ECAPA-TDNN's 44.1 kHz clips of the GPU suite; wav2vec2-style speech


def clips(rate: int, seconds: float, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    return [(0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * rng.standard_normal(t.size))
            .astype(np.float32) for _ in range(count)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(rate: int, seconds: float, args: argparse.Namespace, device: torch.device) -> dict:
    batch = clips(rate, seconds, args.batch, args.seed)
    config = AugmentConfig(eq=1.0, gain=1.0, gauss=1.0)
    applying, drawing = WaveformAugmenter(config, seed=args.seed), WaveformAugmenter(config, seed=args.seed)
    applied, drawn, finished = [], [], []
    for repeat in range(args.repeats + 1):
        start = time.perf_counter()
        for wave in batch:
            applying(wave, rate)
        middle = time.perf_counter()
        parts = [drawing.split(wave, rate) for wave in batch]
        counts = [len(wave) for wave, _ in parts]
        entries = collate_tails([tail for _, tail in parts], counts)
        end = time.perf_counter()
        waves = torch.from_numpy(np.stack([wave for wave, _ in parts])).to(device)
        entries = {key: value.to(device) if isinstance(value, torch.Tensor) else value
                   for key, value in entries.items()}
        samples = torch.tensor(counts, device=device)
        synchronize(device)
        begin = time.perf_counter()
        finish_tails(waves, samples, counts, entries)
        synchronize(device)
        if repeat:  # the first is a warm-up
            applied.append(middle - start)
            drawn.append(end - middle)
            finished.append(time.perf_counter() - begin)
    a, d, f = (statistics.median(values) * 1000 for values in (applied, drawn, finished))
    return {"case": f"{args.batch} clips of {seconds:g} s at {rate} Hz", "applied_ms": a, "drawn_ms": d,
            "finish_ms": f}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)  # the main process's share of 2 cores beside a worker
    device = torch.device(args.device)
    print(machine())
    print(f"device: {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}")
    print("| batch | a worker applying them | a worker drawing them | ratio | finishing the batch on the device |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for rate, seconds in CASES:
        row = measure(rate, seconds, args, device)
        print(f"| {row['case']} | {row['applied_ms']:.1f} ms | {row['drawn_ms']:.1f} ms | "
              f"**{row['applied_ms'] / row['drawn_ms']:.1f}×** | {row['finish_ms']:.1f} ms |")


if __name__ == "__main__":
    main()
