"""Lightning checkpoints written complete or not at all (a full disk or a kill never leaves a truncated one), and
the weights that do not train written once beside them instead of into every checkpoint.

A run with a frozen encoder (``--freeze``, the default for a pretrained one) would otherwise write the encoder's
every weight into ``last.ckpt`` and ``best.ckpt`` at every epoch: 2 x 380 MB per epoch for wav2vec2-base, more
time than a cached epoch takes. Those weights go to ``checkpoints/frozen.safetensors`` (written when a
checkpoint first needs it, and again only if the set of frozen weights changes); each checkpoint records which
of its model states they were taken from, and reading a checkpoint (:func:`read_checkpoint`, and Lightning's own
``--resume`` through :class:`AtomicCheckpointIO`) puts them back, so that every reader sees whole states.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from safetensors.torch import save_file

from audiotune.atomic import atomic_path, refused
from audiotune.models.state_dict import load_safetensors, load_torch_file
from audiotune.outputs import FROZEN_WEIGHTS_FILE, LAST_CHECKPOINT

FROZEN_ENTRY = "frozen_weights"  # in a checkpoint: where its weights that do not train are, and which states held them
# the model states of a checkpoint: its weights, and with --ema the weights training goes on from (Lightning's
# weight averaging keeps the average in state_dict)
MODEL_STATES = ("state_dict", "current_model_state")


class RunCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose recorded checkpoints follow their run directory: a run copied or moved elsewhere
    resumes knowing its best epochs (Lightning restores them only in the folder they were written to; elsewhere it
    kept the old folder's path of the best file, which a copy still holds and a move does not)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        written_in = state_dict.get("dirpath")
        if self.dirpath and written_in and written_in != self.dirpath:
            def here(path: str) -> str:
                return str(Path(self.dirpath) / Path(path).name) if path else path  # type: ignore[arg-type]

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{key: here(state_dict.get(key) or "")
                             for key in ("best_model_path", "kth_best_model_path", "last_model_path")},
                          "best_k_models": {here(path): value
                                            for path, value in (state_dict.get("best_k_models") or {}).items()}}
        super().load_state_dict(state_dict)


def latest_checkpoint(checkpoint_dir: Path) -> ModelCheckpoint:
    """The callback that replaces ``checkpoint_dir/last.ckpt`` at every epoch's end. Lightning's own
    ``save_last`` writes it only when a best checkpoint is saved at the same step, so a run resumed from it
    would repeat every epoch since its best. Give it after the best-checkpoint callback (Lightning keeps their
    order): then last.ckpt holds the best epoch as this epoch's validation left it."""
    return RunCheckpoint(dirpath=checkpoint_dir, filename=Path(LAST_CHECKPOINT).stem, monitor=None, save_top_k=1,
                         enable_version_counter=False)


def set_frozen_aside(checkpoint: dict[str, Any], module: pl.LightningModule) -> None:
    """Move the module's parameters that do not train out of the checkpoint's model states into
    ``checkpoint[FROZEN_ENTRY]``, for :class:`AtomicCheckpointIO` to write once (call from the module's
    ``on_save_checkpoint``, which Lightning runs after the callbacks' own)."""
    names = [name for name, parameter in module.named_parameters() if not parameter.requires_grad]
    weights: dict[str, torch.Tensor] = {}
    states = []
    for entry in MODEL_STATES:
        state = checkpoint.get(entry)
        if isinstance(state, dict) and any(name in state for name in names):
            for name in names:
                if name in state:
                    weights.setdefault(name, state.pop(name))
            states.append(entry)
    if weights:
        checkpoint[FROZEN_ENTRY] = {"states": states, "weights": weights}


def with_frozen_weights(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``checkpoint`` (read from ``path``) with the weights it set aside put back into its model states from the
    frozen-weights file beside it; a checkpoint that set none aside is returned as it is."""
    aside = checkpoint.pop(FROZEN_ENTRY, None)
    if aside is None:
        return checkpoint
    source = Path(path).parent / aside["file"]
    if not source.is_file():
        raise FileNotFoundError(f"{path}: its weights that do not train are kept in {source}, which is missing; "
                                "copy the whole checkpoints folder")
    weights = load_safetensors(source)
    absent = [name for name in aside["keys"] if name not in weights]
    if absent:
        raise ValueError(f"{source}: lacks {len(absent)} of the weights {path} names (e.g. {absent[0]}); it belongs "
                         "to another run or training stage")
    for entry in aside["states"]:
        checkpoint[entry].update({name: weights[name] for name in aside["keys"]})
    return checkpoint


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint of this package read on the CPU (weights only) with whole model states."""
    return with_frozen_weights(load_torch_file(path), path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the checkpoint, renamed onto it when complete; the weights a
    checkpoint set aside (:func:`set_frozen_aside`) are written to the frozen-weights file beside it first."""

    def __init__(self) -> None:
        super().__init__()
        self._frozen_written: tuple[Path, tuple[str, ...]] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        aside = checkpoint.get(FROZEN_ENTRY)
        if aside is not None:
            checkpoint = {**checkpoint, FROZEN_ENTRY: {"file": FROZEN_WEIGHTS_FILE, "states": aside["states"],
                                                       "keys": sorted(aside["weights"])}}
            self._write_frozen(Path(path).parent / FROZEN_WEIGHTS_FILE, aside["weights"])
        with atomic_path(path) as partial:
            try:
                torch.save(checkpoint, partial)
            except RuntimeError as err:  # torch's archive writer reports a refused write as a RuntimeError
                raise refused(path, RuntimeError("the file system took only part of the checkpoint")) from err

    def _write_frozen(self, target: Path, weights: dict[str, torch.Tensor]) -> None:
        """Write the weights that do not train, unless this process wrote the same set there already (they do not
        change while they do not train)."""
        written = (target, tuple(sorted(weights)))
        if self._frozen_written == written and target.is_file():
            return
        with atomic_path(target) as partial:
            save_file({name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}, str(partial))
        self._frozen_written = written

    def load_checkpoint(self, path: Any, map_location: Any | None = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return with_frozen_weights(super().load_checkpoint(path, map_location=map_location,
                                                           weights_only=weights_only), path)
