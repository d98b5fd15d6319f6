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

from data_pipeline import machine, other_cpu_use  # same directory: the shared CPU-load check

from audiotune.cli import main as cli

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech-commands-mini"
SPEECH_PATTERN = r"(?P<subject>[0-9a-f]+)_nohash_(?P<take>\d+)\.wav"  # speech commands: WORD/SPEAKER_nohash_N.wav
FSDD_PATTERN = r"(?P<digit>\d)_(?P<subject>[a-z]+)_\d+\.wav"  # FSDD (and the synthetic fallback)


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
    """``n`` 16 kHz tones of 0.5-1 s named like FSDD (``CLASS_SPEAKER_TAKE.wav``): 5 classes, 6 speakers."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True)
    for i in range(n):
        digit, speaker = i % 5, "abcdef"[(i // 5) % 6]
        t = np.arange(int(16000 * rng.uniform(0.5, 1.0))) / 16000
        y = 0.4 * np.sin(2 * np.pi * (150 + 80 * digit) * t * (1 + 0.05 * "abcdef".index(speaker)))
        sf.write(out_dir / f"{digit}_{speaker}_{i}.wav", y + 0.02 * rng.standard_normal(t.size), 16000,
                 subtype="PCM_16")
    return out_dir


def prepare_split(data: Path, work: Path, limit: int, seed: int) -> tuple[Path, str, str]:
    """manifest → ``limit`` clips (seeded, equal per class) → subject-disjoint split; returns (split, label, source)."""
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
    if limit < len(table):  # the same number of clips per class, drawn with the seed
        per_class = max(limit // table[label].nunique(), 1)
        table.sample(frac=1, random_state=seed).groupby(label).head(per_class).sort_index().to_csv(manifest,
                                                                                                   index=False)
    if cli(["split", str(manifest), "--out", str(work / "split"), "--stratify", label, "--seed", str(seed)]):
        raise SystemExit("audiotune split failed")
    (work / "labels.txt").write_text(label + "\n")
    return work / "split", label, source


def train_run(name: str, work: Path, checkpoint: Path, cache: bool, args: argparse.Namespace) -> dict:
    """One ``audiotune train`` in a fresh process; returns its wall time and the run directory's results."""
    run = work / name
    command = [sys.executable, "-m", "audiotune.cli", "train", "-d", str(work / "split"),
               "-l", str(work / "labels.txt"), "-o", str(run), "--model", "hf", "-c", str(checkpoint), "--freeze",
               "-e", str(args.epochs), "-bs", str(args.batch_size), "--seed", str(args.seed),
               "--cache", str(cache), "--cache_dir", str(work / "cache")]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((run / "metrics.json").read_text())
    return {"name": name, "seconds": seconds, "command": " ".join(command[2:]), "metrics": metrics,
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
    print(f"{'run':<34} {'wall s':>8} {'seed/this':>10} {'encoded':>8} {'reused':>7} {'val acc':>8} "
          f"{'test acc':>9} {'test F1':>8} {'max|score diff| vs seed':>24}")
    for run in runs:
        m, cache = run["metrics"], run["metrics"].get("feature_cache", {})
        row = {"run": run["name"], "seconds": run["seconds"], "seed_over_this": seed["seconds"] / run["seconds"],
               "cache_used": cache.get("used"), "encoded": cache.get("encoded"), "reused": cache.get("reused"),
               "val_accuracy": m["val"]["accuracy"], "test_accuracy": m["test"]["accuracy"],
               "test_macro_f1": m["test"]["macro_f1"], "epochs_run": m.get("epochs_run"),
               "max_abs_score_diff_vs_seed": score_diff(run["predictions"], seed["predictions"]),
               "command": run["command"]}
        rows.append(row)
        print(f"{row['run']:<34} {row['seconds']:>8.1f} {row['seed_over_this']:>9.2f}x {str(row['encoded']):>8} "
              f"{str(row['reused']):>7} {row['val_accuracy']:>8.3f} {row['test_accuracy']:>9.3f} "
              f"{row['test_macro_f1']:>8.3f} {row['max_abs_score_diff_vs_seed']:>24.2e}")
    print("wall s: the whole `audiotune train` process (start-up, data checks, training, val/test scoring, "
          "plots); encoded/reused: clips encoded into / read from the cache (all splits)")
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
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    info = machine()
    info["other_cpu_before"] = other_cpu_use()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        if args.keep and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = build_checkpoint(work / "encoder", args.layers, args.hidden, args.seed)
        split, label, source = prepare_split(args.data, work, args.limit, args.seed)
        sizes = {name: len(pd.read_csv(split / f"{name}.csv")) for name in ("train", "val", "test")}
        runs = [train_run("audiotune, cache cold (--cache True)", work, checkpoint, True, args),
                train_run("audiotune, cache warm (--cache True)", work, checkpoint, True, args),
                train_run("seed's way (--cache False)", work, checkpoint, False, args)]
    info["other_cpu_after"] = other_cpu_use()
    print(f"data: {source} (label '{label}'; {sizes})\nencoder: wav2vec2-base architecture, {args.layers} layers, "
          f"hidden {args.hidden}, random init\nepochs {args.epochs}, batch {args.batch_size}, seed {args.seed}\n"
          f"machine: {info}\n")
    rows = report(runs)
    if max(info["other_cpu_before"], info["other_cpu_after"]) > 0.1:
        print("\nWARNING: other processes used the CPU around the run (other_cpu_* above, fraction of all "
              "cores); on 2 cores that skews these timings badly. Rerun on an idle machine.")
    if args.json:
        args.json.write_text(json.dumps({"data": source, "label": label, "sizes": sizes, "layers": args.layers,
                                         "hidden": args.hidden, "epochs": args.epochs, "batch_size": args.batch_size,
                                         "seed": args.seed, "machine": info, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
