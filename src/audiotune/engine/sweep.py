"""``audiotune sweep``: hyperparameter search with Optuna, every trial an ordinary ``audiotune train`` run.

Layout of ``SWEEP_DIR``::

    sweep.yaml             the search space, the pruning settings and the config every trial starts from (a rerun
                           must match)
    study.db               the Optuna study (SQLite), unless --storage names another database
    trial_N/               `audiotune train` run directory of trial N
    sweep_trials.csv       one row per trial: state, value, parameters, epochs, seconds, feature-cache use
    sweep_summary.json     the best trial, its value and parameters, and the trials per state
    best_config.yaml       the best trial's config without its run directory: ``audiotune train --config``

The space is the YAML of ``audiotune vertex tune`` (:func:`audiotune.vertex.read_space`): ``metric`` is a
validation metric that ``--monitor`` knows (``val_uar``, ``val_loss``, ...), and every trial trains with
``--monitor`` set to it, so the best epoch, early stopping, pruning and the trial's value all use the same
number. Test metrics cannot be tuned on.

- Resumable: the study lives in a database; the same command started again carries on until ``--trials``
  trials are finished (complete or pruned). Several processes (one per GPU, or one per machine sharing a
  database server through ``--storage``) may run the same sweep at once: each asks the study for the next
  trial. A trial whose process died is noticed by its missing heartbeat and run again, with the same
  parameters, in its first run directory, resuming from its last checkpoint.
- Pruning: after every validation epoch the trial reports the metric; Optuna's median rule stops trials that
  are worse than the median of earlier trials at the same epoch. A pruned trial still ends as a complete run
  directory (its best epoch so far is kept, evaluated and written); the study records it as pruned.
- Frozen-encoder trials share the feature cache (``--cache_dir``, default ``$AUDIOTUNE_CACHE``): the clips are
  encoded by the first trial, later trials train their heads from the cached states.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytorch_lightning as pl
import yaml
from optuna.trial import FrozenTrial, TrialState

from audiotune import outputs
from audiotune.config import RunConfig, config_to_dict
from audiotune.config.sections import monitor_key
from audiotune.engine.cv_summary import finished_metrics
from audiotune.engine.device import check_one_process, parse_devices
from audiotune.engine.records import check_settings_record
from audiotune.engine.sweep_options import PRUNERS, SweepOptions
from audiotune.engine.train import continue_or_start, train
from audiotune.interrupts import Terminated, stopped_by
from audiotune.outputs import EPOCHS_RUN, write_bytes, write_csv, write_json
from audiotune.vertex import VertexError, metric_value, space_monitor

log = logging.getLogger(__name__)

class SweepError(ValueError):
    """The sweep cannot go on: a trial failed more often than --max_failed allows."""


Configure = Callable[[dict[str, Any]], RunConfig]


def check_base(config: RunConfig, monitor: str) -> RunConfig:
    """The config every trial starts from: one process per trial, ``--monitor`` the sweep's metric."""
    if config.train.monitor not in ("loss", monitor):
        raise ValueError(f"--monitor {config.train.monitor}: the sweep's metric sets it to {monitor}")
    config.train.monitor = monitor
    runtime = config.runtime
    check_one_process(runtime.devices, runtime.strategy, runtime.num_nodes, "a sweep's trial",
                      "to use several devices, start one `audiotune sweep` per device (CUDA_VISIBLE_DEVICES=i) on "
                      "the same --exp_dir")
    if parse_devices(runtime.devices) == "auto":
        config.runtime.devices = "1"  # one device per trial, also on a machine with several
    if config.train.resume or config.train.overwrite:
        raise ValueError("a sweep resumes by itself: run the same command again, without --resume/--overwrite")
    return config


