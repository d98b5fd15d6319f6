"""Every command runs on the device it is given: device resolution, autocast, batch moves, pinned loaders,
and the commands end to end with --accelerator cpu (runs) and --accelerator gpu (a clear error on this machine).

CUDA is never touched: where a test needs "a machine with GPUs" it patches ``torch.cuda.is_available`` and
``torch.cuda.device_count``, and it proves that models and batches move by resolving to the ``meta`` device.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL_ECAPA
from safetensors.torch import load_file
from torch import nn

from audiotune.cli import build_parser, config_from_args, main
from audiotune.config import RunConfig
from audiotune.data.dataset import AudioDataset
from audiotune.data.input_spec import InputSpec
from audiotune.data.loader_plan import pins_memory
from audiotune.data.loading import make_loader
from audiotune.engine import device as device_module
from audiotune.engine import inference
from audiotune.engine.cache import CachedDataset, cached_loader
from audiotune.engine.device import (
    autocast,
    check_precision,
    lightning_precision,
    move_batch,
    parse_devices,
    resolve_device,
)
from audiotune.engine.trainer import Float32Products, trainer_precision


@pytest.fixture()
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with neither CUDA nor MPS (whatever this one has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


@pytest.fixture()
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that reports two CUDA devices (nothing ever runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


# ---------------------------------------------------------------- resolve_device

def test_cpu_and_auto_without_a_gpu_are_the_cpu(no_gpu: None) -> None:
    assert resolve_device("cpu", "auto") == torch.device("cpu")
    assert resolve_device("auto", "auto") == torch.device("cpu")
    assert resolve_device("CPU", "4") == torch.device("cpu")  # Lightning's CPU process count is not an index


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_request_without_cuda_is_a_clear_error(no_gpu: None, accelerator: str) -> None:
    with pytest.raises(ValueError, match=rf"--accelerator {accelerator}: no CUDA GPU is available.*--accelerator cpu"):
        resolve_device(accelerator, "auto")


def test_mps_request_without_mps_is_a_clear_error(no_gpu: None) -> None:
    with pytest.raises(ValueError, match="--accelerator mps: the MPS backend"):
        resolve_device("mps", "auto")


@pytest.mark.parametrize(("accelerator", "devices", "expected"), [
    ("auto", "auto", "cuda:0"), ("gpu", "auto", "cuda:0"), ("cuda", "1", "cuda:0"), ("auto", "2", "cuda:0"),
    ("auto", "-1", "cuda:0"), ("gpu", "0,1", "cuda:0"), ("gpu", "1,0", "cuda:1"), ("gpu", "[1]", "cuda:1"),
    ("gpu", "1,", "cuda:1"), ("cuda", "[0, 1]", "cuda:0"),
])
def test_gpu_index_is_the_first_listed_one(two_gpus: None, accelerator: str, devices: str, expected: str) -> None:
    assert resolve_device(accelerator, devices) == torch.device(expected)


def test_cpu_stays_cpu_on_a_gpu_machine(two_gpus: None) -> None:
    assert resolve_device("cpu", "auto") == torch.device("cpu")


def test_each_ddp_process_keeps_its_own_gpu(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    config = RunConfig()
    config.runtime.devices = "0,1"
    assert inference.inference_device(config) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # what Lightning set for rank 1
    assert inference.inference_device(config) == torch.device("cuda", 1)
    config.runtime.accelerator = "cpu"
    assert inference.inference_device(config) == torch.device("cpu")


@pytest.mark.parametrize(("devices", "local_rank", "expected"), [("2", "1", 1), ("auto", "1", 1), ("2,3", "1", 3),
                                                                  ("[3]", "0", 3)])
def test_a_launched_process_encodes_on_its_own_gpu(two_gpus: None, monkeypatch: pytest.MonkeyPatch, devices: str,
                                                   local_rank: str, expected: int) -> None:
    """Before Lightning starts (the feature cache), process LOCAL_RANK takes the device Lightning will give it."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    config = RunConfig()
    config.runtime.devices = devices
    assert inference.inference_device(config) == torch.device("cuda", expected)


