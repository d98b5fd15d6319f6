"""The classifier's Lightning module: its training and validation steps queue their work on the device and read
nothing back from it per batch."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import OnDevice

from audiotune.config import ClassifierConfig, HeadSpec, TrainConfig
from audiotune.engine.module import ClassifierModule
from audiotune.models.backbones.ecapa import EcapaBackbone, EcapaOptions
from audiotune.models.classifier import Classifier

HEADS = [HeadSpec("word", "categorical", ["word"], ["a", "b", "c"]), HeadSpec("x+y", "binary", ["x", "y"]),
         HeadSpec("p+q", "soft", ["p", "q"], ["p", "q"]),
         HeadSpec("score", "regression", ["score"], target_mean=[1.0], target_std=[2.0])]
NAN = float("nan")
# one-hot word, binary x and y (y unlabelled in a row), soft votes (unlabelled in a row), score (unlabelled in a row)
TARGETS = torch.tensor([[1, 0, 0, 1, NAN, 0.25, 0.75, 2.0], [0, 1, 0, 0, 1, NAN, NAN, NAN],
                        [0, 0, 1, 1, 0, 1.0, 0.0, -1.0]])


def _module(monitor: str = "loss") -> tuple[ClassifierModule, dict]:
    torch.manual_seed(0)
    backbone = EcapaBackbone(EcapaOptions(12, lin_neurons=8, channels=(16, 16, 48), kernel_sizes=(5, 3, 1),
                                          dilations=(1, 2, 1), attention_channels=8, res2net_scale=2, se_channels=8))
    config = TrainConfig(monitor=monitor)
    module = ClassifierModule(Classifier(backbone, HEADS, ClassifierConfig(clf_bottleneck=5)), HEADS, config,
                              steps_per_epoch=2, class_weights={"word": {"a": 0.5, "b": 1.0, "c": 2.0}})
    module._trainer = SimpleNamespace(world_size=1, global_rank=0, training=False,  # type: ignore[assignment]
                                      optimizers=[SimpleNamespace(param_groups=[{"lr": 0.1}])])
    logged: dict = {}
    module.log = lambda name, value, **kwargs: logged.update({name: value})  # type: ignore[method-assign]
    return module, logged


def _batches(on_device: bool) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for index, rows in enumerate((slice(0, 2), slice(1, 3))):
        targets = TARGETS[rows]
        values = {"inputs": torch.randn(len(targets), 20, 12, generator=generator),
                  "lengths": torch.tensor([20, 14]), "targets": targets}
        if on_device:
            values = {key: value.as_subclass(OnDevice) for key, value in values.items()}
        batches.append({"uid": [f"b{index}r{row}" for row in range(len(targets))], **values})
    return batches


def test_a_training_step_reads_nothing_back_from_the_device() -> None:
    """ECAPA-TDNN's forward and the loss of every head kind (class-weighted CE, BCE with an unlabelled entry, soft
    vote shares, regression with an unlabelled row) are queued on the device; the loss is the same."""
    module, _ = _module()
    module.train()
    losses = []
    for on_device in (True, False):
        torch.manual_seed(2)  # the same dropout
        losses.append(module.training_step(_batches(on_device)[0], 0)["loss"])
    with OnDevice.read_back():
        assert torch.equal(*losses)


def test_validation_steps_read_back_once_when_the_epoch_ends() -> None:
    """Each validation batch's logits, targets and loss stay on the device; the epoch's end reads them all once and
    logs the same loss and monitored metric as from batches on the host."""
    logged = {}
    for on_device in (True, False):
        module, logged[on_device] = _module(monitor="macro_f1")
        module.eval()
        module.on_validation_epoch_start()
        with torch.inference_mode():
            for index, batch in enumerate(_batches(on_device)):
                module.validation_step(batch, index)
            with OnDevice.read_back():
                module.on_validation_epoch_end()
    assert set(logged[True]) == {"val_loss", "val_macro_f1"} and logged[True] == logged[False]


def test_a_validation_loss_that_is_not_finite_stops_the_epoch_naming_its_batch() -> None:
    module, _ = _module()
    module.eval()
    module.on_validation_epoch_start()
    batches = _batches(True)
    batches[1]["inputs"] = torch.full_like(batches[1]["inputs"], NAN).as_subclass(OnDevice)
    with torch.inference_mode():
        for index, batch in enumerate(batches):
            module.validation_step(batch, index)
        with OnDevice.read_back(), pytest.raises(FloatingPointError,
                                                 match=r"val loss is nan \(uids \['b1r0', 'b1r1'\]"):
            module.on_validation_epoch_end()
