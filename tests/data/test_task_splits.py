"""Splits by recording task: the seed's train/test task selection, seeded, with no subject in two parts."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from audiotune.cli import main
from audiotune.data.errors import DataError
from audiotune.data.task_splits import read_subject_file, task_split

AMR, SENTENCES = "Alternating Motion Rate", "Sentences"


def _table() -> pd.DataFrame:
    """Ten subjects with both tasks, four with the sentences only."""
    rows = [{"uid": f"{s}_{task[0]}", "subject": f"s{s}", "task": task, "slow rate": s % 2}
            for s in range(10) for task in (AMR, SENTENCES)]
    rows += [{"uid": f"{s}_S", "subject": f"s{s}", "task": SENTENCES, "slow rate": 1} for s in range(10, 14)]
    return pd.DataFrame(rows).set_index("uid")


def _subjects(part: pd.DataFrame) -> set[str]:
    return set(part["subject"])


def test_subject_counts_and_tasks_of_each_part() -> None:
    parts = task_split(_table(), [AMR], [SENTENCES], sizes=[6, 3, 2], seed=4)
    assert [len(_subjects(parts[name])) for name in ("train", "val", "test")] == [4, 2, 3]
    assert set(parts["test"]["task"]) == {SENTENCES}
    assert set(parts["train"]["task"]) == set(parts["val"]["task"]) == {AMR}
    assert not (_subjects(parts["train"]) & _subjects(parts["val"]) or
                (_subjects(parts["train"]) | _subjects(parts["val"])) & _subjects(parts["test"]))
    again = task_split(_table(), [AMR], [SENTENCES], sizes=[6, 3, 2], seed=4)
    assert all(again[name].equals(parts[name]) for name in parts)  # the seed decides the draw
    draws = {tuple(sorted(_subjects(task_split(_table(), [AMR], [SENTENCES], [6, 3, 2], seed=s)["test"])))
             for s in range(6)}
    assert len(draws) > 1


def test_train_zero_takes_every_remaining_subject_and_two_sizes_leave_out_validation() -> None:
    parts = task_split(_table(), [AMR], [AMR], sizes=[0, 3], seed=0)
    assert list(parts) == ["train", "test"] and len(_subjects(parts["train"])) == 7
    assert set(parts["train"]["task"]) == set(parts["test"]["task"]) == {AMR}


def test_fractions_of_subjects_without_sizes() -> None:
    parts = task_split(_table(), [AMR, SENTENCES], [SENTENCES], test_fraction=0.5, val_fraction=0.25, seed=1)
    assert len(_subjects(parts["test"])) == 7  # half of the 14 subjects with sentences
    assert len(_subjects(parts["val"])) == 2 and len(_subjects(parts["train"])) == 5  # all the 7 others' rows
    assert set(parts["train"]["task"]) == {AMR, SENTENCES}


def test_named_test_and_validation_subjects() -> None:
    parts = task_split(_table(), [AMR], [SENTENCES], test_subjects=["s1", "s12"], val_subjects=["s3"])
    assert _subjects(parts["test"]) == {"s1", "s12"} and _subjects(parts["val"]) == {"s3"}
    limited = task_split(_table(), [AMR], [SENTENCES], sizes=[0, 1], test_subjects=["s1", "s12"], seed=2)
    assert _subjects(limited["test"]) <= {"s1", "s12"} and len(_subjects(limited["test"])) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"sizes": [0, 20]}, "20 test subjects asked for, but only 14 are available"),
    ({"sizes": [9, 3]}, "9 training subjects asked for, but only 7"),
    ({"sizes": [3]}, "--split_size 3: give TRAIN TEST"),
    ({"sizes": [0, 3, 7]}, "7 validation subject(s) leave no training subject"),
    ({"test_subjects": ["s1", "nobody"]}, "test subject(s) ['nobody'] have no rows of the test task"),
    ({"val_subjects": ["s10"], "test_subjects": ["s1"]}, "validation subject(s) ['s10'] are not training subjects"),
    ({"test_fraction": 0.0}, "no test subject drawn"),
    ({"sizes": [0, 2, 1], "val_subjects": ["s3"]}, "give --split_size TRAIN TEST without VAL"),
])
def test_impossible_requests_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        task_split(_table(), [AMR], [SENTENCES], **kwargs, source="t.csv")


def test_unknown_task_or_no_task_column() -> None:
    with pytest.raises(DataError, match=r"t.csv: task\(s\) \['Reading'\] not found"):
        task_split(_table(), ["Reading"], [AMR], source="t.csv")
    with pytest.raises(DataError, match="no 'task' column"):
        task_split(_table().drop(columns="task"), [AMR], [AMR], source="t.csv")


def test_the_seeds_existing_speaker_file_names_the_test_subjects(tmp_path: Path) -> None:
    earlier = tmp_path / "test_speakers.csv"
    pd.DataFrame({"speakerID": ["s12", "s1", "s12", ""], "score": [1, 2, 3, 4]}).to_csv(earlier, index=False)
    assert read_subject_file(earlier) == ["s12", "s1"]
    table = tmp_path / "table.csv"
    _table().to_csv(table)
    common = ["split", str(table), "--train_task", AMR, "--test_task", SENTENCES]
    assert main([*common, "--out", str(tmp_path / "named"), "--existing_spk_split", str(earlier)]) == 0
    assert set(pd.read_csv(tmp_path / "named" / "test.csv")["subject"]) == {"s1", "s12"}
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert set(pd.read_csv(tmp_path / "plain" / "test.csv")["subject"]) != {"s1", "s12"}
    # with subject counts, the test subjects are drawn from the file's only (the seed's restriction)
    assert main([*common, "--out", str(tmp_path / "drawn"), "--split_size", "0", "1", "--seed", "3",
                 "--existing_spk_split", str(earlier)]) == 0
    drawn = set(pd.read_csv(tmp_path / "drawn" / "test.csv")["subject"])
    assert len(drawn) == 1 and drawn <= {"s1", "s12"}
    # a speaker the table does not hold (an earlier study's) is passed over, as the seed did
    pd.DataFrame({"speakerID": ["s1", "s12", "gone"]}).to_csv(earlier, index=False)
    assert main([*common, "--out", str(tmp_path / "older"), "--existing_spk_split", str(earlier)]) == 0
    assert set(pd.read_csv(tmp_path / "older" / "test.csv")["subject"]) == {"s1", "s12"}


def test_speakers_of_the_file_without_rows_of_the_test_task_are_passed_over_as_the_seed_did(
        caplog: pytest.LogCaptureFixture) -> None:
    """The seed's select_split kept the test-task speakers that the --existing_spk_split file lists."""
    parts = task_split(_table(), [SENTENCES], [AMR], sizes=[0, 2], test_pool=["s1", "s3", "s12", "nobody"], seed=0,
                       source="t.csv")
    assert _subjects(parts["test"]) == {"s1", "s3"}  # s12 has no AMR rows, nobody none at all
    assert "2 subject(s) of the speaker file have no rows of the test task(s)" in caplog.text
    assert "['nobody', 's12']" in caplog.text
    with pytest.raises(DataError, match="t.csv: none of the 2 subjects of the speaker file has rows of the test"):
        task_split(_table(), [SENTENCES], [AMR], test_pool=["s12", "nobody"], source="t.csv")
    with pytest.raises(DataError, match=r"test subject\(s\) \['nobody'\] have no rows"):  # named ones must exist
        task_split(_table(), [SENTENCES], [AMR], test_subjects=["s1", "nobody"], source="t.csv")


@pytest.mark.parametrize("content, message", [
    ("subject\ns1\n", "no 'speakerID' column naming the subjects (columns: ['subject'])"),
    ("speakerID\n\n", "the 'speakerID' column names no subject"),
    ("", "empty file"),
])
def test_a_bad_speaker_file_is_refused_naming_it(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "speakers.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
        read_subject_file(path)
    with pytest.raises(DataError, match="subject file not found"):
        read_subject_file(tmp_path / "missing.csv")


def test_a_speaker_file_and_named_test_subjects_are_one_too_many(tmp_path: Path, capsys) -> None:
    path = tmp_path / "speakers.csv"
    path.write_text("speakerID\ns1\n")
    table = tmp_path / "table.csv"
    _table().to_csv(table)
    assert main(["split", str(table), "--out", str(tmp_path / "o"), "--existing_spk_split", str(path),
                 "--test_subjects", "s2"]) == 2
    assert "--existing_spk_split and --test_subjects both name the test subjects" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
