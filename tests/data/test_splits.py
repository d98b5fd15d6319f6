"""data/splits.py: a part drawn by fraction from a handful of subjects holds at least one of them."""
from __future__ import annotations

import pandas as pd
import pytest

from audiotune.data.errors import DataError
from audiotune.data.splits import split_table, write_split


def _speakers(count: int, digits: int = 3) -> pd.DataFrame:
    rows = [{"uid": f"{d}_{s}_{t}", "subject": f"s{s}", "digit": d}
            for s in range(count) for d in range(digits) for t in range(2)]
    return pd.DataFrame(rows).set_index("uid")


def test_the_default_fractions_split_six_speakers() -> None:
    parts = split_table(_speakers(6), stratify="digit", seed=0)  # 0.2 / 0.1: fewer than one speaker for val
    subjects = {name: set(part["subject"]) for name, part in parts.items()}
    assert [len(subjects[name]) for name in ("test", "val")] == [2, 1] and len(subjects["train"]) == 3
    assert set.union(*subjects.values()) == {f"s{s}" for s in range(6)}
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"])
    assert split_table(_speakers(6), stratify="digit", seed=0)["val"].equals(parts["val"])  # seeded


def test_many_speakers_keep_the_fractions() -> None:
    parts = split_table(_speakers(40), seed=1)
    assert [parts[name]["subject"].nunique() for name in ("train", "val", "test")] == [28, 4, 8]


def test_a_fraction_with_one_speaker_left_names_the_flag() -> None:
    with pytest.raises(DataError, match=r"--val_fraction 0.1 \(after the test part\).*only 1 value.*"
                                        r"--val_fraction 0"):
        split_table(_speakers(2), seed=0)


@pytest.mark.parametrize("folds", [1, 0, -2])
def test_k_folds_need_at_least_two(folds: int) -> None:
    from audiotune.data.splits import kfold_tables

    with pytest.raises(DataError, match=rf"--folds {folds}: at least 2 folds are needed"):
        kfold_tables(_speakers(6), folds)


def test_stratification_is_blamed_only_for_its_own_error() -> None:
    """Every class smaller than k cannot be stratified; another error (a seed numpy refuses) is not about it."""
    from audiotune.data.splits import kfold_tables

    rare = _speakers(6, digits=1).assign(digit=[f"d{i // 2}" for i in range(12)])  # each class: 2 rows
    with pytest.raises(DataError, match=r"--folds 3 needs 3 stratified parts.*every 'digit' class has fewer rows "
                                        r"\(the largest 2\).*drop --stratify"):
        kfold_tables(rare, 3, 0.0, stratify="digit")
    with pytest.raises(ValueError) as raised:
        kfold_tables(_speakers(6), 3, 0.0, stratify="digit", seed=-5)
    assert "stratif" not in str(raised.value)


def test_a_stratify_column_not_in_the_table_is_named_with_the_columns_it_has() -> None:
    from audiotune.data.splits import check_stratify

    table = pd.DataFrame({"path": ["a.wav"], "word": ["yes"], "subject": ["s1"]})
    with pytest.raises(DataError, match=r"^m.csv: stratify column 'digit' not found \(columns: \['path', 'word', "
                                        r"'subject'\]\)$"):
        check_stratify(table, "digit", "m.csv")


def test_rows_without_a_subject_are_named() -> None:
    """The error said how many rows had no subject, not which; a blank cell was a subject of its own."""
    table = _speakers(4)
    table.loc["1_s2_0", "subject"] = None
    table.loc["2_s3_1", "subject"] = "  "
    with pytest.raises(DataError, match=r"m.csv: 2 row\(s\) have no 'subject', .*: \['1_s2_0', '2_s3_1'\]"):
        split_table(table, seed=0, source="m.csv")


def test_a_validation_draw_of_every_subject_says_what_to_give_instead() -> None:
    from audiotune.data.splits import draw_validation

    train = pd.DataFrame({"subject": [f"s{i % 7}" for i in range(14)]}, index=[f"u{i}" for i in range(14)])
    with pytest.raises(DataError, match=r"train.csv: no val.csv, and --val_size 50 .* leaves no training subject "
                                        r"\(train has 7\); give --val_size below 7, --val_size 0 \(no validation"):
        draw_validation(train, 50, 0)


class Killed(BaseException):
    """A process killed where it stood (nothing cleans up after SIGKILL)."""


def test_a_split_stopped_between_its_files_leaves_none_of_the_earlier_split_beside_it(tmp_path, monkeypatch) -> None:
    """The files of a split were renamed into place one by one over the earlier split's: stopped after train.csv,
    the folder held the new train.csv beside the earlier val.csv and test.csv, which read as one split."""
    import os

    from audiotune import atomic

    def part(name: str) -> pd.DataFrame:
        return pd.DataFrame({"path": [f"{name}.wav"]}, index=pd.Index([name], name="uid"))

    write_split({"train": part("a1"), "val": part("a2"), "test": part("a3")}, tmp_path)
    renamed, replace = [], os.replace

    def killed_at_the_second(source, target) -> None:
        if renamed:
            raise Killed
        renamed.append(target)
        replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", killed_at_the_second)
    with pytest.raises(Killed):
        write_split({"train": part("b1"), "test": part("b3")}, tmp_path)
    monkeypatch.undo()
    left = {path.name: pd.read_csv(path)["uid"].tolist() for path in tmp_path.glob("*.csv")}
    assert left == {"test.csv": ["b3"]}  # no train.csv: refused where a run reads it, never a mixed split
    write_split({"train": part("b1"), "test": part("b3")}, tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["test.csv", "train.csv"]  # the partials gone too


def test_the_stratification_advice_fixes_the_split_when_followed() -> None:
    """A part is cut as one of round(1 / share) parts, so a smaller fraction needs more parts: the advice said to
    lower the fractions, which failed again; it now says to raise them (or use fewer folds), which works."""
    import re

    from audiotune.data.splits import kfold_tables

    six = pd.DataFrame({"subject": [f"s{i}" for i in range(6)], "word": ["up", "down"] * 3},
                       index=[f"u{i}" for i in range(6)])
    with pytest.raises(DataError, match=r"raise the fraction: a part is cut as one of 5 .* 3 parts at most"):
        split_table(six, 0.2, 0.1, stratify="word")
    parts = split_table(six, 0.34, 0.34, stratify="word")
    assert sorted(len(part) for part in parts.values()) == [2, 2, 2]
    with pytest.raises(DataError, match=re.escape("use --folds 3 or fewer or drop --stratify")):
        kfold_tables(six, 5, 0.0, stratify="word")
    assert len(kfold_tables(six, 3, 0.0, stratify="word")) == 3
