"""Shared fixtures: paths to the optional ../shared data, small generated audio."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """An ``xdist_group`` (the README's blocks) first, then the slow tests, the order otherwise kept: under
    ``pytest -n --dist loadfile`` (Makefile) the files of the long ones start at once and the short ones fill the
    workers in around them, rather than one long test ending the run alone."""
    items.sort(key=lambda item: (item.get_closest_marker("xdist_group") is None,
                                 item.get_closest_marker("slow") is None))


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory: pytest.TempPathFactory):
    """A feature and remote-file cache per test session (per xdist worker), not the user's ~/.cache/audiotune:
    no test reads what another run, or another worker, left there. A test may still point it elsewhere."""
    import os

    saved = os.environ.get("AUDIOTUNE_CACHE")
    os.environ["AUDIOTUNE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("AUDIOTUNE_CACHE", None)
    else:
        os.environ["AUDIOTUNE_CACHE"] = saved


def shared_path(relative: str) -> Path:
    """Path under ../shared, skipping the test with a clear message when it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data directory is absent)")
    return path


import json  # noqa: E402
import socket  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402


def tone(freq: float, seconds: float, rate: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A tone with harmonics, an envelope and a little noise: (samples,) or (samples, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3)) * np.hanning(len(t))
    wave = 0.3 * wave + 0.01 * rng.standard_normal(len(t))
    if channels > 1:
        wave = np.stack([wave * (1 + 0.1 * c) for c in range(channels)], axis=1)
    return wave.astype(np.float32)


def emotion_folds(root: Path, sessions: int = 3, per_session: int = 4,
                  name: str = "label_{}.json") -> tuple[Path, Path]:
    """A flat folder of wavs and one JSON split file per session (``name`` with its number), as the seed emotion
    recipe writes them: Test the session's utterances, Train every other session's, Val empty."""
    audio, folds = root / "wavs", root / "labels"
    audio.mkdir()
    folds.mkdir()
    names = {s: [f"Ses0{s}_{k}.wav" for k in range(per_session)] for s in range(1, sessions + 1)}
    label = {}
    for s, files in names.items():
        for k, wav in enumerate(files):
            sf.write(audio / wav, tone(300 + 500 * (k % 2), 0.5, 16000, seed=10 * s + k), 16000)
            label[wav] = ["sad", "happy"][k % 2]
    for s in names:
        (folds / name.format(s)).write_text(json.dumps({
            "Train": {n: label[n] for t, files in names.items() if t != s for n in files}, "Val": {},
            "Test": {n: label[n] for n in names[s]}}))
    return audio, folds


@pytest.fixture()
def uid_dataset(tmp_path: Path) -> dict:
    """A seed-layout dataset (see :func:`make_uid_dataset`) in the test's own folder."""
    return make_uid_dataset(tmp_path)


def make_uid_dataset(tmp_path: Path) -> dict:
    """A seed-layout dataset: PREFIX/UID/waveform.wav + metadata.json, split dir, label file.

    Two classes (low / high tone) as a categorical column ``pitch`` and binary columns ``loud``, ``long``;
    six subjects, 4 clips each, at 8 kHz (resampled to 16 kHz by the pipeline).
    """
    prefix = tmp_path / "audio"
    rows = []
    for s, subject in enumerate(["ann", "bob", "cat", "dan", "eve", "fay"]):
        for k in range(4):
            uid = f"{subject}{k}"
            high = k % 2
            loud = int(k >= 2)
            folder = prefix / uid
            folder.mkdir(parents=True)
            wave = tone(300 + 500 * high, 0.6 + 0.05 * k, 8000, seed=s * 10 + k) * (2.0 if loud else 1.0)
            sf.write(folder / "waveform.wav", wave, 8000)
            (folder / "metadata.json").write_text(json.dumps({"encoding": "WAV", "sample_rate_hz": 8000}))
            rows.append({"uid": uid, "subject": subject, "pitch": ["low", "high"][high], "loud": loud,
                         "long": int(k % 2 == 0)})
    table = pd.DataFrame(rows).set_index("uid")
    split = tmp_path / "split"
    split.mkdir()
    table[table.subject.isin(["ann", "bob", "cat", "dan"])].to_csv(split / "train.csv")
    table[table.subject == "eve"].to_csv(split / "val.csv")
    table[table.subject == "fay"].to_csv(split / "test.csv")
    labels = tmp_path / "labels.txt"
    labels.write_text("pitch\nloud,long\n")
    return {"prefix": prefix, "split": split, "labels": labels, "table": table, "root": tmp_path}


