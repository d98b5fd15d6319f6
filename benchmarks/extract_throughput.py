"""Embedding extraction throughput: ``audiotune extract`` against plain loops (the seed's, and a minimal one),
on wav2vec2-base, on the CPU or a GPU.

Both sides load the same offline wav2vec2-base encoder (the default ``Wav2Vec2Config()``: 12 layers, 768
wide, group-norm conv stack; random init, no hub), read the same files (decode, resample to 16 kHz),
normalise each clip, run the encoder with every hidden state and mean-pool the last one.
- audiotune: ``extract_embeddings(run, csv, out, "pt", batch_size=8)`` on a run directory trained with
  ``-e 0 --freeze``: clips cropped to ``clip_length``, sorted by length and padded to each batch's longest
  (each clip's result its own: attention mask, GroupNorm over its own frames), pooled over real frames, written
  to parquet; in fp32, and with
  ``runtime.precision: bf16`` in the run's config.yaml (bf16 autocast).
- seed's way (fp32): batches of 8 clips each padded (or cropped) to ``clip_length`` seconds by the HF feature
  extractor, ``model(input_values, output_hidden_states=True).hidden_states``, mean over all frames.
- plain loop (fp32): the shortest correct loop a user would write on the device: decode with soundfile
  (channel mean, soxr resample to 16 kHz, crop to ``clip_length``), ``Wav2Vec2FeatureExtractor`` padding each
  batch of 8 to its longest clip, forward with ``output_hidden_states=True``, mean over all frames.
Every side runs on ``--device`` (``auto``: CUDA when there is one; audiotune through ``--accelerator``), the
same model, clips and batch size. Throughput is seconds of real audio per wall-clock second, also as a ratio
to the seed's loop and to the plain loop; the achieved FLOP/s divides FlopCounterMode's count of the
encoder's FLOPs (each clip at its own length; for the padded loops also what they executed) by the time,
against a best-of ``torch.mm`` measurement of the device's peak.

On the CPU (defaults; minutes on 2 cores): ``python benchmarks/extract_throughput.py``.
On a GPU machine, from the repository root with the project's virtualenv active::

    python benchmarks/extract_throughput.py --device cuda --speech 300 --fsdd 500 --long 64 --json extract_gpu.json
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

import librosa
import numpy as np
import pandas as pd
import soundfile as sf
import soxr
import torch
from data_pipeline import machine, other_cpu_use  # benchmarks/data_pipeline.py
from frozen_cache import cpu_ticks, other_cpu_during
from torch.utils.flop_counter import FlopCounterMode

from audiotune.config import load_config, save_config
from audiotune.engine.device import resolve_device
from audiotune.engine.extract import extract_embeddings

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RATE = 16000
AUDIOTUNE, BF16, SEED = "audiotune extract (fp32)", "audiotune extract (bf16)", "seed's loop (fp32, padded)"
PLAIN = "plain loop (fp32)"
# --device -> audiotune's --accelerator
ACCELERATOR = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}


def build_checkpoint(out: Path) -> Path:
    """wav2vec2-base (``Wav2Vec2Config()`` defaults, random init) and a normalising feature extractor, saved."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bar()
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(out)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(out)
    return out


