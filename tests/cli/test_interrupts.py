"""A stopped command: SIGTERM raised where the command runs, the signal and the exit status a scheduler reads."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import audiotune.engine.report as report_module
from audiotune.cli import main
from audiotune.cli.interrupts import Terminated, exit_status, interruption_line, sigterm_raises, stopped_by


def wait_for_signal(seconds: float = 5.0) -> None:
    """Python runs a handler between bytecodes: sleep in short steps until it has run (or the time is up)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)


def test_sigterm_raises_in_the_block_and_the_handler_before_is_restored_after() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_raises():
        with pytest.raises(Terminated, match="stopped by signal SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            wait_for_signal()
        os.kill(os.getpid(), signal.SIGTERM)  # a second one while the first is cleaned up: ignored
        wait_for_signal(0.2)
    assert signal.getsignal(signal.SIGTERM) is before


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