SMALL_ECAPA_SIZES = ["--channels", "16", "16", "48", "--kernel_sizes", "5", "3", "1", "--dilations", "1", "2", "1",
                     "--attention_channels", "8", "--se_channels", "8", "--res2net_scale", "2", "--lin_neurons", "16",
                     "--clf_bottleneck", "16"]
SMALL_ECAPA = [*SMALL_ECAPA_SIZES, "--features", "fbank", "--num_mel_bins", "24"]


HF_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (32, 32), "conv_kernel": (10, 3), "conv_stride": (5, 2),
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}
def save_hf_checkpoint(model, path: Path) -> Path:
    """A transformers model saved with a 16 kHz normalising feature extractor: a local directory that loads
    through the same ``from_pretrained`` path as a hub id."""
    import transformers

    model.save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                          return_attention_mask=True).save_pretrained(path)
    return path


HF_KINDS = {
    # name: (config class, extra config, padding changes scored results, feature extractor do_normalize / attention
    # mask)
    "w2v_group": ("Wav2Vec2Config", {"feat_extract_norm": "group", "do_stable_layer_norm": False}, False,
                  (True, False)),
    "w2v_layer": ("Wav2Vec2Config", {"feat_extract_norm": "layer", "do_stable_layer_norm": True}, False, (True, True)),
    "hubert": ("HubertConfig", {"feat_extract_norm": "layer", "do_stable_layer_norm": True}, False, (False, True)),
    "wavlm": ("WavLMConfig", {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "num_buckets": 32,
                              "max_bucket_distance": 100}, False, (True, True)),
    # data2vec-audio: always layer norm; num_conv_pos_embeddings is its number of positional conv layers
    "data2vec": ("Data2VecAudioConfig", {"num_conv_pos_embeddings": 3, "conv_pos_kernel_size": 5}, False,
                 (True, True)),
}
HF_RATE = 16000


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved tiny checkpoint directory (model + feature extractor) per kind."""
    import torch
    transformers = pytest.importorskip("transformers")

    root = tmp_path_factory.mktemp("hf")
    dirs = {}
    for name, (config_cls, extra, _, (normalize, attention)) in HF_KINDS.items():
        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(**{**HF_TINY, **extra})
        directory = root / name
        transformers.AutoModel.from_config(config).save_pretrained(directory)
        transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=HF_RATE, padding_value=0.0,
                                              do_normalize=normalize,
                                              return_attention_mask=attention).save_pretrained(directory)
        dirs[name] = directory
    return dirs


def small_train_args(ds: dict, out: Path, *extra: str) -> list[str]:
    """`audiotune train` on a :func:`make_uid_dataset` dataset with a small ECAPA-TDNN, one epoch."""
    return ["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
            *SMALL_ECAPA, "-e", "1", "-bs", "4", "--seed", "1", *extra]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One dataset and one finished small run per test module, for probes that only read them."""
    from audiotune.cli import main

    ds = make_uid_dataset(tmp_path_factory.mktemp("trained"))
    run = ds["root"] / "run"
    assert main(small_train_args(ds, run)) == 0
    return {**ds, "run": run}


def scores_of_run(trained_run: dict, run: Path, **data: str) -> Path:
    """A new folder ``run`` with the trained run's scores and its config, whose data section ``data`` changes."""
    import shutil

    import yaml

    run.mkdir()
    for name in ("metrics.json", "predictions.parquet"):
        shutil.copy(trained_run["run"] / name, run / name)
    config = yaml.safe_load((trained_run["run"] / "config.yaml").read_text())
    config["data"].update(data)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


