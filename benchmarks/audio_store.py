"""Training epochs with the audio store (``--audio_cache True``) against decoding every clip every epoch.

The training data path of ``audiotune train`` — ``scan_audio``, ``make_dataset(config, inputs, table, targets,
train=True)`` and ``make_loader(config, dataset, table, train=True, ...)`` from a ``RunConfig`` with
ECAPA-style inputs (80-bin Kaldi fbank at 16 kHz, clips cropped to 5 s, batches of 8, shuffled) — is timed
over full passes of the training loader: decode → channel mean → soxr resample to 16 kHz → crop → fbank →
collate, i.e. what a model waits for every epoch. Three kinds of epoch are compared on the same clips:

- no store (``audio_cache False``): every epoch decodes and resamples every clip;
- store, filling epoch: the first epoch with an empty ``cache_dir`` decodes, resamples and writes each clip;
- store, warm epochs: later epochs of the same loader read the prepared clips back (fbank still runs).

``--features_on device``: the loaders give the cropped waveforms, as a training run that computes its features
on the model's device does; the workers only read (or decode and resample) and crop.

After untimed warm-up passes (without and with a store) on ``--warmup`` clips, each loader is built once
and iterated ``--epochs`` times, as a training run does (Lightning's ``set_epoch`` before each, so that
workers run on from one pass into the next; with workers, the first epoch of every loader includes forking
them); no-store and store loaders are interleaved ``--repeats`` times, each store loader on
a new empty cache folder, and the median epoch of each kind is reported. The clips are 5-s 44.1 kHz
OGG/Vorbis files made at run time in a temporary folder from the shipped 16 kHz speech clips in
``examples/demo_data/audio`` (random clips end to end, cut to 5 s, resampled with soxr "HQ"); with
``--channels 2`` the right channel is another such sequence. The features of every clip are compared
across the three kinds of epoch: the store must change nothing (max |difference| 0). Decoding reads files
from the page cache (``scan_audio`` has read each clip before any timing, and the store is freshly written).
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
import torch
from data_pipeline import machine, other_cpu_use  # benchmarks/data_pipeline.py
from frozen_cache import cpu_ticks, other_cpu_during  # benchmarks/frozen_cache.py
from lightning_fabric.utilities.data import _set_sampler_epoch

from audiotune.config import RunConfig
from audiotune.data import audio_store
from audiotune.data.batch_features import NUM_SAMPLES, WAVEFORMS
from audiotune.data.checked_audio import scan_audio
from audiotune.data.input_spec import InputSpec
from audiotune.data.loading import make_dataset, make_loader
from audiotune.engine.inference import inference_device

DEMO_AUDIO = Path(__file__).resolve().parents[1] / "examples" / "demo_data" / "audio"
SOURCE_RATE, CLIP_RATE, CLIP_SECONDS = 16000, 44100, 5.0
FEATURE_RATE, BINS = 16000, 80
KINDS = ("no store", "store, filling epoch", "store, warm epochs")
Features = dict[str, torch.Tensor]


def concatenation(sources: list[np.ndarray], rng: np.random.Generator, samples: int) -> np.ndarray:
    """Randomly drawn source clips end to end, cut to ``samples``."""
    pieces, total = [], 0
    while total < samples:
        pieces.append(sources[int(rng.integers(len(sources)))])
        total += len(pieces[-1])
    return np.concatenate(pieces)[:samples]


def make_clips(out_dir: Path, count: int, channels: int, seed: int) -> list[Path]:
    """``count`` OGG/Vorbis files of 5 s at 44.1 kHz built from the demo clips (16 kHz speech)."""
    sources = [sf.read(path, dtype="float32")[0] for path in sorted(DEMO_AUDIO.glob("*.wav"))]
    if not sources:
        raise SystemExit(f"no .wav files in {DEMO_AUDIO}")
    rng = np.random.default_rng(seed)
    samples = int(CLIP_SECONDS * SOURCE_RATE)
    out_dir.mkdir(parents=True)
    paths = []
    for index in range(count):
        signal = np.stack([concatenation(sources, rng, samples) * (1.0 if c == 0 else 0.7)
                           for c in range(channels)], axis=1)
        resampled = soxr.resample(signal, SOURCE_RATE, CLIP_RATE, quality="HQ")[: int(CLIP_SECONDS * CLIP_RATE)]
        paths.append(out_dir / f"clip_{index:04d}.ogg")
        sf.write(paths[-1], np.clip(resampled, -1.0, 1.0), CLIP_RATE, format="OGG", subtype="VORBIS")
    return paths


def make_config(workers: int, batch_size: int, seed: int, cache_dir: Path | None) -> RunConfig:
    """A training config with ECAPA-style inputs; the audio store is on when ``cache_dir`` is given."""
    config = RunConfig()
    config.features.features, config.features.num_mel_bins = "fbank", BINS
    config.audio.resample_rate, config.audio.clip_length = FEATURE_RATE, CLIP_SECONDS
    config.train.batch_size, config.runtime.num_workers = batch_size, workers
    config.data.seed = seed
    config.runtime.audio_cache = cache_dir is not None
    config.runtime.cache_dir = str(cache_dir or "")
    return config


def inputs_of(config: RunConfig) -> InputSpec:
    """The input the data sections of ``config`` describe (the data layer's own, no backbone's)."""
    return InputSpec.from_sections(config.audio, config.features)


def scanned_table(paths: list[Path], config: RunConfig) -> pd.DataFrame:
    """The prepared training table (``path``, ``expected_rate``, ``num_samples``; index uid)."""
    table = pd.DataFrame({"path": [str(p) for p in paths], "expected_rate": np.nan},
                         index=pd.Index([p.stem for p in paths], name="uid"))
    table, failures = scan_audio(table, inputs_of(config).audio(train=True), "train")
    if len(failures):
        raise SystemExit(f"{len(failures)} unusable clip(s), e.g. {failures['reason'].iloc[0]}")
    return table


def timed_epochs(config: RunConfig, table: pd.DataFrame, epochs: int,
                 on_device: bool = False) -> tuple[list[float], list[int], list[Features], float]:
    """Seconds and clips of each full pass over one training loader, each pass's features per uid (``on_device``:
    the loader gives waveforms, whose features the model's device computes: each pass's waveforms), and the
    share of all CPU time other processes used meanwhile."""
    audio_store._DIGESTS.clear()  # file digests are kept per process: start as a new training process would
    gc.collect()
    start_ticks = cpu_ticks()
    targets = np.zeros((len(table), 1), np.float32)
    dataset = make_dataset(config, inputs_of(config), table, targets, train=True, on_device=on_device)
    loader = make_loader(config, dataset, table, train=True, device=inference_device(config), passes=epochs)
    values, counts = (WAVEFORMS, NUM_SAMPLES) if on_device else ("inputs", "lengths")
    seconds, clips, features = [], [], []
    for epoch in range(epochs):
        batches = []
        start = time.perf_counter()
        _set_sampler_epoch(loader, epoch)  # as Lightning before each epoch: the workers run on into this pass
        for batch in loader:
            batches.append(batch)
        seconds.append(time.perf_counter() - start)
        clips.append(sum(len(b["uid"]) for b in batches))
        features.append({uid: b[values][row, :n] for b in batches
                         for row, (uid, n) in enumerate(zip(b["uid"], b[counts].tolist()))})
    del loader  # joins the persistent workers, so that their CPU time counts as this process's
    gc.collect()
    return seconds, clips, features, other_cpu_during(start_ticks)


def max_difference(reference: Features, other: Features) -> float:
    """Largest |feature difference| over all clips, frames and bins (inf if the clips or shapes differ)."""
    if reference.keys() != other.keys() or any(reference[u].shape != other[u].shape for u in reference):
        return float("inf")
    return max(float((reference[u] - other[u]).abs().max()) for u in reference)


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def warm_up(table: pd.DataFrame, work: Path, args: argparse.Namespace) -> None:
    """One untimed pass without and one with a store over the first ``--warmup`` clips (first-call overheads)."""
    head = table.iloc[: args.warmup]
    for cache_dir in (None, work / "cache_warmup"):
        timed_epochs(make_config(0, args.batch_size, args.seed, cache_dir), head, 1, args.features_on == "device")
    shutil.rmtree(work / "cache_warmup", ignore_errors=True)


def run_workers(table: pd.DataFrame, work: Path, workers: int, args: argparse.Namespace) -> dict:
    """Interleaved no-store and store loaders for one worker count; epoch times per kind and the checks."""
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    clips: dict[str, list[int]] = {kind: [] for kind in KINDS}
    others, diffs, store_bytes = [], {KINDS[1]: 0.0, KINDS[2]: 0.0}, 0
    for repeat in range(args.repeats):
        on_device = args.features_on == "device"
        plain_s, plain_n, plain_f, plain_others = timed_epochs(
            make_config(workers, args.batch_size, args.seed, None), table, args.epochs, on_device)
        cache_dir = work / f"cache_w{workers}_r{repeat}"
        store_s, store_n, store_f, store_others = timed_epochs(
            make_config(workers, args.batch_size, args.seed, cache_dir), table, args.epochs, on_device)
        store_bytes = folder_bytes(cache_dir)
        shutil.rmtree(cache_dir)
        times[KINDS[0]] += plain_s
        clips[KINDS[0]] += plain_n
        times[KINDS[1]].append(store_s[0])
        clips[KINDS[1]].append(store_n[0])
        times[KINDS[2]] += store_s[1:]
        clips[KINDS[2]] += store_n[1:]
        others += [plain_others, store_others]
        diffs[KINDS[1]] = max(diffs[KINDS[1]], max_difference(plain_f[0], store_f[0]))
        for plain, stored in zip(plain_f[1:], store_f[1:]):
            diffs[KINDS[2]] = max(diffs[KINDS[2]], max_difference(plain, stored))
    return {"workers": workers, "times": times, "clips": clips, "others": others, "diffs": diffs,
            "store_bytes": store_bytes}


def report(results: list[dict]) -> list[dict]:
    """Print a markdown table of median epoch seconds, clips/s, ratios and feature differences; returns the rows."""
    rows = []
    print("| workers | epoch | epochs timed | median s | clips/s | no store / this | max \\|diff\\| vs no store "
          "| epochs (s) |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for result in results:
        plain = statistics.median(result["times"][KINDS[0]])
        for kind in KINDS:
            runs = result["times"][kind]
            median = statistics.median(runs)
            rate = statistics.median(result["clips"][kind]) / median
            diff = result["diffs"].get(kind, 0.0)
            rows.append({"workers": result["workers"], "epoch": kind, "epochs_timed": len(runs), "median_s": median,
                         "clips_per_s": rate, "no_store_over_this": plain / median,
                         "max_abs_diff_vs_no_store": diff, "epochs_s": runs})
            print(f"| {result['workers']} | {kind} | {len(runs)} | {median:.3f} | {rate:.1f} | "
                  f"{plain / median:.2f}x | {diff:.1e} | " + " ".join(f"{s:.3f}" for s in runs) + " |")
    print("\nno store / this: the median no-store epoch over this median epoch (above 1: faster than decoding "
          "every epoch); max |diff|: largest |fbank difference| (--features_on device: waveform difference) to "
          "the no-store epoch's, all clips")
    for result in results:
        print(f"workers {result['workers']}: store on disk {result['store_bytes'] / 2**20:.1f} MiB; other "
              f"processes' share of all CPU time per loader: {', '.join(f'{o:.1%}' for o in result['others'])}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=120, help="5-s clips to build and train on")
    parser.add_argument("--channels", type=int, default=2, choices=(1, 2), help="channels of the built clips")
    parser.add_argument("--epochs", type=int, default=5, help="passes over each loader (the first fills the store)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="no-store and store loaders per worker count, interleaved (a new empty store each)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader worker counts")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=16, help="clips in the untimed warm-up passes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clips and of the shuffling")
    parser.add_argument("--features_on", choices=("workers", "device"), default="workers",
                        help="where the fbank is computed (device: the loader gives the cropped waveforms, as a "
                             "training run with --features_on device; their features are not timed)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (one filling epoch, then warm ones)")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    info["device"] = str(inference_device(make_config(0, args.batch_size, args.seed, None)))
    info["other_cpu_before"] = other_cpu_use()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        paths = make_clips(work / "clips", args.clips, args.channels, args.seed)
        built_s = time.perf_counter() - start
        clip_bytes = folder_bytes(work / "clips")
        table = scanned_table(paths, make_config(0, args.batch_size, args.seed, None))
        warm_up(table, work, args)
        results = [run_workers(table, work, workers, args) for workers in args.workers]
    info["other_cpu_after"] = other_cpu_use()
    print(f"data: {args.clips} OGG/Vorbis clips, {CLIP_SECONDS:g} s, {CLIP_RATE} Hz, {args.channels} channel(s), "
          f"{clip_bytes / 2**20:.1f} MiB, built in {built_s:.1f} s from examples/demo_data/audio/*.wav\n"
          f"inputs: {BINS}-bin fbank at {FEATURE_RATE} Hz (computed on the {args.features_on}), "
          f"clip_length {CLIP_SECONDS:g}, batch {args.batch_size}, "
          f"shuffled; {args.epochs} epochs per loader, {args.repeats} repeats, warm-up on {args.warmup} clips\n"
          f"machine: {info}\n")
    rows = report(results)
    others = [o for result in results for o in result["others"]]
    if max(info["other_cpu_before"], info["other_cpu_after"], *others) > 0.1:
        print("\nWARNING: other processes used the CPU around or during the run (fraction of all cores); on 2 cores "
              "that skews these timings badly. Rerun on an idle machine.")
    if args.out:
        args.out.write_text(json.dumps({"clips": args.clips, "channels": args.channels, "clip_seconds": CLIP_SECONDS,
                                        "clip_rate": CLIP_RATE, "clip_bytes": clip_bytes,
                                        "batch_size": args.batch_size, "epochs": args.epochs,
                                        "features_on": args.features_on,
                                        "repeats": args.repeats, "machine": info, "results": rows,
                                        "store_bytes": {r["workers"]: r["store_bytes"] for r in results},
                                        "other_cpu_per_loader": {r["workers"]: r["others"] for r in results}},
                                       indent=2))


if __name__ == "__main__":
    main()