@pytest.mark.parametrize(("devices", "message"), [
    ("[2]", "CUDA device index 2 does not exist .2 CUDA device.s. visible: indices 0..1"),
    ("0,3", "CUDA device index 3 does not exist"),
    ("3", "3 CUDA devices asked for, 2 visible"),
    ("0", "a count must be at least 1"),
    ("two", "expected auto, a count"),
    ("[-1]", "expected auto, a count"),
])
def test_bad_devices_are_clear_errors(two_gpus: None, devices: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_device("gpu", devices)


def test_unknown_accelerator_and_malformed_devices_on_cpu(no_gpu: None) -> None:
    with pytest.raises(ValueError, match="--accelerator 'tpu': choose one of auto, cpu, gpu, cuda, mps"):
        resolve_device("tpu", "auto")
    with pytest.raises(ValueError, match="--devices 'x'"):
        resolve_device("cpu", "x")


def test_parse_devices_gives_lightning_values() -> None:
    assert parse_devices("auto") == "auto" and parse_devices("2") == 2 and parse_devices("-1") == -1
    assert parse_devices("0,1") == [0, 1] and parse_devices("[1]") == [1] and parse_devices(" [0, 2] ") == [0, 2]


# ---------------------------------------------------------------- autocast, move_batch, pinned memory

def test_autocast_bf16_follows_the_device_type() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "32"):
        assert not torch.is_autocast_enabled("cpu")
        assert (a @ b).dtype == torch.float32
    with warnings.catch_warnings():  # a CPU-only build warns that CUDA autocast would be disabled
        warnings.simplefilter("ignore")
        cuda_context = autocast(torch.device("cuda", 1), "bf16")
    assert isinstance(cuda_context, torch.autocast)
    assert cuda_context.device == "cuda" and cuda_context.fast_dtype == torch.bfloat16


def test_autocast_16_is_float16_on_the_device_type() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    for precision in ("16", "16-mixed"):
        with autocast(torch.device("cpu"), precision):
            assert (a @ b).dtype == torch.float16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cuda_context = autocast(torch.device("cuda", 0), "16")
    assert isinstance(cuda_context, torch.autocast) and cuda_context.fast_dtype == torch.float16


# ---------------------------------------------------------------- precision

def test_the_seeds_precision_16_is_lightnings_16_mixed() -> None:
    from audiotune.cli import build_parser, config_from_args

    parsed = {}
    for precision in ("16", "16-mixed", "bf16", "32"):
        args = build_parser().parse_args(["train", "-d", "split", "-o", "run", "--precision", precision])
        config = config_from_args(args)
        parsed[precision] = (config.runtime.precision, trainer_precision(config.runtime))
    assert parsed == {"16": ("16", "16-mixed"), "16-mixed": ("16-mixed", "16-mixed"),
                      "bf16": ("bf16", "bf16-mixed"), "32": ("32", "32-true")}
    assert lightning_precision("16") == "16-mixed"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--precision", "8"])


def _products() -> tuple[str, bool]:
    return torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32


def test_tf32_computes_float32_products_in_tensorfloat32_on_a_cuda_gpu_only_and_puts_the_settings_back() -> None:
    before = _products()
    assert trainer_precision(config_from_args(build_parser().parse_args(
        ["train", "-d", "split", "-o", "run", "--precision", "tf32"])).runtime) == "32-true"
    torch.backends.cudnn.allow_tf32 = False
    try:
        with autocast(torch.device("cuda", 0), "tf32"):  # the settings only: no kernel runs here
            assert _products() == ("high", True)
        assert _products() == (before[0], False)
        with pytest.raises(RuntimeError), autocast(torch.device("cuda", 0), "tf32"):
            raise RuntimeError("a failed batch")
        assert _products() == (before[0], False)
        for device, precision in ((torch.device("cpu"), "tf32"), (torch.device("mps"), "tf32"),
                                  (torch.device("cuda", 0), "32")):
            with autocast(device, precision):
                assert _products() == (before[0], False), (device, precision)
    finally:
        torch.backends.cudnn.allow_tf32 = before[1]


