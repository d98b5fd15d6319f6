"""--ema's average: the weights torch's AveragedModel gives, updated without reading a value back from the device."""
from __future__ import annotations

import torch
from conftest import OnDevice
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from audiotune.engine.averaging import QueuedAverage, QueuedEMA


def _trained_on(model: nn.Module) -> None:
    """One step's changes: new weights and BatchNorm statistics."""
    model.train()(torch.randn(5, 3))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))


def _on_device(average: QueuedAverage) -> QueuedAverage:
    average.n_averaged = average.n_averaged.as_subclass(OnDevice)  # the update count on the device, as in training
    return average


def _assert_same_average(ours: AveragedModel, torch_s: AveragedModel) -> None:
    with OnDevice.read_back():
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), torch_s.state_dict().values(),
                                                      strict=True))


def test_the_average_is_torch_s_and_its_updates_read_nothing_back_from_the_device() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))  # BatchNorm: buffers averaged too, a count among them
    ours, torch_s = (_on_device(QueuedAverage(model, avg_fn=get_ema_avg_fn(0.9))),
                     AveragedModel(model, avg_fn=get_ema_avg_fn(0.9)))
    for _ in range(3):
        _trained_on(model)
        ours.update_parameters(model)
        torch_s.update_parameters(model)
    _assert_same_average(ours, torch_s)
    # a resumed average reads its count once, then goes on averaging as torch's does
    resumed = QueuedAverage(model, avg_fn=get_ema_avg_fn(0.9))
    resumed.load_state_dict(torch_s.state_dict())
    _trained_on(model)
    with OnDevice.read_back():
        _on_device(resumed).update_parameters(model)
    torch_s.update_parameters(model)
    _trained_on(model)
    resumed.update_parameters(model)
    torch_s.update_parameters(model)
    _assert_same_average(resumed, torch_s)
    with OnDevice.read_back():
        assert int(resumed.n_averaged) == 5


def test_the_average_lives_on_the_device_the_strategy_trains_on() -> None:
    """Lightning's setup hook runs before the strategy moves the module (still on the CPU then): the average is built
    on the strategy's device, where each step's update stays."""
    from types import SimpleNamespace

    import pytorch_lightning as pl

    module = pl.LightningModule()
    module.layer = nn.Linear(2, 2)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))  # a device not the CPU
    ema = QueuedEMA(decay=0.9)
    ema.setup(trainer, module, "fit")  # type: ignore[arg-type]
    assert module.device.type == "cpu" and {p.device.type for p in ema._average_model.parameters()} == {"meta"}
