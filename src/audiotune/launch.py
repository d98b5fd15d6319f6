"""Who this process is in a multi-process run, read from what its launcher set, before any process group exists.

torchrun sets ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``, SLURM's srun ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS``,
and Lightning's own launcher starts the other processes of a node with ``LOCAL_RANK`` and tells each node's first
process its ``NODE_RANK``. Read by the engine (who writes a run directory, which device is whose) and by the
progress display and staging (only the first process of the whole run reports and uploads).
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
    return _env_int(env, "NODE_RANK", "GROUP_RANK") == 0 and _env_int(env, "LOCAL_RANK") == 0


def launched_local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's index on its node (which of the node's devices it drives), before the process group exists."""
    env = os.environ if env is None else env
    if _external_launcher(env) == "slurm":
        return _env_int(env, "SLURM_LOCALID")
    return _env_int(env, "LOCAL_RANK")


def launched_world_size(env: Mapping[str, str] | None = None) -> int:
    """How many processes the launcher started in all (srun: ``SLURM_NTASKS``; torchrun and Lightning's launcher:
    ``WORLD_SIZE``), read before the process group exists; 1 when none did."""
    env = os.environ if env is None else env
    return max(_env_int(env, "SLURM_NTASKS" if _external_launcher(env) == "slurm" else "WORLD_SIZE"), 1)
