"""audiotune sweep: Optuna trials as run directories; resume, pruning, dead trials, shared studies and caches."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import SMALL_ECAPA, make_uid_dataset, read_report
from safetensors.torch import load_file

from audiotune.cli import main
from audiotune.config import RunConfig, save_config
from audiotune.engine.sweep import check_base, grid
from audiotune.vertex import VertexError, read_space, space_monitor

SPACE = {"metric": "val_loss", "goal": "minimize", "algorithm": "random",
         "parameters": {"learning_rate": {"type": "double", "min": 1e-4, "max": 1e-1, "scale": "log"},
                        "final_dropout": {"type": "discrete", "values": [0.0, 0.3]}}}


def write_space(path: Path, **changes: object) -> Path:
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


def sweep_args(ds: dict, space: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--space", str(space), "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]),
            "-o", str(out), *SMALL_ECAPA, "-bs", "4", "--seed", "1", *extra]


def trials(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "sweep_trials.csv")


def test_the_space_is_a_validation_metric_and_one_process_per_trial(tmp_path: Path) -> None:
    space = read_space(write_space(tmp_path / "s.yaml", metric="val_uar", goal="maximize"))
    assert space_monitor(space, "s.yaml") == "uar"
    with pytest.raises(VertexError, match="never a test metric"):
        space_monitor(read_space(write_space(tmp_path / "t.yaml", metric="test_uar", goal="maximize")), "t.yaml")
    with pytest.raises(VertexError, match="val_loss is minimized"):
        space_monitor(read_space(write_space(tmp_path / "g.yaml", goal="maximize")), "g.yaml")

    config = check_base(RunConfig(), "uar")
    assert config.train.monitor == "uar" and config.runtime.devices == "1"
    several = RunConfig()
    several.runtime.devices = "2"
    with pytest.raises(ValueError, match="one `audiotune sweep` per device"):
        check_base(several, "uar")
    other = RunConfig()
    other.train.monitor = "accuracy"
    with pytest.raises(ValueError, match="sets it to uar"):
        check_base(other, "uar")

    listed = read_space(write_space(tmp_path / "grid.yaml", algorithm="grid", parameters={
        "epochs": {"type": "integer", "min": 2, "max": 4}, "optim": {"type": "categorical", "values": ["adam"]}}))
    assert grid(listed, "grid.yaml") == {"epochs": [2, 3, 4], "optim": ["adam"]}
    with pytest.raises(VertexError, match="not a double range"):
        grid(read_space(write_space(tmp_path / "d.yaml", algorithm="grid")), "d.yaml")


def test_a_parameter_that_is_no_train_flag_fails_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = make_uid_dataset(tmp_path)
    space = write_space(tmp_path / "s.yaml", parameters={"lr_typo": {"type": "double", "min": 0.1, "max": 1}})
    assert main(sweep_args(ds, space, tmp_path / "sweep", "-e", "1")) == 2
    err = capsys.readouterr().err
    assert "s.yaml: parameter 'lr_typo' = 0.1: unrecognized arguments: --lr_typo=0.1" in err
    assert not (tmp_path / "sweep").exists()

    space = write_space(tmp_path / "b.yaml", parameters={"batch_size": {"type": "integer", "min": -4, "max": 0}})
    assert main(sweep_args(ds, space, tmp_path / "sweep", "-e", "1")) == 2  # checked before the first trial
    assert "b.yaml: parameter 'batch_size' = -4: invalid option(s): --batch_size -4: must be in [1, inf)" in \
        capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()

    # a first trial whose inputs are bad leaves no sweep directory behind either
    space = write_space(tmp_path / "ok.yaml")
    assert main(sweep_args(ds, space, tmp_path / "sweep", "-e", "1", "--label_txt", str(tmp_path / "nope.txt"))) == 2
    assert "nope.txt" in capsys.readouterr().err and not (tmp_path / "sweep").exists()


SMALL_SSAST = ["--model", "ssast", "--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "64", "--fshape",
               "16", "--tshape", "16", "--fstride", "16", "--tstride", "16"]


@pytest.mark.parametrize(("parameters", "flags", "message"), [
    pytest.param({"final_dropout": {"type": "discrete", "values": [0.0, 0.3]}},
                 ["--freeze", "true", "--freeze_feature_encoder", "true"],
                 "--freeze_feature_encoder: --model ecapa_tdnn has no separate convolutional feature encoder",
                 id="fixed flag of a part the backbone lacks"),
    pytest.param({"freeze_feature_encoder": {"type": "categorical", "values": ["false", "true"]}}, ["--freeze", "true"],
                 "s.yaml: parameter 'freeze_feature_encoder' = false: --freeze_feature_encoder: --model ecapa_tdnn has "
                 "no separate convolutional feature encoder", id="space value"),
    pytest.param({"freeze": {"type": "categorical", "values": ["false", "true"]},
                  "frozen_train_mode": {"type": "categorical", "values": ["false", "true"]}}, [],
                 "s.yaml: parameter 'frozen_train_mode' = true: --frozen_train_mode True: acts only with --freeze "
                 "true", id="space value needing another's"),
    pytest.param({"task": {"type": "categorical", "values": ["ft_avgtok", "pretrain_joint"]}}, SMALL_SSAST,
                 "s.yaml: parameter 'task' = pretrain_joint: --task pretrain_joint: acts only in audiotune pretrain",
                 id="ssast task"),
    pytest.param({"final_dropout": {"type": "discrete", "values": [0.0, 0.3]}},
                 [*SMALL_SSAST, "--task", "pretrain_mpc"], "--task pretrain_mpc: acts only in audiotune pretrain",
                 id="ssast fixed task"),
    pytest.param({"final_dropout": {"type": "discrete", "values": [0.0, 0.3]}}, ["--standardize_targets", "false"],
                 "--standardize_targets false: acts only on regression heads", id="fixed head option"),
    pytest.param({"labeling_method": {"type": "categorical", "values": ["distribution", "hard"]}}, [],
                 "s.yaml: parameter 'labeling_method' = hard: --labeling_method hard: acts only on soft (vote) heads",
                 id="head option in the space"),
    pytest.param({"mask_time_prob": {"type": "double", "min": 0.01, "max": 0.1}}, [],
                 "s.yaml: parameter 'mask_time_prob' = 0.01: --mask_time_prob (--model hf): option(s) of another "
                 "backbone than --model ecapa_tdnn", id="another backbone's option"),
    pytest.param({"monitor": {"type": "categorical", "values": ["loss", "uar"]}}, [],
                 "s.yaml: parameter 'monitor': not a search parameter: each trial keeps the epoch of the space's "
                 "metric", id="the metric a trial keeps its epoch by"),
    pytest.param({"devices": {"type": "categorical", "values": ["1", "2"]}}, [],
                 "s.yaml: parameter 'devices': not a search parameter: the processes a trial runs in are the "
                 "command's", id="processes"),
])
def test_what_a_trial_would_refuse_stops_the_sweep_before_it_writes(
        tmp_path: Path, capsys: pytest.CaptureFixture, parameters: dict, flags: list[str], message: str) -> None:
    """Options that act in none of a trial's stages (``option(..., acts=...)``), given as the sweep's flags or
    reached by the space's values alone or two together (--freeze decides where another acts), are one line naming
    them before any study or trial exists; the sweep's folder (here one that exists, empty) stays as it was."""
    ds = make_uid_dataset(tmp_path)
    space, out = write_space(tmp_path / "s.yaml", algorithm="grid", parameters=parameters), tmp_path / "sweep"
    out.mkdir()
    data = ["-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out)]
    ecapa = [] if "ssast" in flags else SMALL_ECAPA
    assert main(["sweep", "--space", str(space), *data, *ecapa, "-e", "1", "-bs", "4", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "trial 0" not in err, err
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_trials_are_runs_the_best_config_retrains_and_a_rerun_continues(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = make_uid_dataset(tmp_path)
    space, out = write_space(tmp_path / "space.yaml"), tmp_path / "sweep"
    args = sweep_args(ds, space, out, "-e", "2", "--pruner", "none")
    assert main([*args, "--trials", "3"]) == 0
    printed = capsys.readouterr().out
    assert "trials: 3 complete" in printed and "best: trial" in printed
    assert f"report: {out / 'report.html'}" in printed  # written when the sweep ends
    assert read_report(out / "report.html")["sections"] == ["overview", "objective", "parameters", "trials"]
    assert "this sweep: the command line that wrote it" in (out / "report.html").read_text()
    assert [e["argv"][1:] for e in json.loads((out / "command.json").read_text())] == [[*args, "--trials", "3"]]
    assert json.loads((out / "trial_0" / "command.json").read_text())[0]["argv"][1] == "sweep"
    table = trials(out)
    assert list(table["trial"]) == [0, 1, 2] and set(table["state"]) == {"complete"}
    assert len({(r.param_learning_rate, r.param_final_dropout) for r in table.itertuples()}) == 3
    for row in table.itertuples():
        metrics = json.loads((out / row.run_dir / "metrics.json").read_text())
        # the trial's value is the validation loss of the epoch the run kept
        assert metrics["selection"]["monitor"] == "val_loss"
        assert row.value == pytest.approx(metrics["selection"]["value"])
        config = yaml.safe_load((out / row.run_dir / "config.yaml").read_text())
        assert config["train"]["learning_rate"] == pytest.approx(row.param_learning_rate)
        assert config["classifier"]["final_dropout"] == row.param_final_dropout
    summary = json.loads((out / "sweep_summary.json").read_text())
    best = table.loc[table["value"].idxmin()]
    assert summary["best"]["trial"] == best["trial"] and summary["trials"]["complete"] == 3

    # the best config is a --config file: training it again gives the best trial's run
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "best_config.yaml"), "-o", str(again)]) == 0
    best_dir = out / best["run_dir"]
    mine, theirs = (yaml.safe_load((d / "config.yaml").read_text()) for d in (again, best_dir))
    assert {**mine, "exp_dir": None} == {**theirs, "exp_dir": None}
    weights, best_weights = load_file(again / "model.safetensors"), load_file(best_dir / "model.safetensors")
    assert all((weights[k] == best_weights[k]).all() for k in best_weights)

    # the same command with more trials carries on; finished trials are kept
    kept = {d: (out / d / "metrics.json").stat().st_mtime_ns for d in table["run_dir"]}
    assert main([*args, "--trials", "4"]) == 0
    assert len(json.loads((out / "command.json").read_text())) == 2  # the command that carried the sweep on
    table = trials(out)
    assert len(table) == 4 and set(table["state"]) == {"complete"}
    assert all((out / d / "metrics.json").stat().st_mtime_ns == t for d, t in kept.items())
    last = table.iloc[-1]
    assert (last.param_learning_rate, last.param_final_dropout) not in {
        (r.param_learning_rate, r.param_final_dropout) for r in table.iloc[:-1].itertuples()}

    capsys.readouterr()
    assert main([*args, "--trials", "5", "--clip_length", "0.5"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main([*args, "--trials", "5", "--pruner", "median"]) == 2  # every process must prune alike
    assert "differs in pruning.pruner" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # a study driven by hand, as a test does
def test_startup_trials_and_prune_after_hold_the_median_rule_back(tmp_path: Path) -> None:
    """--startup_trials: finished trials before anything is pruned; --prune_after: epochs before a trial may be."""
    from audiotune.engine.sweep import _study
    from audiotune.engine.sweep_options import SweepOptions

    def pruned(name: str, **options: int) -> bool:
        (tmp_path / name).mkdir()
        study = _study(tmp_path / name, {"goal": "minimize", "algorithm": "random"}, SweepOptions(**options), "s")
        study.add_trial(optuna.create_trial(value=0.1, intermediate_values={1: 0.1, 2: 0.1}))
        trial = study.ask()
        trial.report(9.0, 1)  # far worse than the finished trial at the same epoch
        return trial.should_prune()

    assert pruned("free", startup_trials=1, prune_after=0)
    assert not pruned("startup", startup_trials=2, prune_after=0)
    assert not pruned("warmup", startup_trials=1, prune_after=2)  # epoch 1 of the 2 every trial trains


@pytest.mark.slow
def test_a_trial_worse_than_the_median_is_pruned_and_still_a_complete_run(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    space = write_space(tmp_path / "space.yaml")
    results = {}
    for pruner in ("median", "none"):
        out = tmp_path / pruner
        out.mkdir()
        # an earlier trial (another machine's) whose validation loss was tiny at every epoch
        study = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name="audiotune",
                                    direction="minimize")
        study.add_trial(optuna.create_trial(value=1e-6, intermediate_values={1: 1e-6, 2: 1e-6, 3: 1e-6}))
        assert main(sweep_args(ds, space, out, "-e", "3", "--trials", "2", "--pruner", pruner,
                               "--startup_trials", "1", "--prune_after", "0", "--report", str(pruner == "median"))) == 0
        assert (out / "report.html").is_file() == (pruner == "median")  # --report False: none
        table = trials(out)
        assert list(table["trial"]) == [0, 1]
        results[pruner] = table.iloc[1]
        metrics = json.loads((out / "trial_1" / "metrics.json").read_text())
        assert (out / "trial_1" / "model.safetensors").is_file() and metrics["test"]["n"] == 4
        results[pruner + "_epochs"] = metrics["epochs_run"]
        summary = json.loads((out / "sweep_summary.json").read_text())
        assert summary["best"]["trial"] == 0 and summary["best"]["config"] is None  # its run is elsewhere
    assert results["median"]["state"] == "pruned" and results["median"]["pruned_at_epoch"] == 1
    assert results["median_epochs"] == 1
    assert results["none"]["state"] == "complete" and results["none_epochs"] == 3


def _sweep_process(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "audiotune", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_a_killed_sweep_runs_its_dead_trial_again_in_the_same_run_directory(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    space, out = write_space(tmp_path / "space.yaml"), tmp_path / "sweep"
    args = sweep_args(ds, space, out, "-e", "25", "--trials", "2", "--heartbeat", "1", "--pruner", "none")
    process = _sweep_process(args, tmp_path / "first.log")
    checkpoint = out / "trial_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert checkpoint.is_file(), (tmp_path / "first.log").read_text()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "trial_0" / "metrics.json").exists()
    # past the grace period of two heartbeats: SQLite stores heartbeats in whole seconds, so a heartbeat just
    # before the kill can look up to a second younger than it is
    time.sleep(3.5)

    assert main(args) == 0
    table = trials(out)
    assert list(table["state"]) == ["fail", "complete", "complete"]
    dead, rerun = table.iloc[0], table.iloc[1]
    assert rerun["run_dir"] == dead["run_dir"] == "trial_0" and table.iloc[2]["run_dir"] == "trial_2"
    assert (rerun.param_learning_rate, rerun.param_final_dropout) == (dead.param_learning_rate,
                                                                       dead.param_final_dropout)
    metrics = json.loads((out / "trial_0" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 25  # resumed from its checkpoint: the epochs before the kill are in its log
    assert sorted(pd.read_csv(out / "trial_0" / "logs" / "metrics.csv")["epoch"].dropna().unique()) == list(range(25))


@pytest.mark.parametrize("algorithm", ["random", "grid"])
def test_a_sweep_stopped_in_a_trial_runs_that_trial_again_with_its_parameters(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              algorithm: str) -> None:
    """Ctrl-C or SIGTERM reaching a trial outside its fit (scoring, writing its outputs) failed it for good: the
    sweep run again drew another trial in its place. Its parameters are queued again, for its own folder (a grid
    point keeps its place in the grid: the rerun finishes it, then the points left)."""
    import audiotune.engine.sweep as sweep_module

    ds = make_uid_dataset(tmp_path)
    space = write_space(tmp_path / "space.yaml", algorithm=algorithm) if algorithm == "random" else \
        write_space(tmp_path / "space.yaml", algorithm="grid",
                    parameters={"final_dropout": {"type": "discrete", "values": [0.0, 0.3]}})
    out = tmp_path / "sweep"
    args = sweep_args(ds, space, out, "-e", "1", "--trials", "2", "--pruner", "none")
    real = sweep_module.train

    def stopped_once(config: RunConfig, **kwargs: object) -> dict:
        metrics = real(config, **kwargs)
        if not stopped:
            stopped.append(config.exp_dir)
            (Path(config.exp_dir) / "metrics.json").unlink()  # stopped while it wrote its outputs
            raise KeyboardInterrupt
        return metrics

    stopped: list[str] = []
    monkeypatch.setattr(sweep_module, "train", stopped_once)
    assert main(args) == 130
    assert main(args) == 0
    table = trials(out)
    assert list(table["state"]) == ["fail", "complete", "complete"]
    first, again = table.iloc[0], table.iloc[1]
    assert first["error"] == "stopped (Ctrl-C or SIGTERM): queued again"
    assert again["run_dir"] == first["run_dir"] == "trial_0" and Path(stopped[0]).name == "trial_0"
    assert again.param_final_dropout == first.param_final_dropout
    if algorithm == "random":
        assert again.param_learning_rate == first.param_learning_rate
    else:  # both grid points run
        assert sorted(table[table["state"] == "complete"]["param_final_dropout"]) == [0.0, 0.3]
    assert (out / "trial_0" / "metrics.json").is_file()


def test_a_sweep_stopped_inside_a_trials_fit_lists_that_trial_and_runs_it_again(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning ends a fit stopped by Ctrl-C or SIGTERM with exit(1): the trial was left running, unlisted, and the
    sweep run again waited for it as another process's. It is listed as stopped at once, and the rerun runs it."""
    import audiotune.engine.sweep as sweep_module

    class StoppedInFit(sweep_module.PruningCallback):
        def on_train_epoch_end(self, trainer: object, pl_module: object) -> None:
            if self.trial.number == 1:
                raise KeyboardInterrupt

    ds = make_uid_dataset(tmp_path)
    out = tmp_path / "sweep"
    args = sweep_args(ds, write_space(tmp_path / "space.yaml"), out, "-e", "1", "--trials", "2", "--pruner", "none")
    with monkeypatch.context() as patched:
        patched.setattr(sweep_module, "PruningCallback", StoppedInFit)
        assert main(args) == 130
    table = trials(out)
    assert list(table["state"]) == ["complete", "fail", "waiting"]
    assert table["error"].iloc[1] == "stopped (Ctrl-C or SIGTERM): queued again"
    assert main(args) == 0
    table = trials(out)
    assert list(table["state"]) == ["complete", "fail", "complete"]
    stopped, again = table.iloc[1], table.iloc[2]
    assert again["run_dir"] == stopped["run_dir"] == "trial_1"
    assert again.param_learning_rate == stopped.param_learning_rate
    assert (out / "trial_1" / "metrics.json").is_file()


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    space, out = write_space(tmp_path / "space.yaml"), tmp_path / "sweep"
    args = sweep_args(ds, space, out, "-e", "1", "--trials", "4", "--heartbeat", "2")
    processes = [_sweep_process(args, tmp_path / f"p{k}.log") for k in range(2)]
    for k, process in enumerate(processes):
        assert process.wait(timeout=600) == 0, (tmp_path / f"p{k}.log").read_text()[-2000:]
    table = trials(out)
    finished = table[table["state"].isin(["complete", "pruned"])]
    assert 4 <= len(finished) <= 5 and len(finished) == len(table)  # two may start the last trial at once
    assert table["run_dir"].is_unique
    assert all((out / d / "metrics.json").is_file() for d in table["run_dir"])
    logs = [(tmp_path / f"p{k}.log").read_text() for k in range(2)]
    assert all("trial " in log for log in logs)  # each process ran trials of its own


@pytest.mark.slow
def test_frozen_encoder_trials_share_the_feature_cache(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    space = write_space(tmp_path / "space.yaml", algorithm="grid",
                        parameters={"learning_rate": {"type": "discrete", "values": [0.001, 0.01]}})
    out = tmp_path / "sweep"
    assert main(sweep_args(ds, space, out, "-e", "2", "--trials", "5", "--freeze", "--clip_length", "0",
                           "--cache_dir", str(tmp_path / "cache"), "--pruner", "none")) == 0
    table = trials(out)
    assert len(table) == 2 and set(table["param_learning_rate"]) == {0.001, 0.01}  # a grid of two: two trials
    first, second = table.iloc[0], table.iloc[1]
    assert first["cache_encoded"] == 16 + 4 + 4 and first["cache_reused"] == 0  # train, validation, test clips
    assert second["cache_encoded"] == 0 and second["cache_reused"] == 24


def test_a_trial_refused_before_it_trains_is_not_said_to_go_on_when_run_again(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A metric the heads do not have (a regression metric of class labels) is refused by the trial's train before
    it writes: the sweep stops saying so, not that running it again goes on."""
    ds = make_uid_dataset(tmp_path)
    space = write_space(tmp_path / "s.yaml", metric="val_ccc", goal="maximize")
    assert main(sweep_args(ds, space, tmp_path / "sweep", "-e", "1", "--trials", "2")) == 2
    err = capsys.readouterr().err
    assert "--monitor ccc needs a head of kind regression" in err
    assert "it was refused before it trained: change the space or the flags the trials share" in err
    assert "run it again to go on" not in err


@pytest.mark.slow
def test_failed_trials_are_listed_and_stop_the_sweep_past_max_failed(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    ds = make_uid_dataset(tmp_path)
    # the second value is a valid option that fails when its trial reads the audio (mono files have no channel 5)
    space = write_space(tmp_path / "space.yaml", algorithm="grid",
                        parameters={"channel_select": {"type": "categorical", "values": ["0", "5"]}})
    args = sweep_args(ds, space, tmp_path / "strict", "-e", "1", "--trials", "2", "--pruner", "none")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "failed" in err and "--max_failed 0" in err and "channel" in err
    # also: the study in a database and under a name of the user's choice
    database = f"sqlite:///{tmp_path / 'studies.db'}"
    assert main(sweep_args(ds, space, tmp_path / "tolerant", "-e", "1", "--trials", "2", "--pruner", "none",
                           "--max_failed", "1", "--storage", database, "--study_name", "clips")) == 0
    assert not (tmp_path / "tolerant" / "study.db").exists()
    assert len(optuna.load_study(study_name="clips", storage=database).trials) == 2
    table = trials(tmp_path / "tolerant")
    assert sorted(table["state"]) == ["complete", "fail"]
    failed = table[table["state"] == "fail"].iloc[0]
    assert str(failed["param_channel_select"]) == "5" and "channel" in failed["error"]


@pytest.mark.slow
def test_a_run_configs_value_whose_switch_a_trial_turns_on_acts_in_that_trial(tmp_path: Path) -> None:
    """--config RUN/config.yaml holding --sd_bottleneck 16 without --shared_dense (it did nothing there): the
    trial that turns the shared dense layer on sizes it so; the other leaves it at its default, not refused."""
    ds = make_uid_dataset(tmp_path)
    made = RunConfig()
    made.classifier.sd_bottleneck = 16
    save_config(made, tmp_path / "config.yaml")
    space = write_space(tmp_path / "s.yaml", algorithm="grid",
                        parameters={"shared_dense": {"type": "categorical", "values": ["false", "true"]}})
    out = tmp_path / "sweep"
    assert main(sweep_args(ds, space, out, "--config", str(tmp_path / "config.yaml"), "-e", "1", "--trials", "2")) == 0
    sizes = {}
    for run in out.glob("trial_*"):
        classifier = yaml.safe_load((run / "config.yaml").read_text())["classifier"]
        sizes[classifier["shared_dense"]] = classifier["sd_bottleneck"]
    assert sizes == {True: 16, False: 768}


def test_a_sweep_made_with_options_refused_since_goes_on_with_its_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A sweep whose record holds ECAPA-TDNN's -pm max and --weighted true (taken before they were refused: they did
    nothing) carries on with the same flags, its new trials reading them at their defaults; a new sweep with them is
    refused before anything is written."""
    ds = make_uid_dataset(tmp_path)
    space, out = write_space(tmp_path / "space.yaml"), tmp_path / "sweep"
    args = sweep_args(ds, space, out, "-e", "1", "--pruner", "none")
    assert main([*args, "--trials", "1"]) == 0
    record = yaml.safe_load((out / "sweep.yaml").read_text())  # as the earlier release recorded it
    record["config"]["classifier"].update(pooling_mode="max", weighted=True)
    (out / "sweep.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    kept = (out / "trial_0" / "metrics.json").stat().st_mtime_ns
    assert main([*args, "--trials", "2", "-pm", "max", "--weighted", "true"]) == 0
    assert (out / "trial_0" / "metrics.json").stat().st_mtime_ns == kept
    table = trials(out)
    assert len(table) == 2 and set(table["state"]) == {"complete"}
    added = yaml.safe_load((out / table.iloc[-1]["run_dir"] / "config.yaml").read_text())["classifier"]
    assert (added["pooling_mode"], added["weighted"]) == ("mean", False)
    capsys.readouterr()
    assert main(sweep_args(ds, space, tmp_path / "new", "-e", "1", "-pm", "max")) == 2
    assert "--pooling_mode max: --model ecapa_tdnn's hidden state" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_sweep_made_with_a_head_option_refused_since_goes_on_with_its_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    """A sweep whose records (sweep.yaml, its trials' config.yaml) hold --labeling_method hard for a label file
    without a soft head (taken before it was refused: it did nothing) carries on with the same flags, its new trials
    reading it at its default (said); a new sweep with it is refused before its first trial."""
    ds = make_uid_dataset(tmp_path)
    space, out = write_space(tmp_path / "space.yaml"), tmp_path / "sweep"
    args = sweep_args(ds, space, out, "-e", "1", "--pruner", "none")
    assert main([*args, "--trials", "1"]) == 0
    for path, section in ((out / "sweep.yaml", "config"), (out / "trial_0" / "config.yaml", None)):
        record = yaml.safe_load(path.read_text())  # as the earlier release recorded it
        (record[section] if section else record)["train"]["labeling_method"] = "hard"
        path.write_text(yaml.safe_dump(record, sort_keys=False))
    kept = (out / "trial_0" / "metrics.json").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--trials", "2", "--labeling_method", "hard"]) == 0
    assert (out / "trial_0" / "metrics.json").stat().st_mtime_ns == kept
    table = trials(out)
    assert len(table) == 2 and set(table["state"]) == {"complete"}
    added = out / table.iloc[-1]["run_dir"]
    assert yaml.safe_load((added / "config.yaml").read_text())["train"]["labeling_method"] == "distribution"
    assert (f"{added} starts with what does nothing here at its default: --labeling_method hard: acts only on soft "
            f"(vote) heads, and {ds['labels']} has none") in caplog.text
    capsys.readouterr()
    assert main(sweep_args(ds, space, tmp_path / "new", "-e", "1", "--labeling_method", "hard")) == 2
    err = capsys.readouterr().err
    assert "--labeling_method hard: acts only on soft (vote) heads" in err and "trial 0" not in err, err
    assert not (tmp_path / "new").exists()


def test_the_best_trial_s_flags_are_printed_as_they_are_typed() -> None:
    from audiotune.cli.sweep import _flag_value

    assert [_flag_value(v) for v in (300.0, 0.0003, "max", 2)] == [300, 0.0003, "max", 2]