def _sampler(space: dict[str, Any], seed: int, source: str) -> optuna.samplers.BaseSampler:
    if space["algorithm"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space["algorithm"] == "bayesian":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.GridSampler(grid(space, source), seed=seed)


def grid(space: dict[str, Any], source: str) -> dict[str, list]:
    """Every value of every parameter, for the grid algorithm (integer ranges enumerated, doubles refused)."""
    values: dict[str, list] = {}
    for parameter in space["parameters"]:
        name = parameter["parameterId"]
        if "doubleValueSpec" in parameter:
            raise VertexError(f"{source}: parameter {name!r}: a grid needs listed values (discrete or categorical) "
                              "or an integer range, not a double range")
        if "integerValueSpec" in parameter:
            spec = parameter["integerValueSpec"]
            values[name] = list(range(int(spec["minValue"]), int(spec["maxValue"]) + 1))
        else:
            values[name] = list((parameter.get("discreteValueSpec") or parameter["categoricalValueSpec"])["values"])
    return values


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """The trial's value of every parameter of the space."""
    params: dict[str, Any] = {}
    for parameter in space["parameters"]:
        name = parameter["parameterId"]
        if "doubleValueSpec" in parameter or "integerValueSpec" in parameter:
            log_scale = parameter.get("scaleType") == "UNIT_LOG_SCALE"
            if "doubleValueSpec" in parameter:
                spec = parameter["doubleValueSpec"]
                params[name] = trial.suggest_float(name, spec["minValue"], spec["maxValue"], log=log_scale)
            else:
                spec = parameter["integerValueSpec"]
                params[name] = trial.suggest_int(name, int(spec["minValue"]), int(spec["maxValue"]), log=log_scale)
        else:
            values = (parameter.get("discreteValueSpec") or parameter["categoricalValueSpec"])["values"]
            params[name] = trial.suggest_categorical(name, values)
    return params


class PruningCallback(pl.Callback):
    """Report the monitored validation metric of every epoch to the trial; stop training when Optuna prunes it.

    The Trainer stops at the end of the epoch (as early stopping does), so the run directory is finished as
    usual; :attr:`pruned_at` says at which epoch the trial was pruned."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial, self.key = trial, monitor_key(monitor)
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.key not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.key])
        epoch = trainer.current_epoch + 1
        if not math.isfinite(value):
            return  # undefined this epoch (one class in validation): nothing to compare
        with warnings.catch_warnings():  # a resumed trial reports its checkpoint's epoch again: kept once
            warnings.filterwarnings("ignore", message=".*is already reported", category=UserWarning)
            self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True


def _record(config: RunConfig, space: dict[str, Any], options: SweepOptions) -> dict[str, Any]:
    base = config_to_dict(config)
    base.pop("exp_dir")
    base.pop("heads")
    # each process builds its own pruner (the study database does not keep it): all must prune alike
    pruning = {"pruner": options.pruner, "prune_after": options.prune_after, "startup_trials": options.startup_trials}
    return {"space": space, "study_name": options.study_name, "seed": options.seed, "pruning": pruning,
            "config": base}


def _check_record(sweep_dir: Path, record: dict[str, Any]) -> None:
    """A sweep directory belongs to one sweep: a rerun (or another process) must ask for the same one."""
    path = sweep_dir / outputs.SWEEP_SPACE_FILE
    check_settings_record(path, record, "a sweep", "continue it")
    if not path.is_file():
        write_bytes(path, yaml.safe_dump(record, sort_keys=False))


def _study(sweep_dir: Path, space: dict[str, Any], options: SweepOptions, source: str) -> optuna.Study:
    url = options.storage or f"sqlite:///{(sweep_dir / outputs.SWEEP_STUDY_FILE).resolve()}"
    # SQLite: a writer waits for another process's write to end instead of failing after 5 s
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
    with warnings.catch_warnings():  # heartbeats and the retry callback are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=options.heartbeat, grace_period=2 * options.heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=3, inherit_intermediate_values=True))
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=options.startup_trials, n_warmup_steps=options.prune_after)
        if options.pruner == "median" else optuna.pruners.NopPruner())
    return optuna.create_study(storage=storage, study_name=options.study_name, load_if_exists=True,
                               direction=space["goal"], sampler=_sampler(space, options.seed, source),
                               pruner=pruner)


STOPPED = "stopped"  # a trial's user attribute: stopped by Ctrl-C or SIGTERM, and queued again


def run_dir_of(sweep_dir: Path, trial: optuna.Trial | FrozenTrial) -> Path:
    """The run directory of a trial: its own, or for a rerun of a dead trial the first attempt's (a rerun
    inherits the dead trial's user attributes)."""
    return sweep_dir / trial.user_attrs.get("run_dir", outputs.trial_dir(trial.number))


def again(trial: optuna.Trial, run_dir: str) -> None:
    """Queue a copy of ``trial`` (stopped before its end) to run next, in ``run_dir``: its parameters and the
    sampler's marks on it (a grid point's id), as Optuna queues a dead trial again."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    trial.study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"run_dir": run_dir}, system_attrs=dict(frozen.system_attrs)))


class Objective:
    """One trial: its parameters → a train config → a run directory → the metric's value."""

    def __init__(self, sweep_dir: Path, space: dict[str, Any], configure: Configure, monitor: str) -> None:
        self.sweep_dir, self.space, self.configure, self.monitor = sweep_dir, space, configure, monitor
        self.current = -1  # the number of the trial last started

    def __call__(self, trial: optuna.Trial) -> float:
        self.current = trial.number
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("error", (str(err).strip() or type(err).__name__)[:500])
            raise
        except (KeyboardInterrupt, SystemExit) as err:
            signum = stopped_by(err)  # inside its fit, Lightning ends a stop with exit(1) after its clean-up
            if signum is None:
                raise
            # Ctrl-C, SIGTERM: the sweep run again reruns it, with its parameters, in its folder; raised as the
            # interruption it is, so that Optuna ends the trial (a SystemExit would leave it running)
            trial.set_user_attr(STOPPED, True)
            again(trial, run_dir_of(self.sweep_dir, trial).name)
            if isinstance(err, KeyboardInterrupt):
                raise
            if isinstance(err.__context__, KeyboardInterrupt):
                raise err.__context__ from None
            raise Terminated(f"stopped by signal {signum.name}") from None

    def _run(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        run_dir = run_dir_of(self.sweep_dir, trial)
        trial.set_user_attr("run_dir", run_dir.name)
        started = time.monotonic()
        metrics = finished_metrics(run_dir)  # a trial that finished before its process died
        pruning = PruningCallback(trial, self.monitor)
        if metrics is None:
            config = self.configure(params)
            config.exp_dir = str(run_dir)
            log.warning("trial %d: %s", trial.number, " ".join(f"--{k}={v}" for k, v in params.items()))
            metrics = train(continue_or_start(config), callbacks=[pruning])
        cache = metrics.get("feature_cache", {})
        trial.set_user_attr(EPOCHS_RUN, metrics.get(EPOCHS_RUN))
        trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
        trial.set_user_attr("cache_encoded", cache.get("encoded") if cache.get("used") else None)
        trial.set_user_attr("cache_reused", cache.get("reused") if cache.get("used") else None)
        value = metric_value(metrics, self.space["metric"])
        if pruning.pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", pruning.pruned_at)
            trial.set_user_attr("value_when_pruned", value)
            raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {pruning.pruned_at}")
        return value


def _counts(study: optuna.Study) -> dict[str, int]:
    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    return counts


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        value = trial.value if trial.state == TrialState.COMPLETE else trial.user_attrs.get("value_when_pruned")
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), "value": value,
                     **{f"param_{k}": v for k, v in trial.params.items()},
                     **{k: trial.user_attrs.get(k) for k in (EPOCHS_RUN, "pruned_at_epoch", "seconds",
                                                             "cache_encoded", "cache_reused", "run_dir")},
                     "error": trial.user_attrs.get("error") or
                     ("stopped (Ctrl-C or SIGTERM): queued again" if trial.user_attrs.get(STOPPED) else None)})
    return pd.DataFrame(rows)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    return study.best_trial


