"""Keystroke and tap classification with audiotune's tap pipeline, against an MFCC + random-forest baseline.

Two datasets, each run with audiotune's own commands and scored on the same cross-validation folds as the
baseline (the tap2key system's ``other_classifiers.py``: 40 MFCCs averaged over time, a 200-tree random
forest):

- **zoom**: the 36 real keystroke recordings (25 presses of one key each, 32 kHz, through a video-call app):
  ``audiotune taps detect`` (the settings of the README), the key from each file name, ``audiotune segment``
  with the tap2key window (22.8 ms before, 62.5 ms after each press), then ``audiotune cv --folds K
  --stratify label --group uid`` (one segment per press, so no press is in two splits) with ECAPA-TDNN.
- **synthetic** (``--synthetic``): 8-channel 96 kHz tap recordings from ``examples/make_tap_data.py`` (the
  Zoom presses played at key positions on a table and convolved with a real 8-channel room impulse
  response) with a touch log: ``taps detect`` -> ``taps align`` (latency estimated) -> ``cv`` for each
  ``--channel_mode`` in ``--modes`` (interleave, mean, stack, ...), with ``--balance oversample`` as the
  tap2key recipe.

The summary prints test accuracy and weighted F1 (mean ± fold sd) for every model and the baseline, and
writes ``WORK/summary.json``.

    python benchmarks/taps.py --work /tmp/taps_bench --epochs 30
    python benchmarks/taps.py --work /tmp/taps_bench --synthetic --recordings 8 --seconds 60
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ZOOM_DETECT = ["--cutoff", "5000", "--envelope", "0.01", "--relative", "0.1", "--edge", "0.25", "--release", "0.55"]


def audiotune(*args: str, log: Path | None = None) -> float:
    """Run one audiotune command (its output to ``log``); its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "a") if log else open("/dev/null", "w") as out:
        code = subprocess.run([sys.executable, "-m", "audiotune", *args], stdout=out, stderr=subprocess.STDOUT)
    if code.returncode:
        raise SystemExit(f"audiotune {' '.join(args[:2])} failed (exit {code.returncode}); see {log}")
    return time.perf_counter() - start


def mfcc_features(table: pd.DataFrame, base: Path) -> np.ndarray:
    """40 MFCCs of each segment's channel mean, averaged over time."""
    import librosa

    rows = []
    for path, offset, duration in zip(table["path"], table["offset"], table["duration"]):
        file = (base / path).resolve()
        rate = sf.info(str(file)).samplerate
        start = int(round(float(offset) * rate))
        audio = sf.read(str(file), start=start, stop=start + int(round(float(duration) * rate)), dtype="float32",
                        always_2d=True)[0].mean(axis=1)
        mfcc = librosa.feature.mfcc(y=audio, sr=rate, n_mfcc=40, n_fft=min(2048, len(audio)))
        rows.append(mfcc.mean(axis=1))
    return np.stack(rows)


