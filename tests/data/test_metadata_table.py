"""The label table built from UID/metadata.json files: scores pivoted to columns, --edit_feats, distortions."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_metadata_lake

from audiotune.data.errors import DataError
from audiotune.data.layout import read_table
from audiotune.data.metadata_table import build_table, derive_distortions

NAN = math.nan


def _record(uid: str, subject: str, task: str, **scores: float) -> dict:
    return {"uid": uid, "subject": subject, "task": task, "encoding": "WAV", "sample_rate_hz": 8000,
            "features": [{"name": name.replace("_", " "), "score": score} for name, score in scores.items()]}


def test_scores_become_columns_and_rows_find_their_audio(tmp_path: Path) -> None:
    first = _record("r1", "007", "Sentences", slow_rate=3, strained=1)
    first["features"].append({"name": "slow rate", "score": 5})  # listed twice: the highest score counts
    first["diag"] = [{"name": "ataxic", "score": 1}, {"name": "ataxic", "score": 0}]
    second = {"uid": "r2", "subject": 7, "task": "Vowels", "encoding": "FLAC", "sample_rate_hz": 8000,
              "features": [{"name": "strained", "score": 4}]}
    third = {"subject": "s3", "task": "Vowels", "features": [{"name": "slow rate", "score": 2}]}  # uid: its folder
    write_metadata_lake(tmp_path / "lake", [first, second, {**third, "uid": "r3"}])
    (tmp_path / "lake" / "r3" / "metadata.json").write_text(json.dumps(third))
    table, skipped = build_table(tmp_path / "lake", tmp_path / "tables" / "all.csv")
    assert skipped.empty
    written = read_table(tmp_path / "tables" / "all.csv")
    assert written.index.tolist() == ["r1", "r2", "r3"]
    assert written["subject"].tolist() == ["007", "7", "s3"] and written["task"].tolist() == ["Sentences", "Vowels",
                                                                                               "Vowels"]
    assert written["slow rate"].tolist()[::2] == [5.0, 2.0] and math.isnan(written.loc["r2", "slow rate"])
    assert written.loc["r1", "ataxic"] == 1.0 and written.loc["r2", "strained"] == 4.0
    assert [Path(p).relative_to(tmp_path / "lake").as_posix() for p in written["path"]] == [
        "r1/waveform.wav", "r2/waveform.flac", "r3/waveform.wav"]
    assert (tmp_path / "tables" / "all.csv").read_text().splitlines()[1].startswith("r1,../lake/r1/waveform.wav,")
    assert written.loc["r1", "expected_rate"] == 8000 and math.isnan(written.loc["r3", "expected_rate"])
    assert "distortions" not in written.columns  # nothing to derive it from


def test_edit_feats_turns_severities_into_binary_targets(tmp_path: Path) -> None:
    records = [_record(f"r{score + 1}", f"s{score + 1}", "Vowels", slow_rate=score) for score in range(-1, 7)]
    write_metadata_lake(tmp_path / "lake", records)
    raw, _ = build_table(tmp_path / "lake", tmp_path / "raw.csv")
    edited, _ = build_table(tmp_path / "lake", tmp_path / "edited.csv", edit_feats=True)
    assert raw["slow rate"].tolist() == [-1, 0, 1, 2, 3, 4, 5, 6]
    assert edited["slow rate"].fillna(-9).tolist() == [-9, 0, 0, 1, 1, 1, 1, -9]
    assert edited["subject"].tolist() == raw["subject"].tolist()  # identifiers are never recoded

    write_metadata_lake(tmp_path / "lake", [_record("r9", "s9", "Vowels", slow_rate=7)])
    with pytest.raises(DataError, match=r"r9/metadata.json: score 7 of 'slow rate' is not a severity"):
        build_table(tmp_path / "lake", tmp_path / "bad.csv", edit_feats=True)
    assert not (tmp_path / "bad.csv").exists()


def test_distortions_come_from_the_distorted_consonant_and_vowel_scores() -> None:
    parts = pd.DataFrame({"distorted Cs": [1, 0, 0, NAN, NAN, 2, NAN],
                          "distorted V": [0, 0, NAN, 1, NAN, NAN, NAN],
                          "distortions": [NAN, NAN, NAN, NAN, NAN, NAN, 0]})
    derived = derive_distortions(parts)["distortions"].fillna(-9).tolist()
    assert derived == [1, 0, -9, 1, -9, 1, 0]  # a score the file gave (the last row) is kept
    # a part no file scored is missing on every row: a 0 of the other says nothing
    only_vowels = derive_distortions(pd.DataFrame({"distorted V": [0, 3]}))
    assert only_vowels["distortions"].fillna(-9).tolist() == [-9, 1]


def test_distortions_are_derived_after_edit_feats(tmp_path: Path) -> None:
    write_metadata_lake(tmp_path / "lake", [
        {**_record("r1", "s1", "Vowels"), "features": [{"name": "distorted Cs", "score": 1},
                                                       {"name": "distorted V", "score": 1}]},
        {**_record("r2", "s2", "Vowels"), "features": [{"name": "distorted Cs", "score": 6},
                                                       {"name": "distorted V", "score": 3}]}])
    raw, _ = build_table(tmp_path / "lake", tmp_path / "raw.csv")
    edited, _ = build_table(tmp_path / "lake", tmp_path / "edited.csv", edit_feats=True)
    assert raw["distortions"].tolist() == [1.0, 1.0]
    assert edited["distortions"].tolist() == [0.0, 1.0]  # a score of 1 is "normal" once edited


@pytest.mark.parametrize("record, message", [
    ({"uid": "r1", "task": "Vowels", "features": []}, "r1/metadata.json: no 'subject'"),
    ({"uid": "other", "subject": "s", "task": "Vowels", "features": []}, "uid 'other' is not the name of its folder"),
    ({"uid": "r1", "subject": "s", "task": "T", "features": [{"name": "x", "score": "high"}]}, "'high', not a number"),
    ({"uid": "r1", "subject": "s", "task": "T", "features": [{"name": "subject", "score": 1}]}, "clash"),
    ({"uid": "r1", "subject": "s", "task": "T", "encoding": "MP3", "features": []}, "no waveform.mp3 beside it"),
    ({"uid": "r1", "subject": "s", "task": "T", "sample_rate_hz": "16 kHz", "features": []},
     "sample_rate_hz '16 kHz' is not a number of samples per second"),  # was left unchecked
])
def test_a_bad_metadata_file_is_named_or_skipped_and_listed(tmp_path: Path, record: dict, message: str) -> None:
    write_metadata_lake(tmp_path / "lake", [_record("r0", "s0", "Vowels", slow_rate=2)])
    (tmp_path / "lake" / "r1").mkdir()
    (tmp_path / "lake" / "r1" / "metadata.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="1 metadata.json file") as caught:
        build_table(tmp_path / "lake", tmp_path / "all.csv")
    assert message in str(caught.value) and not (tmp_path / "all.csv").exists()
    table, skipped = build_table(tmp_path / "lake", tmp_path / "all.csv", on_error="skip")
    assert table.index.tolist() == ["r0"]
    listed = pd.read_csv(tmp_path / "all.skipped.csv")
    assert listed["path"].tolist() == [str(tmp_path / "lake" / "r1" / "metadata.json")]
    assert message in listed["reason"][0]


def test_a_folder_without_metadata_or_with_broken_json_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metadata.json in any folder"):
        build_table(tmp_path / "empty", tmp_path / "all.csv")
    with pytest.raises(DataError, match="folder not found"):
        build_table(tmp_path / "missing", tmp_path / "all.csv")
    (tmp_path / "empty" / "r1").mkdir()
    (tmp_path / "empty" / "r1" / "metadata.json").write_text("{not json")
    with pytest.raises(DataError, match="r1/metadata.json: not valid JSON"):
        build_table(tmp_path / "empty", tmp_path / "all.csv")
