"""taps align: touch logs, key maps, start times from file names, one-to-one matching, latency estimation,
and detect -> align on synthetic 8-channel 96 kHz tap recordings with a known latency."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audiotune.cli import main
from audiotune.data.errors import DataError
from audiotune.data.layout import read_table
from audiotune.taps.align import estimate_latency, match
from audiotune.taps.align_inputs import key_labels, read_keys, read_touch_logs, recording_start

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def make_taps(out: Path, *extra: str) -> dict:
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_tap_data.py"), "--out", str(out), *extra],
                   check=True, capture_output=True)
    return json.loads((out / "truth.json").read_text())


@pytest.fixture(scope="module")
def tap_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("taps")
    truth = make_taps(out, "--recordings", "3", "--seconds", "15", "--missed", "0.06", "--spurious", "0.06",
                      "--offkey", "0.06", "--latency", "-0.137", "--seed", "3")
    return out, truth


def recovered(segments: pd.DataFrame, truth: pd.DataFrame) -> tuple[int, int]:
    """(taps with a touch on a key whose time lies in exactly one segment, of their label; such taps). A real
    key press can have two clicks a few tens of ms apart: the segment may centre on either."""
    names = segments["path"].map(lambda p: Path(p).name)
    wanted = truth[truth["touched"] & (truth["label"] != "none")]
    right = 0
    for row in wanted.itertuples():
        inside = (segments["offset"] <= row.time) & (row.time <= segments["offset"] + segments["duration"])
        hit = segments[(names == Path(row.path).name) & inside]
        right += int(len(hit) == 1 and str(hit["label"].iloc[0]) == str(row.label))
    return right, len(wanted)


def detect_and_align(data: Path, out: Path, *align_flags: str, detect_flags: tuple[str, ...] = ("--release", "0.15")):
    recordings = sorted(str(p) for p in (data / "01.acoustic").glob("*.wav"))
    assert main(["taps", "detect", *recordings, "--out", str(out / "taps.csv"), *detect_flags]) == 0
    assert main(["taps", "align", str(out / "taps.csv"), "--touch_log", str(data / "02.neonode" / "session_nnode.csv"),
                 "--keys", str(data / "keys.csv"), "--out", str(out / "segments.csv"), *align_flags]) == 0
    return (pd.read_csv(out / "segments.csv"), json.loads((out / "segments.report.json").read_text()),
            pd.read_csv(out / "segments.unmatched.csv"))


@pytest.mark.slow
def test_detect_and_align_recover_the_taps_and_the_latency(tap_data, tmp_path):
    data, truth_info = tap_data
    truth = pd.read_csv(data / "truth.csv")
    segments, report, leftover = detect_and_align(data, tmp_path, "--plot", str(tmp_path / "plots"))
    right, wanted = recovered(segments, truth)
    assert wanted >= 60 and right / wanted >= 0.98, (right, wanted)
    assert report["latency_estimated"] and abs(report["latency"] - truth_info["latency"]) < 0.005
    # the sensor's spurious touches have no tap, its missed taps no touch, off-key taps a 'none' touch
    assert report["unmatched_touches"] == truth_info["spurious_touches"]
    assert report["unmatched_taps"] == truth_info["missed_taps"]
    offkey = int((truth["touched"] & (truth["label"] == "none")).sum())
    assert offkey > 0 and report["matched_none"] == offkey and (leftover["kind"] == "none").sum() == offkey
    assert "none" not in set(segments["label"].astype(str))
    # the segments are the tap2key window (2192 + 6000 samples at 96 kHz) around each tap, readable as a table
    assert np.allclose(segments["duration"], 8192 / 96000, atol=1e-4)
    assert np.allclose(segments["time"] - segments["offset"], 2192 / 96000, atol=1e-4)
    table = read_table(str(tmp_path / "segments.csv"))
    assert len(table) == len(segments) and {"offset", "duration", "label"} <= set(table.columns)
    assert len(list((tmp_path / "plots").glob("*_align.png"))) == truth_info["recordings"]


@pytest.mark.slow
def test_keep_none_and_a_given_latency(tap_data, tmp_path, capsys):
    data, truth_info = tap_data
    truth = pd.read_csv(data / "truth.csv")
    segments, report, _ = detect_and_align(data, tmp_path, "--keep_none", "--latency", "-0.15",
                                           "--selectivity", "0.134")
    assert not report["latency_estimated"] and report["latency"] == -0.15
    offkey = int((truth["touched"] & (truth["label"] == "none")).sum())
    assert (segments["label"].astype(str) == "none").sum() == offkey == report["matched_none"]
    right, wanted = recovered(segments, truth)
    assert right / wanted >= 0.98
    # a latency that puts every touch outside the recordings matches nothing: an error, nothing written
    out = tmp_path / "far"
    log = str(data / "02.neonode" / "session_nnode.csv")
    assert main(["taps", "align", str(tmp_path / "taps.csv"), "--touch_log", log,
                 "--keys", str(data / "keys.csv"), "--out", str(out / "segments.csv"), "--latency", "40",
                 "--selectivity", "0.02"]) == 2
    assert "no tap matched" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_until_labels_only_the_first_seconds_of_each_recording_as_tap2key_did(tap_data, tmp_path, capsys):
    data, _ = tap_data
    everything, whole, _ = detect_and_align(data, tmp_path / "all")
    segments, report, leftover = detect_and_align(data, tmp_path / "first", "--until", "8")
    assert "touches after --until" in capsys.readouterr().out
    assert len(segments) and segments["touch_time"].max() < 8 <= everything["touch_time"].max()
    late = leftover[leftover["kind"] == "late"]
    assert len(late) == report["touches_after_until"] > 0 and (late["time"] >= 8).all()
    assert whole["touches_after_until"] == 0
    # the segments before --until are the same as without it
    early = everything[everything["touch_time"] < 8].reset_index(drop=True)
    pd.testing.assert_frame_equal(segments[early.columns].reset_index(drop=True), early)


@pytest.mark.slow
def test_spurious_peaks_are_left_unmatched(tap_data, tmp_path):
    """Without the release rule the detector finds extra peaks: matching leaves them out, labels stay right."""
    data, _ = tap_data
    truth = pd.read_csv(data / "truth.csv")
    segments, report, leftover = detect_and_align(data, tmp_path, detect_flags=("--factor", "4"))
    taps = pd.read_csv(tmp_path / "taps.csv")
    assert len(taps) > len(truth)
    right, wanted = recovered(segments, truth)
    assert right / wanted >= 0.98
    assert report["unmatched_taps"] == len(taps) - report["matched"] == (leftover["kind"] == "tap").sum()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "keystrokes" / "Zoom").is_dir() or not (SHARED / "multichannel").is_dir(),
                    reason="needs ../shared/data (Zoom keystrokes, the 8-channel impulse response)")
def test_real_presses_through_a_real_room(tmp_path):
    data = tmp_path / "data"
    info = make_taps(data, "--presses", str(SHARED / "keystrokes" / "Zoom"), "--rir",
                     str(SHARED / "multichannel" / "real_8ch_rir.wav"), "--recordings", "2", "--seconds", "25",
                     "--missed", "0.05", "--spurious", "0.05", "--offkey", "0.05")
    segments, report, _ = detect_and_align(data, tmp_path)
    right, wanted = recovered(segments, pd.read_csv(data / "truth.csv"))
    assert right / wanted >= 0.98 and abs(report["latency"] - info["latency"]) < 0.005


def test_matching_is_one_to_one_and_maximal():
    # nearest-first pairing would take (tap 1, touch 0) and leave two partners unmatched
    assert match(np.array([0.0, 0.1]), np.array([0.06, 0.16]), 0.0, 0.07) == [(0, 0), (1, 1)]
    # two taps near one touch: the closer one wins, the other stays unmatched
    assert match(np.array([1.0, 1.05]), np.array([1.04]), 0.0, 0.1) == [(1, 0)]
    assert match(np.array([1.0]), np.array([1.5]), 0.0, 0.1) == []
    # the latency shifts the touches: 0.2 s late sounds match touches 0.2 s earlier
    assert match(np.array([1.2, 2.2]), np.array([1.0, 2.0]), 0.2, 0.01) == [(0, 0), (1, 1)]


def test_latency_estimate_ignores_spurious_taps_and_touches():
    rng = np.random.default_rng(0)
    touches = np.cumsum(rng.uniform(0.3, 0.9, 80))
    taps = np.sort(np.concatenate([touches - 0.123 + rng.normal(0, 0.003, 80), rng.uniform(0, touches[-1], 15)]))
    noisy_touches = np.sort(np.concatenate([touches, rng.uniform(0, touches[-1], 10)]))
    half = len(taps) // 2
    estimate = estimate_latency([taps[:half], taps[half:]], [noisy_touches, noisy_touches], 0.1, 1.0)
    assert estimate is not None and abs(estimate + 0.123) < 0.002
    assert estimate_latency([np.array([5.0])], [np.array([1.0])], 0.1, 1.0) is None
    # the search stops at --max_latency: a true latency beyond it is not found
    short = estimate_latency([taps], [noisy_touches], 0.01, 0.05)
    assert short is None or abs(short + 0.123) > 0.05


def test_the_default_window_is_tap2keys_2192_and_6000_samples_at_96_khz():
    """A detected tap's segment reads exactly the samples tap2key cut around its peak: 2192 before, 6000 after."""
    from audiotune.data.audio import Span, frame_range
    from audiotune.data.segments import event_span
    from audiotune.taps import TAP_WINDOW

    rate = 96000
    for peak in (2192, 50_001, 1_234_567, 5_754_000):
        time = round(peak / rate, 6)  # as `taps detect` writes it
        offset, duration, problem = event_span(time, *TAP_WINDOW, 60.0)
        assert not problem
        assert frame_range("rec.wav", Span(offset, duration), rate, 60 * rate) == (peak - 2192, peak + 6000)


