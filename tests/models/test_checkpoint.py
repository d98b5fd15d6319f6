"""Rebuilding a trained classifier from its run directory: what a path that is no run directory is told."""
from __future__ import annotations

from pathlib import Path

import pytest

from audiotune.models.checkpoint import resolve_run_dir


def test_a_seed_experiment_folder_is_told_how_to_become_a_run(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    weights = exp / "split_3_adamw_epoch10_ecapa_tdnn_fbank_mdl.pt"
    weights.write_bytes(b"")
    (exp / "args.pkl").write_bytes(b"")
    for given in (weights, exp):  # the seeds' --trained_mdl_path, or its -o folder
        with pytest.raises(FileNotFoundError, match=f"{given}: not a run directory .*`audiotune import naip "
                                                    f"{weights} -o RUN`"):
            resolve_run_dir(given)
    with pytest.raises(FileNotFoundError, match=r"pass the --exp_dir of a training run$"):
        resolve_run_dir(tmp_path / "nothing")
