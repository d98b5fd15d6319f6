"""How the input pipeline is sized for the device and the data, so that the device is kept busy without the
loader fighting the model for the CPU.

- :func:`input_cost`: what preparing a split costs: compressed (not PCM WAV) or resampled inputs, read from a
  few files' headers, and the prepared audio's length and size;
- :func:`loader_settings`: workers (``--num_workers auto``: the rule is written once, in that option's help),
  prefetching, pinned memory and workers streaming from one pass into the next, from the device, the CPUs this
  process may use (``os.sched_getaffinity``) and the input cost; explicit worker counts are honoured;
- :func:`use_audio_store`: ``--audio_cache auto``: the store is used where decoding again would cost more than
  reading back (compressed or resampled inputs, more than one pass, within the declared budget and free disk).

Each choice is logged once per process, with its reason.
"""
from __future__ import annotations

import functools
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from audiotune.config import RunConfig
from audiotune.data.audio import AudioError, AudioSpec, open_audio
from audiotune.machine import usable_cpus

log = logging.getLogger(__name__)

HEADERS_READ = 16  # files whose headers stand for a split (evenly spaced rows)
SHORT_SPLIT_SECONDS = 300.0  # a split of less audio is prepared in about a second: no workers
UNCOMPRESSED_FORMATS = ("WAV", "WAVEX", "RF64", "W64", "AIFF")
UNCOMPRESSED_SUBTYPES = ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
GIB = 1 << 30
_LOGGED: set[str] = set()


