"""Who this process is, read from its launcher's variables before any process group exists."""
from __future__ import annotations

import json

import pytest

from audiotune import vertex
from audiotune.launch import check_nodes, launched_local_rank, launched_rank_zero, launched_world_size, node_launcher


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


TORCHRUN = {"TORCHELASTIC_RUN_ID": "x", "RANK": "2", "LOCAL_RANK": "0", "GROUP_RANK": "1", "WORLD_SIZE": "4",
            "MASTER_ADDR": "host0", "MASTER_PORT": "29500"}


@pytest.mark.parametrize(("env", "launcher"), [
    ({}, None),
    ({"MASTER_ADDR": "host0", "MASTER_PORT": "29500"}, None),  # which machine this is: nothing says
    ({"NODE_RANK": "1", "MASTER_PORT": "29500"}, None),  # where machine 0 is: nothing says
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "host0", "MASTER_PORT": "29500"}, None),  # Lightning reads no RANK
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_NAME": "bash"}, None),  # an interactive shell
    ({"MASTER_ADDR": "host0", "MASTER_PORT": "29500", "NODE_RANK": "1"}, "env"),
    ({"MASTER_ADDR": "host0", "MASTER_PORT": "29500", "GROUP_RANK": "0"}, "env"),
    (TORCHRUN, "torchrun"),
    ({"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_JOB_NAME": "train"}, "slurm"),
])
def test_what_started_a_process_as_one_of_several_machines(env: dict, launcher: str | None) -> None:
    assert node_launcher(env) == launcher
    check_nodes(1, env)  # one machine needs no launcher
    if launcher is None:
        with pytest.raises(ValueError, match=r"^--num_nodes 3: nothing started this process as one of 3 machines, so "
                                             r"it would wait forever .*MASTER_ADDR, MASTER_PORT .*NODE_RANK \(0 to 2\) "
                                             r"set, or start it with torchrun --nnodes 3 or srun; --num_nodes 1 runs"):
            check_nodes(3, env)
    else:
        check_nodes(3, env)


def test_a_machine_numbered_beyond_the_run_is_refused() -> None:
    env = {"MASTER_ADDR": "host0", "MASTER_PORT": "29500", "NODE_RANK": "2"}
    with pytest.raises(ValueError, match=r"^NODE_RANK 2: --num_nodes 2 numbers the machines 0 to 1; give each "):
        check_nodes(2, env)
    check_nodes(3, env)


def test_a_vertex_ai_replica_is_started_as_one_of_several_machines() -> None:
    """`audiotune vertex job --replicas N` adds --num_nodes N; each replica's command reads CLUSTER_SPEC into the
    variables of Lightning's launcher before it runs."""
    cluster = {"workerpool0": ["chief-0:2222"], "workerpool1": ["worker-0:2222"]}
    for task in ({"type": "workerpool0", "index": 0}, {"type": "workerpool1", "index": 0}):
        env = vertex.cluster_environment({"CLUSTER_SPEC": json.dumps({"cluster": cluster, "task": task})})
        assert node_launcher(env) == "env"
        check_nodes(2, env)
