"""``audiotune export``: a trained run's classifier as one ONNX or TorchScript graph with a dynamic time axis.

The graph takes what a deployment has: mono waveforms at the run's sample rate, zero-padded into one batch
``waveforms`` (batch, samples) float32, and each clip's real sample count ``lengths`` (batch,) int64. Inside,
it runs the data layer's front end (:class:`~audiotune.data.frontend.FrontEnd`: per-clip waveform normalisation
for pretrained encoders; Kaldi fbank or MFCC, utterance and dataset normalisation and SSAST's fixed frame count
for spectrogram models), the same code the data pipeline runs on each clip, then the classifier once. Outputs:
``logits``, ``embedding_ft`` (the ``ft`` embedding of ``audiotune extract``) and ``embedding_pooled`` (the pooled
backbone state the heads read: ``pt``, or ``wt`` for a weighted run). ``FILE.json`` beside the model tells a
deployment everything else (:func:`sidecar`).

ONNX goes through torch's dynamo exporter (``torch.export`` with symbolic batch and sample dimensions);
TorchScript is traced (transformers encoders cannot be scripted). Both files are written aside and renamed
only after the exported graph ran on batches of other lengths than the traced one and matched the PyTorch
model (ONNX: when onnxruntime is installed), the description after the model, so a failed or wrong export leaves
nothing behind and an earlier export with its description as they were.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from audiotune import __version__, storage
from audiotune.atomic import atomic_path
from audiotune.config import HeadSpec, RunConfig
from audiotune.data.features import FBANK as FBANK_SETTINGS
from audiotune.data.features import MFCC_TOP_DB
from audiotune.data.frontend import FrontEnd
from audiotune.data.input_spec import InputSpec
from audiotune.engine.adapt import OFF
from audiotune.engine.metrics import head_slices
from audiotune.models.backbones import DescribesFrontEnd, input_spec
from audiotune.models.checkpoint import load_run, resolve_run_dir
from audiotune.models.classifier import FT_MERGE_DEFAULT, Classifier
from audiotune.outputs import EXPORT_DESCRIPTION_KEY, EXPORT_DESCRIPTION_SUFFIX, check_output_path, write_json

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}  # each format's file name ending
OPSET = 18  # the opset torch's ONNX exporter translates to natively (no version conversion pass)
INPUT_NAMES = ("waveforms", "lengths")
OUTPUT_NAMES = ("logits", "embedding_ft", "embedding_pooled")
FBANK = {**dataclasses.asdict(FBANK_SETTINGS), "dither": 0.0, "snip_edges": True, "log_floor": "float32 eps",
         "scale": "samples as given (float, no int16 rescaling)"}


class ExportError(ValueError):
    """A model the exporter could not turn into a graph, or whose graph does not reproduce it."""


def sidecar_path(out: str | Path) -> Path:
    """Where the description of an exported model goes: ``FILE.json`` beside ``FILE``."""
    return Path(out).with_name(Path(out).name + EXPORT_DESCRIPTION_SUFFIX)


class ExportedClassifier(nn.Module):
    """Waveforms + lengths -> logits, ``ft`` embedding, pooled backbone state: what the exported graph computes.

    A clip whose length is outside ``[shortest, longest]`` samples (:func:`sample_limits`; ``longest`` None: no
    bound) or past the padded batch gets NaN in every output: the model does not read it as given (a clip longer
    than one ``--max_window`` window is encoded window by window, a path the graph does not hold)."""

    def __init__(self, model: Classifier, front_end: nn.Module, merge: str, shortest: int = 0,
                 longest: int | None = None):
        super().__init__()
        self.front_end, self.model, self.merge = front_end, model, merge
        self.shortest, self.longest = shortest, longest

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # one length per waveform: stacking with a row per waveform fails, in the graph too, rather than one length
        # being spread over the batch
        lengths = torch.stack((lengths, torch.zeros_like(waveforms[:, 0], dtype=lengths.dtype)))[0]
        unread = (lengths < self.shortest) | (lengths > waveforms.shape[1])
        read = lengths
        if self.longest is not None:  # the model reads one window: a wider batch is cut to it (its longer clips NaN)
            unread = unread | (lengths > self.longest)
            waveforms, read = waveforms[:, :self.longest], lengths.clamp(max=self.longest)
        inputs, input_lengths = self.front_end(waveforms.to(torch.float32), read)
        logits, pooled, embedding = self.model.forward_with_embeddings(inputs, input_lengths, self.merge)
        return tuple(torch.where(unread[:, None], torch.full_like(out, math.nan), out)  # type: ignore[return-value]
                     for out in (logits, embedding, pooled))


def check_export_args(run: str | Path, fmt: str, out: str | Path) -> Path:
    """Fail before any work: a run directory, a known format, a writable output (and sidecar) path that is
    not one of the run's own files. Returns the output path."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    run_dir, out = resolve_run_dir(run), check_output_path(out)
    other = next((name for name in FORMATS if name != fmt and out.suffix.lower() == SUFFIXES[name]), None)
    if other:  # a TorchScript archive named .onnx (or the reverse) is read as the format its name says
        raise ValueError(f"--out {out}: a {other} file name for --format {fmt}; name it {out.stem}{SUFFIXES[fmt]} "
                         f"(or give --format {other})")
    check_output_path(sidecar_path(out))
    # a file of the run (its metrics, predictions, ...) is never replaced; the places compared are where the files
    # end up: a run in a bucket and an --out there, staged, too
    run_place = storage.remote_name(str(run_dir))
    if not _earlier_export(out):
        for path in (out, sidecar_path(out)):
            place = storage.final_path(path)
            inside = place.startswith(run_place.rstrip("/") + "/") if storage.is_remote(place) else \
                Path(place).resolve().is_relative_to(Path(run_place).resolve())
            if inside and storage.isfile(place):
                raise ValueError(f"--out {storage.final_path(out)}: {path.name} is a file of the run itself; give a "
                                 "new file path")
    return out