# Google Cloud Storage on loopback: gs:// paths end to end against a real protocol, no mocks
BUCKET = "audiotune-test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The hub at a closed local port, an empty cache (yielded); offline mode as the environment says (unset)."""
    from huggingface_hub import constants

    from audiotune.models.backbones import hf_checkpoint

    hf_checkpoint._hub_reachable.cache_clear()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield tmp_path / "hub"
    hf_checkpoint._hub_reachable.cache_clear()  # the next test asks the hub anew


def _honour_preconditions() -> None:
    """Make the emulator answer ``ifGenerationMatch`` as Cloud Storage does (412 when the object's generation, 0
    for none, differs) on uploads and deletes: the create-only write that remote locks rely on."""
    from http import HTTPStatus

    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    if getattr(objects, "_preconditions", False):
        return

    def checked(handler):
        def handle(request, response, storage, *args, **kwargs):
            wanted = request.query.get("ifGenerationMatch")
            if wanted:
                name = request.params.get("object_id") or (request.query.get("name") or [None])[0] or \
                    request.data["meta"].get("name")
                try:
                    current = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
                except NotFound:
                    current = "0"
                if current != wanted[0]:
                    response.status = HTTPStatus.PRECONDITION_FAILED
                    return None
            return handler(request, response, storage, *args, **kwargs)
        return handle

    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in (objects.insert, objects.delete):
                handlers[method] = checked(handler)
    objects.insert, objects._preconditions = checked(objects.insert), True


def _serve(api) -> None:
    """The emulator's own request loop, polling for a stop every 10 ms rather than http.server's 0.5 s: each
    test that stops an emulator would otherwise wait half a second."""
    from http.server import HTTPServer

    from gcp_storage_emulator.server import RequestHandler

    api._httpd = HTTPServer((api._host, api._port), partial(RequestHandler, api._storage))
    api.is_running.set()
    api._httpd.serve_forever(poll_interval=0.01)


class Emulator:
    """gcp-storage-emulator in this process, with one bucket (generation preconditions honoured)."""

    def __init__(self, data_dir: Path) -> None:
        self.port, self.data_dir = _free_port(), data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        from gcp_storage_emulator.server import create_server

        _honour_preconditions()
        self.server = create_server("127.0.0.1", self.port, in_memory=False, data_dir=str(self.data_dir),
                                    default_bucket=BUCKET)
        self.server._api.run = partial(_serve, self.server._api)
        self.server.start()

    def fs(self):  # the file system audiotune itself uses
        from audiotune import storage

        return storage.filesystem(f"gs://{BUCKET}")[0]

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture()
def gcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    emulator = Emulator(tmp_path / "bucket")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    monkeypatch.setenv("AUDIOTUNE_CACHE", str(tmp_path / "cache"))
    yield emulator
    emulator.stop()


def write_metadata_lake(root: Path, records: list[dict], rate: int = 8000) -> Path:
    """The clinical seed layout: ``root/UID/metadata.json`` (each record as given, ``uid`` its folder) beside a
    short ``waveform.EXT`` (EXT from its ``encoding``: WAV, FLAC; ``waveform.wav`` without one)."""
    for number, record in enumerate(records):
        folder = root / record["uid"]
        folder.mkdir(parents=True, exist_ok=True)
        extension = {"FLAC": "flac"}.get(str(record.get("encoding", "")).upper(), "wav")
        sf.write(folder / f"waveform.{extension}", tone(200 + 50 * number, 0.5, rate, seed=number), rate)
        (folder / "metadata.json").write_text(json.dumps(record))
    return root


