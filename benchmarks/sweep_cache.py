"""Sweep trials per hour of a frozen encoder, with the shared feature cache and without it.

Two ``audiotune sweep`` runs of the same space (learning rate, log scale, and head dropout; random sampler,
the same seed, so both draw the same parameters), the same ``--trials``, split and encoder, no pruning, each
in a fresh process:
- shared cache: ``--cache True`` with an empty ``--cache_dir``: the first trial encodes every clip once, the
  later trials train their heads from the cached pooled states;
- no cache: ``--cache False``: every trial runs the frozen encoder on every batch of every epoch (what a
  sweep of the seed systems does).
The encoder is the offline wav2vec2-base-shaped checkpoint of ``frozen_cache.py`` (random weights,
``--layers`` layers) on the speech-commands-mini split; trials per hour = trials / wall time.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from data_pipeline import machine  # benchmarks/data_pipeline.py
from frozen_cache import (  # benchmarks/frozen_cache.py
    DEFAULT_DATA,
    build_checkpoint,
    prepare_split,
    timed_run,
)

SPACE = {"metric": "val_accuracy", "goal": "maximize", "algorithm": "random",
         "parameters": {"learning_rate": {"type": "double", "min": 1e-4, "max": 1e-2, "scale": "log"},
                        "final_dropout": {"type": "discrete", "values": [0.0, 0.1, 0.3]}}}
SIDES = [("shared feature cache (--cache True)", "cached", True), ("no cache (--cache False)", "uncached", False)]


def sweep(work: Path, slug: str, cache: bool, checkpoint: Path, args: argparse.Namespace) -> dict:
    out, cache_dir = work / slug, work / f"cache_{slug}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    command = [sys.executable, "-m", "audiotune.cli", "sweep", "--space", str(work / "space.yaml"),
               "--trials", str(args.trials), "--pruner", "none", "-d", str(work / "split"),
               "-l", str(work / "labels.txt"), "-o", str(out), "--model", "hf", "-c", str(checkpoint), "--freeze",
               "-e", str(args.epochs), "-bs", str(args.batch_size), "--seed", str(args.seed),
               "--cache", str(cache), "--cache_dir", str(cache_dir)]
    seconds, others = timed_run(command, slug)
    table = pd.read_csv(out / "sweep_trials.csv")
    return {"seconds": seconds, "other_cpu": others, "trials": table, "command": " ".join(command[2:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="audiotune-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    _, _, source = prepare_split(args.data, work, args.limit, args.seed, one_length=False)
    checkpoint = build_checkpoint(work / "encoder", args.layers, args.hidden, args.seed)
    (work / "space.yaml").write_text(yaml.safe_dump(SPACE))
    print(json.dumps(machine()))
    print(f"data: {source}; encoder: wav2vec2-base shape, {args.layers} layers, random weights")
    results = {}
    for name, slug, cache in SIDES:
        results[slug] = {"name": name, **sweep(work, slug, cache, checkpoint, args)}
    base = results["uncached"]["seconds"]
    same = results["cached"]["trials"].filter(like="param_").equals(results["uncached"]["trials"].filter(like="param_"))
    print(f"same parameters drawn on both sides: {same}")
    print(f"{'side':38s} {'wall s':>8s} {'trials/h':>9s} {'vs no cache':>11s}  encoded per trial  best val acc")
    report = []
    for slug, r in results.items():
        per_hour = args.trials / r["seconds"] * 3600
        table = r["trials"]
        encoded = table["cache_encoded"].fillna(-1).astype(int).tolist() if "cache_encoded" in table else []
        row = {"side": r["name"], "wall_s": r["seconds"], "trials_per_hour": per_hour,
               "speed_vs_no_cache": base / r["seconds"], "encoded_per_trial": encoded,
               "values": table["value"].tolist(), "other_cpu": r["other_cpu"], "command": r["command"]}
        report.append(row)
        print(f"{r['name']:38s} {r['seconds']:8.1f} {per_hour:9.1f} {row['speed_vs_no_cache']:10.2f}x  "
              f"{encoded if encoded else '-'}  {max(row['values']):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "source": source, "same_parameters": same,
                                         "results": report}, indent=2))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
