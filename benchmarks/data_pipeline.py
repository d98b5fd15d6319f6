"""Data pipeline throughput: audiotune's DataLoader against a per-clip librosa + kaldi-native-fbank loop.

Both sides make the same Kaldi log-mel features from the same files: decode → channel mean → soxr "HQ"
resample to 16 kHz → fbank (80 bins, 25/10 ms, hanning, dither 0, snip_edges). The baseline stops at
per-clip tensors (no batching); the audiotune time includes creating the loader (forking its workers)
and padding/collating batches of 16. Files are checked once with ``scan_audio`` before any timing.
Besides wall-clock seconds, each pass's CPU seconds (this process and its loader workers) are reported:
on a machine shared with other processes they measure the work done, which waiting for a core does not change.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import kaldi_native_fbank as knf
import librosa
import numpy as np
import pandas as pd
import soundfile as sf
import torch

from audiotune.config import RunConfig
from audiotune.data.checked_audio import scan_audio
from audiotune.data.input_spec import InputSpec
from audiotune.data.loading import make_dataset, make_loader
from audiotune.engine.inference import inference_device

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
RATE, BINS, BATCH = 16000, 80, 16
Features = dict[str, torch.Tensor]


def synthesize(n: int, out_dir: Path, seed: int = 0) -> list[Path]:
    """``n`` 8 kHz 16-bit clips of 0.3-0.8 s (a tone with a vibrato plus noise), for when no data is found."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        t = np.arange(int(8000 * rng.uniform(0.3, 0.8))) / 8000
        f0 = rng.uniform(100, 400)
        y = 0.4 * np.sin(2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * 5 * t)) + 0.02 * rng.standard_normal(t.size)
        paths.append(out_dir / f"synth_{i:05d}.wav")
        sf.write(paths[-1], y.astype(np.float32), 8000, subtype="PCM_16")
    return paths


def knf_options() -> knf.FbankOptions:
    """kaldi-native-fbank settings equal to audiotune's ``kaldi_fbank`` defaults."""
    opts = knf.FbankOptions()
    frame, mel = opts.frame_opts, opts.mel_opts
    frame.samp_freq, frame.frame_length_ms, frame.frame_shift_ms, frame.dither = RATE, 25.0, 10.0, 0.0
    frame.window_type, frame.snip_edges, frame.preemph_coeff, frame.remove_dc_offset = "hanning", True, 0.97, True
    mel.num_bins, mel.low_freq, mel.high_freq = BINS, 20.0, 0.0  # high_freq 0 = Nyquist
    opts.use_energy = False
    return opts


def run_baseline(paths: list[Path]) -> Features:
    """The per-clip loop: librosa decode, channel mean, librosa soxr_hq resample, knf fbank."""
    opts, out = knf_options(), {}
    for path in paths:
        y, sr = librosa.load(path, sr=None, mono=False)
        if y.ndim > 1:
            y = y.mean(axis=0)
        if sr != RATE:
            y = librosa.resample(y, orig_sr=sr, target_sr=RATE, res_type="soxr_hq")
        fbank = knf.OnlineFbank(opts)
        fbank.accept_waveform(RATE, y)
        fbank.input_finished()
        frames = [fbank.get_frame(i) for i in range(fbank.num_frames_ready)]
        out[path.stem] = torch.from_numpy(np.stack(frames) if frames else np.zeros((0, BINS), np.float32))
    return out


def make_config(workers: int | str) -> RunConfig:
    """A default run config with whole-clip 80-bin fbank inputs at 16 kHz."""
    config = RunConfig()
    config.features.features, config.features.num_mel_bins = "fbank", BINS
    config.audio.resample_rate, config.audio.clip_length = RATE, 0
    config.train.batch_size, config.runtime.num_workers = BATCH, workers
    return config


def scanned_table(paths: list[Path]) -> pd.DataFrame:
    """The prepared table (``path``, ``expected_rate``, ``num_samples``; index uid) a run would use."""
    table = pd.DataFrame({"path": [str(p) for p in paths], "expected_rate": np.nan},
                         index=pd.Index([p.stem for p in paths], name="uid"))
    config = make_config(0)
    table, failures = scan_audio(table, InputSpec.from_sections(config.audio, config.features).audio(), "bench")
    if len(failures):
        raise SystemExit(f"{len(failures)} unusable file(s), e.g. {failures['reason'].iloc[0]}")
    return table


def run_audiotune(table: pd.DataFrame, workers: int | str) -> Features:
    """Build the inference dataset and loader, iterate it fully, and cut the padded batches back per clip."""
    config = make_config(workers)
    inputs = InputSpec.from_sections(config.audio, config.features)
    dataset = make_dataset(config, inputs, table, np.zeros((len(table), 0), np.float32))
    loader = make_loader(config, dataset, table, train=False,
                         device=inference_device(config))
    batches = list(loader)  # one pass: the workers end with it
    del loader
    return {uid: b["inputs"][row, :n] for b in batches
            for row, (uid, n) in enumerate(zip(b["uid"], b["lengths"].tolist()))}


def auto_worker_count(table: pd.DataFrame) -> int:
    """The workers ``--num_workers auto`` gives this benchmark's loader on this machine."""
    config = make_config("auto")
    inputs = InputSpec.from_sections(config.audio, config.features)
    dataset = make_dataset(config, inputs, table, np.zeros((len(table), 0), np.float32))
    return make_loader(config, dataset, table, train=False, device=inference_device(config)).num_workers