def test_start_times_from_file_names():
    assert recording_start("a/rec_14_02_33_250000_03_15_2023.wav") == dt.datetime(2023, 3, 15, 14, 2, 33, 250000)
    assert recording_start("x9/t_9_5_7_5_1_2_2024.wav") == dt.datetime(2024, 1, 2, 9, 5, 7, 500000)
    assert recording_start("t_9_05_07_12345678_1_2_2024.wav") == dt.datetime(2024, 1, 2, 9, 5, 7, 123456)
    assert recording_start("take2_20240102-090507.wav", "%Y%m%d-%H%M%S") == dt.datetime(2024, 1, 2, 9, 5, 7)
    with pytest.raises(DataError, match="3 integer groups"):
        recording_start("rec_1_2_3.wav")
    with pytest.raises(DataError, match="does not contain"):
        recording_start("rec.wav", "%Y%m%d")
    with pytest.raises(ValueError, match="%b is not supported"):
        recording_start("rec.wav", "%d%b")


def test_touch_logs_and_keys(tmp_path):
    log = tmp_path / "a_nnode.csv"
    log.write_text("time,id,event,x,y,size\n"
                   "2023-03-15 14:02:34.500000,1,   Down,100,200,12\n"
                   "2023-03-15 14:02:34.530000,1,   Move,101,200,12\n"
                   "2023-03-15 14:02:34.580000,1,     Up,101,200,12\n")
    other = tmp_path / "b_nnode.csv"
    other.write_text("2023-03-15 14:02:34.100000,2,   Down,500,210,12\n")
    touches = read_touch_logs([str(log), str(other)])
    assert touches["touch_id"].tolist() == ["2", "1"] and touches["x"].tolist() == [500.0, 100.0]
    assert touches["line"].tolist() == [1, 2] and touches["source"].iloc[1] == str(log)
    ups = read_touch_logs([str(log)], event="Up")
    assert len(ups) == 1 and ups["x"].tolist() == [101.0] and ups["line"].tolist() == [4]
    bad = tmp_path / "bad.csv"
    bad.write_text("2023-03-15 14:02:34.5,1,   Down,100,200,12\n2023-03-15 14:02:35.5,1,   Down,left,200,12\n")
    with pytest.raises(DataError, match=r"bad.csv line 2"):
        read_touch_logs([str(bad)])
    keys_csv = tmp_path / "keys.csv"
    keys_csv.write_text("100,200,a\n500,200,b\n300,600,none\n")
    keys = read_keys(str(keys_csv))
    assert key_labels(np.array([110.0, 480.0, 300.0]), np.array([190.0, 230.0, 520.0]), keys).tolist() == \
        ["a", "b", "none"]
    assert key_labels(np.array([110.0, 300.0]), np.array([190.0, 200.0]), keys, max_distance=50).tolist() == \
        ["a", "none"]
    keys_csv.write_text("x,y,label\n100,200,a\n1o0,200,b\n")
    with pytest.raises(DataError, match=r"line\(s\) \[3\]"):
        read_keys(str(keys_csv))


