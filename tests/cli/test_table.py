"""`audiotune table` from a folder of UID/metadata.json files, then `audiotune split` by task."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_metadata_lake

from audiotune.cli import main

AMR = "Alternating Motion Rate"


def _lake(root: Path) -> Path:
    records = []
    for number, subject in enumerate(["ann", "bob", "cat", "dan"]):
        for task in (AMR, "Sentences"):
            records.append({"uid": f"{subject}_{task[0]}", "subject": subject, "task": task, "encoding": "WAV",
                            "sample_rate_hz": 8000,
                            "features": [{"name": "slow rate", "score": number + 1},  # 1..4
                                         {"name": "distorted Cs", "score": [0, 1, 3, 6][number]},
                                         {"name": "distorted V", "score": [0, 2, 1, 1][number]}]})
    return write_metadata_lake(root / "lake" / "study", records)


def test_table_writes_the_expected_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lake = _lake(tmp_path)
    out = tmp_path / "tables" / "study.csv"
    assert main(["table", str(lake), "--out", str(out), "--edit_feats"]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: 8 recordings, 4 subjects, 2 tasks"
    table = pd.read_csv(out)
    expected = pd.DataFrame({
        "uid": ["ann_A", "ann_S", "bob_A", "bob_S", "cat_A", "cat_S", "dan_A", "dan_S"],
        "path": [f"../lake/study/{s}_{t}/waveform.wav" for s in ("ann", "bob", "cat", "dan") for t in "AS"],
        "subject": [s for s in ("ann", "bob", "cat", "dan") for _ in "AS"],
        "task": [AMR, "Sentences"] * 4,
        "expected_rate": [8000.0] * 8,
        "slow rate": [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "distorted Cs": [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, None, None],
        "distorted V": [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        "distortions": [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, None, None],
    })
    pd.testing.assert_frame_equal(table, expected)

    split = tmp_path / "split"
    assert main(["split", str(out), "--out", str(split), "--train_task", AMR, "--test_task", "Sentences",
                 "--split_size", "0", "1", "1", "--seed", "5"]) == 0
    parts = {name: pd.read_csv(split / f"{name}.csv") for name in ("train", "val", "test")}
    assert set(parts["test"]["task"]) == {"Sentences"} and len(parts["test"]) == 1
    assert set(parts["train"]["task"]) == set(parts["val"]["task"]) == {AMR}
    assert [len(parts[name]) for name in ("train", "val")] == [2, 1]
    subjects = [set(parts[name]["subject"]) for name in ("train", "val", "test")]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert parts["train"]["path"].str.startswith("../lake/study/").all()  # still finds the audio


def test_split_by_task_refuses_options_it_does_not_use(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study.csv"
    assert main(["table", str(_lake(tmp_path)), "--out", str(out)]) == 0
    assert main(["split", str(out), "--out", str(tmp_path / "s"), "--split_size", "2", "1"]) == 2
    assert "error: --split_size: subject counts of a split by task" in capsys.readouterr().err
    assert main(["split", str(out), "--out", str(tmp_path / "s"), "--test_task", AMR, "--stratify", "task"]) == 2
    assert "without --stratify or --folds" in capsys.readouterr().err
    assert main(["split", str(out), "--out", str(tmp_path / "s"), "--test_task", "Reading"]) == 2
    assert "task(s) ['Reading'] not found" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_table_of_a_folder_without_metadata_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "audio").mkdir()
    assert main(["table", str(tmp_path / "audio"), "--out", str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"audiotune table: error: {tmp_path / 'audio'}: no metadata.json in any folder under it "
                           "(layout: UID/metadata.json)")


def test_the_seeds_prefix_and_study_name_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """data_splits.py -i PREFIX -s STUDY ... -o OUT: the same table, then split into OUT (-o is split's --out)."""
    lake = _lake(tmp_path)
    assert main(["table", str(lake), "--out", str(tmp_path / "a.csv")]) == 0
    assert main(["table", "-i", str(lake.parent), "-s", lake.name, "--out", str(tmp_path / "b.csv")]) == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert main(["split", str(tmp_path / "b.csv"), "-o", str(tmp_path / "out"), "--test_task", AMR,
                 "--split_size", "0", "1", "1"]) == 0
    assert (tmp_path / "out" / "test.csv").is_file()
    capsys.readouterr()
    assert main(["table", str(lake), "-i", str(lake), "--out", str(tmp_path / "c.csv")]) == 2
    assert "give the folder once" in capsys.readouterr().err
    assert main(["table", "--out", str(tmp_path / "c.csv")]) == 2
    assert "(FOLDER, or the seeds' -i PREFIX -s STUDY)" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()
