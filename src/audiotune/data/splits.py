"""Subject-disjoint, stratified, seeded splits."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from audiotune import storage
from audiotune.atomic import atomic_path
from audiotune.data.errors import DataError
from audiotune.data.layout import SUBJECT, FileLines, split_file
from audiotune.outputs import SPLITS


def group_values(table: pd.DataFrame, group: str, source: str) -> pd.Series:
    """The group of every row as text; ``uid`` without such a column: every row its own group."""
    if group == "uid" and group not in table.columns:
        return pd.Series(table.index.astype(str), index=table.index)
    if group not in table.columns:
        raise DataError(f"{source}: no '{group}' column, needed to keep subjects out of two splits "
                        "(--group uid: every row its own group)")
    missing = table[group].isna() | (table[group].astype(str).str.strip() == "")
    if missing.any():
        uids = [str(uid) for uid in table.index[missing.to_numpy()]]
        raise DataError(f"{source}: {len(uids)} row(s) have no '{group}', so they cannot be kept out of two splits: "
                        f"{uids[:10]}{f' and {len(uids) - 10} more' if len(uids) > 10 else ''} (fill the cells, or "
                        "remove the rows)")
    return table[group].astype(str)


def check_stratify(table: pd.DataFrame, stratify: str | None, source: str) -> None:
    """Every row has a class in ``stratify`` (a column of ``table``): an empty cell is an error naming its lines
    in the file the table was read from (its ``source``)."""
    if not stratify:
        return
    if stratify not in table.columns:
        raise DataError(f"{source}: stratify column '{stratify}' not found (columns: {list(table.columns)})")
    blank = (table[stratify].isna() | (table[stratify].astype(str).str.strip() == "")).to_numpy()
    if blank.any():
        lines = FileLines(table.attrs.get("source")).of(np.flatnonzero(blank))
        shown = f"{lines[:10]}{f' and {len(lines) - 10} more' if len(lines) > 10 else ''}"
        raise DataError(f"{source}: empty '{stratify}' cell on {len(lines)} line(s) {shown}; --stratify needs a "
                        "class on every row (fill it, remove the row, or drop --stratify)")


def share_count(train: pd.DataFrame, share: float) -> int:
    """How many of the training rows ``--val_share`` draws: round(share x rows), at least 1, leaving 1 to train."""
    count = max(1, round(share * len(train)))
    if count >= len(train):
        raise DataError(f"{train.attrs.get('source', 'train.csv')}: --val_share {share} of {len(train)} training "
                        "row(s) leaves none to train on")
    return count


def draw_validation(train: pd.DataFrame, val_size: int, seed: int, group: str = SUBJECT,
                    source: str = split_file("train")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move ``val_size`` randomly drawn subjects (seeded) from train to a new validation table; ``group=""``
    draws single rows (utterances) instead."""
    if not group:
        rows = pd.Series(train.index.astype(str), index=train.index)
        if not 0 < val_size < len(rows):
            raise DataError(f"{source}: no validation part and --val_size {val_size}: draw between 1 and "
                            f"{len(rows) - 1} utterances (the training part has {len(rows)})")
        chosen_rows = set(np.random.default_rng(seed).choice(rows.to_numpy(), size=val_size, replace=False))
        is_val_row = rows.isin(chosen_rows).to_numpy()
        return train.loc[~is_val_row], train.loc[is_val_row]
    subjects = np.array(sorted(group_values(train, group, source).unique()))
    if val_size <= 0:
        raise DataError(f"{source}: no val.csv and --val_size {val_size}: validation needs at least one subject")
    if val_size >= len(subjects):
        raise DataError(f"{source}: no val.csv, and --val_size {val_size} (subjects drawn from train to validate) "
                        f"leaves no training subject (train has {len(subjects)}); give --val_size below "
                        f"{len(subjects)}, --val_size 0 (no validation, the last epoch kept), or a val.csv")
    chosen = set(np.random.default_rng(seed).choice(subjects, size=val_size, replace=False))
    is_val = group_values(train, group, source).isin(chosen)
    return train.loc[~is_val], train.loc[is_val]


