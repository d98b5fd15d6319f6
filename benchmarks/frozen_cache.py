"""Frozen fine-tuning with audiotune's feature cache against the seed's way (the encoder runs every epoch).

Three ``audiotune train --model hf --freeze`` runs on the same split, head, seed and epochs, each a fresh
process: ``--cache True`` with an empty cache folder (cold: every clip is encoded once, then the heads
train from the cached pooled states), the same again reusing that folder (warm: nothing is encoded), and
``--cache False`` (the seed's way: the frozen encoder's forward runs on every batch of every epoch).
The encoder is an offline, randomly initialised wav2vec2 with the base architecture (768 wide, group-norm
conv feature encoder) and ``--layers`` transformer layers, so the comparison fits in minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from data_pipeline import machine, other_cpu_use  # benchmarks/data_pipeline.py

from audiotune.cli import main as cli

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech-commands-mini"
SPEECH_PATTERN = r"(?P<subject>[0-9a-f]+)_nohash_(?P<take>\d+)\.wav"  # speech commands: WORD/SPEAKER_nohash_N.wav
FSDD_PATTERN = r"(?P<digit>\d)_(?P<subject>[a-z]+)_\d+\.wav"  # FSDD (and the synthetic fallback)
RUNS = [("audiotune, cache cold (--cache True)", "cold", True),  # (name, run directory, --cache)
        ("audiotune, cache warm (--cache True)", "warm", True),
        ("seed's way (--cache False)", "seed", False)]


def cpu_ticks() -> tuple[float, float, float]:
    """(busy, total) clock ticks of the whole machine and the CPU ticks of this process and its waited-for children."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    own = os.times()
    mine = (own.user + own.system + own.children_user + own.children_system) * os.sysconf("SC_CLK_TCK")
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks), mine


def other_cpu_during(start: tuple[float, float, float]) -> float:
    """Share of all CPU time since ``start`` (a :func:`cpu_ticks`) that other processes used (Linux)."""
    busy, total, mine = (now - then for now, then in zip(cpu_ticks(), start))
    return round(max(busy - mine, 0.0) / max(total, 1.0), 3)