def read_report(path: Path) -> dict:
    """A report page's section ids, its <audio> elements and each embedded clip decoded: ``clips`` is a list of
    (uid of the clip's card, samples, rate)."""
    import base64
    import io
    from html.parser import HTMLParser

    found: dict = {"sections": [], "audio": 0, "clips": [], "svg": 0}

    class Reader(HTMLParser):
        uid = ""

        def handle_starttag(self, tag: str, attrs: list) -> None:
            attributes = dict(attrs)
            if tag == "section":
                found["sections"].append(attributes["id"])
            elif tag == "div" and attributes.get("class") == "clip":
                self.uid = attributes["data-uid"]
            elif tag == "svg":
                found["svg"] += 1
            elif tag == "audio":
                found["audio"] += 1
                data = base64.b64decode(attributes["src"].partition(",")[2])
                samples, rate = sf.read(io.BytesIO(data))
                found["clips"].append((self.uid, samples, rate))

    Reader().feed(Path(path).read_text())
    return found


def detected_and_aligned_taps(root: Path, plots: bool = True) -> Path:
    """Two short synthetic 8-channel tap recordings (examples/make_tap_data.py, with spurious touches) through
    `taps detect` and `taps align` (and their --plot): the folder of taps.csv, segments.csv and their pages."""
    import subprocess
    import sys

    from audiotune.cli import main

    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "examples" / "make_tap_data.py"),
                    "--out", str(root / "data"), "--recordings", "2", "--seconds", "10", "--spurious", "0.1",
                    "--seed", "3"], check=True, capture_output=True)
    recordings = sorted(str(p) for p in (root / "data" / "01.acoustic").glob("*.wav"))
    out = root / "out"
    plot = ["--plot", str(out / "plots")] if plots else []
    assert main(["taps", "detect", *recordings, "--out", str(out / "taps.csv"), "--release", "0.15", *plot]) == 0
    assert main(["taps", "align", str(out / "taps.csv"), "--touch_log",
                 str(root / "data" / "02.neonode" / "session_nnode.csv"), "--keys", str(root / "data" / "keys.csv"),
                 "--out", str(out / "segments.csv"), *plot]) == 0
    return out


def backbone_option_cases() -> list[tuple[str, object]]:
    """``(backbone, field)`` of every option every registered backbone declares (its settings dataclass)."""
    import dataclasses

    from audiotune.models import backbones

    return [(name, spec) for name, cls in backbones.options_classes().items() for spec in dataclasses.fields(cls)]


def non_default_value(backbone: str, spec) -> object:
    """A valid value of backbone option ``spec`` other than its default (another choice, the other boolean, a
    parquet path, a number one up)."""
    import typing

    from audiotune.config import default_of
    from audiotune.models import backbones

    default = default_of(spec)
    kind = typing.get_type_hints(backbones.options_classes()[backbone])[spec.name]
    if spec.metadata.get("choices"):
        return next(choice for choice in spec.metadata["choices"] if choice != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, list):
        return [item + 1 for item in default]
    if isinstance(default, str):
        return "frames.parquet"
    if float in (kind, *typing.get_args(kind)):
        return 0.25 if default != 0.25 else 0.5
    return (default or 1) + 1


# a Vertex AI tuning job's search space and its trials' command (`audiotune vertex tune`, `vertex results`)
VERTEX_SPACE = """metric: val_uar
goal: maximize
parameters:
  learning_rate: {type: double, min: 1.0e-5, max: 1.0e-3, scale: log}
  layer: {type: integer, min: 0, max: 12}
  clf_bottleneck: {type: discrete, values: [300, 700, 768]}
  pooling_mode: {type: categorical, values: [mean, max]}
"""
VERTEX_COMMAND = ["train", "--model", "hf", "-d", "gs://b/split", "-l", "gs://b/labels.txt", "-o",
                  "gs://b/runs/{trial}"]


def api_message(spec: dict, message) -> object:
    """A Vertex AI spec as the API's protobuf message: an unknown field or a wrong type is an error here."""
    from google.protobuf import json_format

    return json_format.ParseDict(spec, message.pb(message()))


import contextlib  # noqa: E402

import torch  # noqa: E402