def write_outputs(sweep_dir: Path, study: optuna.Study, space: dict[str, Any]) -> dict[str, Any]:
    """The trials table, the summary and the best trial's config (a --config file without a run directory)."""
    table = trials_table(study)
    write_csv(table, sweep_dir / outputs.SWEEP_TRIALS_TABLE, index=False)
    best = best_trial(study)
    summary: dict[str, Any] = {"metric": space["metric"], "goal": space["goal"], "trials": _counts(study),
                               "best": None}
    if best is not None:
        run_dir = sweep_dir / best.user_attrs.get("run_dir", outputs.trial_dir(best.number))
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params,
                           "run_dir": str(run_dir), "config": None}
        if (run_dir / outputs.CONFIG_FILE).is_file():  # not when another machine of a shared study ran it
            best_config = yaml.safe_load((run_dir / outputs.CONFIG_FILE).read_text())
            best_config.pop("exp_dir", None)
            best_config.pop("heads", None)  # the label file of the config says them
            best_config["train"].update(resume=False, overwrite=False)  # how the sweep restarted the trial
            summary["best"]["config"] = str(write_bytes(sweep_dir / outputs.SWEEP_BEST_CONFIG_FILE,
                                                        yaml.safe_dump(best_config, sort_keys=False)))
    write_json(sweep_dir / outputs.SWEEP_SUMMARY_FILE, summary)
    return summary