def test_a_fit_at_tf32_on_a_cuda_gpu_computes_in_tensorfloat32_from_its_setup_to_its_teardown() -> None:
    before = _products()
    fit = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    callback = Float32Products("tf32")
    callback.setup(fit, None, "fit")
    try:
        assert _products()[0] == "high"
    finally:
        callback.teardown(fit, None, "fit")
    assert _products() == before
    cpu = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    callback.setup(cpu, None, "fit")
    assert _products() == before
    callback.teardown(cpu, None, "fit")


def test_tf32_on_the_cpu_trains_as_32(uid_dataset: dict, tmp_path: Path) -> None:
    """Elsewhere than on a CUDA GPU, tf32 is float32 throughout: the same weights as 32."""
    weights = {}
    for precision in ("32", "tf32"):
        run = tmp_path / precision
        assert main(["train", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-l",
                     str(uid_dataset["labels"]), "-o", str(run), "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "2",
                     "--accelerator", "cpu", "--seed", "3", "--precision", precision]) == 0
        weights[precision] = load_file(run / "model.safetensors")
    assert weights["32"].keys() == weights["tf32"].keys()
    assert all(torch.equal(weights["32"][k], weights["tf32"][k]) for k in weights["32"])


def test_16_bit_mixed_precision_needs_a_gpu() -> None:
    for precision in ("16", "16-mixed"):
        with pytest.raises(ValueError, match=f"--precision {precision}: 16-bit mixed precision .* needs a GPU, and "
                                             "this command runs on the CPU; use --precision bf16"):
            check_precision(torch.device("cpu"), precision)
        check_precision(torch.device("cuda", 0), precision)
        check_precision(torch.device("mps"), precision)
    check_precision(torch.device("cpu"), "bf16")
    check_precision(torch.device("cpu"), "32")