def build_checkpoint(out: Path, layers: int, hidden: int, seed: int) -> Path:
    """A wav2vec2-base-shaped encoder (random init, ``layers`` layers) and its feature extractor, saved offline."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bar()
    torch.manual_seed(seed)
    config = Wav2Vec2Config(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=hidden // 64,
                            intermediate_size=4 * hidden)  # defaults otherwise: group-norm conv stack, 16 kHz
    Wav2Vec2Model(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(out)
    return out


def synthesize(out_dir: Path, n: int, seed: int) -> Path:
    """``n`` 16 kHz tones of 0.5-1 s named like FSDD (``CLASS_SPEAKER_TAKE.wav``): 5 classes, 20 speakers."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True)
    for i in range(n):
        digit, speaker = i % 5, (i // 5) % 20
        t = np.arange(int(16000 * rng.uniform(0.5, 1.0))) / 16000
        y = 0.4 * np.sin(2 * np.pi * (150 + 80 * digit) * (1 + 0.02 * speaker) * t)
        sf.write(out_dir / f"{digit}_s{chr(97 + speaker)}_{i}.wav", y + 0.02 * rng.standard_normal(t.size), 16000,
                 subtype="PCM_16")
    return out_dir


def prepare_split(data: Path, work: Path, limit: int, seed: int, one_length: bool) -> tuple[Path, str, str]:
    """manifest → ``limit`` clips (seeded, equal per class) → subject-disjoint split.

    Returns the split folder, the label column and a description of the data."""
    source = str(data)
    if not data.is_dir():
        data, source = synthesize(work / "tones", limit, seed), f"synthetic tones ({data} not found)"
    nested = any(p.is_dir() for p in data.rglob("*"))
    label = "word" if nested else "digit"
    args = ["--pattern", SPEECH_PATTERN, "--folder_label", "word"] if nested else ["--pattern", FSDD_PATTERN]
    manifest = work / "manifest.csv"
    if cli(["manifest", str(data), "--out", str(manifest), *args]):
        raise SystemExit("audiotune manifest failed")
    table = pd.read_csv(manifest)
    if one_length:  # only clips of the most common length: no batch of the uncached run is ever padded
        frames = pd.Series([sf.info(work / path).frames for path in table["path"]], index=table.index)
        table = table[frames == frames.mode()[0]]
        source += f" (only clips of {frames.mode()[0]} samples)"
    if limit < len(table):  # the same number of clips per class, drawn with the seed
        per_class = max(limit // table[label].nunique(), 1)
        table = table.sample(frac=1, random_state=seed).groupby(label).head(per_class).sort_index()
    table.to_csv(manifest, index=False)
    if cli(["split", str(manifest), "--out", str(work / "split"), "--stratify", label, "--seed", str(seed)]):
        raise SystemExit("audiotune split failed")
    (work / "labels.txt").write_text(label + "\n")
    return work / "split", label, source


def wait_for_idle(limit: float = 300.0) -> None:
    """Sleep until other processes use under 5 % of the CPU over 2 s, for at most ``limit`` seconds."""
    end = time.monotonic() + limit
    while other_cpu_use(2.0) > 0.05 and time.monotonic() < end:
        time.sleep(5)


def timed_run(command: list[str], what: str) -> tuple[float, float]:
    """Run ``command`` once the machine is idle; its wall seconds and the CPU share other processes used."""
    wait_for_idle()
    start, ticks = time.perf_counter(), cpu_ticks()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds, others = time.perf_counter() - start, other_cpu_during(ticks)
    if done.returncode:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return seconds, others


def train_run(name: str, slug: str, work: Path, checkpoint: Path, cache: bool, args: argparse.Namespace) -> dict:
    """``audiotune train`` in a fresh process; returns its wall time and the run directory's results.

    An attempt during which other processes used over 10 % of the CPU is repeated (up to ``--attempts``),
    after waiting for the machine to be idle; a cold run starts each attempt from an empty cache folder."""
    run, cache_dir = work / slug, work / "cache"
    command = [sys.executable, "-m", "audiotune.cli", "train", "-d", str(work / "split"),
               "-l", str(work / "labels.txt"), "-o", str(run), "--model", "hf", "-c", str(checkpoint), "--freeze",
               "-e", str(args.epochs), "-bs", str(args.batch_size), "--seed", str(args.seed),
               "--cache", str(cache), "--cache_dir", str(cache_dir)]
    for attempt in range(1, args.attempts + 1):
        wait_for_idle()
        shutil.rmtree(run, ignore_errors=True)
        if slug == "cold":
            shutil.rmtree(cache_dir, ignore_errors=True)
        start, ticks = time.perf_counter(), cpu_ticks()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds, others = time.perf_counter() - start, other_cpu_during(ticks)
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        if others <= 0.1:
            break
        print(f"{name}: other processes used {others:.0%} of the CPU during attempt {attempt} ({seconds:.1f} s)")
    return {"name": name, "seconds": seconds, "other_cpu": others, "attempts": attempt,
            "command": " ".join(command[2:]), "metrics": json.loads((run / "metrics.json").read_text()),
            "predictions": pd.read_parquet(run / "predictions.parquet")}


def score_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest |score difference| between two predictions.parquet tables, matched on (split, uid)."""
    cols = [c for c in a.columns if c.startswith("score:")]
    merged = a.merge(b, on=["split", "uid"], suffixes=("_a", "_b"), validate="one_to_one")
    if len(merged) != len(a) or len(a) != len(b):
        raise SystemExit("the runs scored different clips")
    return float(max(np.abs(merged[f"{c}_a"] - merged[f"{c}_b"]).max() for c in cols))


def report(runs: list[dict]) -> list[dict]:
    """Print wall times, the seed/audiotune ratio, the cache counts and the metrics; returns the rows."""
    seed = runs[-1]
    rows = []
    print(f"{'run':<34} {'wall s':>8} {'others':>7} {'seed/this':>10} {'encoded':>8} {'reused':>7} {'val acc':>8} "
          f"{'test acc':>9} {'test F1':>8} {'max|score diff| vs seed':>24}")
    for run in runs:
        m, cache = run["metrics"], run["metrics"].get("feature_cache", {})
        row = {"run": run["name"], "seconds": run["seconds"], "other_cpu": run["other_cpu"],
               "attempts": run["attempts"], "seed_over_this": seed["seconds"] / run["seconds"],
               "cache_used": cache.get("used"), "encoded": cache.get("encoded"), "reused": cache.get("reused"),
               "val_accuracy": m["val"]["accuracy"], "test_accuracy": m["test"]["accuracy"],
               "test_macro_f1": m["test"]["macro_f1"], "epochs_run": m.get("epochs_run"),
               "max_abs_score_diff_vs_seed": score_diff(run["predictions"], seed["predictions"]),
               "command": run["command"]}
        rows.append(row)
        print(f"{row['run']:<34} {row['seconds']:>8.1f} {row['other_cpu']:>7.1%} {row['seed_over_this']:>9.2f}x "
              f"{row['encoded']!s:>8} {row['reused']!s:>7} {row['val_accuracy']:>8.3f} {row['test_accuracy']:>9.3f} "
              f"{row['test_macro_f1']:>8.3f} {row['max_abs_score_diff_vs_seed']:>24.2e}")
    print("wall s: the whole `audiotune train` process (start-up, data checks, training, val/test scoring, "
          "plots); others: share of all CPU time other processes used meanwhile; encoded/reused: clips encoded into / "
          "read from the cache (all splits)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="speech-commands layout (WORD/*.wav) or an FSDD-named folder; synthetic tones if absent")
    parser.add_argument("--limit", type=int, default=300, help="clips drawn from the manifest (seeded)")
    parser.add_argument("--layers", type=int, default=4, help="transformer layers of the wav2vec2-base-shaped encoder")
    parser.add_argument("--hidden", type=int, default=768, help="encoder width (heads = hidden / 64, FFN = 4x)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one_length", action="store_true",
                        help="keep only clips of the most common length (training batches then need no padding)")
    parser.add_argument("--attempts", type=int, default=3,
                        help="tries per run while other processes use over 10 %% of the CPU during it")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work folder to keep, new or empty (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.keep and args.keep.exists() and (not args.keep.is_dir() or any(args.keep.iterdir())):
        parser.error(f"--keep {args.keep}: exists and is not an empty folder; give a new or empty one")
    info = machine()
    info["other_cpu_before"] = other_cpu_use()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = build_checkpoint(work / "encoder", args.layers, args.hidden, args.seed)
        split, label, source = prepare_split(args.data, work, args.limit, args.seed, args.one_length)
        sizes = {name: len(pd.read_csv(split / f"{name}.csv")) for name in ("train", "val", "test")}
        runs = [train_run(name, slug, work, checkpoint, cache, args) for name, slug, cache in RUNS]
    info["other_cpu_after"] = other_cpu_use()
    print(f"data: {source} (label '{label}'; {sizes})\nencoder: wav2vec2-base architecture, {args.layers} layers, "
          f"hidden {args.hidden}, random init\nepochs {args.epochs}, batch {args.batch_size}, seed {args.seed}\n"
          f"machine: {info}\n")
    rows = report(runs)
    if max(info["other_cpu_before"], info["other_cpu_after"], *(run["other_cpu"] for run in runs)) > 0.1:
        print("\nWARNING: other processes used the CPU around or during the runs (other_cpu_* and 'others' above, "
              "fraction of all cores); on 2 cores that skews these timings badly. Rerun on an idle machine.")
    if args.json:
        args.json.write_text(json.dumps({"data": source, "label": label, "sizes": sizes, "layers": args.layers,
                                         "hidden": args.hidden, "epochs": args.epochs, "batch_size": args.batch_size,
                                         "seed": args.seed, "machine": info, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
