"""Scoring clips of mixed lengths: padded batches against the same audio cut to one length, in one process.

A default-size ECAPA-TDNN (512-channel blocks, 192-wide embedding, 80-bin fbank; random weights, eval mode) scores
``--clips`` clips of 0.3-1.5 s (FSDD recordings when ``../shared/data/fsdd/recordings`` is there, else synthetic
tones) through audiotune's scoring path (``make_dataset`` + ``make_loader`` + ``predict``, batch ``-bs``):

- own lengths: each clip at its own length; batches sorted by length, padded to their longest clip, masked;
- one length: every clip cut (or, when shorter, looped) to the clips' mean length, so both sides score the same
  number of clips and the same seconds of audio, and no batch holds padding;
- one clip per batch (``--per_clip``): the own-length clips batched only with clips of their exact length, the
  rule before padded batches were exact (FSDD: nearly every batch one clip); its logits are each clip's alone,
  so it also measures how far the padded batches' logits are from them.

Each side gets an untimed warm-up on one batch, then ``--repeats`` timed passes, interleaved; the median is
reported, with the ratio own lengths / one length (the cost of mixed lengths) and the share of CPU time other
processes used meanwhile (over 10 %: the timings are distorted).

    python benchmarks/mixed_length_scoring.py            # 500 clips, -bs 64, on the CPU
    python benchmarks/mixed_length_scoring.py --accelerator gpu --per_clip
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
import torch
from data_pipeline import machine  # benchmarks/data_pipeline.py
from frozen_cache import cpu_ticks, other_cpu_during

from audiotune.config import HeadSpec, RunConfig
from audiotune.data.checked_audio import scan_audio
from audiotune.data.loading import make_dataset, make_loader
from audiotune.data.samplers import EXACT_PADDING, PaddingRule
from audiotune.engine.inference import inference_device, predict
from audiotune.models.backbones import input_spec, resolve_config
from audiotune.models.checkpoint import build_classifier

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
RATE = 16000
SHORTEST, LONGEST = 0.3, 1.5  # seconds


def load_clips(folder: Path, count: int, seed: int) -> tuple[list[np.ndarray], str]:
    """``count`` clips of 0.3-1.5 s at 16 kHz, drawn at random (``seed``) from ``folder``'s wav files, or
    synthetic tones of uniform random lengths when it has none."""
    rng = np.random.default_rng(seed)
    paths = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    clips = []
    for index in rng.permutation(len(paths)):
        audio, rate = sf.read(paths[index], dtype="float32", always_2d=True)
        clip = soxr.resample(audio.mean(axis=1), rate, RATE).astype(np.float32)
        if SHORTEST * RATE <= len(clip) <= LONGEST * RATE:
            clips.append(clip)
        if len(clips) == count:
            return clips, str(folder)
    if paths:
        print(f"{folder}: only {len(clips)} clips of {SHORTEST}-{LONGEST} s; synthetic tones make up the rest")
    for _ in range(count - len(clips)):
        n = int(rng.uniform(SHORTEST, LONGEST) * RATE)
        t = np.arange(n) / RATE
        clips.append((0.3 * np.sin(2 * np.pi * rng.uniform(150, 900) * t) + 0.02 * rng.standard_normal(n))
                     .astype(np.float32))
    return clips, "synthetic" if not paths else f"{folder} + synthetic"


def write_side(clips: list[np.ndarray], folder: Path) -> pd.DataFrame:
    """The clips as 16-kHz wav files in ``folder``: the table audiotune scores."""
    folder.mkdir(parents=True)
    rows = []
    for i, clip in enumerate(clips):
        path = folder / f"c{i:04d}.wav"
        sf.write(path, clip, RATE, subtype="FLOAT")
        rows.append({"uid": f"c{i:04d}", "path": str(path), "expected_rate": np.nan})
    return pd.DataFrame(rows).set_index("uid")


def make_config(batch_size: int, accelerator: str) -> RunConfig:
    config = RunConfig()
    config.model.model = "ecapa_tdnn"  # default size: channels 512 x 4 + 1536, 192-wide embedding
    config.features.features, config.features.num_mel_bins = "fbank", 80
    config.audio.resample_rate = RATE
    config.train.batch_size, config.runtime.num_workers = batch_size, 0
    config.runtime.accelerator = accelerator
    resolve_config(config)
    config.heads = [HeadSpec("digit", "categorical", ["digit"], [str(d) for d in range(10)])]
    return config


def score(config: RunConfig, model: torch.nn.Module, table: pd.DataFrame,
          padding: PaddingRule) -> tuple[float, int, dict[str, np.ndarray]]:
    """Seconds to score ``table``, its number of batches, and each clip's logits."""
    dataset = make_dataset(config, input_spec(config), table, np.zeros((len(table), 1), np.float32))
    loader = make_loader(config, dataset, table, False, padding, device=inference_device(config))
    start = time.perf_counter()
    uids, logits, _ = predict(model, loader, config, "benchmark")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, len(loader), dict(zip(uids, logits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=500)
    parser.add_argument("-bs", "--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, default=FSDD, help="folder of wav files (default: FSDD)")
    parser.add_argument("--accelerator", default="cpu", help="cpu, gpu or auto")
    parser.add_argument("--per_clip", action="store_true", help="also time equal-length batches (the former rule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    clips, source = load_clips(args.data, args.clips, args.seed)
    lengths = np.array([len(clip) for clip in clips])
    common = int(round(lengths.mean()))
    cut = [np.resize(clip, common) for clip in clips]  # np.resize loops a shorter clip
    config = make_config(args.batch_size, args.accelerator)
    torch.manual_seed(args.seed)
    model = build_classifier(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tables = {name: scan_audio(write_side(side, Path(tmp) / name), input_spec(config).audio(), name)[0]
                  for name, side in (("own lengths", clips), ("one length", cut))}
        sides = {"own lengths": (tables["own lengths"], EXACT_PADDING),
                 "one length": (tables["one length"], EXACT_PADDING)}
        if args.per_clip:
            sides["one clip per batch"] = (tables["own lengths"], PaddingRule(False, 0.0, "the former rule"))
        for table, padding in sides.values():  # warm-up: one batch
            score(config, model, table.iloc[:args.batch_size], padding)
        times: dict[str, list[float]] = {name: [] for name in sides}
        batches, logits = {}, {}
        start = cpu_ticks()
        for _ in range(args.repeats):
            for name, (table, padding) in sides.items():
                seconds, batches[name], logits[name] = score(config, model, table, padding)
                times[name].append(seconds)
        others = other_cpu_during(start)
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "clips": len(clips), "source": source, "audio_seconds": round(float(lengths.sum()) / RATE, 1),
        "lengths_s": [round(float(lengths.min()) / RATE, 3), round(float(lengths.max()) / RATE, 3)],
        "distinct_lengths": int(len(np.unique(lengths))), "one_length_s": round(common / RATE, 3),
        "batch_size": args.batch_size, "device": str(config.runtime.accelerator),
        "torch_threads": torch.get_num_threads(), "machine": machine(), "other_cpu_share": others,
        "seconds": {name: round(value, 3) for name, value in median.items()}, "batches": batches,
        "ratio_own_over_one_length": round(median["own lengths"] / median["one length"], 3),
    }
    if args.per_clip:
        result["speedup_over_one_clip_per_batch"] = round(median["one clip per batch"] / median["own lengths"], 2)
        alone = logits["one clip per batch"]
        result["max_abs_logit_difference_vs_alone"] = float(max(np.abs(logits["own lengths"][uid] - alone[uid]).max()
                                                                for uid in alone))
    print(f"{result['clips']} clips ({source}), {result['lengths_s'][0]}-{result['lengths_s'][1]} s, "
          f"{result['distinct_lengths']} distinct lengths, {result['audio_seconds']} s of audio; "
          f"ECAPA-TDNN default size, -bs {args.batch_size}, {result['device']}, {result['torch_threads']} threads")
    for name, value in median.items():
        print(f"  {name:<20} {value:8.2f} s  ({batches[name]} batches)")
    print(f"  own lengths / one length: {result['ratio_own_over_one_length']:.3f}x")
    if args.per_clip:
        print(f"  one clip per batch / own lengths: {result['speedup_over_one_clip_per_batch']:.2f}x; "
              f"max |logit difference| padded vs alone: {result['max_abs_logit_difference_vs_alone']:.2e}")
    print(f"  other processes used {others:.0%} of the CPU meanwhile")
    if others > 0.10:
        print("  warning: the machine was busy; the timings are distorted", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
