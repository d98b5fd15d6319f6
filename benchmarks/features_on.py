"""Training epochs with the features computed on the model's device (``--features_on device``) against the data
workers computing them per clip (``--features_on workers``), side by side on the same clips and device.

The training data path of ``audiotune train`` — ``make_dataset(..., train=True, on_device=...)`` and
``make_loader(..., train=True)`` from a ``RunConfig`` with ECAPA-TDNN inputs (80-bin Kaldi fbank at 16 kHz,
clips cropped to 5 s, light SpecAugment as ECAPA trains by default, shuffled batches) — is timed over full
passes: each batch is moved to the device, its features computed there when the loader gives waveforms
(:class:`~audiotune.data.batch_features.BatchFeatures`), and, with ``--model``, one training step of an
ECAPA-TDNN classifier (``--channels``) runs on it: what a training run does per epoch. The loaders alternate
``--repeats`` times per worker count after an untimed warm-up; medians are reported. The clips are the audio
store benchmark's (5-s 44.1 kHz OGG built from ``examples/demo_data/audio``). The features of the first epoch
without augmentation are compared across the two placements (max |difference|).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from audio_store import make_clips, scanned_table  # benchmarks/audio_store.py
from data_pipeline import machine  # benchmarks/data_pipeline.py

from audiotune.config import HeadSpec, RunConfig
from audiotune.data.loading import batch_features, make_dataset, make_loader
from audiotune.engine.inference import inference_device, on_device
from audiotune.models.backbones import input_spec
from audiotune.models.checkpoint import build_classifier

PLACES = ("workers", "device")


def make_config(place: str, workers: int, args: argparse.Namespace, augment: bool = True) -> RunConfig:
    config = RunConfig()
    config.runtime.features_on, config.runtime.num_workers = place, workers
    config.runtime.accelerator = args.accelerator
    config.features.features, config.features.num_mel_bins = "fbank", 80
    config.features.freqm, config.features.timem = (8, 10) if augment else (0, 0)
    config.audio.resample_rate, config.audio.clip_length = 16000, 5.0
    config.train.batch_size, config.data.seed = args.batch_size, args.seed
    config.model.options["channels"] = [args.channels] * 4 + [3 * args.channels]
    config.heads = [HeadSpec("word", "categorical", ["word"], [str(k) for k in range(10)])]
    return config


def timed_epochs(config: RunConfig, table, epochs: int, model_step: bool,
                 check: bool = False) -> tuple[list[float], dict, dict]:
    """Seconds of each full pass (batches model-ready on the device, and a training step with ``model_step``);
    with ``check`` (the untimed warm-up, whose seconds are not reported), the first pass's features per uid and,
    for a loader of waveforms, the first pass's features computed again from its waveforms in float64 on the CPU
    (the same front end: a reference both placements are measured against)."""
    device = inference_device(config)
    inputs = input_spec(config)
    targets = np.eye(10, dtype=np.float32)[np.arange(len(table)) % 10]
    dataset = make_dataset(config, inputs, table, targets, train=True, on_device=config.runtime.features_on == "device")
    loader = make_loader(config, dataset, table, train=True, device=inference_device(config))
    features = batch_features(loader)
    torch.manual_seed(config.data.seed)
    model = build_classifier(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds, first, exact = [], {}, {}
    for epoch in range(epochs):
        start = time.perf_counter()
        for batch in loader:
            if check and epoch == 0 and features is not None:
                for uid, wave, n in zip(batch["uid"], batch["waveforms"], batch["num_samples"].tolist()):
                    feats, _ = features.front_end.extract(wave[None, :n].double(), torch.tensor([n]), own_edges=True)
                    exact[uid] = feats[0]
            batch = on_device(batch, device, features)
            if model_step:
                loss = torch.nn.functional.cross_entropy(model.forward_batch(batch), batch["targets"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if check and epoch == 0:
                first.update({uid: batch["inputs"][row, :n].float().cpu() for row, (uid, n)
                              in enumerate(zip(batch["uid"], batch["lengths"].tolist()))})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds, first, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3, help="passes over each loader")
    parser.add_argument("--repeats", type=int, default=2, help="workers and device loaders per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader worker counts")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=64, help="ECAPA-TDNN channels (the seed's: 512)")
    parser.add_argument("--model", action="store_true", help="run a training step on every batch")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = machine()
    info["device"] = str(inference_device(make_config("workers", 0, args)))
    with tempfile.TemporaryDirectory() as tmp:
        table = scanned_table(make_clips(Path(tmp) / "clips", args.clips, 1, args.seed),
                              make_config("workers", 0, args))
        runs = {place: timed_epochs(make_config(place, 0, args, augment=False), table, 1, False, check=True)
                for place in PLACES}  # also the warm-up
        plain, exact = {place: run[1] for place, run in runs.items()}, runs["device"][2]

        def apart(a: dict, b: dict) -> float:
            return max(float((a[uid].double() - b[uid].double()).abs().max()) for uid in b)

        model = f"ECAPA-TDNN {args.channels} channels, a training step per batch" if args.model else "no model"
        print(f"{args.clips} 5-s clips, 80-bin fbank, batch {args.batch_size}, {model}\nmachine: {info}\n"
              f"features, device vs workers: max |diff| {apart(plain['device'], plain['workers']):.1e}; from the "
              f"float64 features: workers {apart(plain['workers'], exact):.1e}, device "
              f"{apart(plain['device'], exact):.1e}\n")
        print("| workers | features on | median epoch s | clips/s | workers / device |\n"
              "| ---: | --- | ---: | ---: | ---: |")
        for workers in args.workers:
            times: dict[str, list[float]] = {place: [] for place in PLACES}
            for _ in range(args.repeats):
                for place in PLACES:
                    times[place] += timed_epochs(make_config(place, workers, args), table, args.epochs,
                                                 args.model)[0]
            medians = {place: statistics.median(times[place]) for place in PLACES}
            for place in PLACES:
                print(f"| {workers} | {place} | {medians[place]:.3f} | {len(table) / medians[place]:.1f} | "
                      f"{medians['workers'] / medians[place]:.2f}x |")


if __name__ == "__main__":
    main()
