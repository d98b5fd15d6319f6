"""``audiotune sweep``: hyperparameter search (Optuna); every trial a train run directory under -o."""
from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

from audiotune import storage, vertex
from audiotune.cli.command import Command
from audiotune.cli.config_args import apply_flags, config_from_args
from audiotune.cli.flags import ONE_PROCESS_NOTES, add_config_flags, add_path, declare_role
from audiotune.cli.show import quiet_lightning
from audiotune.cli.stages import (
    config_file_sections,
    given_options,
    keep_what_the_record_predates,
    own_idle_at_defaults,
    refuse_other_backbones,
)
from audiotune.cli.values import integer, options_of
from audiotune.config import RunConfig, check_config
from audiotune.engine.resume import refuse_head_options_of_runs, refuse_inactive_of_runs
from audiotune.engine.sweep_options import PRUNERS, SweepOptions
from audiotune.outputs import SWEEP_SPACE_FILE, SWEEP_TRIALS_TABLE
from audiotune.storage import Role, final_path

DEFAULTS = SweepOptions()  # the defaults the flags show


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_config_flags(parser, model=model, notes=ONE_PROCESS_NOTES,  # one process per trial
                     exp_dir="the sweep's folder: a run directory per trial, the study and the summary")
    declare_role(parser, "exp_dir", Role.LOCAL)  # its study database is shared by the processes of a running sweep
    options = parser.add_argument_group("sweep")
    add_path(options, "--space", role=Role.INPUT, required=True,
             help="search space YAML: metric (a validation metric, e.g. val_uar), goal, algorithm (bayesian, "
                  "random, grid) and parameters (the format of `audiotune vertex tune`)")
    options.add_argument("--trials", type=integer, default=DEFAULTS.trials,
                         help=f"finished (complete or pruned) trials to reach (default {DEFAULTS.trials})")
    options.add_argument("--pruner", choices=PRUNERS, default=DEFAULTS.pruner,
                         help=f"median: stop a trial whose best validation metric so far is worse than the median "
                              f"of earlier trials at the same epoch (Optuna's MedianPruner); none: never (default "
                              f"{DEFAULTS.pruner})")
    options.add_argument("--prune_after", "--prune-after", dest="prune_after", type=integer,
                         default=DEFAULTS.prune_after,
                         help=f"epochs every trial trains before it may be pruned (default {DEFAULTS.prune_after})")
    options.add_argument("--startup_trials", "--startup-trials", dest="startup_trials", type=integer,
                         default=DEFAULTS.startup_trials,
                         help=f"finished trials before any trial is pruned (default {DEFAULTS.startup_trials})")
    options.add_argument("--storage", default=DEFAULTS.storage,
                         help="Optuna storage URL shared by processes on several machines (default: sqlite "
                              "study.db in -o)")
    options.add_argument("--study_name", "--study-name", dest="study_name", default=DEFAULTS.study_name,
                         help=f"the study's name in the storage (default {DEFAULTS.study_name})")
    options.add_argument("--heartbeat", type=integer, default=DEFAULTS.heartbeat,
                         help=f"seconds between a running trial's signs of life; one silent for twice this long is "
                              f"run again (its process died; default {DEFAULTS.heartbeat})")
    options.add_argument("--max_failed", "--max-failed", dest="max_failed", type=integer,
                         default=DEFAULTS.max_failed,
                         help=f"failed trials tolerated before the sweep stops with the error (default "
                              f"{DEFAULTS.max_failed})")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    import pandas as pd

    from audiotune.engine.report import report_when_done
    from audiotune.engine.sweep import sweep

    quiet_lightning(args.verbose)
    if "exp_dir" not in vars(args):
        raise ValueError("give the sweep's folder with -o/--exp_dir (each trial is a run directory inside it)")
    space = vertex.read_space(args.space)
    # a recipe's value whose switch is off goes back to its default per trial: a trial's flags may turn it on
    base = config_from_args(args, own_idle=False)
    config_file, raw = config_file_sections(args)
    keep_what_the_record_predates(base, config_file, raw, given_options(args),
                                  storage.join(base.exp_dir, SWEEP_SPACE_FILE), "config")
    shared = own_idle_at_defaults(copy.deepcopy(base), config_file, raw, given_options(args))
    made = storage.isfile(storage.join(base.exp_dir, SWEEP_SPACE_FILE))  # a rerun goes on as it was made
    refuse_inactive_of_runs(shared, made)  # the flags all trials share, refused as train would
    refuse_head_options_of_runs(shared, made)
    parse = parser.parse_args

    def trial_config(flags: list[str]) -> RunConfig:
        vertex.check_command(["train", *flags], parse)  # a value the flag refuses: an error of this trial, not an exit
        trial = parse(["train", *flags])
        config = apply_flags(copy.deepcopy(base), trial)
        refuse_other_backbones(trial, config)  # as train refuses an option of another backbone than --model
        return check_config(own_idle_at_defaults(config, config_file, raw, given_options(args, trial), say=False))

    def refuse_of_trial(config: RunConfig) -> None:
        refuse_inactive_of_runs(config, made)
        refuse_head_options_of_runs(config, made)

    def configure(params: dict) -> RunConfig:
        return trial_config([f"--{name}={value}" for name, value in params.items()])

    logging.disable(logging.WARNING)  # the backbone's warnings of the same inputs: said by each trial
    try:  # every parameter is a train flag: a typo, a value out of range or one that acts nowhere in train fails
        # before any trial, as the trial's train would refuse it before writing
        vertex.check_space(space, args.space, lambda flags: refuse_of_trial(trial_config(flags)))
    finally:
        logging.disable(logging.NOTSET)

    options = options_of(SweepOptions, args, seed=base.data.seed)
    summary = sweep(base.exp_dir, space, configure, base, options, source=args.space)
    table = pd.read_csv(Path(base.exp_dir) / SWEEP_TRIALS_TABLE)
    columns = [c for c in table.columns if c not in ("error", "run_dir") and table[c].notna().any()]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    counts = ", ".join(f"{n} {state}" for state, n in summary["trials"].items() if n)
    print(f"trials: {counts}")
    if summary["best"]:
        best = summary["best"]
        print(f"best: trial {best['trial']}, {summary['metric']} {best['value']:.4f}, "
              + " ".join(f"--{k}={_flag_value(v)}" for k, v in best["params"].items()))
        if best["config"]:
            print(f"best config (for --config): {final_path(best['config'])}")
        else:
            print(f"best config: its run directory {best['run_dir']} is on the machine that ran it")
    print(f"sweep directory: {storage.final_place(base.exp_dir)}")
    if base.runtime.report:
        print(report_when_done(base.exp_dir))


def _flag_value(value: object) -> object:
    """A parameter's value as its flag takes it: a whole number drawn from a discrete list (floats, as Vertex AI
    passes them) written whole."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


COMMAND = Command(
    "sweep", "hyperparameter search (Optuna): every trial a train run directory under -o", arguments, run,
    description="Every flag other than the sweep's own is a train flag that all trials share; the space's "
                "parameters are train flags too. Run the same command again (or several at once, one per device) "
                "to continue the sweep.",
    after_interrupt="finished trials are kept; run the same command again to go on",
    examples="audiotune sweep --space space.yaml --trials 20 -o sweep -d split -l labels.txt\n"
             "audiotune train --config sweep/best_config.yaml -o best    (the best trial, trained again)")