def tones(out_dir: Path, n: int, low: float, high: float, seed: int, rate: int = RATE) -> list[Path]:
    """``n`` noisy vibrato tones of ``low``-``high`` seconds."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        t = np.arange(int(rate * rng.uniform(low, high))) / rate
        y = 0.4 * np.sin(2 * np.pi * rng.uniform(100, 400) * t + 3 * np.sin(2 * np.pi * 5 * t))
        paths.append(out_dir / f"tone_{seed}_{i:04d}.wav")
        sf.write(paths[-1], y + 0.02 * rng.standard_normal(t.size), rate, subtype="PCM_16")
    return paths


def collect_clips(work: Path, speech: int, fsdd: int, long: int, seed: int) -> tuple[list[Path], str]:
    """Seeded samples of speech-commands-mini (1 s) and FSDD (8 kHz, mostly 0.3-0.8 s), plus 2-8 s tones."""
    rng = np.random.default_rng(seed)
    parts, paths = [], []
    for name, count, pattern in (("speech-commands-mini", speech, "*/*/*.wav"), ("fsdd", fsdd, "recordings/*.wav")):
        found = sorted((SHARED / name).glob(pattern))
        if found:
            picked = [found[i] for i in sorted(rng.choice(len(found), size=min(count, len(found)), replace=False))]
            paths += picked
            parts.append(f"{len(picked)} {name}")
        else:  # no shared data here: tones of the same lengths instead
            paths += tones(work / name, count, *((1.0, 1.0) if name.startswith("speech") else (0.3, 0.8)), seed)
            parts.append(f"{count} synthetic stand-ins for {name}")
    paths += tones(work / "long", long, 2.0, 8.0, seed + 1)
    return paths, ", ".join(parts + [f"{long} generated 2-8 s tones"])


def make_run(work: Path, checkpoint: Path, clip_length: float, accelerator: str, model: str = "hf") -> Path:
    """A run directory whose classifier wraps the frozen encoder: ``audiotune train -e 0 --model MODEL`` on 12
    short tones."""
    clips = tones(work / "tiny", 12, 0.5, 0.5, 99)
    split = work / "tiny_split"
    split.mkdir()
    for k, name in enumerate(("train", "val", "test")):
        rows = clips[4 * k: 4 * k + 4]
        pd.DataFrame({"uid": [p.stem for p in rows], "path": [str(p) for p in rows], "cls": [0, 1, 0, 1]}).to_csv(
            split / f"{name}.csv", index=False)
    (work / "labels.txt").write_text("cls\n")
    command = [sys.executable, "-m", "audiotune.cli", "train", "-d", str(split), "-l", str(work / "labels.txt"),
               "-o", str(work / "run"), "--model", model, "-c", str(checkpoint), "--freeze", "-e", "0",
               "--cache", "False", "--clip_length", str(clip_length), "--accelerator", accelerator]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"audiotune train -e 0 failed:\n{done.stderr[-3000:]}")
    return work / "run"


def seed_loop(checkpoint: Path, paths: list[Path], clip_length: float, batch: int, pad: bool = True,
              device: torch.device | None = None) -> np.ndarray:
    """The seed's way: load, pad/crop every clip to clip_length, fp32 forward, mean over all frames.

    ``pad=False`` is the reference: one clip at a time, cropped, never padded."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    device = device or torch.device("cpu")
    model = Wav2Vec2Model.from_pretrained(checkpoint).to(device).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(checkpoint)
    size, out = int(clip_length * RATE), []
    with torch.inference_mode():
        for start in range(0, len(paths), batch if pad else 1):
            audio = [librosa.load(p, sr=RATE, mono=True, res_type="soxr_hq")[0][:size]
                     for p in paths[start:start + (batch if pad else 1)]]
            inputs = extractor(audio, sampling_rate=RATE, padding="max_length" if pad else False, max_length=size,
                               return_tensors="pt")
            states = model(inputs["input_values"].to(device), output_hidden_states=True).hidden_states
            out.append(states[-1].mean(1).float().cpu().numpy())
    return np.concatenate(out)


