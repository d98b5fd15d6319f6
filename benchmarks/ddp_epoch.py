"""A training epoch in 2 DDP processes against the same epoch in 1 process, on this machine's CPUs.

Both sides are ``audiotune train --model ecapa_tdnn`` on the same split, seed and global batch (1 process with
``-bs B``; 2 processes, ``--devices 2 --strategy ddp --accelerator cpu``, with ``-bs B/2`` each, so both take
the same optimizer steps per epoch). Each side runs twice, ``-e 1`` and ``-e E``, in fresh processes; the
epoch time is ``(wall(E) - wall(1)) / (E - 1)``, which leaves out start-up (imports, process launch, the
process group, the final evaluation). Lightning gives each of the DDP processes ``cores / 2`` torch threads
when ``OMP_NUM_THREADS`` is unset; the single process keeps torch's default (all cores).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
from data_pipeline import machine  # benchmarks/data_pipeline.py
from frozen_cache import FSDD_PATTERN, timed_run  # benchmarks/frozen_cache.py

from audiotune.cli import main as cli

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
SIDES = [("1 process", ["--devices", "1"], 1), ("2 DDP processes", ["--devices", "2", "--strategy", "ddp"], 2)]


def prepare_split(data: Path, work: Path, limit: int, seed: int) -> Path:
    """FSDD-named clips → train on four speakers, validate on 200 of jackson's clips, test on theo; ``limit``
    training clips (seeded, equal per digit)."""
    manifest = work / "manifest.csv"
    if cli(["manifest", str(data), "--out", str(manifest), "--pattern", FSDD_PATTERN]):
        raise SystemExit(f"audiotune manifest {data} failed")
    table = pd.read_csv(manifest)
    split = work / "split"
    split.mkdir(exist_ok=True)
    train = table[~table["subject"].isin(["jackson", "theo"])].sample(frac=1, random_state=seed)
    train = train.groupby("digit").head(max(limit // 10, 1)).sort_index()
    val = table[table["subject"] == "jackson"].groupby("digit").head(20)
    for name, part in (("train", train), ("val", val),
                       ("test", table[table["subject"] == "theo"])):
        part.assign(path=[str((work / p).resolve()) for p in part["path"]]).to_csv(split / f"{name}.csv", index=False)
    (work / "labels.txt").write_text("digit\n")
    return split


def run(work: Path, slug: str, flags: list[str], processes: int, epochs: int, args: argparse.Namespace) -> dict:
    out = work / f"{slug}_e{epochs}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "audiotune.cli", "train", "-d", str(work / "split"),
               "-l", str(work / "labels.txt"), "-o", str(out), "--model", "ecapa_tdnn", "--accelerator", "cpu",
               *flags, "-e", str(epochs), "-bs", str(args.batch_size // processes), "--seed", str(args.seed),
               "--clip_length", str(args.clip_length), "--channels", *map(str, args.channels),
               "--features", "fbank", "--num_workers", "0"]
    seconds, others = timed_run(command, f"{slug} -e {epochs}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seconds": seconds, "other_cpu": others, "metrics": metrics, "command": " ".join(command[2:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FSDD-named .wav folder")
    parser.add_argument("--limit", type=int, default=600, help="training clips (equal per digit)")
    parser.add_argument("--epochs", type=int, default=3, help="the longer run's epochs (the shorter runs 1)")
    parser.add_argument("--batch_size", type=int, default=32, help="global batch (each DDP process takes half)")
    parser.add_argument("--clip_length", type=float, default=1.0)
    parser.add_argument("--channels", type=int, nargs=5, default=[256, 256, 256, 256, 768])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.epochs < 2 or args.batch_size % 2:
        raise SystemExit("--epochs must be at least 2 and --batch_size even")
    work = args.keep or Path(tempfile.mkdtemp(prefix="audiotune-ddp-"))
    work.mkdir(parents=True, exist_ok=True)
    split = prepare_split(args.data, work, args.limit, args.seed)
    source = f"{args.data}: {len(pd.read_csv(split / 'train.csv'))} training clips (4 speakers), 200 validation"
    print(json.dumps(machine()))
    print(f"data: {source}")
    results = []
    for name, flags, processes in SIDES:
        slug = "ddp" if processes > 1 else "single"
        short, long = (run(work, slug, flags, processes, e, args) for e in (1, args.epochs))
        epoch = (long["seconds"] - short["seconds"]) / (args.epochs - 1)
        val = long["metrics"]["val"]
        results.append({"side": name, "processes": processes, "batch_per_process": args.batch_size // processes,
                        "epoch_s": epoch, "startup_s": short["seconds"] - epoch, "wall_s": long["seconds"],
                        "clips_per_epoch": long["metrics"]["train_clips_per_epoch"],
                        "val_accuracy": val.get("accuracy"), "val_loss_selected": long["metrics"].get("selection"),
                        "other_cpu": max(short["other_cpu"], long["other_cpu"]), "command": long["command"]})
    base = results[0]["epoch_s"]
    print(f"{'side':18s} {'epoch s':>8s} {'vs 1 process':>12s} {'start-up s':>10s} {'val acc':>8s}  clips/epoch")
    for r in results:
        r["speed_vs_1_process"] = base / r["epoch_s"]
        print(f"{r['side']:18s} {r['epoch_s']:8.2f} {r['speed_vs_1_process']:11.2f}x {r['startup_s']:10.1f} "
              f"{r['val_accuracy']:8.3f}  {r['clips_per_epoch']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "source": source, "results": results}, indent=2))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