def _earlier_export(out: Path) -> bool:
    """Whether ``out`` is an export written before (its description beside it names it), which export replaces."""
    try:
        with storage.open_input(storage.final_path(sidecar_path(out))) as stream:
            described = json.loads(stream.read())
    except (OSError, ValueError):  # (a storage error is an OSError)
        return False
    return isinstance(described, dict) and described.get("file") == out.name and described.get("format") in FORMATS


def sample_limits(config: RunConfig, inputs: InputSpec) -> tuple[int, int | None]:
    """Fewest and most samples per clip the graph takes: the model's shortest readable clip, and with
    ``--max_window`` one window (a longer clip is encoded window by window, a path the graph does not hold)."""
    shortest = max(int(inputs.min_samples or 0), 2)
    seconds = float(config.model.options.get("max_window", 0.0))  # the option of backbones that encode in windows
    window = round(seconds * (inputs.resample_rate or 0))
    return shortest, (max(window, shortest + 3) if window > 0 else None)


def clip_lengths(shortest: int, longest: int | None, rate: int) -> list[int]:
    """Four distinct clip lengths in ``[shortest, longest]``: about 1 s, 0.65 s, 0.5 s and 1.2 s where that fits.
    The first is the traced one; the others check the dynamic axis."""
    wanted = [round(seconds * rate) for seconds in (0.97, 0.65, 0.52, 1.21)]
    if longest is not None and max(wanted) > longest:
        wanted = [round(longest * share) for share in (0.8, 0.6, 0.45, 1.0)]
    lengths: list[int] = []
    for n in wanted:
        n = min(max(n, shortest), longest or n)
        while n in lengths and n > shortest:  # distinct even where the range is narrow
            n -= 1
        lengths.append(n)
    return lengths


def _batch(lengths: list[int], rate: int, seed: int) -> tuple[Tensor, Tensor]:
    """Tones with noise, zero-padded to the longest clip: a batch as a deployment passes it."""
    generator = torch.Generator().manual_seed(seed)
    size = max(lengths)
    t = torch.arange(size, dtype=torch.float32) / rate
    waves = torch.stack([0.3 * torch.sin(2 * math.pi * (220.0 + 110 * row) * t)
                         + 0.05 * torch.randn(size, generator=generator) for row in range(len(lengths))])
    for row, n in enumerate(lengths):
        waves[row, n:] = 0.0
    return waves, torch.tensor(lengths, dtype=torch.long)