def agreement(ref: Features, ours: Features) -> tuple[float, int]:
    """Max |log-mel difference| over all clips (common frames) and how many clips differ in frame count."""
    pairs = [(a, ours[uid]) for uid, a in ref.items()]
    diffs = [float((a[:n] - b[:n]).abs().max()) for a, b in pairs if (n := min(len(a), len(b)))]
    return max(diffs, default=0.0), sum(a.shape != b.shape for a, b in pairs)


def machine() -> dict:
    """CPU model, usable cores, library versions and torch intra-op threads."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    return {"cpu": cpu or "unknown", "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its ended child processes (loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def other_cpu_use(seconds: float = 1.0) -> float:
    """Fraction of all CPU time other processes used over ``seconds`` while this one sleeps (Linux)."""
    def sample() -> tuple[int, int]:  # (busy, total) ticks; busy = all but idle and iowait
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)
    (busy0, total0), _, (busy1, total1) = sample(), time.sleep(seconds), sample()
    return round((busy1 - busy0) / max(total1 - total0, 1), 3)


def time_sides(paths: list[Path], table: pd.DataFrame, workers: list[int | str], warmup: int,
               repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Features]]:
    """Wall-clock and CPU seconds per timed pass of each side (passes interleaved) and each side's features
    from its last pass."""
    sides: dict[str, Callable[[list[Path], pd.DataFrame], Features]] = {
        "baseline (librosa + knf, per clip)": lambda p, t: run_baseline(p)}
    for w in workers:
        name = f"audiotune loader, workers={w}" + (f" ({auto_worker_count(table)})" if w == "auto" else "")
        sides[name] = lambda p, t, w=w: run_audiotune(t, w)
    for fn in sides.values():  # warm-up: numba/librosa imports, lru caches, first-call overheads
        fn(paths[:warmup], table.iloc[:warmup])
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    feats: dict[str, Features] = {}
    for _ in range(repeats):  # interleaved so that drift on the machine hits every side alike
        for name, fn in sides.items():
            gc.collect()
            start, start_cpu = time.perf_counter(), cpu_seconds()
            feats[name] = fn(paths, table)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
    return times, cpu, feats


def report(times: dict[str, list[float]], cpu: dict[str, list[float]], feats: dict[str, Features],
           n: int) -> list[dict]:
    """Print the throughput table and the feature agreement; returns the rows."""
    base_name = next(iter(times))
    base_rate = n / statistics.median(times[base_name])
    base_cpu = statistics.median(cpu[base_name])
    rows = []
    print(f"{'pipeline':<40} {'clips/s':>9} {'median s':>9} {'vs baseline':>12} {'cpu s':>7} {'cpu vs':>7} "
          f"{'max|diff|':>10} {'frames!=':>8}  runs (s)")
    for name, runs in times.items():
        rate, cpu_s = n / statistics.median(runs), statistics.median(cpu[name])
        diff, mismatched = agreement(feats[base_name], feats[name])
        rows.append({"pipeline": name, "clips_per_s": rate, "median_s": statistics.median(runs), "runs_s": runs,
                     "ratio_vs_baseline": rate / base_rate, "cpu_s": cpu_s, "cpu_runs_s": cpu[name],
                     "cpu_ratio_vs_baseline": base_cpu / cpu_s, "max_abs_diff": diff,
                     "frame_mismatches": mismatched})
        print(f"{name:<40} {rate:>9.1f} {n / rate:>9.3f} {rate / base_rate:>11.2f}x {cpu_s:>7.3f} "
              f"{base_cpu / cpu_s:>6.2f}x {diff:>10.2e} {mismatched:>8}  " + " ".join(f"{r:.3f}" for r in runs))
    print("max|diff|: largest |log-mel difference| to the baseline over all clips and frames; frames!=: clips "
          "whose frame count differs; cpu s: median CPU seconds of a pass (this process and its workers); "
          "cpu vs: the baseline's CPU seconds over this side's")
    return rows


def worker_count(text: str) -> int | str:
    """A worker count or auto."""
    return "auto" if text == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of .wav files (default: FSDD)")
    parser.add_argument("--limit", type=int, default=1000, help="number of files (sorted by name)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per side; the median is reported")
    parser.add_argument("--warmup", type=int, default=16, help="files in the untimed warm-up pass of each side")
    parser.add_argument("--workers", type=worker_count, nargs="+", default=[0, 2, "auto"],
                        help="audiotune loader worker counts (auto: what --num_workers auto chooses here)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    info["other_cpu_before"] = other_cpu_use()
    with tempfile.TemporaryDirectory() as tmp:
        paths = sorted(args.data.glob("*.wav"))[: args.limit] if args.data.is_dir() else []
        source = str(args.data)
        if not paths:
            source = f"synthetic ({args.data} has no .wav files)"
            paths = synthesize(args.limit, Path(tmp))
        table = scanned_table(paths)
        times, cpu, feats = time_sides(paths, table, args.workers, args.warmup, args.repeats)
    info["other_cpu_after"] = other_cpu_use()
    seconds = float(table["num_samples"].sum()) / RATE
    print(f"data: {source}\nclips: {len(paths)} ({seconds:.1f} s of audio at 16 kHz), batch {BATCH}, "
          f"repeats {args.repeats} (median)\nmachine: {info}\n")
    rows = report(times, cpu, feats, len(paths))
    if max(info["other_cpu_before"], info["other_cpu_after"]) > 0.1:
        print("\nWARNING: other processes used the CPU around the run (other_cpu_* above, fraction of all "
              "cores); on 2 cores that skews these timings badly. Rerun on an idle machine.")
    if args.json:
        args.json.write_text(json.dumps({"data": source, "clips": len(paths), "audio_seconds": seconds,
                                         "batch_size": BATCH, "repeats": args.repeats, "machine": info,
                                         "results": rows}, indent=2))


if __name__ == "__main__":
    main()
