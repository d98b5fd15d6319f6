"""Lightning checkpoints written complete or not at all (a full disk or a kill never leaves a truncated one)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from audiotune.outputs import LAST_CHECKPOINT, atomic_path, refused


def latest_checkpoint(checkpoint_dir: Path) -> ModelCheckpoint:
    """The callback that replaces ``checkpoint_dir/last.ckpt`` at every epoch's end. Lightning's own
    ``save_last`` writes it only when a best checkpoint is saved at the same step, so a run resumed from it
    would repeat every epoch since its best. Give it after the best-checkpoint callback (Lightning keeps their
    order): then last.ckpt holds the best epoch as this epoch's validation left it."""
    return ModelCheckpoint(dirpath=checkpoint_dir, filename=Path(LAST_CHECKPOINT).stem, monitor=None, save_top_k=1,
                           enable_version_counter=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the checkpoint, renamed onto it when complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_path(path) as partial:
            try:
                torch.save(checkpoint, partial)
            except RuntimeError as err:  # torch's archive writer reports a refused write as a RuntimeError
                raise refused(path, RuntimeError("the file system took only part of the checkpoint")) from err
