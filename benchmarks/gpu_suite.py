"""One benchmark suite for one GPU: extraction, ECAPA-TDNN training on compressed clips, frozen fine-tuning with the
feature cache and full fine-tuning, each with its peak memory, printed as one table (``--json`` also writes it).

Parts, each under its own time budget (a part that fails or runs out of time records its error in a row and the
suite goes on; the JSON is rewritten after every row, so a killed run keeps the finished rows):

- a: extraction on a wav2vec2-base-sized and an AST-sized encoder (transformers' default configs, random weights,
  saved offline), fp32 and bf16 (``--precisions``: also tf32): forward-only (the encoder on batches already on the
  device), the plain loop (``extract_throughput.plain_loop``: soundfile, the feature extractor, forward; AST: the
  same with its extractor)
  and ``audiotune extract`` (``extract_embeddings``). Audio-s/s, achieved TFLOP/s (FlopCounterMode on the meta
  device), the share of the forward-only rate and the ratio to the plain loop.
- b: ECAPA-TDNN training (``engine.train.train``) on 5-s 44.1 kHz stereo OGG and FLAC clips, with and without the
  audio store, for each worker count, and once more with the store, the most workers and ``--compile
  reduce-overhead`` (two more epochs): clips/s and GPU utilisation (NVML through pynvml, else
  ``torch.cuda.utilization``; sampled every 0.1 s) of the epochs after the first.
- c: frozen fine-tuning of a wav2vec2-base-sized encoder with the feature cache, cold (empty cache) and warm, and
  without the cache: epochs per second from the start of the command to the end of its last epoch.
- d: full fine-tuning of the wav2vec2-base-sized encoder at bf16 (``--freeze False``: its weights train):
  samples/s of the epochs after the first and the model FLOP utilisation (forward and backward FLOPs counted on
  the meta device, over the measured bf16 ``torch.mm`` peak); ``--tune_compile MODE`` runs its training steps
  through ``torch.compile`` (``--compile``), ``--tune_masks P`` masks time and channel spans at ``P``
  (``--mask_time_prob``, ``--mask_feature_prob``).
- ``--cudnn_benchmark``: every part with ``torch.backends.cudnn.benchmark`` on (cuDNN times its convolution
  algorithms for each new input shape and keeps the fastest; Lightning leaves it off).
- peak memory of each row: ``torch.cuda.max_memory_allocated`` on a GPU, the peak resident set of this process on
  the CPU (loader workers not included).

On one GPU (about 5 minutes on an H100)::

    python benchmarks/gpu_suite.py --device cuda --json gpu_suite.json

On the CPU, the same code at tiny sizes (a few minutes on 2 cores)::

    python benchmarks/gpu_suite.py --smoke --json gpu_suite_smoke.json
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
import transformers
from data_pipeline import machine  # benchmarks/data_pipeline.py
from gpu_parts import (  # benchmarks/gpu_parts.py
    PRECISIONS,
    ecapa_part,
    extraction_part,
    finetune_part,
    frozen_part,
)

from audiotune.config.sections import COMPILE_MODES
from audiotune.engine.device import float32_products, resolve_device
from audiotune.outputs import write_json

W2V_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "conv_dim": (32, 32, 32), "conv_kernel": (10, 3, 3), "conv_stride": (5, 4, 4),
            "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}
AST_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "max_length": 128, "num_mel_bins": 32}
ECAPA_TINY = ["--channels", "16", "16", "48", "--kernel_sizes", "5", "3", "1", "--dilations", "1", "2", "1",
              "--attention_channels", "8", "--se_channels", "8", "--res2net_scale", "2", "--lin_neurons", "16"]
# sizes per mode; budgets in seconds per part (the full ones add up to 540 s, the caps: the parts took 270 s on an
# H100 without the compiled ECAPA-TDNN run);
# extraction over 85 min of audio, so that the command's start-up weighs as when a data set is embedded
SIZES = {
    "full": {"w2v": {}, "ast": {}, "clip_s": 10.0, "extract_clips": 512, "extract_batch": 32, "extract_workers": 8,
             "forward_repeats": 8,
             "ecapa": [], "ecapa_clips": 192, "ecapa_batch": 32, "ecapa_epochs": 3, "workers": [0, 4, 8],
             "frozen_clips": 512, "frozen_epochs": 10, "frozen_batch": 32,
             "tune_clips": 256, "tune_batch": 32, "tune_epochs": 4, "tune_workers": 8, "peak_sizes": [8192],
             "budget": {"a": 180, "b": 230, "c": 60, "d": 70}},
    "smoke": {"w2v": W2V_TINY, "ast": AST_TINY, "clip_s": 1.0, "extract_clips": 8, "extract_batch": 4,
              "extract_workers": 0, "forward_repeats": 2, "ecapa": ECAPA_TINY, "ecapa_clips": 8, "ecapa_batch": 4,
              "ecapa_epochs": 2,
              "workers": [0, 2], "frozen_clips": 100, "frozen_epochs": 2, "frozen_batch": 8,
              "tune_clips": 8, "tune_batch": 4, "tune_epochs": 2, "tune_workers": 0, "peak_sizes": [256],
              "budget": {"a": 240, "b": 240, "c": 180, "d": 180}},
}
PARTS: dict[str, tuple[str, Callable]] = {
    "a": ("extraction", extraction_part), "b": ("ECAPA-TDNN training", ecapa_part),
    "c": ("frozen fine-tuning, feature cache", frozen_part), "d": ("full fine-tuning", finetune_part)}
COLUMNS = [("part", "<4", None), ("case", "<44", None), ("rate", ">9", ".2f"), ("unit", "<10", None),
           ("tflops", ">8", ".3f"), ("of_peak", ">7", ".1%"), ("gpu_util", ">8", ".0f"), ("peak_mib", ">9", ".0f"),
           ("wall_s", ">7", ".1f"), ("note", "", None)]


class OutOfTime(BaseException):
    """A part ran past its budget (a BaseException: the command-line entry points a part calls report an Exception
    as one line and go on, and this must stop the part)."""


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Raise :class:`OutOfTime` in the main thread once ``seconds`` have passed (SIGALRM), and again every second
    after: Python drops an exception a handler raises while a finalizer runs (a garbage-collected generator), and
    the part would then run on to its end."""
    def expire(signum: int, frame: object) -> None:
        raise OutOfTime(f"out of its {seconds:.0f}-s budget")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def environment(device: torch.device) -> dict:
    """What the suite runs on: device, GPU, torch / CUDA / cuDNN / transformers / Lightning versions, CPU."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "transformers": transformers.__version__, "lightning": pl.__version__,
            "python": platform.python_version(), "cpu": machine()["cpu"], "cores": len(os.sched_getaffinity(0))}


def cell(row: dict, key: str, align: str, fmt: str | None) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        text = "-"
    else:
        text = format(value, fmt) if fmt else str(value)
    return format(text, align)


def table_line(row: dict) -> str:
    if row.get("error"):
        row = {**row, "note": f"ERROR {row['error']}"}
    return " ".join(cell(row, key, align, fmt) for key, align, fmt in COLUMNS)


class Suite:
    """The rows so far; every added row is printed and the JSON rewritten (atomically)."""

    def __init__(self, args: argparse.Namespace, device: torch.device, env: dict) -> None:
        self.args, self.device, self.sizes, self.rows = args, device, SIZES["smoke" if args.smoke else "full"], []
        self.env, self.peaks, self.started = env, {}, time.perf_counter()

    def add(self, part: str, case: str, **values: object) -> None:
        self.rows.append({"part": part, "case": case, **values})
        print(table_line(self.rows[-1]), flush=True)
        self.save()

    def save(self) -> None:
        if self.args.json:
            write_json(self.args.json, {"mode": "smoke" if self.args.smoke else "full", "environment": self.env,
                                        "sizes": self.sizes, "peak_flops_per_s": self.peaks,
                                        "seconds": time.perf_counter() - self.started, "rows": self.rows})

    def run_part(self, key: str, work: Path) -> None:
        title, fn = PARTS[key]
        seconds = self.sizes["budget"][key] * self.args.budget_scale
        start = time.perf_counter()
        try:
            with budget(seconds):
                fn(self, work / key)
        except (Exception, SystemExit, OutOfTime) as err:  # one part's failure must not lose the others' figures
            if self.args.verbose:
                traceback.print_exc()
            message = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            self.add(key, f"{title} (stopped)", error=message, wall_s=time.perf_counter() - start)
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where every part runs (auto: CUDA when there is one)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, the same code: seconds per part")
    parser.add_argument("--parts", nargs="+", choices=tuple(PARTS), default=list(PARTS), help="parts to run")
    parser.add_argument("--budget_scale", type=float, default=1.0, help="multiplies every part's time budget")
    parser.add_argument("--cudnn_benchmark", action="store_true",
                        help="let cuDNN time its convolution algorithms per input shape and keep the fastest "
                             "(torch.backends.cudnn.benchmark, which Lightning leaves off)")
    parser.add_argument("--tune_masks", type=float, default=0.0,
                        help="part d with --mask_time_prob and --mask_feature_prob P (the seeds' recipes mask "
                             "0.05-0.08): its notes count the waits for the device per batch")
    parser.add_argument("--tune_compile", choices=COMPILE_MODES, default="none",
                        help="part d's training steps through torch.compile in this mode (its first epoch compiles; "
                             "give the part more time: --parts d --budget_scale 3)")
    parser.add_argument("--precisions", nargs="+", choices=tuple(PRECISIONS), default=["fp32", "bf16"],
                        help="part a's precisions (tf32: float32 with TensorFloat-32 products, --precision tf32)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here (after every row)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traceback of a failed part")
    args = parser.parse_args(argv)
    if args.budget_scale <= 0:
        parser.error("--budget_scale must be above 0")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: folder {args.json.parent} does not exist")
    try:
        device = resolve_device(args.device, "auto")
    except ValueError as err:
        parser.error(str(err))
    torch.backends.cudnn.benchmark = args.cudnn_benchmark  # every part's training and scoring
    env = environment(device)
    print("gpu_suite: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    suite = Suite(args, device, env)
    from extract_throughput import peak_flops  # benchmarks/extract_throughput.py
    suite.peaks = {}
    for name in dict.fromkeys(["fp32", "bf16", *args.precisions]):  # part d reads bf16's
        with float32_products(device, PRECISIONS[name]):
            dtype = torch.bfloat16 if name == "bf16" else torch.float32
            suite.peaks[name] = peak_flops(suite.sizes["peak_sizes"], dtype, device)
    print("peak (best square torch.mm): " + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in suite.peaks.items()))
    print(" ".join(format(key, align if align else "") for key, align, _ in COLUMNS), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.parts:
            suite.run_part(key, Path(tmp))
    gpu = f" ({env['gpu']})" if env["gpu"] else ""
    print(f"\n{len(suite.rows)} rows in {time.perf_counter() - suite.started:.0f} s on {device}{gpu}"
          + (" (smoke sizes: not figures to report)" if args.smoke else ""))
    print(" ".join(format(key, align if align else "") for key, align, _ in COLUMNS))
    for row in suite.rows:
        print(table_line(row))
    print("rate: audio-s/s (a), clips/s (b), epochs/s (c), samples/s (d); tflops: achieved; of_peak: of the "
          "measured torch.mm peak of the row's precision (d: model FLOP utilisation); gpu_util: mean NVML "
          "utilisation % after the first epoch; peak_mib: GPU max allocated (CPU: peak RSS)")
    suite.save()


if __name__ == "__main__":
    sys.exit(main())