def log_once(message: str) -> None:
    """Log ``message`` at info level the first time this process sees it."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.info(message)


@dataclass(frozen=True)
class InputCost:
    """What preparing a split costs: ``compressed`` (some input is not PCM WAV: decoding is work), ``resampled``
    (some input is not at the model's rate), ``seconds`` and ``bytes`` (float32) of the prepared audio."""

    compressed: bool = False
    resampled: bool = False
    seconds: float = 0.0
    bytes: int = 0

    @property
    def costly(self) -> bool:
        """Whether each clip is decoded or resampled, not merely read."""
        return self.compressed or self.resampled

    def reason(self) -> str:
        """The cost in words, for the log."""
        kinds = [word for word, on in (("compressed", self.compressed), ("resampled", self.resampled)) if on]
        what = " and ".join(kinds) if kinds else "PCM WAV at the model's rate"
        return f"{what} inputs, {self.seconds / 60:.1f} min of audio ({size_text(self.bytes)} prepared)"


def size_text(count: float) -> str:
    """Bytes in MiB or GiB, for the log."""
    return f"{count / GIB:.2f} GiB" if count >= GIB / 10 else f"{count / (1 << 20):.1f} MiB"


@functools.lru_cache(maxsize=4096)
def _source_format(path: str) -> tuple[int, bool]:
    """A file's sample rate and whether it is uncompressed PCM (WAV-like container, PCM or float samples)."""
    with open_audio(path) as handle:
        plain = handle.format in UNCOMPRESSED_FORMATS and handle.subtype in UNCOMPRESSED_SUBTYPES
        return int(handle.samplerate), plain


def input_cost(table: pd.DataFrame | None, spec: AudioSpec) -> InputCost:
    """The :class:`InputCost` of a prepared table (``path``, ``num_samples``), from the headers of up to
    :data:`HEADERS_READ` evenly spaced rows (a file that cannot be read counts as costly)."""
    if table is None or not len(table) or "path" not in table.columns:
        return InputCost()
    paths = table["path"].astype(str).tolist()
    picked = sorted({paths[round(i * (len(paths) - 1) / max(HEADERS_READ - 1, 1))]
                     for i in range(min(HEADERS_READ, len(paths)))})
    rates, compressed, resampled = [], False, False
    for path in picked:
        try:
            rate, plain = _source_format(path)
        except (AudioError, OSError):  # unreadable here: it will be named when the loader reads it
            compressed = True
            continue
        rates.append(rate)
        compressed = compressed or not plain
        resampled = resampled or spec.output_rate(rate) != rate
    samples = float(table["num_samples"].sum()) if "num_samples" in table.columns else 0.0
    prepared_rate = spec.resample_rate or (sum(rates) / len(rates) if rates else 16000)
    return InputCost(compressed, resampled, samples / prepared_rate, int(samples) * 4)


def pins_memory(device: torch.device) -> bool:
    """Whether loaders feeding ``device`` pin their batches: only for CUDA (pinned pages copy asynchronously)."""
    return device.type == "cuda"


def auto_workers(accelerator: bool, cpus: int, cost: InputCost) -> int:
    """``--num_workers auto``: the rule in that option's help, for ``cpus`` CPUs of this process's own."""
    if cost.seconds < SHORT_SPLIT_SECONDS:
        return 0
    if accelerator:
        return max(0, min(cpus - 1, 8 if cost.costly else 4))
    return min(cpus // 2, 4) if cost.costly else min(cpus // 4, 2)


@dataclass(frozen=True)
class LoaderSettings:
    """How one loader reads: the DataLoader options and ``streamed``, whether its workers run on from one pass
    into the next (:class:`~audiotune.data.passes.StreamingLoader`)."""

    num_workers: int
    pin_memory: bool
    prefetch_factor: int | None
    streamed: bool

    def options(self) -> dict:
        """The DataLoader keyword arguments."""
        return {"num_workers": self.num_workers, "pin_memory": self.pin_memory,
                "prefetch_factor": self.prefetch_factor}


def loader_settings(config: RunConfig, device: torch.device, table: pd.DataFrame | None, spec: AudioSpec,
                    passes: int = 1, processes: int = 1) -> LoaderSettings:
    """The loader of a prepared table read as ``spec`` says ``passes`` times, feeding ``device``, in one of
    ``processes`` processes on this machine (DDP): workers from ``--num_workers`` (auto: :func:`auto_workers` with
    this process's share of the CPUs and the table's :func:`input_cost`), batches pinned for CUDA, 4 batches
    prefetched per worker for an accelerator (2 for the CPU), workers streaming from one pass into the next when
    there are several. The choice is logged once."""
    accelerator = device.type != "cpu"
    requested = config.runtime.num_workers
    cpus = max(1, usable_cpus() // max(processes, 1))
    cost = input_cost(table, spec) if requested == "auto" else InputCost()
    workers = auto_workers(accelerator, cpus, cost) if requested == "auto" else int(requested)
    settings = LoaderSettings(workers, pins_memory(device), (4 if accelerator else 2) if workers else None,
                              workers > 0 and passes > 1)
    why = (f"auto: {cpus} CPU(s) for this process, {device.type}, {cost.reason()}" if requested == "auto"
           else "--num_workers")
    log_once(f"data loader on {device.type}: {workers} worker(s) ({why})"
             + (f", {settings.prefetch_factor} batches prefetched per worker" if workers else "")
             + (", pinned memory" if settings.pin_memory else "")
             + (", workers running on from one pass into the next" if settings.streamed else ""))
    return settings


def training_passes(config: RunConfig, rows: int) -> int:
    """How many times a training run reads its splits: ``--epochs``, or the epochs ``--training_steps`` takes."""
    train = config.train
    if train.training_steps:
        per_epoch = max(1, math.ceil(rows / train.batch_size))
        return math.ceil(train.training_steps * train.accumulate_grad_batches / per_epoch)
    return train.epochs


def free_disk(folder: Path) -> int:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


def use_audio_store(config: RunConfig, table: pd.DataFrame | None, spec: AudioSpec, passes: int, root: Path) -> bool:
    """``--audio_cache``: True and False decide; auto uses the store for a prepared table of compressed or
    resampled inputs (read as ``spec`` says) read more than once whose prepared audio fits ``--audio_cache_gb``
    and half the free disk under ``root``. An auto decision is logged once, with its reason."""
    chosen = config.runtime.audio_cache
    if chosen != "auto":
        return bool(chosen)
    cost, clips = input_cost(table, spec), 0 if table is None else len(table)
    budget = min(config.runtime.audio_cache_gb * GIB, free_disk(root) / 2)
    if not cost.costly:
        use, why = False, "nothing to save: PCM WAV at the model's rate"
    elif passes < 2:
        use, why = False, "read once"
    elif cost.bytes > budget:
        use, why = False, (f"{size_text(cost.bytes)} exceeds the budget of {size_text(budget)} "
                           "(--audio_cache_gb, half the free disk)")
    else:
        use, why = True, f"read {passes} times, {cost.reason()}"
    log_once(f"audio store {'on' if use else 'off'} for {clips} clips (--audio_cache auto: {why})")
    return use