@pytest.mark.parametrize("header", ["", "x,y,label\n"])
def test_a_bad_key_is_named_by_its_line_with_or_without_a_header(tmp_path, header):
    keys_csv = tmp_path / "keys.csv"
    keys_csv.write_text(f"{header}300,zz,1\n100,200,a\n500,2o0,b\n")
    first = 1 + len(header.splitlines())
    with pytest.raises(DataError, match=rf"x or y not a number on line\(s\) \[{first}, {first + 2}\]$"):
        read_keys(str(keys_csv))
    keys_csv.write_text(f"{header}3oo,200,a\n100,200,b\n")  # not a header: its y is a number
    with pytest.raises(DataError, match=rf"line\(s\) \[{first}\]$"):
        read_keys(str(keys_csv))


@pytest.mark.parametrize("header", ["", "x,y,label\n"])
def test_two_keys_at_one_place_or_a_key_without_a_label_are_named_by_their_lines(tmp_path, header):
    """The nearest key of a tap at a shared centre would always be the first: the other never assigned."""
    keys_csv, first = tmp_path / "keys.csv", 1 + len(header.splitlines())
    keys_csv.write_text(f"{header}100,200,a\n300,800,1\n300,800,2\n")
    with pytest.raises(DataError, match=rf"lines \[{first + 1}, {first + 2}\] put keys at one place \(300, 800\)"):
        read_keys(str(keys_csv))
    keys_csv.write_text(f"{header}100,200,a\n300,800, \n")
    with pytest.raises(DataError, match=rf"no label on line\(s\) \[{first + 1}\]$"):
        read_keys(str(keys_csv))
    keys_csv.write_text(f"{header}100,200,shift\n900,200,shift\n")  # one label at two places: two keys of it
    assert read_keys(str(keys_csv))["label"].tolist() == ["shift", "shift"]


