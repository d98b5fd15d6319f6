"""The parts of ``gpu_suite.py`` and what they measure with: epoch clocks, GPU utilisation sampling, peak memory.

Each part takes the suite (its device, sizes, measured peaks, and ``add`` for a row) and a work folder, builds its
data and models offline in that folder, and runs audiotune through its engine functions (``extract_embeddings``,
``train`` with a Lightning callback that clocks each epoch), the same code on the CPU and on a GPU.
"""
from __future__ import annotations

import collections
import contextlib
import math
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import soundfile as sf
import torch
from torch._dynamo.utils import counters
from torch.utils.flop_counter import FlopCounterMode

from audiotune.engine.device import autocast

RATE = 16000
ACCELERATOR = {"cpu": "cpu", "cuda": "gpu"}  # torch device type -> audiotune's --accelerator
COMPILED = "reduce-overhead"  # part b's compiled run: CUDA graphs for a step of many small kernels
PRECISIONS = {"fp32": "32", "tf32": "tf32", "bf16": "bf16"}  # part a's names -> audiotune's --precision


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_peak() -> float:
    """This process's peak resident set in MiB (VmHWM; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """``{"peak_mib": ...}`` once the block ends: the peak allocated on the GPU, or the peak RSS on the CPU
    (reset first where the kernel allows it: ``/proc/self/clear_refs``)."""
    out: dict = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
    try:
        yield out
    finally:
        synchronize(device)
        out["peak_mib"] = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                           else _rss_peak())


class Utilisation:
    """GPU utilisation (%) sampled every ``period`` seconds in a thread while the block runs: NVML through pynvml,
    else ``torch.cuda.utilization``; nothing on the CPU. ``mean(start, end)`` averages a time window."""

    def __init__(self, device: torch.device, period: float = 0.1) -> None:
        self.samples: list[tuple[float, float]] = []
        self.period, self.source, self._read = period, "none", None
        self._stop = threading.Event()
        if device.type != "cuda":
            return
        try:
            import pynvml
            pynvml.nvmlInit()
            # NVML numbers every GPU of the machine; CUDA only those CUDA_VISIBLE_DEVICES shows (torch's own mapping)
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(device))
            self._read, self.source = (lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu), "NVML"
        except Exception:  # pynvml missing or NVML unusable: torch's own reading (which may need it too)
            with contextlib.suppress(Exception):
                torch.cuda.utilization(device)
                self._read, self.source = (lambda: torch.cuda.utilization(device)), "torch.cuda.utilization"

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            with contextlib.suppress(Exception):
                self.samples.append((time.perf_counter(), float(self._read())))

    def __enter__(self) -> Utilisation:
        if self._read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._read is not None:
            self._thread.join()

    def mean(self, start: float, end: float) -> float | None:
        values = [v for t, v in self.samples if start <= t <= end]
        return float(np.mean(values)) if values else None


class EpochClock(pl.Callback):
    """The (start, end) ``perf_counter`` time of the training batches of every epoch: from the epoch's start to the
    end of its last training batch (the device synchronised there), so validation and checkpoint writing are out.

    Also where the host spends each batch, per epoch in ``host``: ``wait``, from the end of the previous batch's
    step (or the epoch's start) to the start of this one's (the loader's batch fetched and moved to the device),
    and ``step``, the training step's host time (forward, backward and update queued; on a GPU the device may
    still be computing). A step's host time near the epoch's time per batch means the host launching kernels
    bounds the epoch; a long wait, the input."""

    def __init__(self, device: torch.device, waits: list[str] | None = None) -> None:
        self.device, self.spans, self._start, self._end = device, [], 0.0, 0.0
        self.host: list[dict[str, list]] = []
        self._mark = self._batch = 0.0
        self.waits = waits  # where the host waited for the device (sync_watch), counted per batch when given
        self._seen = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start = self._end = self._mark = time.perf_counter()
        self.host.append({"wait": [], "step": [], "syncs": [], "places": []})
        self._seen = len(self.waits) if self.waits is not None else 0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        self._batch = time.perf_counter()
        self.host[-1]["wait"].append(self._batch - self._mark)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        self._mark = time.perf_counter()
        self.host[-1]["step"].append(self._mark - self._batch)
        if self.waits is not None:  # since the last batch ended: its transfer, features and step
            self.host[-1]["syncs"].append(len(self.waits) - self._seen)
            self.host[-1]["places"] += self.waits[self._seen:]
            self._seen = len(self.waits)
        if batch_idx + 1 == trainer.num_training_batches:
            synchronize(self.device)
            self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.spans.append((self._start, self._end))

    def host_note(self) -> str:
        """The median host wait and step per batch over the epochs after the first, in ms."""
        later = self.host[1:] or self.host
        wait = [w for epoch in later for w in epoch["wait"]]
        step = [t for epoch in later for t in epoch["step"]]
        if not wait:
            return "no batch clocked"
        note = (f"host per batch (median): waiting {1e3 * statistics.median(wait):.1f} ms, "
                f"step {1e3 * statistics.median(step):.1f} ms")
        if self.waits is not None:
            syncs = [n for epoch in later for n in epoch["syncs"]]
            places = collections.Counter(p for epoch in later for p in epoch["places"]).most_common(3)
            note += (f"; waits for the device per batch (median) {statistics.median(syncs):g}"
                     + (f", at {', '.join(f'{p} x{n}' for p, n in places)}" if places else ""))
        return note


@contextlib.contextmanager
def sync_watch(device: torch.device) -> Iterator[list[str] | None]:
    """On CUDA, the places (``file:line``) where the host waited for the device while the block ran: torch's sync
    debug mode warns at each synchronizing operation (a value read back, a copy from pageable memory, a boolean
    index, ...); elsewhere None."""
    if device.type != "cuda":
        yield None
        return
    places: list[str] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message=".*synchronizing CUDA operation")
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, *rest: object) -> None:
            if "synchronizing CUDA operation" in str(message):
                places.append(f"{Path(str(filename)).name}:{lineno}")
            else:
                shown(message, category, filename, lineno, *rest)  # type: ignore[arg-type]

        warnings.showwarning = show
        try:
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
        except (RuntimeError, AttributeError):  # no sync debug mode here: the rows go on without the count
            yield None
            return
        try:
            yield places
        finally:
            torch.cuda.set_sync_debug_mode(previous)


def encoder_class(kind: str) -> type:
    from transformers import ASTModel, Wav2Vec2Model
    return ASTModel if kind == "ast" else Wav2Vec2Model


def save_encoder(kind: str, overrides: dict, out: Path) -> Path:
    """A randomly initialised wav2vec2 (``Wav2Vec2Config(**overrides)``; no overrides: wav2vec2-base) or AST
    (``ASTConfig``; no overrides: AudioSet AST, 1024 frames x 128 bins) with its feature extractor, saved."""
    from transformers import ASTConfig, ASTFeatureExtractor, Wav2Vec2Config, Wav2Vec2FeatureExtractor
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bar()
    torch.manual_seed(0)
    config = ASTConfig(**overrides) if kind == "ast" else Wav2Vec2Config(**overrides)
    encoder_class(kind)(config).save_pretrained(out)
    if kind == "ast":
        ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length,
                            sampling_rate=RATE).save_pretrained(out)
    else:
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=False).save_pretrained(out)
    return out


def input_shape(kind: str, checkpoint: Path, batch: int, clip_s: float) -> tuple[int, ...]:
    """The encoder's input for ``batch`` clips of ``clip_s`` seconds: samples, or AST's frames x bins."""
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(checkpoint)
    return (batch, config.max_length, config.num_mel_bins) if kind == "ast" else (batch, round(clip_s * RATE))


def meta_flops(kind: str, checkpoint: Path, shape: tuple[int, ...], backward: bool = False) -> int:
    """FLOPs of one forward with every hidden state (``backward``: forward and backward of the last state's mean)
    counted by FlopCounterMode on the meta device (nothing computed; attention counted)."""
    from transformers import AutoConfig
    with torch.device("meta"):
        model = encoder_class(kind)(AutoConfig.from_pretrained(checkpoint)).eval()
    inputs = torch.zeros(shape, device="meta")
    with FlopCounterMode(display=False) as counter:
        if backward:
            model(inputs).last_hidden_state.float().mean().backward()
        else:
            with torch.no_grad():
                model(inputs, output_hidden_states=True)
    return counter.get_total_flops()


def forward_only(kind: str, checkpoint: Path, shape: tuple[int, ...], repeats: int, device: torch.device,
                 precision: str) -> float:
    """Seconds of ``repeats`` forwards (every hidden state) on a batch already on the device, after a warm-up."""
    model = encoder_class(kind).from_pretrained(checkpoint).to(device).eval()
    inputs = torch.randn(shape, device=device)
    with torch.inference_mode(), autocast(device, precision):
        model(inputs, output_hidden_states=True)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model(inputs, output_hidden_states=True)
        synchronize(device)
    return time.perf_counter() - start


def ast_plain_loop(checkpoint: Path, paths: list[Path], batch: int, device: torch.device) -> np.ndarray:
    """The plain loop for AST: soundfile decode (16 kHz mono clips), the AST feature extractor, forward, mean over
    the patch tokens of the last state."""
    from transformers import ASTFeatureExtractor, ASTModel

    model = ASTModel.from_pretrained(checkpoint).to(device).eval()
    extractor = ASTFeatureExtractor.from_pretrained(checkpoint)
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            audio = [sf.read(path, dtype="float32")[0] for path in paths[start:start + batch]]
            inputs = extractor(audio, sampling_rate=RATE, return_tensors="pt")
            states = model(inputs["input_values"].to(device, non_blocking=True), output_hidden_states=True)
            out.append(states.hidden_states[-1][:, 2:].mean(1).float().cpu().numpy())
    return np.concatenate(out)


def measured(suite, part: str, case: str, fn: Callable[[], dict]) -> dict | None:
    """Run ``fn`` (it returns the row's values) under the peak-memory meter and add its row; an error becomes the
    row (a part's budget running out, a BaseException, is not caught)."""
    start = time.perf_counter()
    try:
        with peak_memory(suite.device) as peak:
            values = fn()
    except (Exception, SystemExit) as err:  # SystemExit: the reused benchmark helpers stop with it
        suite.add(part, case, error=" ".join(f"{type(err).__name__}: {err}".split())[:300],
                  wall_s=time.perf_counter() - start)
        return None
    suite.add(part, case, **{"wall_s": time.perf_counter() - start, **values, **peak})
    return values


def extraction_part(suite, work: Path) -> None:
    """(a) forward-only, the plain loop and ``audiotune extract`` per encoder and precision."""
    from extract_throughput import audiotune_extract, make_run, plain_loop, precision_run, tones

    s, device = suite.sizes, suite.device
    paths = tones(work / "clips", s["extract_clips"], s["clip_s"], s["clip_s"], 0)
    table = pd.DataFrame({"uid": [p.stem for p in paths], "path": [str(p) for p in paths]})
    table.to_csv(work / "clips.csv", index=False)
    table.iloc[:s["extract_batch"]].to_csv(work / "warmup.csv", index=False)
    warm, audio_s, batch = paths[:s["extract_batch"]], len(paths) * s["clip_s"], s["extract_batch"]
    for kind, name in (("w2v", "wav2vec2-base"), ("ast", "AST")):
        name += " (tiny)" if s[kind] else ""
        checkpoint = save_encoder(kind, s[kind], work / kind)
        shape = input_shape(kind, checkpoint, batch, s["clip_s"])
        clip_flops = meta_flops(kind, checkpoint, (1, *shape[1:]))
        run = make_run(work / f"run_{kind}", checkpoint, s["clip_s"], ACCELERATOR[device.type],
                       model="hf" if kind == "w2v" else "ast")
        runs = {PRECISIONS[label]: run if label == "fp32" else precision_run(run, PRECISIONS[label])
                for label in suite.args.precisions}

        def loop(files: list[Path]) -> np.ndarray:
            if kind == "ast":
                return ast_plain_loop(checkpoint, files, batch, device)
            return plain_loop(checkpoint, files, s["clip_s"], batch, device)

        def extract(csv: Path, precision: str) -> np.ndarray:
            return audiotune_extract(runs[precision], csv, work / "embeddings.parquet", batch, device.type,
                                     s["extract_workers"])

        for label in suite.args.precisions:
            precision, peak = PRECISIONS[label], suite.peaks[label]

            def forward() -> dict:
                seconds = forward_only(kind, checkpoint, shape, s["forward_repeats"], device, precision)
                clips = batch * s["forward_repeats"]
                return rates(clips * s["clip_s"] / seconds, clips * clip_flops / seconds, peak)

            def timed(fn: Callable[[object], np.ndarray], warm_arg: object, full_arg: object,
                      wrap: bool) -> Callable[[], dict]:
                """Untimed warm-up on one batch, then the timed pass (``wrap``: under the precision's autocast)."""
                def side() -> dict:
                    with autocast(device, precision) if wrap else contextlib.nullcontext():
                        fn(warm_arg)
                        start = time.perf_counter()
                        fn(full_arg)
                    seconds = time.perf_counter() - start
                    return rates(audio_s / seconds, len(paths) * clip_flops / seconds, peak)
                return side

            done = {"forward": measured(suite, "a", f"{name} {label}, forward only", forward),
                    "plain": measured(suite, "a", f"{name} {label}, plain loop", timed(loop, warm, paths, True))}
            audiotune = timed(lambda csv: extract(csv, precision), work / "warmup.csv", work / "clips.csv", False)

            def compared() -> dict:
                with result_times() as times:
                    values = audiotune()
                    end = time.perf_counter()
                # the timed pass's phases: until its first result, its batches, after its last result
                full, start = times[-math.ceil(len(paths) / batch):], end - audio_s / values["rate"]
                phases = (f"first result after {full[0] - start:.2f} s, the {len(full) - 1} others in "
                          f"{full[-1] - full[0]:.2f} s, then {end - full[-1]:.2f} s to the parquet file")
                values["note"] = phases
                if done["plain"] and done["forward"]:
                    values["note"] = (f"{values['rate'] / done['plain']['rate']:.2f}x plain loop, "
                                      f"{values['rate'] / done['forward']['rate']:.0%} of forward-only; {phases}")
                return values
            measured(suite, "a", f"{name} {label}, audiotune extract", compared)  # its precision: the run's config


@contextlib.contextmanager
def result_times() -> Iterator[list[float]]:
    """The ``perf_counter`` times at which ``audiotune extract`` gets each batch's result back (its
    ``iterate_batches`` yields) while the block runs."""
    from audiotune.engine import extract

    real, times = extract.iterate_batches, []

    def clocked(*args: object, **kwargs: object) -> Iterator[tuple[dict, torch.Tensor]]:
        for item in real(*args, **kwargs):  # type: ignore[arg-type]
            times.append(time.perf_counter())
            yield item

    extract.iterate_batches = clocked  # type: ignore[assignment]
    try:
        yield times
    finally:
        extract.iterate_batches = real


def rates(rate: float, flops_per_s: float, peak: float) -> dict:
    return {"rate": rate, "unit": "audio-s/s", "tflops": flops_per_s / 1e12, "of_peak": flops_per_s / peak}


def write_split(folder: Path, paths: list[Path], held_out: int) -> tuple[Path, Path]:
    """train / val / test CSVs (``held_out`` clips each for val and test, the rest to train) with a two-class
    column ``cls``, and the label file naming it."""
    folder.mkdir(parents=True)
    parts = {"train": paths[:-2 * held_out], "val": paths[-2 * held_out:-held_out], "test": paths[-held_out:]}
    for split, rows in parts.items():
        pd.DataFrame({"uid": [p.stem for p in rows], "path": [str(p) for p in rows],
                      "cls": [i % 2 for i in range(len(rows))]}).to_csv(folder / f"{split}.csv", index=False)
    (folder / "labels.txt").write_text("cls:binary\n")
    return folder, folder / "labels.txt"


def timed_train(suite, argv: list[object]) -> dict:
    """``audiotune train ARGV`` through ``engine.train.train`` with an epoch clock; the clock's spans, the
    command's start and end, its peak memory and its metrics."""
    from audiotune.cli import build_parser
    from audiotune.cli.config_args import config_from_args
    from audiotune.cli.show import quiet_lightning
    from audiotune.engine.train import train

    words = [str(word) for word in argv] + ["--accelerator", ACCELERATOR[suite.device.type]]
    args = build_parser(words[words.index("--model") + 1]).parse_args(["train", *words])
    quiet_lightning(False)
    config = config_from_args(args)
    with sync_watch(suite.device) as waits, peak_memory(suite.device) as peak:
        clock, start = EpochClock(suite.device, waits), time.perf_counter()
        metrics = train(config, callbacks=[clock])
    if not clock.spans:
        raise RuntimeError("no training epoch ran")
    later = clock.spans[1:] or clock.spans  # the epochs after the first (start-up, store filling) when there are
    # what the run itself logged of its pace (engine/pace.py), beside what the suite measured
    logged = (f"the run's log: {metrics.get('train_clips_per_s')} clips/s, device peak "
              f"{metrics.get('device_peak_mib')} MiB")
    return {"start": start, "end": time.perf_counter(), "spans": clock.spans, "later": later, **peak,
            "epoch_s": statistics.median(end - begin for begin, end in later), "metrics": metrics,
            "host": f"{clock.host_note()}; {logged}", "config": config}


def ecapa_part(suite, work: Path) -> None:
    """(b) ECAPA-TDNN training on 5-s 44.1 kHz stereo OGG and FLAC clips, audio store off and on, per worker count."""
    from audio_store import make_clips  # benchmarks/audio_store.py

    s = suite.sizes
    paths = make_clips(work / "clips", s["ecapa_clips"] + 8, 2, 0)
    for path in paths[1::2]:  # every other clip as FLAC
        sf.write(path.with_suffix(".flac"), *sf.read(path, dtype="float32")[:2], format="FLAC")
        path.unlink()
    paths = [p if i % 2 == 0 else p.with_suffix(".flac") for i, p in enumerate(paths)]
    split, labels = write_split(work / "split", paths, 4)
    # (audio store, workers, --compile); the compiled run has two more epochs, after the one that compiles
    runs = [(store, workers, "none") for store in (False, True) for workers in s["workers"]]
    runs.append((True, s["workers"][-1], COMPILED))
    with Utilisation(suite.device) as util:
        for store, workers, compiled in runs:
            slug = f"{'store' if store else 'nostore'}_w{workers}_{compiled}"
            epochs = s["ecapa_epochs"] + (2 if compiled != "none" else 0)
            argv = ["-d", split, "-l", labels, "-o", work / slug, "--model", "ecapa_tdnn", "--features", "fbank",
                    "--num_mel_bins", "80", "--clip_length", "5", "-e", epochs, "-bs", s["ecapa_batch"],
                    "-nw", workers, "--audio_cache", store, "--cache_dir", work / f"cache_{slug}", "--seed", "0",
                    "--compile", compiled, *s["ecapa"]]

            def one(argv: list[object] = argv, compiled: str = compiled) -> dict:
                skipped = counters["inductor"]["cudagraph_skips"]
                r = timed_train(suite, argv)
                skipped = counters["inductor"]["cudagraph_skips"] - skipped  # the run's log says why
                graphs = f"; graphs run without CUDA graphs: {skipped}" if compiled == COMPILED else ""
                clips = r["metrics"]["train_clips"]
                busy = [u for u in (util.mean(*span) for span in r["later"]) if u is not None]
                first = r["spans"][0][1] - r["spans"][0][0]
                return {"rate": clips / r["epoch_s"], "unit": "clips/s",
                        "gpu_util": float(np.mean(busy)) if busy else None,
                        "note": f"first epoch {clips / first:.1f} clips/s; {len(r['spans'])} epochs of {clips} "
                                f"clips; utilisation: {util.source}; {r['host']}{graphs}"}
            case = f"ECAPA-TDNN, audio store {'on' if store else 'off'}, {workers} workers"
            measured(suite, "b", case + (f", --compile {compiled}" if compiled != "none" else ""), one)


def frozen_part(suite, work: Path) -> None:
    """(c) frozen fine-tuning of the wav2vec2-base-sized encoder: feature cache cold, warm, and no cache."""
    from frozen_cache import prepare_split, synthesize  # benchmarks/frozen_cache.py

    s = suite.sizes
    checkpoint = save_encoder("w2v", s["w2v"], work / "encoder")
    split, _, _ = prepare_split(synthesize(work / "tones", s["frozen_clips"], 0), work, s["frozen_clips"], 0, False)
    base = ["-d", split, "-l", work / "labels.txt", "--model", "hf", "-c", checkpoint, "--freeze",
            "-e", s["frozen_epochs"], "-bs", s["frozen_batch"], "--seed", "0", "--cache_dir", work / "cache"]
    for name, slug, cache in (("cache cold", "cold", True), ("cache warm", "warm", True), ("no cache", "off", False)):
        def one(argv: list[object] = [*base, "-o", work / slug, "--cache", cache]) -> dict:
            r = timed_train(suite, argv)
            stats = r["metrics"].get("feature_cache", {})
            return {"rate": len(r["spans"]) / (r["spans"][-1][1] - r["start"]), "unit": "epochs/s",
                    "note": f"epoch {r['epoch_s']:.2f} s (median after the first); clips encoded "
                            f"{stats.get('encoded')}, reused {stats.get('reused')}; {r['host']}"}
        measured(suite, "c", f"frozen wav2vec2-base{' (tiny)' if s['w2v'] else ''}, {name}", one)


def finetune_part(suite, work: Path) -> None:
    """(d) full fine-tuning of the wav2vec2-base-sized encoder at bf16 (``--tune_compile``: its training steps
    through ``torch.compile``; ``--tune_masks P``: time and channel spans masked at ``P``): samples/s and model
    FLOP utilisation."""
    from extract_throughput import tones  # benchmarks/extract_throughput.py

    from audiotune.models.backbones import backbone_options

    s = suite.sizes
    checkpoint = save_encoder("w2v", s["w2v"], work / "encoder")
    split, labels = write_split(work / "split", tones(work / "clips", s["tune_clips"] + 8, s["clip_s"], s["clip_s"], 1),
                                4)
    per_sample = meta_flops("w2v", checkpoint, input_shape("w2v", checkpoint, 1, s["clip_s"]), backward=True)

    compiled, masks = suite.args.tune_compile, suite.args.tune_masks

    def one() -> dict:
        r = timed_train(suite, ["-d", split, "-l", labels, "-o", work / "run", "--model", "hf", "-c", checkpoint,
                                "--freeze", False, "-e", s["tune_epochs"], "-bs", s["tune_batch"],
                                "--precision", "bf16",
                                "--clip_length", s["clip_s"], "--cache", False, "-nw", s["tune_workers"],
                                "--seed", "0", "--compile", compiled, "--mask_time_prob", masks,
                                "--mask_feature_prob", masks])
        rate = r["metrics"]["train_clips"] / r["epoch_s"]
        run_options = backbone_options(r["config"])  # what the run's config asked for
        return {"rate": rate, "unit": "samples/s", "tflops": rate * per_sample / 1e12,
                "of_peak": rate * per_sample / suite.peaks["bf16"],
                "note": f"batch {s['tune_batch']} x {s['clip_s']:g} s; {per_sample / 1e9:.3g} GFLOP per sample "
                        f"(forward + backward); epoch {r['epoch_s']:.2f} s (median after the first); steps "
                        f"compiled: {r['config'].runtime.compile}; encoder "
                        f"{'frozen' if r['config'].model.freeze else 'trained'}; masked spans: time "
                        f"{run_options.mask_time_prob:g}, channels {run_options.mask_feature_prob:g}; "
                        f"{r['host']}"}
    case = f"wav2vec2-base{' (tiny)' if s['w2v'] else ''} full fine-tuning, bf16"
    case += f", --compile {compiled}" if compiled != "none" else ""
    measured(suite, "d", case + (f", masked spans {masks:g}" if masks else ""), one)
