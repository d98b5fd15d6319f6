"""Folds whose validation leaves no training rows: the error says why for the folds asked, and what to change."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from audiotune.data.errors import DataError
from audiotune.data.folds import FoldOptions, build_folds


def table(root: Path, subjects: tuple[str, ...]) -> str:
    rows = [{"uid": f"{s}{k}", "path": f"{s}{k}.wav", "subject": s, "label": ["a", "b"][k % 2]}
            for s in subjects for k in range(4)]
    path = root / "table.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_two_folds_of_three_groups_name_the_folds_and_the_ways_out(tmp_path: Path) -> None:
    source = table(tmp_path, ("ann", "bob", "cat"))
    with pytest.raises(DataError) as err:
        build_folds(source, FoldOptions(folds=2, group="subject", val_group="next"))
    text = str(err.value)
    assert "--folds 2" in text and "--folds 3 or more" in text and "leave-one-group-out" not in text
    assert "--val_group draw" in text and "--val_group none" in text
    assert len(build_folds(source, FoldOptions(folds=2, group="subject", val_group="none"))) == 2


def test_leave_one_group_out_of_two_groups_counts_them(tmp_path: Path) -> None:
    source = table(tmp_path, ("ann", "bob"))
    with pytest.raises(DataError, match=r"needs at least 3 values of 'subject' \(found 2\); or use --val_group draw"):
        build_folds(source, FoldOptions(group="subject", val_group="next"))


def test_one_fold_is_the_same_error_as_in_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--folds 1: at least 2 folds are needed"):
        build_folds(table(tmp_path, ("ann", "bob", "cat")), FoldOptions(folds=1))