def test_start_column_instead_of_the_name(tmp_path, capsys):
    import soundfile as sf

    sf.write(tmp_path / "session.wav", np.zeros((16000, 2)), 16000)
    start = dt.datetime(2024, 5, 1, 10, 0, 0)
    (tmp_path / "taps.csv").write_text("path,time,start\nsession.wav,0.30,2024-05-01 10:00:00\n"
                                       "session.wav,0.70,2024-05-01 10:00:00\n")
    (tmp_path / "log.csv").write_text("".join(
        f"{start + dt.timedelta(seconds=t):%Y-%m-%d %H:%M:%S.%f},1,   Down,{x},0,1\n" for t, x in ((0.2, 0), (0.6, 9))))
    (tmp_path / "keys.csv").write_text("0,0,a\n10,0,b\n")
    argv = ["taps", "align", str(tmp_path / "taps.csv"), "--touch_log", str(tmp_path / "log.csv"), "--keys",
            str(tmp_path / "keys.csv"), "--out", str(tmp_path / "seg.csv"), "--before", "0.05", "--after", "0.1"]
    assert main(argv) == 2
    assert "integer groups" in capsys.readouterr().err
    assert main(argv + ["--start_column", "start"]) == 0
    segments = pd.read_csv(tmp_path / "seg.csv")
    assert segments["label"].tolist() == ["a", "b"] and np.allclose(segments["offset"], [0.25, 0.65])
    report = json.loads((tmp_path / "seg.report.json").read_text())
    assert abs(report["latency"] - 0.1) < 1e-6 and report["matched"] == 2


