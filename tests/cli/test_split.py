"""`audiotune split`'s command line: its seed and folds are the options' own, with their checks."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from audiotune.cli import main


def _table(root: Path) -> str:
    rows = [{"uid": f"{s}{k}", "path": f"{s}{k}.wav", "subject": s, "label": "ab"[k % 2]}
            for s in ("ann", "bob", "cat", "dan", "eve", "fay") for k in range(2)]
    path = root / "table.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(("flags", "error"), [
    (["--seed", "-5"], "--seed -5: must be in [0, 4294967295]"),  # the seed option's range, as train says it
    (["--seed", "-5", "--stratify", "label"], "--seed -5: must be in [0, 4294967295]"),
    (["--folds", "1"], "--folds 1: at least 2 folds are needed"),  # as cv says it
    (["--folds", "-2", "--stratify", "label"], "--folds -2: at least 2 folds are needed"),
])
def test_a_bad_seed_or_fold_count_is_named_not_blamed_on_stratification(
        tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], error: str) -> None:
    try:
        status = main(["split", _table(tmp_path), "--out", str(tmp_path / "split"), *flags])
    except SystemExit as stop:
        status = stop.code
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert status != 0 and err == f"audiotune split: error: {error}"
    assert not (tmp_path / "split").exists()


def test_the_seed_draws_the_split(tmp_path: Path) -> None:
    table = _table(tmp_path)
    tests = []
    for seed, out in (("0", "a"), ("0", "b"), ("7", "c")):
        assert main(["split", table, "--out", str(tmp_path / out), "--seed", seed, "--val_fraction", "0"]) == 0
        tests.append(set(pd.read_csv(tmp_path / out / "test.csv")["subject"]))
    assert tests[0] == tests[1] != tests[2]


@pytest.mark.parametrize("folds", [[], ["--folds", "2"]])
def test_an_empty_stratify_cell_names_the_file_column_and_lines(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                folds: list[str]) -> None:
    table = _table(tmp_path)
    rows = pd.read_csv(table)
    rows.loc[[2, 7], "label"] = None  # lines 4 and 9 of the file
    rows.to_csv(table, index=False)
    status = main(["split", table, "--out", str(tmp_path / "split"), "--stratify", "label", *folds])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err == (f"audiotune split: error: {table}: empty 'label' cell on 2 line(s) [4, 9]; "
                                   "--stratify needs a class on every row (fill it, remove the row, or drop "
                                   "--stratify)")
    assert not (tmp_path / "split").exists()
    assert main(["split", table, "--out", str(tmp_path / "split"), *folds]) == 0  # unstratified, the rows split


def test_each_split_line_names_the_file_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Each printed line starts with the CSV written, so the output says where the split is; one subject is
    "1 subject group", not "groups"."""
    out = tmp_path / "split"
    assert main(["split", _table(tmp_path), "--out", str(out), "--test_subjects", "ann", "--val_subjects", "bob"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"{out.resolve() / 'train.csv'}: 8 rows (67%), 4 subject groups",
                       f"{out.resolve() / 'val.csv'}: 2 rows (17%), 1 subject group",
                       f"{out.resolve() / 'test.csv'}: 2 rows (17%), 1 subject group"]
    assert main(["split", _table(tmp_path), "--out", str(tmp_path / "folds"), "--folds", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{(tmp_path / 'folds').resolve() / 'fold_1'}: train ")


def test_a_share_well_off_its_fraction_is_said(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Six subjects kept whole cannot give 10 % of the rows: the line says what was asked and how to choose; a
    share near its fraction, or a part of named subjects, says nothing more."""
    table = _table(tmp_path)
    assert main(["split", table, "--out", str(tmp_path / "a"), "--test_fraction", "0.17", "--val_fraction",
                 "0.1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and printed[3] == (
        "val: 17% of the rows where --val_fraction 0.1 asks 10%: the 6 subject groups are each kept whole in one "
        "split; name a part's groups with --val_subjects")
    assert main(["split", table, "--out", str(tmp_path / "b"), "--test_subjects", "ann", "--val_fraction",
                 "0.17"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_a_split_stopped_while_it_writes_leaves_no_mix_of_two_splits(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after it replaced one file of an earlier split (fold_1's, or train.csv), the folder held new files
    beside old ones: folds testing one subject twice, a train.csv overlapping its test.csv. None is left."""
    import os

    from audiotune import atomic

    table = _table(tmp_path)
    real = os.replace
    for flags, out in (([], tmp_path / "plain"), (["--folds", "3"], tmp_path / "folds")):
        assert main(["split", table, "--out", str(out), "--seed", "0", *flags]) == 0
        written: list[str] = []

        def stopped_after_one(source, target):  # noqa: ANN001, ANN202
            if written:
                raise KeyboardInterrupt
            written.append(str(target))
            return real(source, target)

        monkeypatch.setattr(atomic.os, "replace", stopped_after_one)
        assert main(["split", table, "--out", str(out), "--seed", "7", *flags]) == 130
        monkeypatch.setattr(atomic.os, "replace", real)
        assert len(written) == 1 and not list(out.rglob("*.csv"))


def test_folds_into_a_folder_of_a_plain_split_replace_it(tmp_path: Path) -> None:
    out = tmp_path / "split"
    assert main(["split", _table(tmp_path), "--out", str(out)]) == 0
    assert main(["split", _table(tmp_path), "--out", str(out), "--folds", "3"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.csv")) == [
        f"fold_{k}/{name}.csv" for k in (1, 2, 3) for name in ("test", "train", "val")]


def test_a_split_writes_every_cell_as_it_was_written(tmp_path: Path) -> None:
    """A code 007 stays 007 (it was 7) and a whole number in a column with blanks stays whole (it was 1.0)."""
    rows = pd.read_csv(_table(tmp_path))
    rows["code"] = [f"{k:03d}" for k in range(len(rows))]
    rows["grade"] = [str(k % 3) if k % 4 else "" for k in range(len(rows))]
    rows.to_csv(tmp_path / "coded.csv", index=False)
    assert main(["split", str(tmp_path / "coded.csv"), "--out", str(tmp_path / "split")]) == 0
    written = pd.concat([pd.read_csv(tmp_path / "split" / f"{name}.csv", dtype=str, keep_default_na=False)
                         for name in ("train", "val", "test")]).set_index("uid")
    original = pd.read_csv(tmp_path / "coded.csv", dtype=str, keep_default_na=False).set_index("uid")
    pd.testing.assert_frame_equal(written.loc[original.index, ["code", "grade"]], original[["code", "grade"]])


def test_a_share_exactly_five_points_off_is_said(capsys: pytest.CaptureFixture) -> None:
    """45 of 180 rows where 20 % is asked: 25 %, five points off (the float 0.0499... is five points)."""
    import argparse

    from audiotune.cli.split import _say_shares_off

    args = argparse.Namespace(test_fraction=0.2, val_fraction=0.1, test_subjects=None, existing_spk_split=None,
                              val_subjects=None, group="subject")
    _say_shares_off({"test": pd.DataFrame(index=range(45)), "val": pd.DataFrame(index=range(18))}, args, 180, 12)
    assert capsys.readouterr().out.startswith("test: 25% of the rows where --test_fraction 0.2 asks 20%")


@pytest.mark.parametrize("folds", [[], ["--folds", "2"]])
def test_a_class_a_split_has_no_row_of_is_named(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                folds: list[str]) -> None:
    table = _table(tmp_path)
    rows = pd.read_csv(table)
    rows.loc[0, "label"] = "rare"  # one row, in one subject's group: in one split only
    rows.to_csv(table, index=False)
    assert main(["split", table, "--out", str(tmp_path / "split"), "--stratify", "label", *folds]) == 0
    out = capsys.readouterr().out
    lacking = [line for line in out.splitlines() if "'rare' (1 row)" in line]
    holding = {path.relative_to(tmp_path / "split") for path in (tmp_path / "split").rglob("*.csv")
               if "rare" in set(pd.read_csv(path)["label"])}
    parts = {path.relative_to(tmp_path / "split") for path in (tmp_path / "split").rglob("*.csv")}
    assert len(lacking) == len(parts) - len(holding) > 0
    assert all("no row of 'label' class(es)" in line and "too few rows or subject groups" in line
               for line in lacking)
    assert main(["split", table, "--out", str(tmp_path / "plain"), *folds]) == 0
    assert "no row of" not in capsys.readouterr().out  # unstratified: not asked for
