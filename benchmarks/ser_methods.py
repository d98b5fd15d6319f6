"""The speech-emotion-recognition recipes side by side: V-FT, TAPT and P-TAPT, over folds × repeats.

The three methods of the wav2vec2 fine-tuning study for speech emotion recognition, run with audiotune's
commands on the Free Spoken Digit Dataset (digits as the classes, speakers as the folds: each fold tests one
speaker and validates on the next, so every test speaker is unseen), from one small randomly initialised
wav2vec2 (no pretrained checkpoint can be reached offline):

- **V-FT**: ``audiotune train --model hf`` as the study fine-tuned: projection frozen, SpecAugment on the
  projected features (spans scaled to half-second digits), class-weighted CE, best epoch by validation UAR, a
  linear head, full-length test clips. The study also froze the CNN, which was pretrained; a random one is
  trained here (``--freeze_cnn`` freezes it).
- **TAPT**: ``audiotune pretrain --objective tapt`` (wav2vec2's contrastive + diversity loss) on the fold's
  training audio, then the same fine-tuning from ``EXP/encoder``.
- **P-TAPT**: ``audiotune cluster --run`` of the fold's first V-FT run (frame features of the fine-tuned
  encoder, k-means per K), ``audiotune pretrain --objective ptapt`` on those pseudo-labels, then the same
  fine-tuning.

Every stage is an ``audiotune`` process; ``--jobs`` of them run at once (stages wait for what they read).
Each finished stage prints one line and is appended to ``WORK/stages.jsonl``; the summary gives, per method,
test accuracy and UAR as mean, fold sd and run sd (the study's statistics, from ``audiotune cv``'s code) and
the wall time its stages took.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from audiotune.engine.cv_summary import finished_metrics, summarise
from audiotune.engine.selection import monitor_value

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
FSDD_NAME = re.compile(r"(?P<digit>\d)_(?P<subject>[a-z]+)_(?P<take>\d+)\.wav")
METHODS = ("V-FT", "TAPT", "P-TAPT")


@dataclass
class Stage:
    name: str
    args: list[str]
    method: str  # whose compute this is ("V-FT" stages also serve P-TAPT's clustering)
    needs: list[str] = field(default_factory=list)
    fold: int = -1
    repeat: int = -1
    run_dir: Path | None = None  # a fine-tuning run whose metrics.json holds the result


def build_checkpoint(out: Path, layers: int, hidden: int, conv: int, seed: int) -> Path:
    """A small wav2vec2 with its quantizer (so TAPT can train it), random weights, and a feature extractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bar()
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=max(hidden // 64, 1),
        intermediate_size=4 * hidden, conv_dim=(conv,) * 7, codevector_dim=hidden // 2,
        proj_codevector_dim=hidden // 2, num_codevectors_per_group=160, num_codevector_groups=2,
        mask_time_prob=0.065, mask_time_length=5)  # spans of 5 frames (0.1 s): digits last about half a second
    Wav2Vec2ForPreTraining(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(out)
    return out


def select_clips(data: Path, out: Path, takes: int) -> list[str]:
    """FSDD files with take < ``takes`` linked into ``out``; returns the speakers, sorted."""
    out.mkdir(parents=True, exist_ok=True)
    speakers = set()
    for path in sorted(data.glob("*.wav")):
        match = FSDD_NAME.fullmatch(path.name)
        if match and int(match["take"]) < takes:
            (out / path.name).symlink_to(path.resolve())
            speakers.add(match["subject"])
    if not speakers:
        raise SystemExit(f"{data}: no FSDD-named .wav files ({{digit}}_{{speaker}}_{{take}}.wav)")
    return sorted(speakers)


def plan(args: argparse.Namespace, work: Path, speakers: list[str]) -> list[Stage]:
    base = str(work / "base")
    common = ["--model", "hf", "-e", str(args.epochs), "-bs", str(args.batch_size), "-lr", str(args.lr),
              "-nw", str(args.num_workers), "--precision", args.precision, "--audio_cache", "True"]
    finetune = [*common, "-l", str(work / "labels.txt"), "--class_weights", "balanced", "--monitor", "uar",
                "--eval_clip_length", "0", "--clip_length", "0", "--clf_bottleneck", "0", "--freeze", "False",
                "--freeze_feature_encoder", str(args.freeze_cnn), "--freeze_feature_projection", "True",
                "--mask_time_prob", "0.08", "--mask_time_length", str(args.mask_time_length),
                "--mask_feature_prob", "0.05", "--mask_feature_length", str(args.mask_feature_length)]
    pretrain = ["--model", "hf", "--training_steps", str(args.pretrain_steps), "--warmup_steps",
                str(max(args.pretrain_steps // 10, 1)), "-bs", str(args.batch_size), "-lr", str(args.pretrain_lr),
                "--max_seconds", "1.0", "-nw", str(args.num_workers), "--precision", args.precision,
                "--grad_clip", str(args.pretrain_grad_clip)]
    stages: list[Stage] = []
    later: list[Stage] = []
    for fold, test in enumerate(speakers[:args.folds]):
        if args.test_speakers and test not in args.test_speakers:
            continue
        split = str(work / "splits" / test)
        tag = f"f{fold}"

        def tune(method: str, checkpoint: str, needs: list[str], repeat: int) -> Stage:
            run = work / method.lower() / test / f"run_{repeat + 1}"
            return Stage(f"{method} ft {tag} r{repeat}",
                         ["train", "-c", checkpoint, "-d", split, "-o", str(run), "--seed", str(repeat), *finetune],
                         method, needs, fold, repeat, run)

        vft = [tune("V-FT", base, [], r) for r in range(args.repeats)]
        tapt_dir, ptapt_dir = work / "tapt" / test / "pretrain", work / "p-tapt" / test / "pretrain"
        labels = work / "p-tapt" / test / "labels.parquet"
        stages.append(vft[0])
        later += vft[1:]
        stages.append(Stage(f"TAPT pretrain {tag}", ["pretrain", "-c", base, "--objective", "tapt", "-d", split,
                                                     "-o", str(tapt_dir), *pretrain], "TAPT", [], fold))
        tapt = [tune("TAPT", str(tapt_dir / "encoder"), [f"TAPT pretrain {tag}"], r) for r in range(args.repeats)]
        stages.append(tapt[0])
        later += tapt[1:]
        stages.append(Stage(f"P-TAPT cluster {tag}", ["cluster", "--run", str(vft[0].run_dir), "-d",
                                                      str(work / "splits" / f"{test}_pretraining.csv"),
                                                      "--num_clusters", *map(str, args.num_clusters),
                                                      "--sample_ratio", "1.0", "--fit_on", "all",
                                                      "--out", str(labels)],
                            "P-TAPT", [vft[0].name], fold))
        stages.append(Stage(f"P-TAPT pretrain {tag}", ["pretrain", "-c", base, "--objective", "ptapt",
                                                       "--pseudo_labels", str(labels), "-d", split,
                                                       "-o", str(ptapt_dir), *pretrain],
                            "P-TAPT", [f"P-TAPT cluster {tag}"], fold))
        ptapt = [tune("P-TAPT", str(ptapt_dir / "encoder"), [f"P-TAPT pretrain {tag}"], r)
                 for r in range(args.repeats)]
        stages.append(ptapt[0])
        later += ptapt[1:]
    return stages + later  # started in this order: every fold's first repeat before any second one


def run_stage(stage: Stage, log_dir: Path, env: dict) -> dict:
    log = log_dir / (stage.name.replace(" ", "_") + ".log")
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run([sys.executable, "-m", "audiotune", *stage.args], stdout=handle,
                              stderr=subprocess.STDOUT, env=env).returncode
    record = {"stage": stage.name, "method": stage.method, "fold": stage.fold, "repeat": stage.repeat,
              "seconds": round(time.perf_counter() - start, 1), "returncode": code}
    if code != 0:
        record["error"] = log.read_text()[-2000:]
    elif stage.run_dir is not None:
        metrics = finished_metrics(stage.run_dir)
        if metrics is None:
            record["error"] = f"{stage.run_dir}: no finished metrics.json"
        else:
            record |= {f"{split}_{key}": monitor_value(metrics[split], key)
                       for split in ("val", "test") if split in metrics for key in ("accuracy", "uar")}
    return record


def execute(stages: list[Stage], jobs: int, work: Path, env: dict) -> list[dict]:
    """Run the stages, at most ``jobs`` at once, each after the stages it needs; a failed stage's dependants are
    skipped (and say so)."""
    log_dir = work / "logs"
    log_dir.mkdir(exist_ok=True)
    done: dict[str, dict] = {}
    pending = list(stages)
    running: dict[Future, Stage] = {}
    with ThreadPoolExecutor(jobs) as pool, (work / "stages.jsonl").open("a") as journal:
        while pending or running:
            for stage in list(pending):
                if len(running) >= jobs:
                    break
                if any("error" in done[n] for n in stage.needs if n in done):  # failed or skipped
                    pending.remove(stage)
                    done[stage.name] = {"stage": stage.name, "method": stage.method, "fold": stage.fold,
                                        "repeat": stage.repeat, "returncode": -1,
                                        "error": "skipped: " + ", ".join(stage.needs) + " failed"}
                    journal.write(json.dumps(done[stage.name]) + "\n")
                    print(f"skipped  {stage.name} ({done[stage.name]['error']})", flush=True)
                elif all(n in done for n in stage.needs):
                    pending.remove(stage)
                    running[pool.submit(run_stage, stage, log_dir, env)] = stage
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stage = running.pop(future)
                record = future.result()
                done[stage.name] = record
                journal.write(json.dumps(record) + "\n")
                journal.flush()
                shown = {k: v for k, v in record.items() if k.startswith("test_")}
                status = "failed" if "error" in record else "done"
                print(f"{status:8s} {stage.name}: {record['seconds']} s {shown}", flush=True)
                if "error" in record:
                    print(record["error"][-600:], flush=True)
    return [done[s.name] for s in stages]


def summary(records: list[dict], folds: int, repeats: int) -> dict:
    result = {}
    for method in METHODS:
        mine = [r for r in records if r["method"] == method]
        tuned = [r for r in mine if r["stage"].startswith(f"{method} ft")]
        entry: dict = {"runs_finished": sum("error" not in r for r in tuned), "runs_planned": len(tuned)}
        for key in ("test_accuracy", "test_uar", "val_uar"):
            matrix = np.full((folds, repeats), np.nan)
            for r in tuned:
                if r.get(key) is not None:
                    matrix[r["fold"], r["repeat"]] = r[key]
            entry[key] = summarise(matrix)
        seconds = sum(r.get("seconds", 0.0) for r in mine)
        if method == "P-TAPT":  # its pseudo-labels come from the first V-FT run of each fold
            seconds += sum(r.get("seconds", 0.0) for r in records if r["method"] == "V-FT" and r["repeat"] == 0)
        entry["stage_seconds"] = round(seconds, 1)
        entry["pretrain_seconds"] = round(sum(r.get("seconds", 0.0) for r in mine
                                              if "pretrain" in r["stage"] or "cluster" in r["stage"]), 1)
        result[method] = entry
    return result


def show(result: dict) -> None:
    def cell(stats: dict) -> str:
        if stats.get("mean") is None:
            return "—"
        sd = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        return f"{stats['mean']:.3f} (fold sd {sd(stats['fold_std'])}, run sd {sd(stats['run_std'])})"

    print(f"\n{'method':8s} {'runs':>6s}  {'test accuracy':38s} {'test UAR':38s} stage-s")
    for method, entry in result.items():
        runs = f"{entry['runs_finished']:>2d}/{entry['runs_planned']:<3d}"
        print(f"{method:8s} {runs}  {cell(entry['test_accuracy']):38s} {cell(entry['test_uar']):38s} "
              f"{entry['stage_seconds']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FSDD recordings folder")
    parser.add_argument("--work", type=Path, help="work folder (kept); default: a temporary one, removed")
    parser.add_argument("--folds", type=int, default=6, help="test speakers, in sorted order (6 = every speaker)")
    parser.add_argument("--test_speakers", nargs="+", help="run only these folds (to split the work between "
                        "machines; fold numbers stay those of the sorted speakers)")
    parser.add_argument("--repeats", type=int, default=2, help="fine-tuning runs per fold and method (seeds 0..R-1)")
    parser.add_argument("--takes", type=int, default=50, help="takes per digit and speaker used (FSDD has 50)")
    parser.add_argument("--jobs", type=int, default=max((os.cpu_count() or 2) // 2, 1), help="stages at once")
    parser.add_argument("--threads", type=int, default=2, help="OMP/torch threads per stage")
    parser.add_argument("-nw", "--num_workers", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("-bs", "--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate")
    parser.add_argument("--pretrain_steps", type=int, default=1000)
    parser.add_argument("--pretrain_lr", type=float, default=5e-4)
    parser.add_argument("--pretrain_grad_clip", type=float, default=1.0,
                        help="gradient norm clip of TAPT and P-TAPT (0 = off)")
    parser.add_argument("--num_clusters", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--conv", type=int, default=256, help="channels of each of the 7 conv layers")
    parser.add_argument("--freeze_cnn", action="store_true",
                        help="freeze the conv feature encoder while fine-tuning, as the study did with a pretrained "
                             "one (a random one must learn: trained by default)")
    parser.add_argument("--mask_time_length", type=int, default=2,
                        help="SpecAugment time span in frames while fine-tuning (study: 15 on utterances of ~4.5 s; "
                             "at least 2 spans per clip, and a digit lasts about 25 frames)")
    parser.add_argument("--mask_feature_length", type=int, default=16,
                        help="SpecAugment feature span while fine-tuning (study: 64 of 768 channels)")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--json", type=Path, help="also write the stages and the summary here")
    parser.add_argument("--from_journal", type=Path, nargs="+",
                        help="only summarise the stages of WORK/stages.jsonl files (e.g. of several machines)")
    args = parser.parse_args()
    if args.from_journal:
        records = [json.loads(line) for path in args.from_journal for line in path.read_text().splitlines()
                   if line.strip()]
        show(summary(records, args.folds, args.repeats))
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="ser_methods_"))
    work.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                        "TOKENIZERS_PARALLELISM": "false"}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"device: {device}; {args.folds} folds x {args.repeats} repeats, {args.jobs} stages at once", flush=True)
    try:
        started = time.perf_counter()
        speakers = select_clips(args.data, work / "audio", args.takes)
        subprocess.run([sys.executable, "-m", "audiotune", "manifest", str(work / "audio"), "--out",
                        str(work / "manifest.csv"), "--pattern", r"(?P<digit>\d)_(?P<subject>[a-z]+)_\d+\.wav"],
                       check=True, env=env)
        (work / "labels.txt").write_text("digit\n")
        for i, test in enumerate(speakers[:args.folds]):
            val = speakers[(i + 1) % len(speakers)]
            subprocess.run([sys.executable, "-m", "audiotune", "split", str(work / "manifest.csv"), "--out",
                            str(work / "splits" / test), "--test_subjects", test, "--val_subjects", val],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            # clustering sees the audio pretraining reads (training and validation speakers), never the test speaker
            parts = [pd.read_csv(work / "splits" / test / f"{part}.csv") for part in ("train", "val")]
            pool = pd.concat(parts)
            pool["path"] = [str((work / "splits" / test / p).resolve()) for p in pool["path"]]
            pool.to_csv(work / "splits" / f"{test}_pretraining.csv", index=False)
        build_checkpoint(work / "base", args.layers, args.hidden, args.conv, seed=0)
        records = execute(plan(args, work, speakers), args.jobs, work, env)
        result = summary(records, min(args.folds, len(speakers)), args.repeats)
        show(result)
        total = round(time.perf_counter() - started, 1)
        print(f"\nwall time {total} s on {device}", flush=True)
        if args.json:
            args.json.write_text(json.dumps({"device": device, "args": {k: str(v) for k, v in vars(args).items()},
                                             "wall_seconds": total, "summary": result, "stages": records},
                                            indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
