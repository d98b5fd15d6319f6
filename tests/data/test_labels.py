"""Which rows a run keeps: every row labelled for some head, or with ``--complete_rows`` only the complete ones."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest

from audiotune.data.errors import DataError
from audiotune.data.labels import LabelGroup, drop_missing_targets, encode_targets, infer_heads

TABLE = pd.DataFrame({"uid": ["full", "no_long", "no_pitch", "no_votes", "none"],
                      "pitch": ["low", "high", np.nan, "low", np.nan],
                      "loud": [0, 1, 1, 0, np.nan], "long": [1, np.nan, 0, 1, np.nan],
                      "sev": [0.5, 1.5, 2.0, 1.0, np.nan],
                      "calm": [1, 0, 2, np.nan, np.nan], "angry": [0, 3, 1, 0, np.nan]}).set_index("uid")
GROUPS = [LabelGroup(["pitch"]), LabelGroup(["loud", "long"]), LabelGroup(["sev"], "regression"),
          LabelGroup(["calm", "angry"], "soft")]


def test_rows_are_kept_for_the_heads_they_are_labelled_for() -> None:
    heads = infer_heads(GROUPS, TABLE)
    kept, dropped = drop_missing_targets(TABLE, heads, "test")
    assert list(kept.index) == ["full", "no_long", "no_pitch", "no_votes"]
    assert list(dropped.index) == ["none"] and dropped.loc["none", "split"] == "test"
    assert "no target for any head" in dropped.loc["none", "reason"]


def test_complete_rows_keeps_only_rows_labelled_in_every_column_and_lists_the_others() -> None:
    heads = infer_heads(GROUPS, TABLE)
    kept, dropped = drop_missing_targets(TABLE, heads, "val", complete=True)
    assert list(kept.index) == ["full"]
    assert list(dropped.index) == ["no_long", "no_pitch", "no_votes", "none"]
    assert set(dropped["split"]) == {"val"}
    assert list(dropped.columns) == ["pitch", "loud", "long", "sev", "calm", "angry", "split", "reason"]
    reasons = dropped["reason"]
    assert "['long']" in reasons["no_long"] and "--complete_rows" in reasons["no_long"]
    assert "['pitch']" in reasons["no_pitch"]
    assert "['calm', 'angry']" in reasons["no_votes"]  # a soft head without votes: its columns
    assert "no target for any head" in reasons["none"]


def test_complete_rows_keeps_a_table_without_gaps_whole() -> None:
    table = TABLE.loc[["full"]]
    kept, dropped = drop_missing_targets(table, infer_heads(GROUPS[1:3], TABLE), "train", complete=True)
    assert list(kept.index) == ["full"] and dropped.empty


def test_a_missing_distortions_column_says_how_the_seeds_derived_it() -> None:
    """The NAIP seeds added `distortions` from its parts when loading a split made without it."""
    table = pd.DataFrame({"distorted Cs": [0, 1], "distorted V": [0, 0]}, index=pd.Index(["u1", "u2"], name="uid"))
    with pytest.raises(DataError, match=r"label column\(s\) \['distortions'\] not in the table .*; the seeds derived "
                                        r"'distortions' from 'distorted Cs' and 'distorted V' when loading: add that "
                                        r"column \(1 where either is above 0, 0 where both are 0\), or build the table "
                                        r"with `audiotune table`, which derives it$"):
        infer_heads([["distortions"]], table, "train.csv")
    with pytest.raises(DataError, match=r"\['slow rate'\] not in the table \(columns: \['distorted Cs', "
                                        r"'distorted V'\]\)$"):
        infer_heads([["slow rate"]], table, "train.csv")


def test_class_order_does_not_depend_on_the_order_values_are_met() -> None:
    """A class 'nan' sorted by the key NaN: the order of the classes (the model's outputs) followed the order of a
    set, which changes from one process to the next."""
    orders = {tuple(infer_heads([LabelGroup(["c"], "categorical")], pd.DataFrame({"c": list(values)}))[0].classes)
              for values in itertools.permutations(["10", "nan", "2", "inf", "b"])}
    assert orders == {("2", "10", "b", "inf", "nan")}


def test_one_number_written_two_ways_is_said(caplog) -> None:
    """'2' and '2.0' (a column mixing text and numbers keeps cells as written) are two classes: the warning says
    so; names that are other numbers, or not numbers, say nothing."""
    table = pd.DataFrame({"c": ["2", "2.0", "3", "b", "007", "7"]})
    heads = infer_heads([LabelGroup(["c"], "categorical", "labels.txt:1")], table, source="train.csv")
    assert heads[0].classes == ["2", "2.0", "3", "007", "7", "b"]
    assert "labels.txt:1: column 'c' of train.csv holds ['2', '2.0'] as different classes: one number written 2 " \
           "ways; write each class one way" in caplog.text
    assert "['007', '7'] as different classes" in caplog.text
    caplog.clear()
    infer_heads([LabelGroup(["c"], "categorical")], pd.DataFrame({"c": ["2", "3", "b", "7"]}))
    assert "different classes" not in caplog.text


def test_a_column_of_numbers_only_is_read_as_numbers(tmp_path) -> None:
    """Without a name among its cells, a column is numbers: '2' and '2.0', '7' and '007' are one number each,
    one class (named as the number is written shortest), as the README says."""
    from audiotune.data.layout import read_table

    (tmp_path / "t.csv").write_text("uid,c\na,2\nb,2.0\nc,007\nd,7\ne,3\n")
    table = read_table(tmp_path / "t.csv")
    assert infer_heads([LabelGroup(["c"], "categorical")], table)[0].classes == ["2", "3", "7"]


def test_classes_spelled_as_missing_values_are_said(caplog) -> None:
    """'NA' and 'nan' cells became classes without a word: a user of pandas reads them as missing."""
    table = pd.DataFrame({"digit": ["0", "1", "NA", "nan", np.nan, "2"]})
    heads = infer_heads([LabelGroup(["digit"], "categorical", "labels.txt:1")], table, source="train.csv")
    assert heads[0].classes == ["0", "1", "2", "NA", "nan"]
    assert "labels.txt:1: column 'digit' of train.csv holds ['NA', 'nan'], read as class name(s): only an empty " \
           "cell is missing (--na_values NA nan reads them as missing)" in caplog.text
    caplog.clear()
    infer_heads([LabelGroup(["digit"], "categorical")], table.replace({"NA": "3", "nan": "4"}))
    assert "read as class name" not in caplog.text


def test_a_column_of_a_shared_line_with_values_other_than_0_and_1_is_named_with_them() -> None:
    """Several 0/1 columns share a line (one head); one holding 'NA' (a missing value to pandas) is named with that
    value and how to read it as missing, instead of being called categorical."""
    table = pd.DataFrame({"loud": ["0", "NA", "1", "1"], "long": [1, 0, 1, 0]})
    with pytest.raises(DataError, match=r"^labels.txt:2: column 'loud' of train.csv holds 'NA' besides 0 and 1, so "
                                        r"it cannot share a line of binary columns: --na_values NA reads it as "
                                        r"missing; a categorical column goes alone on its line$"):
        infer_heads([LabelGroup(["loud", "long"], None, "labels.txt:2")], table, source="train.csv")
    table["loud"] = ["0", "high", "1", "1"]
    with pytest.raises(DataError, match=r"holds 'high' besides 0 and 1, so it cannot share a line of binary columns: "
                                        r"a categorical column goes alone on its line$"):
        infer_heads([LabelGroup(["loud", "long"], None, "labels.txt:2")], table, source="train.csv")


def test_a_label_file_read_from_its_local_copy_is_named_by_its_url() -> None:
    """A gs:// label file is read from a local copy in the cache: its lines are named by the URL the user gave."""
    from audiotune import storage
    from audiotune.data.labels import read_label_file

    copy = storage.cache_folder() / "files" / "gs" / "bucket" / "exp" / "labels.txt"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text("pitch\nloud,long\n")
    assert [group.where for group in read_label_file(copy)] == ["gs://bucket/exp/labels.txt:1",
                                                                "gs://bucket/exp/labels.txt:2"]


def test_a_name_with_other_spaces_around_it_is_said(caplog) -> None:
    heads = infer_heads([LabelGroup(["c"], "categorical", "labels.txt:1")],
                        pd.DataFrame({"c": ["yes", "yes ", "no", "no"]}), source="train.csv")
    assert heads[0].classes == ["no", "yes", "yes "]
    assert "column 'c' of train.csv holds ['yes', 'yes '] as different classes: one name with other spaces" \
        in caplog.text


def test_a_file_read_as_numbers_gives_each_cell_the_class_training_named_it() -> None:
    """Training read the column beside a cell that is not a number, so as text ('01', '1.0'); a later file of
    numbers only is read as numbers: its '01' became class '1' (another class) without a word, and '1.0' an
    unknown class."""
    trained = infer_heads([LabelGroup(["c"], "categorical")], pd.DataFrame({"c": ["01", "2.0", "x"]}))
    later = pd.DataFrame({"c": [1, 2.0, 1]})  # as pandas reads the cells 01, 2.0, 1
    assert encode_targets(later, trained, "later.csv").argmax(axis=1).tolist() == [0, 1, 0]
    ambiguous = infer_heads([LabelGroup(["c"], "categorical")], pd.DataFrame({"c": ["01", "1", "x"]}))
    with pytest.raises(DataError, match=r"later.csv: column 'c' holds only numbers.*1 may be any of the run's "
                                        r"classes \['01', '1'\]"):
        encode_targets(pd.DataFrame({"c": [1, 1]}), ambiguous, "later.csv")


def test_a_name_in_two_unicode_forms_is_said(caplog) -> None:
    """``café`` as one character é and as e with a combining accent look alike: two classes, said so."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    heads = infer_heads([LabelGroup(["drink"], "categorical", "labels.txt:1")],
                        pd.DataFrame({"drink": [composed, decomposed, "tea", "tea"]}), source="train.csv")
    assert len(heads[0].classes) == 3
    assert "as different classes: one name with other spaces around it or in other Unicode forms" in caplog.text
    assert "holds ['cafe\\u0301', 'caf\\xe9'] as different classes" in caplog.text


@pytest.mark.parametrize(("lines", "table", "clash"), [
    (["x", "x=y"], {"x": ["y", "z", "y", "z"], "x=y": [1, 0, 0, 1]}, "output 'x=y'"),
    (["slow rate", "slow/rate"], {"slow rate": [1, 0, 1, 0], "slow/rate": [0, 1, 1, 0]}, "file name 'slow_rate.png'"),
])
def test_heads_that_would_write_over_each_other_are_refused(lines: list[str], table: dict, clash: str) -> None:
    """A binary column ``x=y`` beside class ``y`` of column ``x`` is one score column; ``slow rate`` and
    ``slow/rate`` one plot file: the label file is refused, naming both lines."""
    groups = [LabelGroup([line], None, f"labels.txt:{k}") for k, line in enumerate(lines, start=1)]
    with pytest.raises(DataError, match=f"labels.txt:1 .* and labels.txt:2 .*: two heads with the {clash}"):
        infer_heads(groups, pd.DataFrame(table), source="train.csv")


def test_the_na_values_advice_keeps_the_cell_as_written(caplog) -> None:
    """A cell ` NA` (a space before) was advised as `--na_values NA`, which does not match it: the advice quotes
    the cell as written, so following it reads the cell as missing."""
    with pytest.raises(DataError, match=re.escape("--na_values ' NA' reads it as missing")):
        infer_heads([LabelGroup(["flag", "other"], None, "labels.txt:1")],
                    pd.DataFrame({"flag": ["0", "1", " NA", "1"], "other": ["1", "0", "0", "1"]}), source="train.csv")
    infer_heads([LabelGroup(["c"], "categorical", "labels.txt:1")],
                pd.DataFrame({"c": ["yes", "no", "NA ", "no"]}), source="train.csv")
    assert "(--na_values 'NA ' reads them as missing)" in caplog.text