def _grouped_fold(table: pd.DataFrame, n_splits: int, stratify: str | None, group: str, seed: int,
                  source: str, purpose: str) -> list[np.ndarray]:
    """``n_splits`` parts sharing no value of ``group``; ``purpose`` (the flag asking for them) names the error."""
    groups = group_values(table, group, source)
    names = sorted(groups.unique())
    if len(names) < n_splits:
        shown = f"{names[:5]}{' ...' if len(names) > 5 else ''}"
        raise DataError(f"{source}: {purpose} needs the rows cut into {n_splits} parts that share no '{group}', "
                        f"but only {len(names)} value(s) of '{group}' are left to cut ({shown})")
    labels = table[stratify].astype(str).to_numpy() if stratify else np.zeros(len(table), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        return [test for _, test in splitter.split(np.zeros(len(table)), labels, groups.to_numpy())]
    except ValueError as err:
        largest = pd.Series(labels).value_counts().max()
        if not stratify or largest >= n_splits:  # not the stratification's error: every class smaller than k
            raise
        raise DataError(f"{source}: {purpose} needs {n_splits} stratified parts that share no '{group}': every "
                        f"'{stratify}' class has fewer rows (the largest {largest}) ({err}); "
                        + (f"use --folds {largest} or fewer" if purpose.startswith("--folds") else
                           f"raise the fraction: a part is cut as one of {n_splits} (a smaller fraction needs more "
                           f"parts), and {largest} parts at most can be stratified")
                        + " or drop --stratify") from err


def split_table(table: pd.DataFrame, test_fraction: float = 0.2, val_fraction: float = 0.1,
                stratify: str | None = None, group: str = SUBJECT, seed: int = 0,
                test_subjects: list[str] | None = None, val_subjects: list[str] | None = None,
                source: str = "manifest") -> dict[str, pd.DataFrame]:
    """train/val/test tables with no subject in two of them, stratified by ``stratify`` where possible.

    Named subjects make their part; a fraction is of all rows, drawn from the groups no part names: the first of
    round(1 / share) group-disjoint folds (at least one group, so the defaults work on a handful of speakers; with
    few groups the part's share of the rows can be well off the fraction)."""
    if table.empty:
        raise DataError(f"{source}: no rows to split (only a header)")
    check_stratify(table, stratify, source)
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if not 0 <= fraction < 1:
            raise DataError(f"--{name}_fraction {fraction}: must be in [0, 1)")
    if test_fraction + val_fraction >= 1 and not (test_subjects or val_subjects):
        raise DataError(f"--test_fraction {test_fraction} + --val_fraction {val_fraction} leave nothing for training")
    subjects = group_values(table, group, source)
    twice = sorted(set(test_subjects or ()) & set(val_subjects or ()))
    if twice:
        raise DataError(f"{twice}: named by both --test_subjects and --val_subjects; a subject is in one split")
    remaining = table
    parts: dict[str, pd.DataFrame] = {}
    wanted = (("test", test_subjects, test_fraction), ("val", val_subjects, val_fraction))
    for name, chosen, _ in wanted:  # the named subjects first: a part drawn by fraction never takes them
        if chosen:
            unknown = sorted(set(chosen) - set(subjects))
            if unknown:
                raise DataError(f"{source}: {name} subject(s) {unknown} not found in '{group}'")
            mask = group_values(remaining, group, source).isin(chosen)
            parts[name], remaining = remaining.loc[mask], remaining.loc[~mask]
    for name, chosen, fraction in wanted:
        if not chosen and fraction > 0:
            # fraction of the rows still unassigned, so test 0.2 / val 0.1 means 20% / 10% of the whole
            share = fraction / (len(remaining) / len(table))
            purpose = f"--{name}_fraction {fraction}" + (" (after the test part)" if name == "val" else "")
            # too few groups for that share (6 speakers, 10 %): the part takes one group, never none
            n_groups = group_values(remaining, group, source).nunique()
            if n_groups < 2:
                raise DataError(f"{source}: {purpose} needs a '{group}' for this part and one for training, but "
                                f"only {n_groups} value(s) of '{group}' are left; set --{name}_fraction 0")
            n_splits = min(max(2, int(round(1 / share))), n_groups)
            fold = _grouped_fold(remaining, n_splits, stratify, group, seed, source, purpose)[0]
            mask = np.zeros(len(remaining), dtype=bool)
            mask[fold] = True
            parts[name], remaining = remaining.loc[mask], remaining.loc[~mask]
    parts["train"] = remaining
    if parts["train"].empty:
        raise DataError(f"{source}: no rows left for training")
    return {name: parts[name] for name in SPLITS if name in parts}


def kfold_tables(table: pd.DataFrame, folds: int, val_fraction: float = 0.1, stratify: str | None = None,
                 group: str = SUBJECT, seed: int = 0, source: str = "manifest") -> list[dict[str, pd.DataFrame]]:
    """k subject-disjoint folds: each fold's test part once, validation drawn from the rest."""
    if folds < 2:
        raise DataError(f"--folds {folds}: at least 2 folds are needed")
    if table.empty:
        raise DataError(f"{source}: no rows to split (only a header)")
    check_stratify(table, stratify, source)
    result = []
    for test_index in _grouped_fold(table, folds, stratify, group, seed, source, f"--folds {folds}"):
        mask = np.zeros(len(table), dtype=bool)
        mask[test_index] = True
        rest = table.loc[~mask]
        fold = split_table(rest, test_fraction=0.0, val_fraction=val_fraction / (1 - mask.mean()),
                           stratify=stratify, group=group, seed=seed, source=source) if val_fraction > 0 \
            else {"train": rest}
        fold["test"] = table.loc[mask]
        result.append(fold)
    return result


def write_split(parts: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Write train.csv / val.csv / test.csv (index column ``uid``) into ``out_dir`` as one split: each is written
    aside whole, the files of an earlier split there are removed (its val.csv too where this one has none), then
    each takes its place, train.csv last. A process killed on the way leaves no file of another split beside
    this one's, and no train.csv until the others are in place (a split without train.csv is refused where it
    is read)."""
    out_dir = Path(out_dir)
    written = [out_dir / split_file(name) for name in parts]
    with contextlib.ExitStack() as renamed:  # the last entered is renamed first: train.csv, entered first, last
        for path in sorted(written, key=lambda path: path.stem != "train"):
            part = parts[path.stem]
            if "path" in part.columns:  # relative paths keep the data and its splits movable together
                part = part.assign(path=list(map(storage.relative_to(out_dir), part["path"])))
            part.to_csv(renamed.enter_context(atomic_path(path)), index_label="uid")
        for name in SPLITS:
            (out_dir / split_file(name)).unlink(missing_ok=True)
    return written