def _two_arrays(folder: Path) -> list[str]:
    """Two recordings made at once (two arrays, one session) with taps at 0.3 and 0.7 s, the touch log of that
    session and two keys; the align command line writing seg.csv."""
    import soundfile as sf

    for name in ("top", "bottom"):
        sf.write(folder / f"{name}.wav", np.zeros((16000, 2)), 16000)
    (folder / "taps.csv").write_text("path,time,start\n" + "".join(
        f"{name}.wav,{t},2024-05-01 10:00:00\n" for name in ("top", "bottom") for t in (0.3, 0.7)))
    start = dt.datetime(2024, 5, 1, 10, 0, 0)
    (folder / "log.csv").write_text("".join(
        f"{start + dt.timedelta(seconds=t):%Y-%m-%d %H:%M:%S.%f},1,   Down,{x},0,1\n" for t, x in ((0.2, 0), (0.6, 9))))
    (folder / "keys.csv").write_text("0,0,a\n10,0,b\n")
    return ["taps", "align", str(folder / "taps.csv"), "--touch_log", str(folder / "log.csv"), "--keys",
            str(folder / "keys.csv"), "--out", str(folder / "seg.csv"), "--before", "0.05", "--after", "0.1",
            "--start_column", "start", "--latency", "0.1"]


def test_recordings_made_at_once_each_pair_the_touches_they_hold(tmp_path):
    """tap2key labelled each recording from the whole log: two arrays recording one session both get their taps
    labelled, none of them unmatched."""
    assert main(_two_arrays(tmp_path)) == 0
    segments = pd.read_csv(tmp_path / "seg.csv")
    assert sorted(zip(segments["path"], segments["label"])) == [("bottom.wav", "a"), ("bottom.wav", "b"),
                                                                ("top.wav", "a"), ("top.wav", "b")]
    report = json.loads((tmp_path / "seg.report.json").read_text())
    assert report["matched"] == 4 and report["unmatched_taps"] == report["unmatched_touches"] == 0


def test_a_touch_log_given_twice_is_refused(tmp_path, capsys):
    argv = _two_arrays(tmp_path)
    log = str(tmp_path / "log.csv")
    argv[argv.index("--keys"):argv.index("--keys")] = [f"{tmp_path}/./log.csv"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"1 touch log(s) given more than once:\n  {tmp_path}/./log.csv: the file {log} again" in error
    assert not (tmp_path / "seg.csv").exists()


def test_an_align_that_cannot_write_its_page_writes_nothing(tmp_path, capsys, monkeypatch):
    """The page's path is checked with the others before any work; and should writing the page fail once the
    tables are written, the tables are removed with it: no set of outputs is left partly new."""
    argv = _two_arrays(tmp_path)
    (tmp_path / "seg.report.html").mkdir()
    assert main(argv) == 2
    assert "seg.report.html: is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("seg*")) == ["seg.report.html"]
    (tmp_path / "seg.report.html").rmdir()
    import audiotune.engine.taps_report as pages

    def interrupted(result):
        raise KeyboardInterrupt

    monkeypatch.setattr(pages, "alignment_report", interrupted)
    assert main(argv) == 130
    assert not list(tmp_path.glob("seg*"))


def test_a_touch_no_array_heard_is_listed_with_each_recording_and_counted_once(tmp_path):
    argv = _two_arrays(tmp_path)
    with open(tmp_path / "log.csv", "a") as log:
        log.write("2024-05-01 10:00:00.850000,1,   Down,0,0,1\n")  # expected at 0.95 s, where no tap is
    assert main(argv) == 0
    unmatched = pd.read_csv(tmp_path / "seg.unmatched.csv")
    assert sorted(unmatched.loc[unmatched["kind"] == "touch", "path"]) == ["bottom.wav", "top.wav"]
    report = json.loads((tmp_path / "seg.report.json").read_text())
    assert report["unmatched_touches"] == 1 and report["matched"] == 4 and report["unmatched_taps"] == 0
    assert [row["unmatched_touches"] for row in report["recordings"]] == [1, 1]