def plain_loop(checkpoint: Path, paths: list[Path], clip_length: float, batch: int,
               device: torch.device) -> np.ndarray:
    """The minimal loop: soundfile decode, soxr to 16 kHz, crop, pad to the batch's longest, mean-pool."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    model = Wav2Vec2Model.from_pretrained(checkpoint).to(device).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(checkpoint)
    size, out = int(clip_length * RATE), []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            audio = []
            for path in paths[start:start + batch]:
                samples, rate = sf.read(path, dtype="float32", always_2d=True)
                mono = samples.mean(1)
                audio.append((soxr.resample(mono, rate, RATE, quality="HQ") if rate != RATE else mono)[:size])
            inputs = extractor(audio, sampling_rate=RATE, padding="longest", return_tensors="pt")
            states = model(inputs["input_values"].to(device, non_blocking=True), output_hidden_states=True)
            out.append(states.hidden_states[-1].mean(1).float().cpu().numpy())
    return np.concatenate(out)


def audiotune_extract(run: Path, csv: Path, out: Path, batch: int, accelerator: str = "cpu",
                      num_workers: int = 0) -> np.ndarray:
    """``audiotune extract --embedding_type pt`` through its Python entry; the embeddings in CSV order."""
    extract_embeddings(str(run), str(csv), str(out), "pt", batch_size=batch, num_workers=num_workers,
                       accelerator=accelerator)
    table = pd.read_parquet(out).set_index("uid")
    return np.stack(table.loc[pd.read_csv(csv)["uid"], "embedding"].to_numpy())


def encoder_flops(checkpoint: Path, samples: list[int]) -> dict[int, int]:
    """FLOPs of one forward (every hidden state) per input length, counted by FlopCounterMode on the meta device.

    On the meta device nothing is computed, and attention is counted: on the CPU, SDPA takes a flash-attention
    kernel FlopCounterMode has no formula for (a CPU count leaves out the 0.09 G of a 1-s input, 9.2 G of 10 s).
    Counted under ``no_grad``: under ``inference_mode`` the weight-norm parametrisation of the positional
    convolution fails inside the counter (``'ParametrizedConv1d' object has no attribute 'weight'``)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    with torch.device("meta"):
        model = Wav2Vec2Model(Wav2Vec2Config.from_pretrained(checkpoint)).eval()
    flops = {}
    for n in sorted(set(samples)):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, n, device="meta"), output_hidden_states=True)
        flops[n] = counter.get_total_flops()
    return flops


def precision_run(run: Path, precision: str = "bf16") -> Path:
    """A copy of the run directory whose config asks for ``--precision PRECISION``."""
    copy = shutil.copytree(run, run.with_name(f"{run.name}_{precision}"))
    config = load_config(copy / "config.yaml")
    config.runtime.precision = precision
    save_config(config, copy / "config.yaml")
    return copy


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs kernels asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(sizes: list[int], dtype: torch.dtype, device: torch.device | None = None, repeats: int = 10) -> float:
    """Best FLOP/s of square ``torch.mm`` in ``dtype`` on ``device`` over ``sizes`` and ``repeats`` runs (after a
    warm-up).

    On this VM the fp32 figure varies from run to run (about 90-195 GFLOP/s), hence the best of several
    sizes, taken before and after the benchmark, the larger of the two counting."""
    device, best = device or torch.device("cpu"), 0.0
    for size in sizes:
        a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
        torch.mm(a, b)
        synchronize(device)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            best = max(best, 2 * size ** 3 / (time.perf_counter() - start))
    return best


