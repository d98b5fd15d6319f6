"""Who this process is in a multi-process run, read from what its launcher set, before any process group exists.

torchrun sets ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``, SLURM's srun ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS``,
and Lightning's own launcher starts the other processes of a node with ``LOCAL_RANK`` and tells each node's first
process its ``NODE_RANK``. Read by the engine (who writes a run directory, which device is whose) and by the
progress display and staging (only the first process of the whole run reports and uploads), and, for a run on
several machines, whether a launcher started it as one of them at all (:func:`check_nodes`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping


def _env_int(env: Mapping[str, str], *keys: str) -> int:
    """The first of ``keys`` set in ``env`` as an int (0 when none is)."""
    for key in keys:
        if env.get(key, "").strip():
            return int(env[key])
    return 0


# set on every machine of a run that Lightning's own launcher starts there (by hand, or from Vertex AI's CLUSTER_SPEC)
NODE_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK")


def _external_launcher(env: Mapping[str, str]) -> str | None:
    """``slurm`` or ``torchrun`` when that launcher started this process, detected as Lightning detects them
    (srun: ``SLURM_NTASKS`` outside an interactive job; torchrun: ``TORCHELASTIC_RUN_ID``), else None."""
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "slurm"
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    return None


def launched_rank_zero(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is (or will be) global rank 0, read before the process group exists.

    torchrun sets ``RANK``, srun ``SLURM_PROCID``; Lightning's own launcher starts the other processes of a node
    with ``LOCAL_RANK`` and each node's first process is told its ``NODE_RANK`` (or ``GROUP_RANK``). A process
    started by hand, with none of these, is rank 0.
    """
    env = os.environ if env is None else env
    launcher = _external_launcher(env)
    if launcher == "slurm":
        return _env_int(env, "SLURM_PROCID") == 0
    if launcher == "torchrun":
        return _env_int(env, "RANK") == 0
    return launched_node_rank(env) == 0 and _env_int(env, "LOCAL_RANK") == 0


def launched_local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's index on its node (which of the node's devices it drives), before the process group exists."""
    env = os.environ if env is None else env
    if _external_launcher(env) == "slurm":
        return _env_int(env, "SLURM_LOCALID")
    return _env_int(env, "LOCAL_RANK")


def launched_node_rank(env: Mapping[str, str] | None = None) -> int:
    """Which machine of the run this one is (``NODE_RANK``, or torchrun's ``GROUP_RANK``) outside srun, before the
    process group exists; 0 when neither is set."""
    env = os.environ if env is None else env
    return _env_int(env, "NODE_RANK", "GROUP_RANK")


def launched_world_size(env: Mapping[str, str] | None = None) -> int:
    """How many processes the launcher started in all (srun: ``SLURM_NTASKS``; torchrun and Lightning's launcher:
    ``WORLD_SIZE``), read before the process group exists; 1 when none did."""
    env = os.environ if env is None else env
    return max(_env_int(env, "SLURM_NTASKS" if _external_launcher(env) == "slurm" else "WORLD_SIZE"), 1)


def node_launcher(env: Mapping[str, str] | None = None) -> str | None:
    """What started this process as one machine of several: ``torchrun``, ``slurm`` (srun), ``env`` (the
    :data:`NODE_VARIABLES` set, ``GROUP_RANK`` standing for ``NODE_RANK``: Lightning's launcher on each machine), or
    None when nothing did."""
    env = os.environ if env is None else env
    launcher = _external_launcher(env)
    if launcher is not None:
        return launcher
    node_rank = env.get("NODE_RANK", "").strip() or env.get("GROUP_RANK", "").strip()
    return "env" if node_rank and all(env.get(key, "").strip() for key in NODE_VARIABLES[:2]) else None


def check_nodes(num_nodes: int, env: Mapping[str, str] | None = None) -> None:
    """Refuse ``--num_nodes`` above 1 in a process that no launcher started as one of several machines (a
    ValueError): it would wait for the other machines, which nothing starts, forever. So is a ``NODE_RANK`` beyond
    them."""
    if num_nodes > 1 and node_launcher(env) == "env" and launched_node_rank(env) >= num_nodes:
        raise ValueError(f"{NODE_VARIABLES[2]} {launched_node_rank(env)}: --num_nodes {num_nodes} numbers the machines "
                         f"0 to {num_nodes - 1}; give each machine its own")
    if num_nodes > 1 and node_launcher(env) is None:
        raise ValueError(f"--num_nodes {num_nodes}: nothing started this process as one of {num_nodes} machines, so "
                         f"it would wait forever for the others; run the same command on each machine with "
                         f"{', '.join(NODE_VARIABLES[:2])} (machine 0's address, a free port) and {NODE_VARIABLES[2]} "
                         f"(0 to {num_nodes - 1}) set, or start it with torchrun --nnodes {num_nodes} or srun; "
                         "--num_nodes 1 runs on this machine alone")
