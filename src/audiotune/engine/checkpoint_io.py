"""Lightning checkpoints written complete or not at all (a full disk or a kill never leaves a truncated one)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from audiotune.outputs import atomic_path, refused


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