def probe_batches(shortest: int, longest: int | None, rate: int,
                  equal_length: bool) -> tuple[tuple[Tensor, Tensor], list[tuple[Tensor, Tensor]]]:
    """The batch the graph is traced with, and batches of other lengths it is checked on. Clips of one batch
    share their length for models whose padding changes results (``equal_length``)."""
    first, second, third, fourth = clip_lengths(shortest, longest, rate)
    if equal_length:
        return _batch([first, first], rate, 1), [_batch([second, second], rate, 2), _batch([fourth], rate, 3)]
    return _batch([first, second], rate, 1), [_batch([third, fourth], rate, 2), _batch([second], rate, 3)]


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The exporters' expected chatter (tracer warnings on shape checks, which the verification covers;
    skipped torchvision ops) stays out of the output unless the log level asks for it."""
    if log.getEffectiveLevel() <= logging.INFO:
        yield
        return
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir", "transformers")
    levels = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _export_onnx(module: ExportedClassifier, example: tuple[Tensor, Tensor], path: Path,
                 shortest: int, longest: int | None) -> None:
    # torch.export proves the graph valid for every batch size and length in these bounds, or fails
    batch = torch.export.Dim("batch", min=1, max=65536)
    samples = torch.export.Dim("samples", min=shortest, max=longest or 2**31 - 2)
    program = torch.onnx.export(module, example, dynamo=True, input_names=list(INPUT_NAMES),
                                output_names=list(OUTPUT_NAMES), opset_version=OPSET, external_data=False,
                                dynamic_shapes={"waveforms": {0: batch, 1: samples}, "lengths": {0: batch}},
                                verbose=False)
    if program is None:  # only the legacy exporter returns nothing
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    program.save(str(path), external_data=False)


def _export_torchscript(module: ExportedClassifier, example: tuple[Tensor, Tensor], path: Path,
                        check: list[tuple[Tensor, Tensor]]) -> None:
    # traced (transformers encoders cannot be scripted); the tracer re-runs the check inputs and compares
    traced = torch.jit.trace(module, example, check_inputs=check, check_tolerance=1e-4, strict=False)
    torch.jit.save(traced, str(path))


Runner = Callable[[Tensor, Tensor], list[np.ndarray]]


def _onnx_runner(path: Path) -> Runner | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda waves, lengths: session.run(list(OUTPUT_NAMES), {INPUT_NAMES[0]: waves.numpy(),
                                                                  INPUT_NAMES[1]: lengths.numpy()})


def _torchscript_runner(path: Path) -> Runner:
    loaded = torch.jit.load(str(path), map_location="cpu")

    def run(waves: Tensor, lengths: Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in loaded(waves, lengths)]
    return run


def verify(run_exported: Runner, module: ExportedClassifier, batches: list[tuple[Tensor, Tensor]],
           path: Path) -> dict[str, float]:
    """Run the exported file and the PyTorch model on ``batches``: the largest difference per output, or an
    error naming the file when one exceeds 1e-3 of the output's scale."""
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    for waves, lengths in batches:
        with torch.no_grad():
            expected = [t.numpy() for t in module(waves, lengths)]
        for name, got, want in zip(OUTPUT_NAMES, run_exported(waves, lengths), expected):
            if got.shape != want.shape:
                raise ExportError(f"{path}: exported {name} has shape {got.shape} for clips of {lengths.tolist()} "
                                  f"samples where the model gives {want.shape}; nothing was written")
            difference = float(np.abs(got - want).max()) if want.size else 0.0
            scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
            if not difference <= 1e-3 * scale:  # also catches NaN
                raise ExportError(f"{path}: exported {name} differs from the model by {difference:.3g} for clips "
                                  f"of {lengths.tolist()} samples; nothing was written")
            worst[name] = max(worst[name], difference)
    return worst


