"""Training checkpoints: the weights that do not train are written once beside them, and every reader of a
checkpoint (a resumed run, the best epoch's restore) sees whole model states."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import make_uid_dataset, small_train_args
from safetensors.torch import load_file

from audiotune.cli import main
from audiotune.engine.checkpoint_io import FROZEN_ENTRY, AtomicCheckpointIO, read_checkpoint, set_frozen_aside
from audiotune.models.state_dict import CheckpointReadError
from audiotune.outputs import CHECKPOINT_DIR, FROZEN_WEIGHTS_FILE, LAST_CHECKPOINT, MODEL_FILE


class Frozen(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 2)
        self.encoder.requires_grad_(False)


def test_a_checkpoint_names_its_frozen_weights_which_are_written_once_and_read_back(tmp_path: Path) -> None:
    module, io = Frozen(), AtomicCheckpointIO()
    whole = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    frozen = tmp_path / FROZEN_WEIGHTS_FILE

    def save(name: str) -> dict:
        checkpoint = {"state_dict": module.state_dict(), "epoch": 0}
        set_frozen_aside(checkpoint, module)
        io.save_checkpoint(checkpoint, tmp_path / name)
        return torch.load(tmp_path / name, weights_only=True)

    raw = save("a.ckpt")
    assert sorted(raw["state_dict"]) == ["head.bias", "head.weight"]
    assert raw[FROZEN_ENTRY] == {"file": FROZEN_WEIGHTS_FILE, "states": ["state_dict"],
                                 "keys": ["encoder.bias", "encoder.weight"]}
    assert sorted(load_file(frozen)) == ["encoder.bias", "encoder.weight"]
    written = frozen.stat().st_mtime_ns
    save("b.ckpt")
    assert frozen.stat().st_mtime_ns == written  # the same frozen weights: not written again
    for name in ("a.ckpt", "b.ckpt"):
        for read in (read_checkpoint(tmp_path / name), io.load_checkpoint(tmp_path / name, weights_only=True)):
            assert FROZEN_ENTRY not in read and read["state_dict"].keys() == whole.keys()
            assert all(torch.equal(read["state_dict"][k], whole[k]) for k in whole)
    module.head.requires_grad_(False)  # another set of weights stops training: written again, whole
    save("c.ckpt")
    assert sorted(load_file(frozen)) == ["encoder.bias", "encoder.weight", "head.bias", "head.weight"]
    trainable = Frozen().requires_grad_(True)
    checkpoint = {"state_dict": trainable.state_dict()}
    set_frozen_aside(checkpoint, trainable)
    assert FROZEN_ENTRY not in checkpoint and len(checkpoint["state_dict"]) == 4  # nothing frozen: a whole state


def test_a_checkpoint_without_its_frozen_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    module = Frozen()
    checkpoint = {"state_dict": module.state_dict()}
    set_frozen_aside(checkpoint, module)
    AtomicCheckpointIO().save_checkpoint(checkpoint, tmp_path / LAST_CHECKPOINT)
    frozen = tmp_path / FROZEN_WEIGHTS_FILE
    frozen.write_bytes(frozen.read_bytes()[:40])  # cut short
    with pytest.raises(CheckpointReadError, match=rf"{FROZEN_WEIGHTS_FILE}: cannot be read as safetensors"):
        read_checkpoint(tmp_path / LAST_CHECKPOINT)
    frozen.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{LAST_CHECKPOINT}: its weights that do not train are kept in "
                                                rf".*{FROZEN_WEIGHTS_FILE}, which is missing"):
        read_checkpoint(tmp_path / LAST_CHECKPOINT)


@pytest.mark.slow
@pytest.mark.parametrize("ema", [False, True])
def test_a_frozen_encoder_run_resumes_from_checkpoints_without_its_weights(
        uid_dataset: dict, hf_checkpoints: dict[str, Path], tmp_path: Path, ema: bool) -> None:
    """A pretrained encoder is frozen by default: its weights are written once, not into each epoch's checkpoints;
    the checkpoint read back is the run's whole model, and a resumed run continues from it."""
    import json

    run = tmp_path / "run"

    def train(*extra: str) -> None:
        assert main(["train", "--model", "hf", "-c", str(hf_checkpoints["w2v_layer"]), "-i", str(uid_dataset["prefix"]),
                     "-d", str(uid_dataset["split"]), "-l", str(uid_dataset["labels"]), "-o", str(run), "-bs", "4",
                     "--seed", "3", "--clf_bottleneck", "8", *(("--ema", "0.5") if ema else ()), *extra]) == 0

    train("-e", "1")
    checkpoints = run / CHECKPOINT_DIR
    frozen = load_file(checkpoints / FROZEN_WEIGHTS_FILE)
    saved = torch.load(checkpoints / LAST_CHECKPOINT, weights_only=True)
    assert frozen and all(name.startswith("model.backbone.") for name in frozen)
    assert saved["state_dict"] and not set(frozen) & set(saved["state_dict"])  # the head's weights only
    whole = read_checkpoint(checkpoints / LAST_CHECKPOINT)
    model = load_file(run / MODEL_FILE)  # the one epoch's weights (with --ema, their average)
    assert whole["state_dict"].keys() == {f"model.{name}" for name in model}
    assert all(torch.equal(whole["state_dict"][f"model.{name}"], tensor) for name, tensor in model.items())
    if ema:  # the weights training goes on from, whole too
        assert whole["current_model_state"].keys() == whole["state_dict"].keys()
    train("-e", "2", "--resume")
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    resumed = load_file(run / MODEL_FILE)
    assert all(torch.equal(resumed[name.removeprefix("model.")], tensor) for name, tensor in frozen.items())


@pytest.mark.parametrize("how", ["copied", "moved"])
def test_a_run_copied_or_moved_elsewhere_resumes_knowing_its_best_epoch(tmp_path: Path, how: str) -> None:
    """The checkpoints record the folder they were written in; a run resumed in another folder keeps its best
    epoch's weights and score (a copy stopped on a missing score, a moved run silently kept its last epoch)."""
    ds = make_uid_dataset(tmp_path)
    first, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    assert main(small_train_args(ds, first, "-e", "2", "--save_top_k", "2")) == 0
    selection = json.loads((first / "metrics.json").read_text())["selection"]
    (shutil.copytree if how == "copied" else shutil.move)(first, elsewhere)
    assert main(small_train_args(ds, elsewhere, "-e", "2", "--save_top_k", "2", "--resume")) == 0
    metrics = json.loads((elsewhere / "metrics.json").read_text())
    assert metrics["weights"].startswith("best validation") and str(elsewhere / CHECKPOINT_DIR) in metrics["weights"]
    assert metrics["selection"] == selection
