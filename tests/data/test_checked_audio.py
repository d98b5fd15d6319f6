"""The check before a run: several files at once, reported in table order. The record of checked audio: a usable
row is decoded for the check once while its file is unchanged; a changed file, other settings or another span are
checked again, failures always."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import sigterm_dropped, tone

from audiotune.config import RunConfig
from audiotune.data import checked_audio
from audiotune.data.audio import AudioSpec
from audiotune.data.checked_audio import CheckRecord, scan_audio
from audiotune.data.input_spec import InputSpec
from audiotune.data.prepare import prepare_eval_data
from audiotune.interrupts import Terminated, sigterm_raises

SPEC = AudioSpec(resample_rate=0, clip_length=0)


def _table(folder: Path) -> pd.DataFrame:
    """a: 0.5 s; b: 0.25 s, and its second half as a segment row; z: all zeros."""
    waves = {"a": np.full(4000, 0.1), "b": np.linspace(-0.5, 0.5, 2000), "z": np.zeros(1000)}
    for name, wave in waves.items():
        sf.write(folder / f"{name}.wav", wave.astype(np.float32), 8000)
    rows = [("a", "a", None, None), ("b", "b", None, None), ("b@0.125", "b", 0.125, 0.125), ("z", "z", None, None)]
    return pd.DataFrame({"uid": [r[0] for r in rows], "path": [str(folder / f"{r[1]}.wav") for r in rows],
                         "offset": [r[2] for r in rows], "duration": [r[3] for r in rows]}).set_index("uid")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the check decodes, by name."""
    names: list[str] = []
    real = checked_audio.check_clip

    def counted(path: str, *args: object, **kwargs: object) -> int:
        names.append(Path(path).stem)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(checked_audio, "check_clip", counted)
    return names


def test_a_usable_row_is_not_decoded_again_while_its_file_is_unchanged(tmp_path: Path, reads: list[str]) -> None:
    table = _table(tmp_path)
    first = scan_audio(table, SPEC, "test", record=CheckRecord(tmp_path / "cache", SPEC))
    assert sorted(reads) == ["a", "b", "b", "z"]
    reads.clear()
    again = scan_audio(table, SPEC, "test", record=CheckRecord(tmp_path / "cache", SPEC))  # as the next command
    assert reads == ["z"]  # the failure is checked again, and fails again with its reason
    assert again[0].equals(first[0]) and again[1].equals(first[1])
    assert first[0]["num_samples"].tolist() == [4000, 2000, 1000] and "all zeros" in first[1]["reason"][0]
    assert scan_audio(table, SPEC, "test")[0].equals(first[0])  # the same rows and lengths as checking everything


def test_a_changed_file_other_settings_and_another_span_are_checked_again(tmp_path: Path,
                                                                        reads: list[str]) -> None:
    table = _table(tmp_path)
    scan_audio(table, SPEC, "test", record=CheckRecord(tmp_path / "cache", SPEC))
    reads.clear()
    sf.write(tmp_path / "a.wav", np.zeros(4000, dtype=np.float32), 8000)  # the same size, written again
    kept, failures = scan_audio(table, SPEC, "test", record=CheckRecord(tmp_path / "cache", SPEC))
    assert sorted(reads) == ["a", "z"] and sorted(failures["uid"]) == ["a", "z"]
    assert "a.wav: audio is all zeros" in failures["reason"][0]

    reads.clear()
    crop = AudioSpec(resample_rate=0, clip_length=0.1)
    kept, _ = scan_audio(table, crop, "test", record=CheckRecord(tmp_path / "cache", crop))
    assert sorted(reads) == ["a", "b", "b", "z"] and kept["num_samples"].tolist() == [800, 800]

    reads.clear()
    other = table.loc[["b@0.125"]].assign(offset=0.0)
    kept, _ = scan_audio(other, SPEC, "test", record=CheckRecord(tmp_path / "cache", SPEC))
    assert reads == ["b"] and kept["num_samples"].tolist() == [1000]


def test_a_record_that_cannot_be_written_is_said_and_the_scan_goes_on(
        tmp_path: Path, reads: list[str], caplog: pytest.LogCaptureFixture) -> None:
    table = _table(tmp_path)
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    with caplog.at_level(logging.WARNING):
        kept, failures = scan_audio(table, SPEC, "test", record=CheckRecord(tmp_path / "cache", SPEC))
    assert "cannot keep the record of checked audio" in caplog.text
    assert kept["num_samples"].tolist() == [4000, 2000, 1000] and failures["uid"].tolist() == ["z"]
    reads.clear()
    scan_audio(table, SPEC, "test", record=CheckRecord(tmp_path / "cache", SPEC))
    assert len(reads) == 4  # nothing was kept: everything is checked again