def agreement(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Max |difference| and the smallest cosine similarity between matching rows."""
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    return float(np.abs(ours - ref).max()), float(cos.min())


def padded_batches(audio: list[float], batch: int) -> list[tuple[int, int]]:
    """(clips, samples of the longest) of each batch the plain loop pads to its longest clip."""
    return [(len(audio[i:i + batch]), round(max(audio[i:i + batch]) * RATE)) for i in range(0, len(audio), batch)]


def report(times: dict[str, float], embeddings: dict[str, np.ndarray], check: tuple[np.ndarray, np.ndarray],
           audio: list[float], flops: dict[int, int], clip_length: float, peaks: dict[str, float],
           batch: int) -> list[dict]:
    """Print throughput, FLOP/s against the peak and the embedding agreement; returns the rows."""
    seconds, useful_flops = sum(audio), sum(flops[round(s * RATE)] for s in audio)
    base, plain = seconds / times[SEED], seconds / times[PLAIN]
    sorted_batches = sum(n * flops[samples] for n, samples in padded_batches(sorted(audio), batch))
    executed_by = {SEED: len(audio) * flops[round(clip_length * RATE)], AUDIOTUNE: sorted_batches,
                   BF16: sorted_batches, PLAIN: sum(n * flops[samples] for n, samples in padded_batches(audio, batch))}
    print(f"FLOPs per audio-second of these clips: {useful_flops / seconds / 1e9:.2f} G\n\n{'side':<28} "
          f"{'wall s':>7} {'audio-s/s':>10} {'vs seed':>8} {'vs plain':>9} {'useful GFLOP/s':>15} {'of peak':>8} "
          f"{'executed GFLOP/s':>17} {'of peak':>8} {'max|diff|':>10} {'min cos':>9}")
    rows = []
    for name, wall in times.items():
        peak = peaks["bf16" if name == BF16 else "fp32"]
        executed = executed_by.get(name, useful_flops)
        diff, cos = agreement(embeddings[name][check[0]], check[1])
        row = {"side": name, "wall_s": wall, "audio_s_per_s": seconds / wall, "ratio_vs_seed": seconds / wall / base,
               "ratio_vs_plain_loop": seconds / wall / plain,
               "useful_flops_per_s": useful_flops / wall, "executed_flops_per_s": executed / wall,
               "peak_flops_per_s": peak, "max_abs_diff_vs_unpadded": diff, "min_cosine_vs_unpadded": cos}
        rows.append(row)
        print(f"{name:<28} {wall:>7.1f} {row['audio_s_per_s']:>10.2f} {row['ratio_vs_seed']:>7.2f}x "
              f"{row['ratio_vs_plain_loop']:>8.2f}x "
              f"{row['useful_flops_per_s'] / 1e9:>15.1f} {row['useful_flops_per_s'] / peak:>7.1%} "
              f"{row['executed_flops_per_s'] / 1e9:>17.1f} {row['executed_flops_per_s'] / peak:>7.1%} "
              f"{diff:>10.2e} {cos:>9.6f}")
    print(f"useful: the FLOPs of each clip at its real length; executed: what the encoder ran (the seed: every clip "
          f"as a {clip_length}-s input; the plain loop: each batch padded to its longest clip; audiotune: the same, "
          f"over clips sorted by length); of peak: of the fp32 "
          f"torch.mm peak (bf16 side: of the bf16 one)\n"
          f"max|diff|, min cos: {len(check[0])} clips' embeddings against one unpadded fp32 forward per clip")
    if BF16 in embeddings and np.array_equal(embeddings[BF16], embeddings[AUDIOTUNE]):
        print("NOTE: the bf16 embeddings equal the fp32 ones: this audiotune ignores runtime.precision when extracting")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech", type=int, default=32, help="speech-commands-mini clips (1 s)")
    parser.add_argument("--fsdd", type=int, default=32, help="FSDD clips (8 kHz, 0.14-2.3 s, mostly 0.3-0.8 s)")
    parser.add_argument("--long", type=int, default=16, help="generated 2-8 s tones")
    parser.add_argument("--clip_length", type=float, default=10.0,
                        help="seconds every clip is cropped to (both sides) and padded to (the seed)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", choices=tuple(ACCELERATOR), default="auto",
                        help="where every side runs (auto: CUDA when there is one, else the CPU)")
    parser.add_argument("--num_workers", type=int, default=0,
                        help="data loader workers of the audiotune sides (the loops decode in the main process)")
    parser.add_argument("--peak_sizes", type=int, nargs="+", default=None,
                        help="square torch.mm sizes of the peak FLOP/s measurement (the best one counts; "
                             "default 1024 2048 4096 on the CPU, 4096 8192 on a GPU)")
    parser.add_argument("--seed", type=int, default=0, help="which clips are drawn and the tones")
    parser.add_argument("--check", type=int, default=8, help="clips compared with an unpadded per-clip forward")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    device = resolve_device(ACCELERATOR[args.device], "auto")
    accelerator = device.type  # audiotune resolves "cuda"/"mps"/"cpu" with devices "auto" to this same device
    if args.peak_sizes is None:
        args.peak_sizes = [1024, 2048, 4096] if device.type == "cpu" else [4096, 8192]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    info = {**machine(), "device": str(device), "gpu": gpu, "other_cpu_before": other_cpu_use()}
    ticks, dtypes = cpu_ticks(), {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {name: [peak_flops(args.peak_sizes, dtype, device)] for name, dtype in dtypes.items()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = build_checkpoint(work / "wav2vec2-base")
        paths, source = collect_clips(work, args.speech, args.fsdd, args.long, args.seed)
        audio = [min(sf.info(p).duration, args.clip_length) for p in paths]
        csv = work / "clips.csv"
        table = pd.DataFrame({"uid": [f"c{i:04d}" for i in range(len(paths))], "path": [str(p) for p in paths]})
        table.to_csv(csv, index=False)
        table.iloc[:args.batch_size].to_csv(work / "warmup.csv", index=False)
        run = make_run(work, checkpoint, args.clip_length, ACCELERATOR[args.device])
        padded = [samples for order in (audio, sorted(audio)) for _, samples in padded_batches(order, args.batch_size)]
        flops = encoder_flops(checkpoint, [round(s * RATE) for s in [*audio, 1.0, args.clip_length]] + padded)
        sides = {name: lambda r=r, c=csv: audiotune_extract(r, c, work / "embeddings.parquet", args.batch_size,
                                                            accelerator, args.num_workers)
                 for name, r in ((AUDIOTUNE, run), (BF16, precision_run(run)))}
        sides[SEED] = lambda c=csv: seed_loop(checkpoint, pd.read_csv(c)["path"].tolist(), args.clip_length,
                                              args.batch_size, device=device)
        sides[PLAIN] = lambda c=csv: plain_loop(checkpoint, pd.read_csv(c)["path"].tolist(), args.clip_length,
                                                args.batch_size, device)
        for fn in sides.values():  # untimed warm-up of each side on one batch: first-call kernel setup
            fn(c=work / "warmup.csv")
        times, embeddings = {}, {}
        for name, fn in sides.items():
            start = time.perf_counter()
            embeddings[name] = fn()
            times[name] = time.perf_counter() - start
        picked = np.linspace(0, len(paths) - 1, min(args.check, len(paths))).round().astype(int)
        check = picked, seed_loop(checkpoint, [paths[i] for i in picked], args.clip_length, 1, pad=False,
                                  device=device)
    for name, dtype in dtypes.items():
        peaks[name].append(peak_flops(args.peak_sizes, dtype, device))
    info.update(other_cpu_during=other_cpu_during(ticks), other_cpu_after=other_cpu_use())
    print(f"clips: {len(paths)} ({source}); {sum(audio):.1f} s of real audio (cropped to {args.clip_length} s), "
          f"{np.mean(audio):.2f} s per clip\nencoder: wav2vec2-base (Wav2Vec2Config() defaults, 12 layers), random "
          f"init, batch {args.batch_size}, on {device}{f' ({gpu})' if gpu else ''}\n"
          f"FLOPs (FlopCounterMode): {flops[RATE] / 1e9:.2f} G per 1-s input, "
          f"{flops[round(args.clip_length * RATE)] / 1e9:.1f} G per {args.clip_length}-s input\npeak (best "
          f"torch.mm of {args.peak_sizes}, before / after): "
          + ", ".join(f"{k} {v[0] / 1e9:.0f} / {v[1] / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
          + f"\nmachine: {info}")
    rows = report(times, embeddings, check, audio, flops, args.clip_length, {k: max(v) for k, v in peaks.items()},
                  args.batch_size)
    if max(info["other_cpu_before"], info["other_cpu_during"], info["other_cpu_after"]) > 0.1:
        print("\nWARNING: other processes used the CPU around or during the run (other_cpu_* above, fraction of all "
              "cores); on 2 cores that skews these timings badly. Rerun on an idle machine.")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "clips": len(paths), "source": source, "audio_seconds":
                                         sum(audio), "flops_per_input_samples": flops, "peak_flops_per_s": peaks,
                                         "machine": info, "results": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
