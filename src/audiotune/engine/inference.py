"""Batched inference on the device the run config names: which device, whether its loaders pin memory, whether
the features are computed there (``--features_on``), and the no-grad loop shared by evaluate, extract, the feature
cache and probe (the loaders are built in :mod:`audiotune.data.loading`)."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from audiotune.config import RunConfig
from audiotune.config.sections import PRECISIONS
from audiotune.data.input_spec import InputSpec
from audiotune.data.loader_plan import pins_memory
from audiotune.data.loading import batch_features
from audiotune.engine.device import autocast, check_precision, move_batch, parse_devices, resolve_device, to_host
from audiotune.launch import launched_local_rank
from audiotune.models.classifier import Classifier
from audiotune.progress import track

log = logging.getLogger(__name__)

# what one inference step computes from the model and a batch already on the device
InferenceStep = Callable[[Classifier, dict], torch.Tensor]
ACCELERATED = ("cuda", "mps")  # devices --features_on auto computes features on


def inference_device(config: RunConfig) -> torch.device:
    """The device of ``config.runtime.accelerator`` / ``config.runtime.devices`` (ValueError if it is missing, or
    cannot run ``config.runtime.precision``).

    Inside a multi-GPU (DDP) run each process keeps the GPU Lightning gave it, and before Lightning starts
    (the feature cache) takes the one Lightning will give it: its local rank's device.
    """
    device = resolve_device(config.runtime.accelerator, config.runtime.devices)
    check_precision(device, config.runtime.precision)
    if device.type == "cuda" and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    local_rank = launched_local_rank()
    if device.type == "cuda" and local_rank > 0:
        devices = parse_devices(config.runtime.devices)
        return torch.device("cuda", devices[local_rank] if isinstance(devices, list) else local_rank)
    return device


def override_device(config: RunConfig, accelerator: str | None = None, devices: str | None = None,
                    precision: str | None = None) -> torch.device:
    """Apply command-line ``--accelerator/--devices/--precision`` over a loaded run's config; returns the
    device, so a missing accelerator is an error before the command writes anything."""
    if precision is not None:
        if precision not in PRECISIONS:
            raise ValueError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        config.runtime.precision = precision
    if accelerator is not None:
        config.runtime.accelerator = accelerator
    if devices is not None:
        config.runtime.devices = str(devices)
    return inference_device(config)


def override_data(config: RunConfig, data: dict[str, Any] | None) -> None:
    """Apply command-line data options (``prefix``, ``study``: where uid-layout audio lives) over a loaded run's
    config, so the run scores data laid out elsewhere than its training data."""
    for name, value in (data or {}).items():
        if not hasattr(config.data, name):
            raise ValueError(f"{name}: not a data option")
        setattr(config.data, name, value)


def override_scoring(config: RunConfig, data: dict[str, Any] | None, batch_size: int | None,
                     num_workers: int | Literal["auto"] | None, on_error: str | None) -> None:
    """What a scoring command (evaluate, extract) sets over a loaded run's config: where uid-layout audio lives
    (:func:`override_data`), the batch size, the loader's workers and what bad audio does (each when given), and
    never the seeds' debug truncation to a few rows."""
    override_data(config, data)
    if batch_size is not None:
        config.train.batch_size = batch_size
    if num_workers is not None:
        config.runtime.num_workers = num_workers
    if on_error:
        config.data.on_error = on_error
    config.train.debug = False


def loader_pins_memory(config: RunConfig) -> bool:
    """Whether loaders feeding the config's device pin their batches (only for CUDA), as
    :func:`audiotune.data.loading.make_loader` does for the device it is given."""
    return pins_memory(inference_device(config))


def features_on_device(config: RunConfig, inputs: InputSpec) -> bool:
    """Whether the front end of ``inputs`` runs batched on the model's device (``--features_on``): ``device``, or
    ``auto`` on a GPU; never for waveform inputs (nothing to compute) or with ``--resample_rate 0`` (one rate per
    file: the workers compute them, and the log says so once)."""
    place = config.runtime.features_on
    if place == "workers" or inputs.features == "waveform":
        return False
    if place == "auto" and inference_device(config).type not in ACCELERATED:
        return False
    if not inputs.resample_rate:
        _say_once(f"--features_on {place}: --resample_rate 0 keeps each file's own sample rate, so the data workers "
                  f"compute the {inputs.features} features")
        return False
    return True


@functools.cache
def _say_once(message: str) -> None:
    log.warning(message)


def on_device(batch: dict, device: torch.device, features: Callable[[dict], dict] | None) -> dict:
    """A loader batch moved to ``device``, with its features computed there by ``features`` (from
    :func:`~audiotune.data.loading.batch_features`) when it holds waveforms."""
    batch = move_batch(batch, device)
    return features(batch) if features is not None else batch


def _logits(model: Classifier, batch: dict) -> torch.Tensor:
    return model.forward_batch(batch)


def iterate_batches(model: Classifier, loader: DataLoader, config: RunConfig | None = None,
                    step: InferenceStep = _logits, label: str = "scoring",
                    check: Callable[[], None] | None = None) -> Iterator[tuple[dict, torch.Tensor]]:
    """Yield ``(batch, result)`` for each of ``loader``'s batches: the batch as the loader gave it (on the CPU)
    and ``step(model, batch)`` computed in eval mode without gradients on the config's device, as float32 on the
    CPU; the pass's progress is reported as ``label`` (:mod:`audiotune.progress`, which also raises a SIGTERM
    that came unraised before each batch); ``check`` runs before each batch (one process of several: whether
    another has failed).

    The model moves to that device once, after the loader's workers have started on the first batches (they
    decode while the weights are copied and the device starts up), and each batch per step; bf16 autocast on that
    device when the config asks. Without a config the model stays where it is. A batch's result is yielded once
    the next batch's step is queued (:func:`~audiotune.engine.device.to_host`): the device computes while the
    caller writes the results it has.
    """
    device = inference_device(config) if config else next(
        (p.device for p in model.parameters()), torch.get_default_device())
    precision = config.runtime.precision if config else "32"
    total = len(loader) if hasattr(loader, "__len__") else None
    batches = iter(loader)  # workers start here
    model.to(device).eval()
    features = batch_features(loader)
    waiting: tuple[dict, Callable[[], torch.Tensor]] | None = None
    with torch.inference_mode(), autocast(device, precision):
        for batch in track(batches, label, total):
            if check is not None:
                check()
            result = to_host(step(model, on_device(batch, device, features)))
            if waiting is not None:
                yield waiting[0], waiting[1]()
            waiting = batch, result
        if waiting is not None:
            yield waiting[0], waiting[1]()


def predict(model: Classifier, loader: DataLoader, config: RunConfig | None = None, label: str = "scoring",
            check: Callable[[], None] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """uids, logits and targets of every row, in loader order (as float32 numpy on the CPU); the progress is
    reported as ``label``, ``check`` runs before each batch (see :func:`iterate_batches`)."""
    uids, logits, targets = [], [], []
    for batch, out in iterate_batches(model, loader, config, label=label, check=check):
        uids += batch["uid"]
        logits.append(out.numpy())
        targets.append(batch["targets"].float().numpy())
    return uids, np.concatenate(logits), np.concatenate(targets)