def export_run(run: str | Path, fmt: str, out: str | Path) -> dict[str, Any]:
    """Export the run's classifier to ``out`` (``onnx`` or ``torchscript``) and describe it in ``out.json``.

    The run loads as ``evaluate`` and ``extract`` load it. Returns the description. Inputs are checked before
    any work; nothing is written unless the exported graph reproduces the model on other lengths.
    """
    out = check_export_args(run, fmt, out)
    run_dir = resolve_run_dir(run)
    config, model = load_run(run_dir)
    inputs = input_spec(config)
    rate = int(inputs.resample_rate or 0)
    if not rate:
        raise ValueError(f"{run_dir}: trained with --resample_rate 0 (each file's own rate); an exported graph "
                         "needs one fixed sample rate")
    if config.train.adapt_bn != OFF:
        log.warning("%s: trained with --adapt_bn %s, which evaluate re-estimates BatchNorm statistics by on the rows "
                    "it scores; the exported graph keeps the training statistics (as evaluate --adapt_bn none)",
                    run_dir, config.train.adapt_bn)
    merge = FT_MERGE_DEFAULT  # the ft embedding as `audiotune extract` gives it by default
    shortest, longest = sample_limits(config, inputs)
    module = ExportedClassifier(model.float().eval(), FrontEnd(inputs, rate), merge, shortest, longest).eval()
    # the exported front end computes MFCCs on the padded batch: its centred STFT reflects at the tensor's edge
    equal_length = not model.backbone.padding.exact or inputs.features == "mfcc"
    example, checks = probe_batches(shortest, longest, rate, equal_length)
    # the description is written aside too and renamed after the model: a failed export keeps the earlier pair
    with atomic_path(sidecar_path(out)) as described, torch.no_grad(), _quiet_exporters(), atomic_path(out) as partial:
        # an eager pass first: the front end's cached constants are built outside any tracing
        widths = [int(t.shape[1]) for t in module(*example)]
        try:
            if fmt == "onnx":
                _export_onnx(module, example, partial, shortest, longest)
            else:
                _export_torchscript(module, example, partial, checks)
        except Exception as err:
            reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise ExportError(f"{run_dir}: its {config.model.model} model could not be exported as {fmt} "
                              f"({reason}); nothing was written") from err
        runner = _onnx_runner(partial) if fmt == "onnx" else _torchscript_runner(partial)
        if runner is None:
            log.warning("onnxruntime is not installed: %s was not run after export", out)
        differences = None if runner is None else verify(runner, module, checks, out)
        description = sidecar(config, inputs, run_dir, out, fmt, merge, widths, equal_length, differences,
                              [lengths.tolist() for _, lengths in checks])
        if isinstance(model.backbone, DescribesFrontEnd):  # steps the backbone runs on its own input
            description["preprocessing"]["in_graph_backbone"] = model.backbone.describe_front_end()
        embed_description(partial, fmt, description)
        write_json(described, description)
        # the model is renamed into place first: the earlier description goes now, so that a process killed in
        # between leaves the new model (which holds its description) alone, never beside the earlier model's
        sidecar_path(out).unlink(missing_ok=True)
    return description


def embed_description(path: Path, fmt: str, description: dict[str, Any]) -> None:
    """The description inside the exported file too, so that a graph copied alone still says what it reads and
    gives: ONNX metadata (``onnxruntime``'s ``get_modelmeta().custom_metadata_map``), a TorchScript extra file
    (``torch.jit.load(path, _extra_files={key: ""})``), under :data:`~audiotune.outputs.EXPORT_DESCRIPTION_KEY`."""
    text = json.dumps(description)
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(path))
        entry = graph.metadata_props.add()
        entry.key, entry.value = EXPORT_DESCRIPTION_KEY, text
        onnx.save(graph, str(path))
    else:
        torch.jit.save(torch.jit.load(str(path), map_location="cpu"), str(path),
                       _extra_files={EXPORT_DESCRIPTION_KEY: text})


def _scores(head: HeadSpec, loss: str) -> str:
    """How ``evaluate`` turns a head's logits into the scores it reports (``scores_from_logits``)."""
    if head.is_distribution:
        return "softmax over the head's logits"
    if head.kind == "regression":
        return "logit * target_std + target_mean" if head.target_mean else "identity"
    return "identity" if loss == "MSE" else "sigmoid"


