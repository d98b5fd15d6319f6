"""taps/align_inputs.py: every line of a touch log is read or named as bad (file and line), never skipped."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audiotune.cli import main
from audiotune.data.errors import DataError
from audiotune.taps.align_inputs import read_touch_logs

STAMP = "2023-03-15 14:02:34.5"


def test_a_bad_touch_log_line_is_named_whatever_its_event(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    good = f"{STAMP},1,   Down,100,200,12\n{STAMP},1,   Move,101,200,12\n{STAMP},1,     Up,101,200,12\n"
    log.write_text(good)
    assert len(read_touch_logs([str(log)])) == 1
    log.write_text(good + f"{STAMP},2,   Dwon,100,200,12\ngarbage,line\n{STAMP},2,   Move,,200,12\n"
                   f"{STAMP},2,   Up,101,2oo,12\n{STAMP},2,,101,200,12\n")
    with pytest.raises(DataError) as raised:
        read_touch_logs([str(log)])
    assert str(raised.value).splitlines() == [
        "5 touch log line(s) cannot be read:",
        f"  {log} line 4: event 'Dwon' is none of Down, Move, Up",
        f"  {log} line 5: fewer than 5 fields (timestamp, touch id, event, x, y)",
        f"  {log} line 6: x '' is not a finite number",
        f"  {log} line 7: y '2oo' is not a finite number",
        f"  {log} line 8: event '' is none of Down, Move, Up"]
    log.write_text(good + f"{STAMP},2,   Tap,100,200,12\n")  # an event of its own, named by --event
    assert read_touch_logs([str(log)], event="Tap")["line"].tolist() == [4]
    log.write_text(good + "".join(f"{STAMP},2,   Dwon,100,200,12\n" for _ in range(12)))  # LISTED (10) named
    with pytest.raises(DataError, match=r"(?s)^12 touch log line\(s\).*line 13: event.*\n  \.\.\. and 2 more$"):
        read_touch_logs([str(log)])


def session(tmp_path: Path) -> tuple[list[str], list[str]]:
    """A 1 s recording with taps at 0.3 and 0.7 s, its touch log (touches 0.1 s earlier, on keys a and b), its
    key table, and the ``taps align`` argv that pairs them: (argv, the log's lines)."""
    sf.write(tmp_path / "session.wav", np.zeros((16000, 2)), 16000)
    start = dt.datetime(2024, 5, 1, 10, 0, 0)
    (tmp_path / "taps.csv").write_text("path,time,start\nsession.wav,0.30,2024-05-01 10:00:00\n"
                                       "session.wav,0.70,2024-05-01 10:00:00\n")
    lines = [f"{start + dt.timedelta(seconds=t):%Y-%m-%d %H:%M:%S.%f},1,   {event},{x},0,1\n"
             for t, x, event in ((0.2, 0, "Down"), (0.6, 9, "Down"))]
    (tmp_path / "keys.csv").write_text("0,0,a\n10,0,b\n")
    (tmp_path / "log.csv").write_text("".join(lines))
    argv = ["taps", "align", str(tmp_path / "taps.csv"), "--touch_log", str(tmp_path / "log.csv"), "--keys",
            str(tmp_path / "keys.csv"), "--out", str(tmp_path / "seg.csv"), "--before", "0.05", "--after", "0.1",
            "--start_column", "start"]
    return argv, lines


def test_taps_align_refuses_a_log_with_an_unknown_event_before_writing(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    argv, lines = session(tmp_path)
    assert main(argv) == 0
    (tmp_path / "seg.csv").unlink()
    (tmp_path / "log.csv").write_text(lines[0] + "\n" + lines[1].replace("Down", "Dwon"))  # a blank line counts
    assert main(argv) == 2
    assert f"{tmp_path / 'log.csv'} line 3: event 'Dwon' is none of Down, Move, Up" in capsys.readouterr().err
    assert not (tmp_path / "seg.csv").exists()


@pytest.mark.parametrize("name", ["taps.csv", "log.csv", "keys.csv"])
def test_taps_align_refuses_to_write_over_one_of_its_inputs(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            name: str) -> None:
    argv, _ = session(tmp_path)
    before = (tmp_path / name).read_text()
    argv[argv.index("--out") + 1] = str(tmp_path / "sub" / ".." / name)  # the same file, spelled otherwise
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].count(str(tmp_path / name)) == 2, error
    assert (tmp_path / name).read_text() == before
    assert not list(tmp_path.glob("*.report.json"))


@pytest.mark.parametrize(("suffix", "what"), [(".unmatched.csv", "its unmatched taps and touches"),
                                              (".report.json", "its summary"),
                                              (".skipped.csv", "its list of segments skipped"),
                                              (".report.html", "its report page")])
def test_taps_align_refuses_to_write_beside_out_over_one_of_its_inputs(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                       suffix: str, what: str) -> None:
    """OUT.unmatched.csv, OUT.report.json, OUT.skipped.csv and the report page are written as --out is."""
    argv, _ = session(tmp_path)
    log = tmp_path / f"seg{suffix}"
    (tmp_path / "log.csv").rename(log)
    argv[argv.index("--touch_log") + 1] = str(log)
    before = log.read_text()
    assert main(argv) == 2
    assert f"--out {tmp_path / 'seg.csv'}: writes {what} to {log}, which is a touch log {log}; give another --out" \
        in capsys.readouterr().err
    assert log.read_text() == before and not (tmp_path / "seg.csv").exists()
    if suffix == ".report.html":  # without the page nothing is written there
        assert main([*argv, "--report", "false"]) == 0 and log.read_text() == before


@pytest.mark.parametrize("stamp", ["2023-03-15 14:62:34.5", "garbage 14:02:34.5"])
def test_a_bad_first_touch_log_line_is_named_not_taken_for_a_header(tmp_path: Path, stamp: str) -> None:
    log = tmp_path / "log.csv"
    log.write_text(f"{stamp},1,   Down,100,200,12\n{STAMP},2,   Down,300,200,12\n")
    with pytest.raises(DataError) as raised:
        read_touch_logs([str(log)])
    assert str(raised.value).splitlines() == ["1 touch log line(s) cannot be read:",
                                              f"  {log} line 1: timestamp {stamp!r} is not a time"]
    log.write_text(f"time,id,event,x,y,size\n{STAMP},2,   Down,300,200,12\n")  # a header is still one
    assert read_touch_logs([str(log)])["line"].tolist() == [2]


def test_an_infinite_touch_position_is_named(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(f"{STAMP},1,   Down,100,200,12\n{STAMP},2,   Down,inf,200,12\n{STAMP},3,   Down,100,-Infinity,12\n")
    with pytest.raises(DataError) as raised:
        read_touch_logs([str(log)])
    assert str(raised.value).splitlines()[1:] == [f"  {log} line 2: x 'inf' is not a finite number",
                                                  f"  {log} line 3: y '-Infinity' is not a finite number"]


def test_touch_log_time_zones_are_one_throughout_or_named(tmp_path: Path) -> None:
    log, other = tmp_path / "log.csv", tmp_path / "other.csv"
    aware = "2023-03-15T14:02:45.293292+02:00"
    log.write_text(f"{STAMP},1,   Down,100,200,12\n{aware},2,   Down,300,200,12\n")
    with pytest.raises(DataError) as raised:
        read_touch_logs([str(log)])
    assert str(raised.value).splitlines() == [
        "1 touch log line(s) cannot be read:",
        f"  {log} line 2: timestamp {aware!r} has time zone UTC+02:00, unlike line 1 of {log} (no time zone)"]
    # one offset throughout, over every log: the times as written (recording start times carry no zone)
    log.write_text(f"{aware},2,   Down,300,200,12\n")
    other.write_text(f"{STAMP}+02:00,1,   Down,100,200,12\n")
    touches = read_touch_logs([str(log), str(other)])
    assert touches["timestamp"].tolist() == [pd.Timestamp(STAMP), pd.Timestamp(aware[:-6])]
    other.write_text(f"{STAMP},1,   Down,100,200,12\n{STAMP}Z,1,   Down,100,200,12\n")
    with pytest.raises(DataError) as raised:
        read_touch_logs([str(log), str(other)])
    assert str(raised.value).splitlines()[1:] == [
        f"  {other} line 1: timestamp {STAMP!r} has no time zone, unlike line 1 of {log} (time zone UTC+02:00)",
        f"  {other} line 2: timestamp {STAMP + 'Z'!r} has time zone UTC+00:00, unlike line 1 of {log} (time zone "
        "UTC+02:00)"]


def test_taps_too_near_an_edge_are_listed_by_their_line_of_the_taps_table(tmp_path: Path) -> None:
    sf.write(tmp_path / "session.wav", np.zeros((48000, 1)), 16000)
    start = dt.datetime(2024, 5, 1, 10, 0, 0)
    (tmp_path / "taps.csv").write_text("path,time,start\n" + "".join(
        f"session.wav,{t},{start}\n" for t in (2.5, 1.5, 0.3, 2.9)))  # 2.5 has no touch; 0.3 and 2.9 at the edges
    (tmp_path / "log.csv").write_text("".join(
        f"{start + dt.timedelta(seconds=t):%Y-%m-%d %H:%M:%S.%f},1,   Down,0,0,1\n" for t in (0.2, 1.4, 2.8)))
    (tmp_path / "keys.csv").write_text("0,0,a\n")
    assert main(["taps", "align", str(tmp_path / "taps.csv"), "--touch_log", str(tmp_path / "log.csv"), "--keys",
                 str(tmp_path / "keys.csv"), "--out", str(tmp_path / "seg.csv"), "--before", "0.5", "--after", "0.2",
                 "--start_column", "start", "--latency", "0.1", "--report", "False"]) == 0
    skipped = pd.read_csv(tmp_path / "seg.skipped.csv")
    assert skipped["line"].tolist() == [4, 5] and skipped["time"].tolist() == [0.3, 2.9]
    assert pd.read_csv(tmp_path / "seg.csv")["time"].tolist() == [1.5]


@pytest.mark.parametrize("keep_none", [False, True])
def test_off_key_matches_are_counted_whether_kept_or_left_out(tmp_path: Path, keep_none: bool) -> None:
    argv, _ = session(tmp_path)
    (tmp_path / "keys.csv").write_text("0,0,a\n10,0,none\n")  # the second touch is off-key
    assert main(argv + ["--report", "False"] + (["--keep_none"] if keep_none else [])) == 0
    report = json.loads((tmp_path / "seg.report.json").read_text())
    assert report["matched"] == 2 and report["matched_none"] == 1 and report["kept"] == 1 + keep_none
    assert pd.read_csv(tmp_path / "seg.csv")["label"].tolist() == ["a", "none"][:1 + keep_none]


def test_max_key_distance_labels_a_touch_far_from_every_key_none(tmp_path: Path) -> None:
    argv, _ = session(tmp_path)  # the second touch lies 1 unit from key b's centre
    labels = {}
    for distance in ("", "2", "0.5"):
        out = tmp_path / f"seg{distance}.csv"
        flags = ["--max_key_distance", distance] if distance else []
        assert main([*argv[:-6], "--out", str(out), *argv[-4:], *flags, "--keep_none", "--report", "False"]) == 0
        labels[distance] = pd.read_csv(out)["label"].tolist()
    assert labels == {"": ["a", "b"], "2": ["a", "b"], "0.5": ["a", "none"]}


def test_time_pattern_reads_each_recordings_start_from_its_file_name(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    argv, _ = session(tmp_path)
    (tmp_path / "session.wav").rename(tmp_path / "take_20240501-100000.wav")
    (tmp_path / "taps.csv").write_text("path,time\ntake_20240501-100000.wav,0.30\ntake_20240501-100000.wav,0.70\n")
    without_column = [*argv[:-2], "--report", "False"]
    assert main(without_column) == 2  # the seed's last7 reads no start from this name
    assert "--time_pattern last7" in capsys.readouterr().err
    assert main([*without_column, "--time_pattern", "%Y%m%d-%H%M%S"]) == 0
    assert pd.read_csv(tmp_path / "seg.csv")["label"].tolist() == ["a", "b"]
