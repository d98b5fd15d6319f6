"""Where a uid's audio is: the waveform file of a uid folder, found alike by ``-i PREFIX`` and by ``table``."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import write_metadata_lake

from audiotune.data.errors import DataError
from audiotune.data.layout import METADATA_FILE, resolve_uid, waveform_name
from audiotune.data.metadata_table import build_table


def test_a_waveform_that_is_not_audio_is_passed_over_by_both_readers(tmp_path: Path) -> None:
    record = {"uid": "r1", "subject": "s1", "task": "Vowels", "sample_rate_hz": 8000, "features": []}
    write_metadata_lake(tmp_path / "lake", [record])  # no encoding: waveform.wav, found by its listing
    (tmp_path / "lake" / "r1" / "waveform.txt").write_text("a transcript, sorted before waveform.wav")
    path, rate = resolve_uid("r1", str(tmp_path / "lake"))
    assert Path(path).name == "waveform.wav" and rate == 8000
    table, _ = build_table(tmp_path / "lake", tmp_path / "all.csv")
    assert (tmp_path / table.loc["r1", "path"]).resolve() == Path(path)


def test_the_encoding_names_the_file_without_listing_the_folder() -> None:
    def listing() -> list[str]:
        raise AssertionError("listed")
    assert waveform_name({"encoding": "vorbis"}, listing, "m.json") == "waveform.ogg"
    assert waveform_name({"encoding": "Opus"}, listing, "m.json") == "waveform.opus"
    # the NAIP seeds read waveform.wav for every encoding but MP3 (a recorder's LINEAR16, PCM_16)
    assert waveform_name({"encoding": "LINEAR16"}, listing, "m.json") == "waveform.wav"
    assert waveform_name({}, lambda: ["waveform.mp3", "waveform.FLAC", "notes.wav"], "m.json") == "waveform.FLAC"


def test_a_folder_without_audio_is_named_by_its_metadata_file(tmp_path: Path) -> None:
    folder = tmp_path / "r1"
    folder.mkdir()
    (folder / METADATA_FILE).write_text(json.dumps({"sample_rate_hz": 8000}))
    (folder / "waveform.txt").write_text("not audio")
    with pytest.raises(DataError, match=rf"r1/{METADATA_FILE}: no 'encoding' and no waveform\.\* audio file"):
        resolve_uid("r1", str(tmp_path))


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_table_separated_otherwise_is_named_as_such(tmp_path: Path, separator: str) -> None:
    """A spreadsheet's ';' export was refused for lacking a path column, which it has."""
    from audiotune.data.layout import read_table
    from audiotune.data.segments import segment_csv

    table = tmp_path / "t.csv"
    table.write_text(separator.join(["uid", "path", "time"]) + "\n" + separator.join(["a", "a.wav", "0.5"]) + "\n")
    said = re.escape(f"this file separates them by {separator!r}")
    with pytest.raises(DataError, match=said):
        read_table(table)
    with pytest.raises(DataError, match=said):
        segment_csv(table, tmp_path / "s.csv", before=0.1, after=0.1)


def test_a_rate_written_as_text_is_read_or_named_with_its_file(tmp_path: Path) -> None:
    """A sample_rate_hz of "16000" is the rate; "16 kHz" stopped the command with a bare float() error (no file),
    and `table` wrote no rate for either, so a file of another rate went unchecked."""
    lake = tmp_path / "lake"
    write_metadata_lake(lake, [{"uid": "r1", "subject": "s1", "task": "T", "sample_rate_hz": "8000", "features": []}])
    assert resolve_uid("r1", str(lake))[1] == 8000
    assert build_table(lake, tmp_path / "all.csv")[0].loc["r1", "expected_rate"] == 8000
    record = json.loads((lake / "r1" / METADATA_FILE).read_text())
    (lake / "r1" / METADATA_FILE).write_text(json.dumps({**record, "sample_rate_hz": "16 kHz"}))
    with pytest.raises(DataError, match=rf"r1/{METADATA_FILE}: sample_rate_hz '16 kHz' is not a number"):
        resolve_uid("r1", str(lake))
