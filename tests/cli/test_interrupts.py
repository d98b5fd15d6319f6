"""A stopped command: SIGTERM raised where the command runs, the signal and the exit status a scheduler reads."""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import SignalledWhileCollected, make_uid_dataset, sigterm_dropped, small_train_args, wait_for_signal

import audiotune.engine.report as report_module
from audiotune.cli import main
from audiotune.cli.show import after_stopped_run
from audiotune.config.sections import RESUME_HINT
from audiotune.interrupts import (
    Terminated,
    exit_status,
    handler_raises,
    interruption_line,
    raise_if_terminated,
    sigterm_raises,
    stopped_by,
)
from audiotune.outputs import CHECKPOINT_DIR, LAST_CHECKPOINT, MODEL_FILE


def test_sigterm_raises_in_the_block_and_the_handler_before_is_restored_after() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_raises():
        with pytest.raises(Terminated, match="stopped by signal SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            wait_for_signal()
        os.kill(os.getpid(), signal.SIGTERM)  # a second one while the first is cleaned up: ignored
        wait_for_signal(0.2)
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_whose_exception_python_drops_is_raised_where_work_goes_on(dropped: list) -> None:
    with sigterm_raises():
        raise_if_terminated()  # nothing came
        sigterm_dropped(dropped)
        with pytest.raises(Terminated, match="stopped by signal SIGTERM"):
            raise_if_terminated()
        os.kill(os.getpid(), signal.SIGTERM)  # a second one: ignored, as while the first is cleaned up
        wait_for_signal(0.2)
    raise_if_terminated()  # the block has ended: the next command starts afresh


def test_a_multi_process_commands_own_stop_is_raised_again_as_itself(dropped: list) -> None:
    """The scoring processes' own SIGTERM handler (``engine.shards``) raises its own interruption; dropped, it comes
    back as that one (which tells the other processes), and is forgotten with its handler."""
    from audiotune.engine.shards import Stopped, _stop

    with sigterm_raises():
        with handler_raises(signal.SIGTERM, _stop):
            SignalledWhileCollected()
            assert isinstance(dropped[-1].exc_value, Stopped)
            with pytest.raises(Stopped):
                raise_if_terminated()
        raise_if_terminated()


@pytest.mark.slow  # trains a small model for up to 40 epochs of 4 batches
def test_a_fit_whose_sigterm_was_dropped_stops_at_the_next_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture,
                                                                 dropped: list) -> None:
    """SIGTERM's exception dropped during the first epoch's end: the fit stops at the next batch instead of
    training its other epochs (and would end as finished, status 0, without the check)."""
    import audiotune.engine.step_log as step_log

    epoch_end = step_log.StepLog.on_train_epoch_end

    def sigterm_at_epoch_end(self, trainer, module) -> None:
        epoch_end(self, trainer, module)
        if trainer.current_epoch == 0:
            sigterm_dropped(dropped)

    monkeypatch.setattr(step_log.StepLog, "on_train_epoch_end", sigterm_at_epoch_end)
    run = tmp_path / "run"
    assert main(small_train_args(make_uid_dataset(tmp_path), run, "-e", "40")) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"audiotune train: interrupted by SIGTERM; {RESUME_HINT}"
    assert not (run / MODEL_FILE).exists()
    finished = torch.load(run / CHECKPOINT_DIR / LAST_CHECKPOINT, map_location="cpu", weights_only=True)["epoch"]
    assert finished <= 1  # counted from 0: stopped in the second epoch at the latest


def test_scoring_whose_sigterm_was_dropped_stops_at_the_next_batch(trained_run: dict, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture,
                                                                   dropped: list) -> None:
    from audiotune.models.classifier import Classifier

    forward = Classifier.forward_batch
    calls: list[int] = []

    def sigterm_in_the_first_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            sigterm_dropped(dropped)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "forward_batch", sigterm_in_the_first_batch)
    out = tmp_path / "evaluated"
    assert main(["evaluate", "--run", str(trained_run["run"]), "-d", str(trained_run["split"]), "-bs", "1",
                 "-o", str(out)]) == 143
    assert len(calls) == 1 and not out.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("audiotune evaluate: interrupted by SIGTERM")


def test_a_forked_process_ends_by_sigterm_as_without_the_handler() -> None:
    """A data loader worker forked inside the block: SIGTERM ends it by the signal, raising nothing in it."""
    with sigterm_raises():
        child = os.fork()
        if child == 0:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                wait_for_signal()
            finally:  # reached only if the handler raised or let the process live
                os._exit(3)
        _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_how_each_end_is_read() -> None:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    def exit_after(err: BaseException) -> SystemExit:
        try:
            try:
                raise err
            except BaseException:
                raise SystemExit(1) from None  # as Lightning exits after its clean-up of a KeyboardInterrupt
        except SystemExit as exited:
            return exited

    assert stopped_by(Terminated()) == signal.SIGTERM
    assert stopped_by(KeyboardInterrupt()) == signal.SIGINT
    assert stopped_by(exit_after(Terminated())) == signal.SIGTERM
    assert stopped_by(exit_after(KeyboardInterrupt())) == signal.SIGINT
    assert stopped_by(SIGTERMException()) == signal.SIGTERM  # Lightning stopped the fit on SIGTERM itself
    assert stopped_by(SystemExit(2)) is None and stopped_by(exit_after(ValueError())) is None
    assert stopped_by(ValueError("bad")) is None
    try:  # an error in the clean-up of a stop (a data loader worker the same signal killed) is the stop
        try:
            raise Terminated()
        finally:
            raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated.")
    except RuntimeError as err:
        assert stopped_by(err) == signal.SIGTERM
    assert (exit_status(signal.SIGINT), exit_status(signal.SIGTERM)) == (130, 143)
    assert interruption_line("train", signal.SIGINT, "go on") == "audiotune train: interrupted; go on"
    assert interruption_line("cv", signal.SIGTERM, "go on") == "audiotune cv: interrupted by SIGTERM; go on"


