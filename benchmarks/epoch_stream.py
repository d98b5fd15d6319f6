"""Training epochs with the loader's workers running on from one epoch into the next, against the loader that
starts every epoch with an empty queue (a DataLoader with persistent workers, as audiotune's loaders were).

Both sides are ``audiotune train --model ecapa_tdnn`` (``engine.train.train``) on the same compressed clips
(5-s 44.1 kHz stereo OGG, 80-bin fbank at 16 kHz, the audio store off: every epoch decodes), the same workers,
seed and epochs; the runs alternate, ``--repeats`` of each. Per run: the median time of the epochs after the
first, from the epoch's start to the end of its last training batch (validation and checkpoints out, as
``gpu_suite.py`` clocks them), and the median wait for each epoch's first batch. The two sides read the same
clips in the same order (``tests/data/test_passes.py``).

On the CPU (a few minutes on 2 cores; ``--channels`` small, the model cheap next to decoding)::

    python benchmarks/epoch_stream.py --json epoch_stream.json

On one GPU (the default ECAPA-TDNN)::

    python benchmarks/epoch_stream.py --device cuda --clips 200 --batch 32 --workers 8 --channels 0
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from audio_store import make_clips  # benchmarks/audio_store.py
from data_pipeline import machine  # benchmarks/data_pipeline.py
from gpu_parts import ACCELERATOR, EpochClock, write_split  # benchmarks/gpu_parts.py
from torch.utils.data import DataLoader

from audiotune.cli import build_parser
from audiotune.cli.config_args import config_from_args
from audiotune.cli.show import quiet_lightning
from audiotune.data import loading
from audiotune.data.loader_plan import LoaderSettings
from audiotune.engine.device import resolve_device
from audiotune.engine.train import train

SMALL = ["--channels", "32", "32", "96", "--kernel_sizes", "5", "3", "1", "--dilations", "1", "2", "1",
         "--attention_channels", "16", "--se_channels", "16", "--res2net_scale", "2", "--lin_neurons", "32"]


class FirstBatchWait(pl.Callback):
    """The time from each training epoch's start to its first batch."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        if batch_idx == 0:
            self.waits.append(time.perf_counter() - self._start)


@contextlib.contextmanager
def restarted_every_epoch() -> Iterator[None]:
    """The baseline: audiotune's loaders built as DataLoaders with persistent workers, each epoch starting with
    an empty queue."""
    streaming = loading.seeded_loader

    def plain(config, dataset, batches, collate, settings: LoaderSettings, passes: int = 1) -> DataLoader:
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, persistent_workers=settings.streamed,
                          generator=torch.Generator().manual_seed(config.data.seed), **settings.options())

    loading.seeded_loader = plain
    try:
        yield
    finally:
        loading.seeded_loader = streaming


def one_run(argv: list[str], out: Path, device: torch.device) -> dict:
    args = build_parser("ecapa_tdnn").parse_args(["train", *argv, "-o", str(out)])
    clock, wait = EpochClock(device), FirstBatchWait()
    start = time.perf_counter()
    train(config_from_args(args), callbacks=[clock, wait])
    later = clock.spans[1:]
    return {"epoch_s": statistics.median(end - begin for begin, end in later),
            "first_batch_wait_s": statistics.median(wait.waits[1:]), "run_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", type=int, default=56, help="clips in all (8 of them validation and test)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels", type=int, default=32,
                        help="ECAPA-TDNN channels of the small model (0: the default model)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    quiet_lightning(False)
    model = [] if args.channels == 0 else [*SMALL[:1], str(args.channels), str(args.channels),
                                           str(3 * args.channels), *SMALL[4:]]
    results: dict[str, list[dict]] = {"streamed": [], "restarted every epoch": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        split, labels = write_split(work / "split", make_clips(work / "clips", args.clips, 2, 0), 4)
        argv = ["-d", str(split), "-l", str(labels), "--model", "ecapa_tdnn", "--features", "fbank",
                "--num_mel_bins", "80", "--clip_length", "5", "-e", str(args.epochs), "-bs", str(args.batch),
                "-nw", str(args.workers), "--audio_cache", "False", "--seed", "0",
                "--accelerator", ACCELERATOR[device.type], *model]
        for repeat in range(args.repeats):
            for side in results:
                with restarted_every_epoch() if side != "streamed" else contextlib.nullcontext():
                    results[side].append(one_run(argv, work / f"run_{len(results[side])}_{side[:4]}", device))
                print(f"repeat {repeat + 1}, {side}: {results[side][-1]}", file=sys.stderr)
    medians = {side: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
               for side, runs in results.items()}
    base, ours = medians["restarted every epoch"], medians["streamed"]
    print(f"{'loader':<24}{'epoch s':>10}{'first batch wait s':>20}{'run s':>9}")
    for side, m in medians.items():
        print(f"{side:<24}{m['epoch_s']:>10.3f}{m['first_batch_wait_s']:>20.3f}{m['run_s']:>9.2f}")
    print(f"epochs {base['epoch_s'] / ours['epoch_s']:.2f}x as fast; first-batch wait "
          f"{ours['first_batch_wait_s']:.3f} s vs {base['first_batch_wait_s']:.3f} s "
          f"({args.workers} worker(s), batch {args.batch}, {device})")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "device": str(device), "args": vars(args) | {
            "json": str(args.json)}, "runs": results, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
