"""Who this process is, read from its launcher's variables before any process group exists."""
from __future__ import annotations

import pytest

from audiotune.launch import launched_local_rank, launched_rank_zero, launched_world_size


@pytest.mark.parametrize(("env", "zero", "local"), [
    ({}, True, 0),
    ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, False, 1),  # Lightning's launcher, second process
    ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False, 0),  # first process of the second node
    ({"TORCHELASTIC_RUN_ID": "x", "RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "LOCAL_WORLD_SIZE": "2"},
     False, 1),
    ({"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "2"},
     True, 0),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_JOB_NAME": "train"}, False, 0),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_JOB_NAME": "train"}, True, 0),
    ({"SLURM_NTASKS": "1", "SLURM_PROCID": "3", "SLURM_JOB_NAME": "bash"}, True, 0),  # an interactive shell
])
def test_rank_zero_from_the_launcher_variables(env: dict, zero: bool, local: int) -> None:
    assert launched_rank_zero(env) is zero and launched_local_rank(env) == local


@pytest.mark.parametrize(("env", "size"), [({}, 1), ({"WORLD_SIZE": "4"}, 4),
                                           ({"SLURM_NTASKS": "3", "SLURM_JOB_NAME": "x", "WORLD_SIZE": "9"}, 3)])
def test_world_size_from_the_launcher_variables(env: dict, size: int) -> None:
    assert launched_world_size(env) == size