class OnDevice(torch.Tensor):
    """A tensor that stands for one on an accelerator: every tensor computed from it is one too, and reading a value
    of one back on the host (``item``, ``tolist``, ``int``, ``bool``, ``numpy``, a copy to the CPU) raises, so a
    test shows that code queues its work without waiting for the device."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.__int__,
             torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__index__}
    readable = False  # within read_back(): where the code means to wait for the device

    @classmethod
    @contextlib.contextmanager
    def read_back(cls) -> Iterator[None]:
        cls.readable = True
        try:
            yield
        finally:
            cls.readable = False

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        to_cpu = func is torch.Tensor.to and any(isinstance(a, (str, torch.device)) and torch.device(a).type == "cpu"
                                                 for a in (*args[1:], *(kwargs or {}).values()))
        if not cls.readable and (func in cls.READS or to_cpu):
            raise AssertionError(f"read back from the device: {getattr(func, '__name__', func)}")
        return super().__torch_function__(func, types, args, kwargs)


def recorded_attention_masks(model: Any) -> list[Any]:
    """The ``attention_mask`` each later call of a transformers ``model`` is given (None where none is)."""
    masks: list[Any] = []
    forward = model.forward

    def recorded(*args: Any, **kwargs: Any) -> Any:
        masks.append(kwargs.get("attention_mask"))
        return forward(*args, **kwargs)

    model.forward = recorded
    return masks


def outputs_on_meta(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` of a transformers model that stands for one on an accelerator: it runs on the CPU, on ones in
    place of its ``meta`` inputs (an attention mask that attends everywhere), and gives every output tensor on the
    ``meta`` device, so a test shows which values computed from them stay on the device and which were made on the
    host."""
    def on_meta(*args: Any, **kwargs: Any) -> Any:
        def plain(value: object) -> object:
            return torch.ones(value.shape, dtype=value.dtype) if isinstance(value, torch.Tensor) and value.is_meta \
                else value
        out = forward(*map(plain, args), **{key: plain(value) for key, value in kwargs.items()})
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                out[key] = value.to("meta")
        return out

    return on_meta


def save_to_disk(folder: Path, paths: list[str], labels: list[int], names: list[str], audio_feature: bool) -> Path:
    """What ``datasets`` (2.10, the seed's) ``Dataset.save_to_disk`` wrote: an Arrow stream file, ``state.json``
    naming it and ``dataset_info.json`` with the label's ClassLabel names; the audio column a path string, or an
    ``Audio`` feature's ``{bytes, path}`` (create_dataset.py with --sample_rate)."""
    import pyarrow as pa

    folder.mkdir(parents=True)
    audio = pa.array([{"bytes": None, "path": p} for p in paths]) if audio_feature else pa.array(paths)
    features = {"audio": {"sampling_rate": 96000, "mono": False, "decode": True, "id": None, "_type": "Audio"}
                if audio_feature else {"dtype": "string", "id": None, "_type": "Value"},
                "label": {"num_classes": len(names), "names": names, "id": None, "_type": "ClassLabel"}}
    table = pa.table({"audio": audio, "label": pa.array(labels, pa.int64())}).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})})
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    (folder / "dataset_info.json").write_text(json.dumps({"citation": "", "description": "", "features": features}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                   "_fingerprint": "5c8ec6f9c8a1e3b2", "_format_columns": None,
                                                   "_format_kwargs": {}, "_format_type": None,
                                                   "_output_all_columns": False, "_split": None}))
    return folder


import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402


def wait_for_signal(seconds: float = 5.0) -> None:
    """Python runs a handler between bytecodes: sleep in short steps until it has run (or the time is up)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)


class SignalledWhileCollected:
    """An object whose finalizer is running when SIGTERM's handler runs: Python drops the handler's exception
    (``Exception ignored in ...``), as it may for a generator or an iterator collected at an epoch's end."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for_signal(1.0)


def sigterm_dropped(dropped: list) -> None:
    """SIGTERM reaches this process while a finalizer runs, so that its exception is dropped (into ``dropped``,
    the unraisable-exception hook's list)."""
    SignalledWhileCollected()  # collected at once
    assert dropped and isinstance(dropped[-1].exc_value, KeyboardInterrupt), "the exception was not dropped"


@pytest.fixture
def dropped(monkeypatch: pytest.MonkeyPatch) -> list:
    """What Python drops (its unraisable-exception hook's arguments), instead of printing it."""
    seen: list = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen
