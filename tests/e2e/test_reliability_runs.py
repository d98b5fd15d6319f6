"""Probes through the CLI: outputs complete or absent, run directories owned by one command, flags in range."""
from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SMALL_ECAPA, make_uid_dataset, small_train_args

import audiotune.engine.extract as extract_module
from audiotune.atomic import atomic_path
from audiotune.cli import main
from audiotune.config.sections import RESUME_HINT
from audiotune.outputs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CV_CONFIG_FILE,
    LAST_CHECKPOINT,
    LOCK_FILE,
    MODEL_FILE,
    SWEEP_SPACE_FILE,
    own_run_dir,
    write_json,
)

train_args = small_train_args


@pytest.fixture(scope="module")
def trained(trained_run: dict) -> dict:
    return trained_run


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ------------------------------------------------------------------ complete or absent

def test_a_failing_writer_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    target = write_json(tmp_path / "metrics.json", {"accuracy": 0.5})
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_text('{"accuracy": 0.')
        raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"accuracy": 0.5} and listing(tmp_path) == {"metrics.json"}


def test_nan_is_written_as_null_not_as_invalid_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "m.json", {"auc": float("nan"), "per": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"auc": None, "per": [1.0, None]}


@pytest.mark.slow
def test_extract_interrupted_half_way_leaves_no_parquet(trained: dict, tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    real = extract_module.iterate_batches

    def interrupted(*args, **kwargs):
        for number, item in enumerate(real(*args, **kwargs)):
            if number == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(extract_module, "iterate_batches", interrupted)
    out = tmp_path / "emb.parquet"
    code = main(["extract", "--run", str(trained["run"]), "-d", str(trained["split"] / "train.csv"), "--out", str(out),
                 "-bs", "4"])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert listing(tmp_path) == set()  # neither emb.parquet nor its temporary file
    monkeypatch.setattr(extract_module, "iterate_batches", real)
    assert main(["extract", "--run", str(trained["run"]), "-d", str(trained["split"] / "train.csv"), "--out",
                 str(out), "-bs", "4"]) == 0
    assert len(pd.read_parquet(out)) == 16


def test_training_that_fails_after_starting_leaves_no_metrics(tmp_path: Path, monkeypatch) -> None:
    ds = make_uid_dataset(tmp_path)
    import audiotune.engine.train as train_module

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(train_module, "evaluate_prepared", broken)
    assert main(train_args(ds, tmp_path / "run")) == 2
    assert not (tmp_path / "run" / "metrics.json").exists()  # a run without metrics.json is not finished
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # and can be resumed


def _run_with_file_size_limit(args: list[str], limit: int) -> subprocess.CompletedProcess:
    """``audiotune ARGS`` in a process whose files may not grow past ``limit`` bytes: a disk that fills up."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write then fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = "import sys; from audiotune.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], preexec_fn=limited, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("limit,refused", [(200, "command.json"), (20000, "checkpoints/best.ckpt")])
def test_a_full_disk_is_one_line_and_leaves_nothing_that_looks_finished(tmp_path: Path, limit: int,
                                                                      refused: str) -> None:
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    result = _run_with_file_size_limit(train_args(ds, run, "-e", "2"), limit)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{refused}: could not be written" in result.stderr
    if refused == "command.json":  # the run's first file: nothing of the run was written yet, no directory is left
        assert not run.exists()
    else:  # the run is known but unfinished: no checkpoint, no weights, no metrics, no temporary file
        assert not any(name.endswith((".ckpt", ".safetensors", "metrics.json", ".partial")) for name in listing(run))
        assert main(train_args(ds, run, "-e", "2", "--resume")) == 2
        assert main(train_args(ds, run, "-e", "2", "--overwrite")) == 0


def test_a_file_in_the_way_of_an_output_is_named_before_any_work(trained: dict, tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("")
    in_the_way = tmp_path / "afile"
    for args in (["extract", "--run", str(trained["run"]), "-d", str(trained["split"]), "--out",
                  str(in_the_way / "e.parquet")],
                 ["evaluate", "--run", str(trained["run"]), "-d", str(trained["split"]), "-o", str(in_the_way / "ev")],
                 train_args(trained, in_the_way / "run"),
                 ["manifest", str(trained["prefix"]), "--out", str(in_the_way / "m.csv"), "--folder_label", "x"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and str(in_the_way) in err and "Errno" not in err, err


@pytest.mark.slow
def test_a_new_split_into_an_old_folder_leaves_no_file_of_the_old_one(trained: dict, tmp_path: Path,
                                                                      capsys) -> None:
    manifest = tmp_path / "m.csv"
    table = pd.read_csv(trained["split"] / "train.csv")
    table["path"] = [str(trained["prefix"] / uid / "waveform.wav") for uid in table["uid"]]
    table.to_csv(manifest, index=False)
    out = tmp_path / "split"
    assert main(["split", str(manifest), "--out", str(out), "--test_subjects", "ann", "--val_subjects", "bob"]) == 0
    assert main(["split", str(manifest), "--out", str(out), "--test_subjects", "ann", "--val_fraction", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.csv", "train.csv"]  # no val.csv of the first split
    assert main(["split", str(manifest), "--out", str(tmp_path / "folds"), "--folds", "4", "--val_fraction", "0"]) == 0
    capsys.readouterr()
    assert main(["split", str(manifest), "--out", str(tmp_path / "folds"), "--folds", "2", "--val_fraction", "0"]) == 2
    assert "holds folds of an earlier split (['fold_3', 'fold_4'])" in capsys.readouterr().err


# ------------------------------------------------------------------ run directories

def test_a_second_command_cannot_write_a_locked_run_directory(trained: dict, tmp_path: Path, capsys) -> None:
    with own_run_dir(tmp_path / "busy") as owned:
        owned.start()
        before = {name: (tmp_path / "busy" / name).read_bytes() for name in listing(tmp_path / "busy")}
        assert main(train_args(trained, tmp_path / "busy")) == 2
    assert "another audiotune command is writing" in capsys.readouterr().err
    # the second command wrote nothing: only what the holder wrote (its lock and command record) is there
    assert {name: (tmp_path / "busy" / name).read_bytes() for name in listing(tmp_path / "busy")
            if name != LOCK_FILE} == {name: data for name, data in before.items() if name != LOCK_FILE}


@pytest.mark.slow
def test_training_into_a_finished_run_needs_resume_or_overwrite(tmp_path: Path, capsys) -> None:
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    assert main(train_args(ds, run, "--on_error", "skip")) == 0
    (run / "skipped.csv").write_text("uid,split,path,reason\nx,train,x.wav,old\n")  # a stale list
    before = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(train_args(ds, run, "-e", "2")) == 2
    assert "already holds a run" in capsys.readouterr().err and (run / "config.yaml").read_text() == before
    assert main(train_args(ds, run, "--overwrite")) == 0
    assert not (run / "skipped.csv").exists()  # the old run's files went with it
    assert main(train_args(ds, run, "--resume", "--overwrite")) == 2


@pytest.mark.slow
def test_resume_with_flags_that_do_not_fit_changes_nothing(tmp_path: Path, capsys) -> None:
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    assert main(train_args(ds, run)) == 0
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.json", "model.safetensors")}
    capsys.readouterr()
    args = train_args(ds, run, "--resume", "-e", "2")
    args[args.index("--lin_neurons") + 1] = "24"
    assert main(args) == 2
    assert "do not fit this run's checkpoint" in capsys.readouterr().err
    assert {name: (run / name).read_bytes() for name in before} == before
    assert main(["evaluate", "--run", str(run), "-d", str(ds["split"] / "test.csv")]) == 0


def test_a_run_and_an_experiment_never_share_a_folder(trained: dict, tmp_path: Path, capsys) -> None:
    """cv and sweep refuse a run directory, and a command that writes one run refuses an experiment folder (its
    finished runs are kept: --overwrite included), each before it writes anything there."""
    def files(folder: Path) -> dict[str, bytes]:
        return {name: (folder / name).read_bytes() for name in listing(folder)
                if (folder / name).is_file() and name != LOCK_FILE}

    data = ["-i", str(trained["prefix"]), "-l", str(trained["labels"]), *SMALL_ECAPA, "-e", "1", "-bs", "4"]
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"metric": "val_loss", "goal": "minimize", "algorithm": "random",
                                     "parameters": {"final_dropout": {"type": "discrete", "values": [0.0, 0.3]}}}))
    commands = {"cv": ["cv", "-d", str(trained["split"] / "train.csv"), "--folds", "2", "--val_group", "none", *data],
                "sweep": ["sweep", "--space", str(space), "-d", str(trained["split"]), *data],
                "train": ["train", "-d", str(trained["split"]), *data, "--overwrite"]}
    cv, sweep = tmp_path / "cv", tmp_path / "sweep"
    (cv / "fold_1_r0").mkdir(parents=True)
    (cv / CV_CONFIG_FILE).write_text("{}\n")
    (cv / "fold_1_r0" / CONFIG_FILE).write_text("{}\n")
    sweep.mkdir()
    (sweep / SWEEP_SPACE_FILE).write_text("{}\n")
    for folder, held, refusing in ((trained["run"], "a run", ("cv", "sweep")), (cv, "a cross-validation",
                                   ("train", "sweep")), (sweep, "a sweep", ("train", "cv"))):
        before = files(folder)
        for command in refusing:
            capsys.readouterr()
            assert main([*commands[command], "-o", str(folder)]) == 2, command
            assert f"{folder}: holds {held}, which {command} does not write; choose another -o/--exp_dir" in \
                capsys.readouterr().err
        assert files(folder) == before


def test_a_folder_holding_runs_below_it_is_refused_by_a_command_that_writes_one(trained: dict, tmp_path: Path,
                                                                               capsys) -> None:
    """A cv fold's folder (its runs inside), or a folder of the user's runs: train (with --overwrite too) and
    evaluate refuse it before they write anything, instead of mixing their outputs with the runs or, replacing
    their own later, deleting them."""
    fold = tmp_path / "cv" / "fold_1"
    (fold / "run_1").mkdir(parents=True)
    (fold / "run_1" / CONFIG_FILE).write_text("{}\n")
    (fold / "test.csv").write_text("uid\n")
    mine = tmp_path / "runs"
    (mine / "a" / "b").mkdir(parents=True)
    (mine / "a" / "b" / CONFIG_FILE).write_text("{}\n")
    evaluate = ["evaluate", "--run", str(trained["run"]), "-d", str(trained["split"] / "test.csv")]
    for folder, inner, command in ((fold, "run_1", train_args(trained, fold)),
                                   (fold, "run_1", [*train_args(trained, fold), "--overwrite"]),
                                   (mine, "a/b", [*evaluate, "-o", str(mine)])):
        before = listing(folder)
        capsys.readouterr()
        assert main(command) == 2
        assert f"{folder}: holds a run in {inner} (a fold's or a trial's, or another run)" in capsys.readouterr().err
        assert listing(folder) - {LOCK_FILE} == before - {LOCK_FILE}


@pytest.mark.slow
def test_what_a_folder_held_before_a_command_wrote_there_outlives_its_replacement(trained: dict,
                                                                                 tmp_path: Path) -> None:
    """A run or an evaluation written into a folder of the user's files leaves them when --overwrite (or the next
    evaluation) replaces it: only what commands wrote goes."""
    for name, command in (("train", lambda out, *extra: main(train_args(trained, out, *extra))),
                          ("evaluate", lambda out, *extra: main(["evaluate", "--run", str(trained["run"]), "-d",
                                                                 str(trained["split"] / "test.csv"), "-o",
                                                                 str(out)]))):
        out = tmp_path / name
        (out / "sub").mkdir(parents=True)
        (out / "notes.txt").write_text("mine")
        (out / "sub" / "data.csv").write_text("a\n")
        assert command(out) == 0
        assert json.loads((out / "command.json").read_text())[0]["found"] == ["notes.txt", "sub"]
        assert command(out, "--overwrite") == 0
        assert (out / "notes.txt").read_text() == "mine" and (out / "sub" / "data.csv").read_text() == "a\n"
        history = json.loads((out / "command.json").read_text())
        assert len(history) == 1 and history[0]["found"] == ["notes.txt", "sub"]
        assert (out / "metrics.json").is_file()


def test_evaluate_never_writes_into_the_training_run(trained: dict, capsys) -> None:
    run = trained["run"]
    predictions = (run / "predictions.parquet").read_bytes()
    assert main(["evaluate", "--run", str(run), "-d", str(trained["split"]), "-o", str(run)]) == 2
    assert "is a training run directory" in capsys.readouterr().err
    assert (run / "predictions.parquet").read_bytes() == predictions


@pytest.mark.slow
def test_evaluate_replaces_its_own_earlier_evaluation(trained: dict, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert main(["evaluate", "--run", str(trained["run"]), "-d", str(trained["split"]), "-o", str(out)]) == 0
    assert set(json.loads((out / "metrics.json").read_text())) == {"train", "val", "test"}
    assert main(["evaluate", "--run", str(trained["run"]), "-d", str(trained["split"] / "test.csv"), "-o",
                 str(out)]) == 0
    # not merged with the earlier one; one CSV is named after its file (and still found under "data")
    assert set(json.loads((out / "metrics.json").read_text())) == {"test", "data"}
    assert set(pd.read_parquet(out / "predictions.parquet")["split"]) == {"test"}


def test_a_failed_command_leaves_no_directory_behind(trained: dict, tmp_path: Path) -> None:
    missing_labels = tmp_path / "nolabels.txt"
    args = train_args(trained, tmp_path / "new" / "run")
    args[args.index("-l") + 1] = str(missing_labels)
    assert main(args) == 2
    assert not (tmp_path / "new").exists()  # nor the folder made to hold it
    (tmp_path / "kept").mkdir()
    assert main([*train_args(trained, tmp_path / "kept" / "a" / "run"), "--resume"]) == 2  # nothing to resume
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["kept"] and not any((tmp_path / "kept").iterdir())


# ------------------------------------------------------------------ flags

@pytest.mark.parametrize("flags, message", [
    (["-e", "-1"], "--epochs -1: must be in [0, inf)"),
    (["-bs", "0"], "--batch_size 0: must be in [1, inf)"),
    (["-lr", "nan"], "--learning_rate nan"),
    (["--clip_length", "-2"], "--clip_length -2.0"),
    (["--resample_rate", "-16000"], "--resample_rate -16000"),
    (["--dataset_std", "-1"], "--dataset_std -1.0: must be in (0, inf)"),  # 0: refused as the seeds' default
    (["--ema", "1.5"], "--ema 1.5"),
    (["--final_dropout", "1"], "--final_dropout 1.0"),
    (["--gain", "2"], "--gain 2.0: must be a probability"),
    (["--channels", "16", "-16", "48"], "--channels -16"),
])
def test_out_of_range_options_are_refused_before_any_work(trained: dict, tmp_path: Path, capsys, flags: list[str],
                                                           message: str) -> None:
    assert main(train_args(trained, tmp_path / "run", *flags)) == 2
    err = capsys.readouterr().err
    assert err.startswith("audiotune train: error: invalid option(s)") and message in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_zero_epochs_says_the_model_is_untrained(trained: dict, tmp_path: Path, capsys) -> None:
    assert main(train_args(trained, tmp_path / "run", "-e", "0")) == 0
    assert "no training step (--epochs 0)" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["trained"] is False and metrics["weights"].startswith("untrained")


def test_option_ranges_are_documented_in_the_help(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help-all"])
    text = " ".join(capsys.readouterr().out.split())
    assert "training epochs (default 1; valid [0, inf))" in text and "batch size (default 8; valid [1, inf))" in text


def test_no_prefix_abbreviations_of_flags(trained: dict, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main([*train_args(trained, tmp_path / "run"), "--lin_neur", "8"])  # a unique prefix of --lin_neurons


def test_recipe_config_with_a_wrong_type_names_file_and_option(trained: dict, tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"train": {"epochs": "ten"}}))
    assert main([*train_args(trained, tmp_path / "run"), "--config", str(recipe)]) == 2
    assert f"{recipe}: section 'train': wrong type: epochs: 'ten' is not int" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_during_training_is_one_line_exit_130_and_resumes(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "audiotune", *train_args(ds, run, "-e", "500", "--overwrite")]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = run / CHECKPOINT_DIR / LAST_CHECKPOINT
    for _ in range(1200):  # up to 2 minutes for the first epoch to end
        if checkpoint.is_file() or process.poll() is not None:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, not_stopped(err)
    last = err.strip().splitlines()[-1]
    assert last == "audiotune train: interrupted; the same command with --resume continues from the last " \
                   "finished epoch"
    assert "Traceback" not in err
    assert checkpoint.is_file() and (run / CONFIG_FILE).is_file()  # what --resume continues from


def not_stopped(err: str) -> str:
    """What a command that went on after its signal said: what Python dropped or raised (its lines, anywhere in
    the command's output) and its last lines."""
    lines = err.splitlines()
    said = [line for line in lines if line.startswith(("Exception ignored", "Traceback")) or "Terminated" in line]
    return "\n".join([*said, "...", *lines[-12:]])


def _stop_when_checkpointed(args: list[str], checkpoint: Path, signum: int) -> tuple[int, str]:
    """``python -m audiotune ARGS``, sent ``signum`` once ``checkpoint`` exists (an epoch has finished): its exit
    status and standard error."""
    process = subprocess.Popen([sys.executable, "-m", "audiotune", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for _ in range(1200):  # up to 2 minutes for the first epoch to end
        if checkpoint.is_file() or process.poll() is not None:
            break
        time.sleep(0.1)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


@pytest.mark.slow
def test_sigterm_during_training_is_one_line_exit_143_and_resumes(tmp_path: Path, capsys) -> None:
    """A scheduler's time limit or a preemption (SIGTERM): a failure it sees and retries, the run resumable."""
    import torch

    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    checkpoint = run / CHECKPOINT_DIR / LAST_CHECKPOINT
    status, err = _stop_when_checkpointed(train_args(ds, run, "-e", "500"), checkpoint, signal.SIGTERM)
    assert status == 143, not_stopped(err)
    assert err.strip().splitlines()[-1] == f"audiotune train: interrupted by SIGTERM; {RESUME_HINT}"
    assert "Traceback" not in err and not (run / MODEL_FILE).exists()
    assert main(["report", str(run)]) == 2  # nothing to report: resume it, as the line above said
    assert f"nothing to report yet; {RESUME_HINT}" in capsys.readouterr().err
    finished = torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]  # counted from 0
    assert main(train_args(ds, run, "-e", "500", "-e", str(finished + 2), "--resume", "True")) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == finished + 2 and (run / MODEL_FILE).is_file()


@pytest.mark.slow
def test_sigterm_during_cross_validation_stops_it_before_the_next_fold(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    table = tmp_path / "table.csv"
    rows = ds["table"].reset_index()
    rows.assign(path=[str(ds["prefix"] / uid / "waveform.wav") for uid in rows["uid"]]).to_csv(table, index=False)
    out = tmp_path / "cv"
    args = ["cv", "-d", str(table), "-l", str(ds["labels"]), "-o", str(out), "--group", "subject", "--folds", "3",
            "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "500", "-bs", "4"]
    status, err = _stop_when_checkpointed(args, out / "fold_1" / "run_1" / CHECKPOINT_DIR / LAST_CHECKPOINT,
                                          signal.SIGTERM)
    assert status == 143, not_stopped(err)
    assert err.strip().splitlines()[-1] == ("audiotune cv: interrupted by SIGTERM; finished runs are kept; run the "
                                            "same command again to go on")
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("fold_*/run_*")) == ["fold_1/run_1"]
    assert not (out / "cv_summary.json").exists()


@pytest.mark.slow
def test_resume_with_changed_hyperparameters_needs_allow_changes_and_records_them(tmp_path: Path, capsys) -> None:
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    assert main(train_args(ds, run, "-e", "1", "-lr", "0.001")) == 0
    before = (run / CONFIG_FILE).read_bytes()
    capsys.readouterr()
    assert main(train_args(ds, run, "-e", "2", "-lr", "0.5", "--resume")) == 2
    err = capsys.readouterr().err
    assert "--resume with options that differ from the run's config.yaml (learning_rate 0.001 -> 0.5)" in err
    assert "--allow_changes" in err and (run / CONFIG_FILE).read_bytes() == before
    assert main(train_args(ds, run, "-e", "2", "-lr", "0.001", "--resume", "--num_workers", "0")) == 0  # longer
    assert not (run / "config_history.yaml").exists()
    assert main(train_args(ds, run, "-e", "3", "-lr", "0.5", "--resume", "--allow_changes")) == 0
    history = yaml.safe_load((run / "config_history.yaml").read_text())
    assert [entry["changes"] for entry in history] == [{"train.learning_rate": {"from": 0.001, "to": 0.5}}]
    assert yaml.safe_load((run / CONFIG_FILE).read_text())["train"]["learning_rate"] == 0.5


def test_a_resume_on_data_of_other_classes_is_refused_with_allow_changes_too(tmp_path: Path, capsys) -> None:
    """Data whose classes differ from the run's (pitch low/high renamed low/mid) would give the checkpoint's
    outputs to other classes, a class both hold to another's output: refused, the run left as it was."""
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    assert main(train_args(ds, run, "-e", "1")) == 0
    def files() -> list:
        return sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*") if p.name != LOCK_FILE)

    before = files()
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train", "val", "test"):
        table = pd.read_csv(ds["split"] / f"{name}.csv", dtype=str)
        table["pitch"] = table["pitch"].replace({"high": "mid"})
        table.to_csv(other / f"{name}.csv", index=False)
    capsys.readouterr()
    args = train_args(ds, run, "-e", "2", "--resume", "--allow_changes")
    args[args.index(str(ds["split"]))] = str(other)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--resume with other heads than the run's (the run: pitch (categorical): pitch=high, pitch=low" in err
    assert "this data and label file: pitch (categorical): pitch=low, pitch=mid" in err
    assert files() == before


@pytest.mark.slow
@pytest.mark.parametrize("steps", ["4", "5"])
def test_a_run_resumed_after_its_last_step_counts_the_epochs_it_ran(tmp_path: Path, steps: str) -> None:
    """A command stopped while writing its outputs (after the checkpoint of its last step) and resumed has nothing
    left to train: its epochs_run was Lightning's count of finished epochs, one short of a straight run's when
    --training_steps ended inside an epoch (5 steps of 4 a epoch) or at an epoch's end (4)."""
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    assert main(train_args(ds, run, "--training_steps", steps, "--report", "False")) == 0
    straight = json.loads((run / "metrics.json").read_text())
    assert straight["epochs_run"] == {"4": 1, "5": 2}[steps]
    for name in ("metrics.json", MODEL_FILE):  # stopped before these were written
        (run / name).unlink()
    assert main(train_args(ds, run, "--training_steps", steps, "--report", "False", "--resume")) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == straight["epochs_run"]


@pytest.mark.slow
def test_a_run_whose_config_holds_the_resolved_input_resumes_with_its_own_flags(tmp_path: Path) -> None:
    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    assert main(train_args(ds, run, "-e", "1")) == 0
    spec = json.loads((run / "input_spec.json").read_text())
    raw = yaml.safe_load((run / CONFIG_FILE).read_text())  # as an earlier release wrote it: the input resolved
    raw["version"] = 1
    raw["features"].update(freqm=spec["freqm"], timem=spec["timem"])
    raw["audio"]["min_samples"] = spec["min_samples"]
    (run / CONFIG_FILE).write_text(yaml.safe_dump(raw))
    assert main(train_args(ds, run, "-e", "2", "--resume")) == 0
    assert not (run / "config_history.yaml").exists()
