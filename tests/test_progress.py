"""The progress helper: plain percentage lines where stderr is not a terminal, a bar with rate and ETA on one."""
from __future__ import annotations

import io
import re
import time

import pytest
from conftest import sigterm_dropped

from audiotune.interrupts import Terminated, sigterm_raises
from audiotune.progress import Progress, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_ten_percent_with_rate_and_eta() -> None:
    stream = io.StringIO()
    assert list(track(range(20), "evaluate test", stream=stream)) == list(range(20))
    lines = stream.getvalue().splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in lines[:-1]] == [f"{p}%" for p in range(10, 100, 10)]
    assert re.fullmatch(r"evaluate test: 10% \(2/20 batches, [\d.e+]+ batches/s, ETA \d+:\d\d:\d\d\)", lines[0])
    assert re.fullmatch(r"evaluate test: done \(20 batches in \d+:\d\d:\d\d, [\d.e+]+ batches/s\)", lines[-1])


def test_few_steps_write_a_line_per_step_and_notes_are_shown() -> None:
    stream = io.StringIO()
    with Progress(3, "train epoch 1/2", stream=stream) as progress:
        for _ in range(3):
            progress.update(1, "train_loss 0.5")
    lines = stream.getvalue().splitlines()
    assert [line.split()[3] for line in lines] == ["33%", "66%", "done"]
    assert all(line.endswith("train_loss 0.5)") for line in lines)


def test_unknown_length_and_a_failed_pass() -> None:
    stream = io.StringIO()
    list(track(iter(range(5)), "cluster", unit="clip", stream=stream))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "cluster: done (5 clips in" in lines[0]
    stream = io.StringIO()
    with pytest.raises(RuntimeError), Progress(4, "extract", stream=stream) as progress:
        progress.update()
        raise RuntimeError("stop")
    assert "done" not in stream.getvalue() and "25%" in stream.getvalue()


def test_a_terminal_gets_a_bar_with_rate_and_eta() -> None:
    stream = Terminal()
    for _ in track(range(30), "taps", unit="block", stream=stream):
        time.sleep(0.01)  # the bar redraws at most every 0.1 s
    drawn = [frame for frame in stream.getvalue().split("\r") if re.search(r"\d+/30 \[", frame)]
    assert any(re.search(r"taps: +\d+%\|.*\| \d+/30 \[00:00<00:0\d, +[\d.]+block/s\]", f) for f in drawn)
    assert "done (" not in stream.getvalue()


@pytest.mark.parametrize("env", [{"RANK": "1"}, {"LOCAL_RANK": "1"},
                                 {"LOCAL_RANK": "0", "NODE_RANK": "1"}])  # the first process of a second node
def test_only_the_first_process_reports(monkeypatch: pytest.MonkeyPatch, env: dict) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stream = io.StringIO()
    list(track(range(10), "validation", stream=stream))
    assert stream.getvalue() == ""
    for name in env:
        monkeypatch.delenv(name)
    list(track(range(10), "validation", stream=stream))
    assert "validation: done" in stream.getvalue()


def test_a_pass_whose_sigterm_python_dropped_stops_before_its_next_step(dropped: list) -> None:
    """SIGTERM's exception dropped while a step runs (a finalizer was running when it came): the pass stops before
    the next step, as where it came (clustering, tap detection and scoring go through it)."""
    done: list[int] = []
    with sigterm_raises():
        with pytest.raises(Terminated, match="SIGTERM"):
            for item in track(range(5), "cluster sample train", stream=io.StringIO()):
                done.append(item)
                if item == 1:
                    sigterm_dropped(dropped)
    assert done == [0, 1]
    assert list(track(range(3), "after", stream=io.StringIO())) == [0, 1, 2]  # the next pass starts afresh


def test_each_line_is_one_write_with_its_newline() -> None:
    """print wrote a line's text and its newline apart: an interruption raised between them (a signal handler)
    left the line open, and the command's last line was written after it on the same line."""
    class Writes(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return super().write(text)

    stream = Writes()
    with Progress(4, "train epoch 1", stream=stream) as progress:
        for _ in range(4):
            progress.update()
    assert stream.writes and all(text.endswith("\n") and text.count("\n") == 1 for text in stream.writes)