def test_commands_keep_the_record_under_the_cache_folder(tmp_path: Path, reads: list[str]) -> None:
    """What ``evaluate`` and ``extract`` check (prepare_eval_data), under --cache_dir: a second command decodes
    only the row that failed."""
    table = _table(tmp_path).drop(columns=["offset", "duration"]).drop(index="b@0.125")
    table.to_csv(tmp_path / "test.csv")
    config = RunConfig()
    config.runtime.cache_dir, config.data.on_error = str(tmp_path / "cache"), "skip"
    config.audio.resample_rate, config.audio.eval_clip_length = 0, 0
    inputs = InputSpec.from_sections(config.audio, config.features)
    first = prepare_eval_data(config, inputs, str(tmp_path / "test.csv"), targets_needed=False)
    assert sorted(reads) == ["a", "b", "z"] and [p.parent.name for p in (tmp_path / "cache").rglob("*.json")] == \
        ["checked"]
    reads.clear()
    again = prepare_eval_data(config, inputs, str(tmp_path / "test.csv"), targets_needed=False)
    assert reads == ["z"]
    assert all(again.tables[split].equals(first.tables[split]) for split in first.tables)
    os.utime(tmp_path / "b.wav", ns=(1, 1))  # another modification time: read again
    reads.clear()
    prepare_eval_data(config, inputs, str(tmp_path / "test.csv"), targets_needed=False)
    assert sorted(reads) == ["b", "z"]


def test_a_damaged_record_is_read_as_empty_and_written_anew(tmp_path: Path, reads: list[str]) -> None:
    table = _table(tmp_path)
    record = CheckRecord(tmp_path / "cache", SPEC)
    record.path.parent.mkdir(parents=True)
    record.path.write_text('{"checks": 1, "files": {"/a.wav": ')  # cut short, as by a full disk
    kept, _ = scan_audio(table, SPEC, "test", record=CheckRecord(tmp_path / "cache", SPEC))
    assert len(reads) == 4 and kept["num_samples"].tolist() == [4000, 2000, 1000]
    reads.clear()
    scan_audio(table, SPEC, "test", record=CheckRecord(tmp_path / "cache", SPEC))
    assert reads == ["z"]


def test_the_check_before_a_run_reads_several_files_at_once_and_reports_in_table_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    rows = []
    for i in range(12):
        path = tmp_path / f"c{i}.wav"
        if i % 5 == 2:
            sf.write(path, np.zeros(1600, np.float32), 16000)  # all zeros: a failure in its place
        elif i % 5 != 4:  # every fifth missing
            sf.write(path, tone(200 + 50 * i, 0.1 + 0.01 * i, 16000), 16000)
        rows.append({"uid": f"c{i}", "path": str(path)})
    table = pd.DataFrame(rows).set_index("uid")
    spec = AudioSpec(clip_length=0, resample_rate=16000)
    threads: set[int] = set()
    check = checked_audio.check_clip

    def recorded(*args: object, **kwargs: object) -> int:
        threads.add(threading.get_ident())
        return check(*args, **kwargs)

    monkeypatch.setattr(checked_audio, "check_clip", recorded)
    monkeypatch.setattr(checked_audio, "usable_cpus", lambda: 1)
    alone = checked_audio.check_rows(table, spec, "train")
    assert len(threads) == 1
    threads.clear()
    monkeypatch.setattr(checked_audio, "usable_cpus", lambda: 4)
    together = checked_audio.check_rows(table, spec, "train")
    assert len(threads) > 1 and threading.get_ident() not in threads
    assert together[0] == alone[0] and together[1].equals(alone[1])
    assert [length > 0 for length in alone[0]] == [i % 5 not in (2, 4) for i in range(12)]
    assert alone[1]["uid"].tolist() == ["c2", "c4", "c7", "c9"]


def _many_rows(count: int) -> pd.DataFrame:
    return pd.DataFrame({"uid": [f"c{i}" for i in range(count)],
                         "path": [f"/data/c{i}.wav" for i in range(count)]}).set_index("uid")


def test_a_stopped_check_ends_at_once_without_reading_the_rows_not_begun(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (or Ctrl-C) while several files are read at once: those being read finish, the others are not read
    (400 rows of about 20 ms on 4 threads, the signal sent as the 20th is read)."""
    import signal
    import time

    read: list[int] = []

    def slow(*args: object, **kwargs: object) -> int:
        read.append(1)
        if len(read) == 20:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.02)
        return 1600

    monkeypatch.setattr(checked_audio, "check_clip", slow)
    monkeypatch.setattr(checked_audio, "usable_cpus", lambda: 4)
    with sigterm_raises(), pytest.raises(Terminated):
        checked_audio.check_rows(_many_rows(400), SPEC, "train")
    assert 20 <= len(read) < 60, f"{len(read)} of 400 files read"


def test_a_check_whose_sigterm_python_dropped_stops_before_the_next_row(monkeypatch: pytest.MonkeyPatch,
                                                                        dropped: list) -> None:
    read: list[int] = []

    def check(*args: object, **kwargs: object) -> int:
        read.append(1)
        if len(read) == 2:
            sigterm_dropped(dropped)
        return 1600

    monkeypatch.setattr(checked_audio, "check_clip", check)
    monkeypatch.setattr(checked_audio, "usable_cpus", lambda: 1)
    with sigterm_raises(), pytest.raises(Terminated):
        checked_audio.check_rows(_many_rows(10), SPEC, "train")
    assert len(read) == 2