def sweep(sweep_dir: str | Path, space: dict[str, Any], configure: Configure, base: RunConfig,
          options: SweepOptions, source: str = "--space") -> dict[str, Any]:
    """Run trials until the study holds ``options.trials`` finished ones; returns the summary written.

    ``configure(params)`` gives a trial's config: the base config with the trial's flag values applied (the
    command line parses them, so a parameter is any `audiotune train` flag).
    """
    if options.trials < 1:
        raise ValueError(f"--trials {options.trials}: need at least 1")
    if options.pruner not in PRUNERS:
        raise ValueError(f"--pruner {options.pruner}: choose {' or '.join(PRUNERS)}")
    monitor = space_monitor(space, source)
    check_base(base, monitor)
    for parameter in space["parameters"]:
        if parameter.get("scaleType") == "UNIT_REVERSE_LOG_SCALE":
            raise VertexError(f"{source}: parameter {parameter['parameterId']!r}: scale reverse_log is a Vertex AI "
                              "scale; a sweep takes linear or log")
    limit = options.trials
    if space["algorithm"] == "grid":
        limit = min(limit, math.prod(len(v) for v in grid(space, source).values()))
    sweep_dir = Path(sweep_dir)
    created = not sweep_dir.exists()
    if not created:
        outputs.check_folder_kind(sweep_dir, "sweep", outputs.SWEEP_SPACE_FILE)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        # a failed trial is reported once, by the sweep (Optuna would log its traceback as a warning)
        optuna.logging.set_verbosity(optuna.logging.WARNING if log.isEnabledFor(logging.INFO)
                                     else optuna.logging.ERROR)
        with _setup_lock(sweep_dir):  # processes started together: one writes the record and the database
            _check_record(sweep_dir, _record(base, space, options))
            outputs.record_command(sweep_dir)
            study = _study(sweep_dir, space, options, source)
        return _run_trials(sweep_dir, study, space, configure, monitor, options, limit, source)
    except BaseException:
        if created and not outputs.holds_runs(sweep_dir):
            shutil.rmtree(sweep_dir, ignore_errors=True)  # nothing of this new sweep is worth keeping
        raise


@contextlib.contextmanager
def _setup_lock(sweep_dir: Path) -> Iterator[None]:
    with open(sweep_dir / outputs.SWEEP_LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_trials(sweep_dir: Path, study: optuna.Study, space: dict[str, Any], configure: Configure, monitor: str,
                options: SweepOptions, limit: int, source: str) -> dict[str, Any]:
    objective = Objective(sweep_dir, space, configure, monitor)
    failed_here = 0
    while True:
        with warnings.catch_warnings():  # dead processes' trials: failed, and queued again
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        counts = _counts(study)
        finished = counts["complete"] + counts["pruned"]
        if space["algorithm"] == "grid":  # a grid point whose trial failed with an error is not run again
            finished += sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                            if "error" in t.user_attrs)
        if finished >= limit:
            break
        if finished + counts["running"] + counts["waiting"] >= limit and not counts["waiting"]:
            # the last trials are running elsewhere: wait for them (or for their heartbeat to stop)
            log.warning("waiting for %d running trial(s) of another process", counts["running"])
            time.sleep(options.heartbeat)
            continue
        # a sampler seeded by --seed and the trials so far: a sweep started again (or a second process) does not
        # replay the parameters the first draws gave. The grid keeps --seed: it numbers its points in the order
        # that seed shuffles them and skips the points the study has run.
        if space["algorithm"] != "grid":
            study.sampler = _sampler(space, options.seed + 7919 * len(study.get_trials(deepcopy=False)), source)
        try:
            study.optimize(objective, n_trials=1, catch=())
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the trial stopped is listed, queued again
            write_outputs(sweep_dir, study, space)
            raise
        except Exception as err:  # the trial is recorded as failed; the sweep goes on or stops
            number = objective.current
            failed_here += 1
            write_outputs(sweep_dir, study, space)
            if failed_here > options.max_failed:
                # a trial that left no run directory was refused before it trained: the same command would fail
                # the same way
                trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
                advice = "run it again to go on" if run_dir_of(sweep_dir, trial).exists() else \
                    "it was refused before it trained: change the space or the flags the trials share"
                raise SweepError(f"trial {number} failed ({err}); the sweep stops after {failed_here} failed "
                                   f"trial(s) (--max_failed {options.max_failed}); {advice}") from err
            log.warning("trial %d failed: %s", number, err)
            continue
        write_outputs(sweep_dir, study, space)
    return write_outputs(sweep_dir, study, space)