def test_sigterm_during_a_command_is_one_line_and_status_143(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    def stopped_while_writing(*args, **kwargs) -> Path:
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's time limit while the command works
        wait_for_signal()
        raise AssertionError("SIGTERM was not raised in the command")

    monkeypatch.setattr(report_module, "write_report", stopped_while_writing)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["report", str(tmp_path)]) == 143
    assert capsys.readouterr().err.splitlines() == [
        "audiotune report: interrupted by SIGTERM; outputs not finished were not written; run the command again"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_error_after_sigterm_reached_the_command_ends_it_as_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """The process group was sent SIGTERM: a data loader worker dies of it and its error reaches the command, not
    the stop, which the command received too. It ends as stopped, status 143, not as an error."""
    def worker_killed_too(*args, **kwargs) -> Path:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            wait_for_signal()
        except Terminated:
            pass  # (as torch's loader does: its own error replaces the stop)
        raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated.")

    monkeypatch.setattr(report_module, "write_report", worker_killed_too)
    assert main(["report", str(tmp_path)]) == 143
    assert capsys.readouterr().err.splitlines() == [
        "audiotune report: interrupted by SIGTERM; outputs not finished were not written; run the command again"]
    monkeypatch.setattr(report_module, "write_report", lambda *args, **kwargs: (_ for _ in ()).throw(
        RuntimeError("no stop")))
    assert main(["report", str(tmp_path)]) == 2  # the next command: its error is an error
    assert "audiotune report: error: RuntimeError: no stop" in capsys.readouterr().err


def test_of_the_processes_a_launcher_stops_on_a_machine_the_first_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """torchrun (or Lightning's launcher) stops every process of a machine: one line, not one per process."""
    def stopped(*args, **kwargs) -> Path:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for_signal()
        raise AssertionError("SIGTERM was not raised in the command")

    monkeypatch.setattr(report_module, "write_report", stopped)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(["report", str(tmp_path)]) == 143
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("there_before", [False, True])
def test_a_training_stopped_before_its_first_checkpoint_says_how_to_start_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, there_before: bool) -> None:
    """Stopped before its first checkpoint, a run has nothing --resume could go on from: its line says to run the
    command again (a directory it made went), or with --overwrite (the directory was there and holds its config);
    stopped later, --resume."""
    import audiotune.engine.train as train_module

    ds = make_uid_dataset(tmp_path)
    run = tmp_path / "run"
    if there_before:
        run.mkdir()

    def stopped_at_the_first_batch(*args, **kwargs) -> None:
        assert (run / "config.yaml").is_file() and not (run / "checkpoints" / "last.ckpt").exists()
        os.kill(os.getpid(), signal.SIGINT)
        wait_for_signal()

    monkeypatch.setattr(train_module.pl.Trainer, "fit", stopped_at_the_first_batch)
    assert main(small_train_args(ds, run)) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == "audiotune train: interrupted; it stopped before its first checkpoint, " + (
        "so there is nothing to resume: the same command with --overwrite starts it again" if there_before else
        "so nothing was kept: run the same command again")
    assert run.exists() is there_before
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert after_stopped_run(argparse.Namespace(exp_dir=str(run))) == RESUME_HINT


def test_a_training_into_a_bucket_stopped_says_what_the_bucket_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, gcs) -> None:
    """A run directory in a bucket is sent its outputs when the command finishes: stopped, this attempt left
    nothing there; the line says so, and --resume where the bucket held a checkpoint before."""
    from conftest import BUCKET

    import audiotune.engine.train as train_module

    ds = make_uid_dataset(tmp_path)
    url = f"gs://{BUCKET}/runs/stopped"

    def stopped_in_the_fit(*args, **kwargs) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        wait_for_signal()

    monkeypatch.setattr(train_module.pl.Trainer, "fit", stopped_in_the_fit)
    assert main(small_train_args(ds, url)) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"audiotune train: interrupted; {url} is sent its outputs when the command finishes, so nothing of this "
        "attempt was kept: run the same command again")
    assert not gcs.fs().exists(f"{BUCKET}/runs/stopped")
    held = argparse.Namespace(exp_dir=str(tmp_path / "staging"), staged_from={"exp_dir": url})
    gcs.fs().pipe(f"{BUCKET}/runs/stopped/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}", b"")
    assert after_stopped_run(held).endswith(f"holds the run as it was before this attempt; {RESUME_HINT}")
