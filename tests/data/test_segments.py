"""`audiotune segment`: event tables and sliding windows become segment tables read_table can resolve."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from conftest import tone

from audiotune.cli import main
from audiotune.data.errors import DataError
from audiotune.data.segments import event_span, format_seconds, segment_csv, window_spans

RATE = 8000


def wav(path: Path, seconds: float, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(440, seconds, RATE, channels=channels), RATE)
    return path


def write_table(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture()
def recordings(tmp_path: Path) -> dict:
    """Two recordings under data/audio (2 s and 1.3 s) and an event table beside them in data/."""
    audio = tmp_path / "data" / "audio"
    wav(audio / "a.wav", 2.0)
    wav(audio / "b.wav", 1.3, channels=4)
    events = write_table(tmp_path / "data" / "events.csv", [
        {"path": "audio/a.wav", "time": 0.5, "label": "tap", "subject": "ann"},
        {"path": "audio/a.wav", "time": 1.25, "label": "key", "subject": "ann"},
        {"path": str(audio / "b.wav"), "time": 0.75, "label": "tap", "subject": "bob"},
    ])
    return {"root": tmp_path, "audio": audio, "events": events}


# ---------------------------------------------------------------- pure rules

def test_format_seconds_is_compact() -> None:
    assert [format_seconds(v) for v in (0.0, 10.0, 1.5, 0.1 + 0.2, 12.0000004)] == ["0", "10", "1.5", "0.3", "12"]


def test_window_spans_full_windows_and_the_short_recording_rule() -> None:
    assert window_spans(2.0, 0.5, 0.5) == [(0.0, 0.5), (0.5, 0.5), (1.0, 0.5), (1.5, 0.5)]
    assert window_spans(1.3, 0.5, 0.25) == [(0.0, 0.5), (0.25, 0.5), (0.5, 0.5), (0.75, 0.5)]  # tail 1.25-1.3 left
    assert window_spans(0.3, 0.5, 0.5) == [(0.0, 0.3)]
    assert window_spans(1.0, 0.1, 0.1)[-1] == (0.9, 0.1)  # float error in k * hop loses no window


def test_event_span_reports_instead_of_clamping() -> None:
    assert event_span(1.0, 0.25, 0.5, 2.0) == (0.75, 0.75, "")
    assert event_span(0.1, 0.25, 0.5, 2.0)[2] == "starts 0.15 s before the start of the file"
    assert event_span(1.9, 0.25, 0.5, 2.0)[2] == "ends 0.4 s after the end of the file (2 s long)"


# ---------------------------------------------------------------- events

def test_events_become_segments_with_carried_columns(recordings: dict) -> None:
    out = recordings["root"] / "segments" / "events.csv"
    result = segment_csv(recordings["events"], out, before=0.25, after=0.5)
    table = pd.read_csv(out)
    assert list(table.columns) == ["uid", "path", "offset", "duration", "time", "label", "subject"]
    assert table["offset"].tolist() == [0.25, 1.0, 0.5]
    assert table["duration"].tolist() == [0.75, 0.75, 0.75]
    assert table["label"].tolist() == ["tap", "key", "tap"] and table["subject"].tolist() == ["ann", "ann", "bob"]
    assert table["path"].tolist() == ["../data/audio/a.wav", "../data/audio/a.wav", "../data/audio/b.wav"]
    assert table["uid"].tolist() == ["../data/audio/a.wav@0.25", "../data/audio/a.wav@1", "../data/audio/b.wav@0.5"]
    assert result.summary() == f"{out}: 3 segments from 2 recordings"
    assert not (out.parent / "events.skipped.csv").exists()


def test_event_uids_are_kept_when_unique_and_become_source_uid_otherwise(recordings: dict) -> None:
    events = pd.read_csv(recordings["events"])
    events.insert(0, "uid", ["e1", "e2", "e3"])
    events.to_csv(recordings["events"], index=False)
    out = recordings["root"] / "out.csv"
    segment_csv(recordings["events"], out, before=0.25, after=0.25)
    assert pd.read_csv(out)["uid"].tolist() == ["e1", "e2", "e3"]
    events["uid"] = ["a", "a", "b"]
    events.to_csv(recordings["events"], index=False)
    segment_csv(recordings["events"], out, before=0.25, after=0.25)
    table = pd.read_csv(out)
    assert table["uid"].tolist()[0] == "data/audio/a.wav@0.25" and table["source_uid"].tolist() == ["a", "a", "b"]


def test_carried_cells_are_written_back_unchanged(recordings: dict) -> None:
    write_table(recordings["events"], [{"path": "audio/b.wav", "time": 0.5, "label": 1, "score": "",
                                        "channels": "0,1,2,3", "code": "007"}])
    out = recordings["root"] / "data" / "out.csv"
    segment_csv(recordings["events"], out, before=0.1, after=0.1)
    text = out.read_text().splitlines()
    assert text[1] == 'audio/b.wav@0.4,audio/b.wav,0.4,0.2,0.5,1,,"0,1,2,3",007'


def test_paths_resolve_from_the_output_folder(recordings: dict) -> None:
    from audiotune.data.layout import read_table

    out = recordings["root"] / "elsewhere" / "deep" / "segments.csv"
    segment_csv(recordings["events"], out, before=0.25, after=0.5)
    table = read_table(out)
    assert set(table["path"]) == {str(recordings["audio"].resolve() / n) for n in ("a.wav", "b.wav")}
    assert all(Path(p).is_file() for p in table["path"])
    # without its uid column the table gets the same uids back
    pd.read_csv(out).drop(columns="uid").to_csv(out.parent / "no_uid.csv", index=False)
    assert read_table(out.parent / "no_uid.csv").index.tolist() == table.index.tolist()


def test_out_of_range_events_raise_by_default_and_nothing_is_written(recordings: dict) -> None:
    write_table(recordings["events"], [{"path": "audio/a.wav", "time": 0.1, "label": "x"},
                                       {"path": "audio/a.wav", "time": 1.0, "label": "y"},
                                       {"path": "audio/a.wav", "time": 1.9, "label": "z"}])
    out = recordings["root"] / "out.csv"
    with pytest.raises(DataError, match=r"(?s)2 event\(s\).*line 2: .*starts 0.15 s before.*line 4: .*ends 0.4 s after"
                                        r".*--on_error skip") as err:
        segment_csv(recordings["events"], out, before=0.25, after=0.5)
    assert "events.csv" in str(err.value)
    assert not out.exists() and not (recordings["root"] / "out.skipped.csv").exists()


def test_out_of_range_events_are_listed_with_skip(recordings: dict) -> None:
    write_table(recordings["events"], [{"path": "audio/a.wav", "time": 0.1, "label": "x"},
                                       {"path": "audio/a.wav", "time": 1.0, "label": "y"},
                                       {"path": "audio/a.wav", "time": 1.9, "label": "z"}])
    out = recordings["root"] / "out.csv"
    result = segment_csv(recordings["events"], out, before=0.25, after=0.5, on_error="skip")
    assert pd.read_csv(out)["label"].tolist() == ["y"]
    skipped = pd.read_csv(recordings["root"] / "out.skipped.csv")
    assert skipped["label"].tolist() == ["x", "z"] and skipped["line"].tolist() == [2, 4]
    assert skipped["reason"].str.startswith("segment ").all() and "before the start" in skipped["reason"][0]
    listed = out.parent / "out.skipped.csv"
    assert result.summary().endswith(f"1 segments from 1 recordings, 2 skipped (listed in {listed})")
    # a clean rerun removes the list of the earlier one
    segment_csv(recordings["events"], out, before=0.0, after=0.05)
    assert not (recordings["root"] / "out.skipped.csv").exists()


# ---------------------------------------------------------------- windows

def test_windows_with_hop_shorter_than_window(recordings: dict) -> None:
    table_csv = write_table(recordings["root"] / "data" / "recordings.csv", [
        {"uid": "rec_a", "path": "audio/a.wav", "severity": 2, "subject": "ann"},
        {"uid": "rec_b", "path": "audio/b.wav", "severity": 0, "subject": "bob"}])
    out = recordings["root"] / "data" / "windows.csv"
    result = segment_csv(table_csv, out, window=1.0, hop=0.5)
    table = pd.read_csv(out)
    assert list(table.columns) == ["uid", "path", "offset", "duration", "recording", "severity", "subject"]
    assert table["uid"].tolist() == ["rec_a@0", "rec_a@0.5", "rec_a@1", "rec_b@0"]
    assert table["offset"].tolist() == [0.0, 0.5, 1.0, 0.0] and set(table["duration"]) == {1.0}
    assert table["recording"].tolist() == ["rec_a"] * 3 + ["rec_b"]
    assert table["severity"].tolist() == [2, 2, 2, 0]
    assert result.summary() == f"{out}: 4 segments from 2 recordings"


def test_windows_with_hop_equal_to_window_and_a_short_recording(recordings: dict) -> None:
    wav(recordings["audio"] / "short.wav", 0.3)
    table_csv = write_table(recordings["root"] / "data" / "recordings.csv", [
        {"path": "audio/a.wav", "label": "x"}, {"path": "audio/short.wav", "label": "y"}])
    out = recordings["root"] / "data" / "windows.csv"
    result = segment_csv(table_csv, out, window=0.5)
    table = pd.read_csv(out)
    assert table["offset"].tolist() == [0.0, 0.5, 1.0, 1.5, 0.0]
    assert table["duration"].tolist() == [0.5, 0.5, 0.5, 0.5, 0.3]
    assert table["recording"].tolist() == ["audio/a.wav"] * 4 + ["audio/short.wav"]
    assert table["uid"].tolist()[-1] == "audio/short.wav@0"
    assert "1 recording(s) shorter than one window kept whole" in result.summary()


def test_skip_leaves_out_a_recording_whose_file_is_missing_and_the_summary_counts_both(recordings: dict,
                                                                                      capsys) -> None:
    table_csv = write_table(recordings["root"] / "data" / "recordings.csv", [
        {"uid": "rec_a", "path": "audio/a.wav"}, {"uid": "rec_m", "path": "audio/missing.wav"}])
    out = recordings["root"] / "windows.csv"
    argv = ["segment", str(table_csv), "--window", "1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "line 3: " in err and "missing.wav: audio file not found" in err and "--on_error skip" in err
    assert not out.exists()
    assert main([*argv, "--on_error", "skip"]) == 0
    listed = recordings["root"] / "windows.skipped.csv"
    summary = capsys.readouterr().out.strip()
    assert summary == f"{out}: 2 segments from 1 of 2 recordings, 1 skipped (listed in {listed})"
    assert pd.read_csv(out)["recording"].tolist() == ["rec_a", "rec_a"]
    skipped = pd.read_csv(listed)
    assert skipped["uid"].tolist() == ["rec_m"] and skipped["line"].tolist() == [3]
    assert skipped["reason"].tolist() == ["audio file not found"]


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("rows, kwargs, message", [
    ([{"path": "audio/a.wav", "label": "x"}], {"before": 0.1, "after": 0.1}, "needs? .*'time' column"),
    ([{"time": 0.5}], {"before": 0.1, "after": 0.1}, "needs a 'path' column"),
    ([{"path": "audio/a.wav", "time": 0.5}], {"before": -0.1, "after": 0.1}, "--before must be"),
    ([{"path": "audio/a.wav", "time": 0.5}], {"before": 0.1, "after": float("nan")}, "--after must be a finite"),
    ([{"path": "audio/a.wav", "time": 0.5}], {"window": 0.0}, "--window must be"),
    ([{"path": "audio/a.wav"}], {"window": 1.0, "hop": -1.0}, "--hop must be"),
    ([{"path": "audio/a.wav", "time": 0.5}], {"before": 0.1, "after": 0.1, "window": 1.0}, "either --before"),
    ([{"path": "audio/a.wav", "time": 0.5}], {}, "either --before"),
    ([{"path": "audio/a.wav", "time": 0.5}], {"before": 0.1}, "both --before and --after"),
    ([{"path": "audio/a.wav", "time": 0.5}], {"window": 1.0}, "has a 'time' column"),
    ([{"path": "audio/a.wav", "offset": 0.5}], {"window": 1.0}, "already has \\['offset'\\]"),
    ([{"path": "audio/missing.wav", "time": 0.5}], {"before": 0.1, "after": 0.1},
     "line 2: .*missing.wav: audio file not found"),
    ([{"path": "audio/a.wav", "time": 2.5}], {"before": 0.1, "after": 0.1},
     "line 2: the event at 2.5 s in .*a.wav: the event is past the end of the file"),
    ([{"path": "audio/a.wav", "time": "soon"}], {"before": 0.1, "after": 0.1}, "line 2: time 'soon' is not a number"),
    ([{"path": "audio/a.wav", "time": -1}], {"before": 0.1, "after": 0.1}, "line 2: time '-1' must be"),
    ([{"path": "audio/missing.wav"}], {"window": 1.0}, "line 2: .*missing.wav: audio file not found"),
    ([{"path": "audio/a.wav"}, {"path": "audio/a.wav"}], {"window": 1.0}, "same segment uid twice"),
])
def test_bad_input_names_the_file(recordings: dict, rows: list[dict], kwargs: dict, message: str) -> None:
    table_csv = write_table(recordings["root"] / "data" / "table.csv", rows)
    out = recordings["root"] / "out.csv"
    with pytest.raises(DataError, match=message):
        segment_csv(table_csv, out, **kwargs)
    assert not out.exists()


def test_skip_covers_events_whose_file_is_missing_or_too_short_not_malformed_rows(recordings: dict) -> None:
    rows = [{"path": "audio/a.wav", "time": 0.5}, {"path": "audio/a.wav", "time": 2.5},
            {"path": "audio/missing.wav", "time": 0.5}]
    table_csv = write_table(recordings["root"] / "data" / "table.csv", rows)
    out = recordings["root"] / "out.csv"
    result = segment_csv(table_csv, out, before=0.1, after=0.1, on_error="skip")
    assert len(result.segments) == 1
    skipped = pd.read_csv(out.with_suffix(".skipped.csv"))
    assert skipped["line"].tolist() == [3, 4]
    assert "past the end of the file" in skipped["reason"][0] and "not found" in skipped["reason"][1]
    table_csv = write_table(recordings["root"] / "data" / "table.csv", [*rows, {"path": "audio/a.wav", "time": "x"}])
    with pytest.raises(DataError, match="--on_error skip leaves out events whose file is missing"):
        segment_csv(table_csv, out, before=0.1, after=0.1, on_error="skip")


def test_unreadable_header_names_the_file(recordings: dict) -> None:
    (recordings["audio"] / "broken.wav").write_bytes(b"not audio" * 20)
    table_csv = write_table(recordings["root"] / "data" / "table.csv", [{"path": "audio/broken.wav"}])
    with pytest.raises(DataError, match=r"table.csv line 2: .*broken.wav: cannot read the audio header"):
        segment_csv(table_csv, recordings["root"] / "out.csv", window=1.0)


# ---------------------------------------------------------------- command line

def test_cli_segment_events_and_windows(recordings: dict, capsys) -> None:
    out = recordings["root"] / "out" / "events.csv"
    assert main(["segment", str(recordings["events"]), "--before", "0.25", "--after", "0.5", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out.resolve()}: 3 segments from 2 recordings"
    windows = recordings["root"] / "out" / "windows.csv"
    table_csv = write_table(recordings["root"] / "data" / "recs.csv", [{"path": "audio/a.wav"}])
    assert main(["segment", str(table_csv), "--window", "1", "--hop", "0.5", "--out", str(windows)]) == 0
    assert len(pd.read_csv(windows)) == 3


def test_cli_errors_and_skip(recordings: dict, capsys) -> None:
    write_table(recordings["events"], [{"path": "audio/a.wav", "time": 0.1}, {"path": "audio/a.wav", "time": 1.0}])
    out = recordings["root"] / "out.csv"
    argv = ["segment", str(recordings["events"]), "--before", "0.25", "--after", "0.5", "--out", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("audiotune segment: error: 1 event(s) that cannot be cut from their file")
    assert main([*argv, "--on-error", "skip"]) == 0
    assert "1 skipped" in capsys.readouterr().out and (recordings["root"] / "out.skipped.csv").is_file()
    assert main(["segment", str(recordings["events"]), "--window", "1", "--before", "1", "--out", str(out)]) == 2
    assert "either --before" in capsys.readouterr().err