def baseline(cv_dir: Path, folds: int, seed: int) -> dict:
    """MFCC + RandomForest(200) on the folds ``audiotune cv`` wrote: test accuracy and weighted F1 per fold."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, f1_score

    accuracy, weighted = [], []
    for fold in range(1, folds + 1):
        folder = cv_dir / f"fold_{fold}"
        train = pd.concat([pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "val.csv")])
        test = pd.read_csv(folder / "test.csv")
        model = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)
        model.fit(mfcc_features(train, folder), train["label"].astype(str))
        predicted = model.predict(mfcc_features(test, folder))
        accuracy.append(accuracy_score(test["label"].astype(str), predicted))
        weighted.append(f1_score(test["label"].astype(str), predicted, average="weighted"))
    return {"accuracy": accuracy, "weighted_f1": weighted}


def cv_result(cv_dir: Path) -> dict:
    summary = json.loads((cv_dir / "cv_summary.json").read_text())["statistics"]["test"]
    return {k: {"mean": summary[k]["mean"], "fold_std": summary[k]["fold_std"]} for k in ("accuracy", "weighted_f1")}


def cv_flags(args: argparse.Namespace) -> list[str]:
    return ["--folds", str(args.folds), "--stratify", "label", "--group", "uid", "--model", "ecapa_tdnn",
            "-e", str(args.epochs), "-bs", str(args.batch_size), "-lr", str(args.lr), "--seed", str(args.seed),
            "--clip_length", "0", "--monitor", "weighted_f1", "--repeats", str(args.repeats),
            "--timem", "2",  # a press is about 8 fbank frames: the default time mask (10) could hide all of it
            *shlex.split(args.extra)]


def zoom(args: argparse.Namespace, work: Path, log: Path) -> dict:
    recordings = sorted(str(p) for p in (SHARED / "keystrokes" / "Zoom").glob("*.wav"))
    seconds = {"detect": audiotune("taps", "detect", *recordings, "--out", str(work / "taps.csv"), *ZOOM_DETECT,
                                   log=log)}
    taps = pd.read_csv(work / "taps.csv")
    taps["label"] = taps["path"].map(lambda p: "k" + Path(p).stem)  # keys 0-9 stay text, not numbers
    taps[["path", "time", "label"]].to_csv(work / "presses.csv", index=False)
    audiotune("segment", str(work / "presses.csv"), "--out", str(work / "segments.csv"), "--before", "0.0228",
              "--after", "0.0625", log=log)
    (work / "labels.txt").write_text("label\n")
    seconds["cv"] = audiotune("cv", "-d", str(work / "segments.csv"), "-l", str(work / "labels.txt"), "-o",
                              str(work / "cv"), *cv_flags(args), "--resample_rate", "32000", log=log)
    return {"presses": len(taps), "ecapa_tdnn": cv_result(work / "cv"), "seconds": seconds,
            "baseline": baseline(work / "cv", args.folds, args.seed)}


def synthetic(args: argparse.Namespace, work: Path, log: Path) -> dict:
    data = work / "data"
    if not (data / "truth.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "examples" / "make_tap_data.py"), "--out", str(data),
                        "--presses", str(SHARED / "keystrokes" / "Zoom"), "--rir",
                        str(SHARED / "multichannel" / "real_8ch_rir.wav"), "--recordings", str(args.recordings),
                        "--seconds", str(args.seconds), "--seed", str(args.seed)], check=True)
    recordings = sorted(str(p) for p in (data / "01.acoustic").glob("*.wav"))
    audiotune("taps", "detect", *recordings, "--out", str(work / "taps.csv"), "--release", "0.15", log=log)
    audiotune("taps", "align", str(work / "taps.csv"), "--touch_log", str(data / "02.neonode" / "session_nnode.csv"),
              "--keys", str(data / "keys.csv"), "--out", str(work / "segments.csv"), log=log)
    segments = pd.read_csv(work / "segments.csv")
    segments["label"] = "k" + segments["label"].astype(str)
    segments.to_csv(work / "segments.csv", index=False)
    (work / "labels.txt").write_text("label\n")
    result = {"segments": len(segments), "alignment": json.loads((work / "segments.report.json").read_text()),
              "modes": {}, "seconds": {}}
    for mode in args.modes:
        out = work / f"cv_{mode}"
        result["seconds"][mode] = audiotune("cv", "-d", str(work / "segments.csv"), "-l", str(work / "labels.txt"),
                                            "-o", str(out), *cv_flags(args), "--channel_mode", mode,
                                            "--resample_rate", "16000", "--balance", "oversample", log=log)
        result["modes"][mode] = cv_result(out)
    result["baseline"] = baseline(work / f"cv_{args.modes[0]}", args.folds, args.seed)
    return result


def line(name: str, stats: dict) -> str:
    cells = []
    for metric in ("accuracy", "weighted_f1"):
        value = stats[metric]
        if isinstance(value, list):
            value = {"mean": float(np.mean(value)), "fold_std": float(np.std(value, ddof=1))}
        cells.append(f"{metric} {value['mean']:.3f} ± {value['fold_std'] or 0:.3f}")
    return f"  {name:<24} " + "  ".join(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="working folder (kept: data, folds, run directories)")
    parser.add_argument("--synthetic", action="store_true", help="the 8-channel synthetic set instead of Zoom")
    parser.add_argument("--modes", nargs="+", default=["interleave", "mean", "stack"])
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", default="",
                        help="more train flags for every cv run, e.g. '--channels 128 128 128 128 384'")
    args = parser.parse_args()
    if not (SHARED / "keystrokes" / "Zoom").is_dir():
        raise SystemExit(f"{SHARED}: the keystroke recordings are needed")
    work = Path(args.work) / ("synthetic" if args.synthetic else "zoom")
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    result = synthetic(args, work, log) if args.synthetic else zoom(args, work, log)
    result["settings"] = vars(args)
    (work / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{work}: {result.get('presses', result.get('segments'))} segments, {args.folds} folds")
    for mode, stats in result.get("modes", {}).items():
        print(line(f"ecapa_tdnn {mode}", stats))
    if "ecapa_tdnn" in result:
        print(line("ecapa_tdnn", result["ecapa_tdnn"]))
    print(line("mfcc + random forest", result["baseline"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
