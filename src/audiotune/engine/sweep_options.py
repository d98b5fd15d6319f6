"""What ``audiotune sweep`` is asked for besides the space and the base config: how many trials, where the study
lives, how trials are pruned and how long a silent trial lives (the flags' defaults are these)."""
from __future__ import annotations

from dataclasses import dataclass

PRUNERS = ("median", "none")  # Optuna's MedianPruner, or none


@dataclass
class SweepOptions:
    trials: int = 10
    study_name: str = "audiotune"
    storage: str = ""  # default: sqlite:///SWEEP_DIR/study.db
    pruner: str = "median"  # one of PRUNERS
    prune_after: int = 2  # epochs every trial runs before it may be pruned
    startup_trials: int = 3  # finished trials before the median rule prunes anything
    heartbeat: int = 30  # seconds; a running trial silent for 2x this long is taken as dead
    max_failed: int = 0  # failed trials tolerated before the sweep stops with the last error
    seed: int = 0