def _in_graph(features: InputSpec) -> dict[str, Any]:
    """The preprocessing steps the graph itself runs, with their settings."""
    if features.features == "waveform":
        return {"features": "waveform", "waveform_norm": "per clip over its real samples: (x - mean) / "
                "sqrt(var + 1e-7), padding kept 0" if features.waveform_norm else "none"}
    steps: dict[str, Any] = {"features": features.features}
    if features.features == "fbank":
        steps.update(num_mel_bins=features.num_mel_bins, **FBANK)
    else:
        steps.update(n_mfcc=features.n_mfcc, n_fft=features.n_fft, hop=features.n_fft // 2, n_mels=features.n_mels,
                     top_db=MFCC_TOP_DB)
    steps.update(utterance_norm=features.utterance_norm, dataset_mean=features.dataset_mean,
                 dataset_std=features.dataset_std, target_length=features.target_length or None)
    return steps


def sidecar(config: RunConfig, inputs: InputSpec, run_dir: Path, out: Path, fmt: str, merge: str,
            widths: list[int], equal_length: bool, differences: dict[str, float] | None,
            checked: list[list[int]]) -> dict[str, Any]:
    """What a deployment needs beside the graph: inputs, preprocessing, outputs, heads and classes."""
    heads = []
    for head, span in zip(config.heads, head_slices(config.heads)):
        entry: dict[str, Any] = {"name": head.name, "kind": head.kind, "columns": head.columns,
                                 "classes": head.classes, "outputs": head.output_names,
                                 "logits": [span.start, span.stop], "scores": _scores(head, config.train.loss)}
        if head.target_mean:
            entry.update(target_mean=head.target_mean, target_std=head.target_std)
        heads.append(entry)
    shortest, longest = sample_limits(config, inputs)
    pooled_kind = "wt" if config.classifier.weighted else "pt"
    return {
        "format": fmt, "file": out.name, "audiotune_version": __version__, "torch_version": torch.__version__,
        "exporter": "torch.onnx.export (dynamo)" if fmt == "onnx" else "torch.jit.trace",
        "opset": OPSET if fmt == "onnx" else None, "run": storage.remote_name(str(run_dir.resolve())),
        "model": config.model.model,
        "inputs": [
            {"name": INPUT_NAMES[0], "dtype": "float32", "shape": ["batch", "samples"],
             "description": "mono waveforms at sample_rate, zero-padded to the longest clip of the batch"},
            {"name": INPUT_NAMES[1], "dtype": "int64", "shape": ["batch"],
             "description": "real samples of each clip (its length before padding), one per waveform; a clip of "
                            "fewer than min_samples or more than max_samples (or than the padded width) gets NaN "
                            "outputs"},
        ],
        "sample_rate": inputs.resample_rate, "min_samples": shortest, "max_samples": longest,
        # padding changes these models' outputs: a clip's result is its own only in a batch of equal lengths
        "equal_length_batches": equal_length,
        "preprocessing": {
            "before_graph": "decode, map channels by channel_mode, resample to sample_rate (soxr), keep the first "
                            "clip_seconds (0: whole clips; with pad_clips a shorter clip is padded to them with "
                            "its mean), then with remove_dc subtract the clip's mean",
            "channel_mode": inputs.channel_mode, "channel_select": list(inputs.channel_select),
            "clip_seconds": inputs.eval_clip_length, "pad_clips": inputs.pad_clips, "remove_dc": inputs.remove_dc,
            "in_graph": _in_graph(inputs),
        },
        "outputs": [
            {"name": OUTPUT_NAMES[0], "dtype": "float32", "shape": ["batch", widths[0]],
             "columns": [name for head in config.heads for name in head.output_names]},
            {"name": OUTPUT_NAMES[1], "dtype": "float32", "shape": ["batch", widths[1]], "type": "ft",
             "merge": merge, "same_as": f"audiotune extract --embedding_type ft --pooling_mode {merge}"},
            {"name": OUTPUT_NAMES[2], "dtype": "float32", "shape": ["batch", widths[2]], "type": pooled_kind,
             "layer": None if config.classifier.weighted else config.classifier.layer,
             "pooling": config.classifier.pooling_mode,
             "same_as": f"audiotune extract --embedding_type {pooled_kind}"},
        ],
        "heads": heads,
        # evaluate re-estimates BatchNorm statistics on the rows it scores; a graph keeps the training ones
        "batchnorm": {"statistics": "training", "run_adapt_bn": config.train.adapt_bn,
                      "same_as": "audiotune evaluate --adapt_bn none"},
        "verified": None if differences is None else {"lengths": checked, "max_abs_difference": differences},
    }