def test_train_and_cv_with_16_bit_precision_on_the_cpu_fail_before_writing(
        uid_dataset: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = uid_dataset
    for command in ("train", "cv"):
        out = tmp_path / command
        assert main([command, "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o",
                     str(out), "--model", "ecapa_tdnn", *SMALL_ECAPA, "--accelerator", "cpu",
                     "--precision", "16"]) == 2
        assert "--precision 16: 16-bit mixed precision" in capsys.readouterr().err and not out.exists(), command


def test_move_batch_moves_tensors_only() -> None:
    uids = ["a", "b"]
    batch = {"inputs": torch.ones(2, 3), "lengths": torch.tensor([3, 2]), "uid": uids, "note": 7}
    moved = move_batch(batch, torch.device("meta"))
    assert moved["inputs"].device.type == "meta" and moved["lengths"].device.type == "meta"
    assert moved["lengths"].dtype == torch.long and moved["inputs"].shape == (2, 3)
    assert moved["uid"] is uids and moved["note"] == 7
    assert batch["inputs"].device.type == "cpu"  # the caller's batch is left as it was


class _OnSecondGpu:
    """Stands for a result on ``cuda:1``: where its copy to the host is queued (nothing runs on a GPU)."""

    device = torch.device("cuda", 1)

    def detach(self) -> _OnSecondGpu:
        return self

    def float(self) -> _OnSecondGpu:
        return self

    def to(self, target: str, non_blocking: bool = False) -> torch.Tensor:
        assert target == "cpu" and non_blocking
        return torch.zeros(2)


def test_a_result_on_another_gpu_than_the_current_one_is_waited_for_on_its_own_gpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--devices 1 runs on cuda:1 while cuda:0 stays torch's current device: the copy is queued on cuda:1's
    stream, and the event that says it has landed is recorded there (on cuda:0's it would fire at once)."""
    recorded: list[object] = []

    class Event:
        def record(self, stream: object = None) -> None:
            recorded.append(stream)

        def synchronize(self) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream of", device))
    landed = device_module.to_host(_OnSecondGpu())  # type: ignore[arg-type]
    assert recorded == [("stream of", torch.device("cuda", 1))]
    assert torch.equal(landed(), torch.zeros(2))

def test_pin_memory_only_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pins_memory(torch.device("cuda", 0)) and not pins_memory(torch.device("cpu"))
    config = RunConfig()
    items = AudioDataset(pd.DataFrame({"path": ["a.wav"]}, index=["a"]), np.zeros((1, 0), np.float32),
                         InputSpec(features="waveform"))  # never read: only the loader's settings are looked at
    cached = CachedDataset(pd.DataFrame(index=["a"]), np.zeros((1, 1), np.float32), Path("."), ["x"])
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not make_loader(config, items, None, train=False,
                           device=inference.inference_device(config)).pin_memory
    assert not cached_loader(config, cached, train=False).pin_memory
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert make_loader(config, items, None, train=False,
                       device=inference.inference_device(config)).pin_memory
    assert cached_loader(config, cached, train=False).pin_memory
    config.runtime.accelerator = "cpu"  # a GPU machine asked for the CPU: nothing to pin for
    assert not make_loader(config, items, None, train=False,
                           device=inference.inference_device(config)).pin_memory


class _Probe(nn.Module):
    """A one-layer model with the Classifier's ``forward_batch``; remembers where its inputs were."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.input_devices: list[torch.device] = []

    def forward_batch(self, batch: dict) -> torch.Tensor:
        self.input_devices.append(batch["inputs"].device)
        return self.linear(batch["inputs"])


def test_iterate_batches_moves_model_and_batches_to_the_resolved_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "resolve_device", lambda accelerator, devices: torch.device("meta"))
    computed: list[torch.Tensor] = []  # what goes back to the host (a meta tensor has nothing to copy)
    monkeypatch.setattr(inference, "to_host", lambda tensor: computed.append(tensor) or (lambda: tensor))
    model = _Probe()
    loader = [{"inputs": torch.ones(2, 3), "targets": torch.zeros(2, 2), "uid": ["a", "b"]}] * 2
    outputs = [out for _, out in inference.iterate_batches(model, loader, RunConfig())]
    assert model.linear.weight.device.type == "meta" and not model.training
    assert [d.type for d in model.input_devices] == ["meta", "meta"]
    assert len(outputs) == 2 and all(out.device.type == "meta" and out.shape == (2, 2) for out in computed)


class _Batches:
    """A loader that notes when its iterator (its workers) starts."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def __len__(self) -> int:
        return 2

    def __iter__(self):  # noqa: ANN204
        self.events.append("workers start")
        return iter([{"inputs": torch.ones(2, 3), "targets": torch.zeros(2, 2), "uid": ["a", "b"]}] * 2)


def test_the_loaders_workers_start_before_the_model_moves_to_the_device() -> None:
    """The first batches are decoded while the weights are copied to the device (and the device starts up)."""
    events: list[str] = []
    model = _Probe()
    moved = model.to
    model.to = lambda *args, **kwargs: events.append("model moves") or moved(*args, **kwargs)  # type: ignore[method-assign]
    outputs = [out for _, out in inference.iterate_batches(model, _Batches(events), RunConfig())]
    assert events == ["workers start", "model moves"] and len(outputs) == 2


def test_predict_on_cpu_autocasts_and_returns_float32_numpy() -> None:
    config = RunConfig()
    config.runtime.accelerator, config.runtime.precision = "cpu", "bf16"
    model = _Probe()
    loader = [{"inputs": torch.randn(2, 3), "targets": torch.ones(2, 2), "uid": ["a", "b"]}]
    uids, logits, targets = inference.predict(model, loader, config)
    assert uids == ["a", "b"] and logits.dtype == np.float32 and targets.dtype == np.float32
    expected = model.linear(loader[0]["inputs"]).detach().numpy()
    assert not np.array_equal(logits, expected)  # bf16 autocast was on
    np.testing.assert_allclose(logits, expected, atol=0.05)


# ---------------------------------------------------------------- commands end to end

def _without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


@pytest.mark.slow
def test_evaluate_and_extract_on_cpu_and_refusing_a_missing_gpu(uid_dataset: dict, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    ds, run = uid_dataset, tmp_path / "run"
    assert main(["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(run),
                 "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "1", "-bs", "4", "--seed", "3",
                 "--accelerator", "cpu", "--devices", "1"]) == 0
    test_csv = ds["split"] / "test.csv"
    assert main(["evaluate", "--run", str(run), "-d", str(test_csv), "-o", str(tmp_path / "ev"),
                 "--accelerator", "cpu", "--devices", "1"]) == 0
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())["data"]
    assert again["accuracy"] == json.loads((run / "metrics.json").read_text())["test"]["accuracy"]

    def embeddings(name: str, *extra: str) -> np.ndarray:
        out = tmp_path / name
        assert main(["extract", "--run", str(run), "-d", str(test_csv), "--out", str(out), "--embedding_type", "pt",
                     "--accelerator", "cpu", *extra]) == 0
        return np.stack(pd.read_parquet(out).sort_values("uid")["embedding"].to_numpy())

    fp32, bf16 = embeddings("fp32.parquet"), embeddings("bf16.parquet", "--precision", "bf16")
    assert fp32.shape == bf16.shape == (4, 16) and np.isfinite(bf16).all()
    assert not np.array_equal(fp32, bf16)  # --precision bf16 reached the autocast
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99
    assert "accelerator: cpu" in (run / "config.yaml").read_text()  # overrides never rewrite the run

    _without_gpu(monkeypatch)
    capsys.readouterr()
    for command, flag, target in (("evaluate", "-o", "ev"), ("extract", "--out", "emb.parquet")):
        out = tmp_path / "gpu" / target
        assert main([command, "--run", str(run), "-d", str(test_csv), flag, str(out), "--accelerator", "gpu"]) == 2
        assert "--accelerator gpu: no CUDA GPU is available" in capsys.readouterr().err
        assert not (tmp_path / "gpu").exists(), command


def test_train_and_stats_gpu_request_fail_before_writing(uid_dataset: dict, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    _without_gpu(monkeypatch)
    ds = uid_dataset
    assert main(["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]),
                 "-o", str(tmp_path / "run"), "--model", "ecapa_tdnn", *SMALL_ECAPA, "--accelerator", "gpu"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main(["stats", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "--features", "fbank",
                 "--accelerator", "cuda", "--out", str(tmp_path / "stats.json")]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err and not (tmp_path / "stats.json").exists()
    assert main(["stats", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "--features", "fbank",
                 "--num_mel_bins", "24", "--accelerator", "cpu", "--out", str(tmp_path / "stats.json")]) == 0
    assert json.loads((tmp_path / "stats.json").read_text())["dataset_std"] > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
def test_attention_on_cpu_and_gpu_request(uid_dataset: dict, hf_checkpoints: dict, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    ds, run = uid_dataset, tmp_path / "run"
    assert main(["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(run),
                 "--model", "hf", "-c", str(hf_checkpoints["w2v_layer"]), "-e", "1", "-bs", "4",
                 "--clf_bottleneck", "8", "--cache_dir", str(tmp_path / "cache"), "--accelerator", "cpu"]) == 0
    audio = str(ds["prefix"] / "fay0" / "waveform.wav")
    assert main(["attention", "--run", str(run), "--audio", audio, "-o", str(tmp_path / "maps"),
                 "--accelerator", "cpu", "--precision", "bf16"]) == 0
    assert (tmp_path / "maps" / "attention_rollout.png").is_file()
    _without_gpu(monkeypatch)
    assert main(["attention", "--run", str(run), "--audio", audio, "-o", str(tmp_path / "gpu_maps"),
                 "--accelerator", "gpu"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err and not (tmp_path / "gpu_maps").exists()
