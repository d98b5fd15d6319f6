"""Splits by recording task (the clinical tables' ``task`` column): train on some tasks, test on others, with no
subject in two parts.

Test subjects are drawn (seeded) from the subjects with rows of the test tasks, training subjects from the
others with rows of the training tasks, validation subjects from the training subjects. Each part holds only
the rows of its own tasks: the test part the test-task rows of the test subjects, train and validation the
training-task rows of theirs.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.data.errors import DataError
from audiotune.data.layout import SUBJECT
from audiotune.data.splits import group_values

log = logging.getLogger(__name__)

TASK_COLUMN = "task"
SPEAKER_COLUMN = "speakerID"  # the column the clinical seed's --existing_spk_split file names its speakers in


def read_subject_file(path: str | Path) -> list[str]:
    """The subjects of an earlier split: the ``speakerID`` column of a CSV (the clinical seed's
    ``--existing_spk_split`` file), each once, in file order."""
    if not storage.isfile(path):
        raise DataError(f"{path}: subject file not found")
    try:
        with storage.open_input(path) as stream:
            table = pd.read_csv(stream, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: empty file (no header, no rows)") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV table ({str(err).strip()})") from err
    if SPEAKER_COLUMN not in table.columns:
        raise DataError(f"{path}: no '{SPEAKER_COLUMN}' column naming the subjects (columns: {list(table.columns)})")
    subjects = table[SPEAKER_COLUMN].dropna().str.strip()
    subjects = subjects[subjects != ""]
    if subjects.empty:
        raise DataError(f"{path}: the '{SPEAKER_COLUMN}' column names no subject")
    return list(dict.fromkeys(subjects))


def _draw(candidates: list[str], count: int, rng: np.random.Generator, what: str, source: str) -> list[str]:
    """``count`` of ``candidates`` (sorted, so the draw depends on the seed only), or all of them if count is
    their number."""
    if count > len(candidates):
        raise DataError(f"{source}: {count} {what} subjects asked for, but only {len(candidates)} are available")
    if count == len(candidates):
        return list(candidates)
    return sorted(rng.choice(np.array(sorted(candidates), dtype=object), size=count, replace=False).tolist())


def _count(fraction: float, available: int) -> int:
    return max(1, int(round(fraction * available))) if fraction > 0 and available else 0


def task_split(table: pd.DataFrame, train_tasks: list[str], test_tasks: list[str],
               sizes: list[int] | None = None, test_fraction: float = 0.2, val_fraction: float = 0.1,
               group: str = SUBJECT, seed: int = 0, test_subjects: list[str] | None = None,
               val_subjects: list[str] | None = None, source: str = "table",
               test_pool: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """train / val / test tables by task. ``sizes``: subject counts ``[train, test]`` or ``[train, test, val]``
    (train 0: every remaining subject); without them ``test_fraction`` of the test-task subjects and
    ``val_fraction`` of the training subjects are drawn. ``test_subjects`` limits the test draw to those subjects
    (all of them without ``sizes``); ``val_subjects`` names the validation subjects. ``test_pool`` (the seed's
    ``--existing_spk_split`` file) limits the test draw as the seed did: to those of its subjects with rows of the
    test tasks (the others are passed over, with a warning)."""
    if TASK_COLUMN not in table.columns:
        raise DataError(f"{source}: no '{TASK_COLUMN}' column to select rows by task")
    tasks = table[TASK_COLUMN].astype(str)
    unknown = sorted(t for t in {*train_tasks, *test_tasks} if t not in set(tasks))
    if unknown:
        raise DataError(f"{source}: task(s) {unknown} not found (tasks: {sorted(tasks.unique())[:10]})")
    if sizes is not None and (len(sizes) not in (2, 3) or min(sizes) < 0):
        raise DataError(f"--split_size {' '.join(map(str, sizes))}: give TRAIN TEST [VAL] subject counts (>= 0)")
    if val_subjects and sizes is not None and len(sizes) == 3:
        raise DataError("--val_subjects names the validation subjects: give --split_size TRAIN TEST without VAL")
    subjects = group_values(table, group, source)
    rng = np.random.default_rng(seed)
    is_test_task, is_train_task = tasks.isin(test_tasks), tasks.isin(train_tasks)

    candidates = sorted(subjects[is_test_task].unique())
    if test_subjects:
        missing = sorted(set(test_subjects) - set(candidates))
        if missing:
            raise DataError(f"{source}: test subject(s) {missing} have no rows of the test task(s) {test_tasks}")
        candidates = sorted(set(test_subjects))
    elif test_pool:
        passed_over = sorted(set(test_pool) - set(candidates))
        candidates = sorted(set(test_pool) & set(candidates))
        if not candidates:
            raise DataError(f"{source}: none of the {len(set(test_pool))} subjects of the speaker file has rows of the "
                            f"test task(s) {test_tasks}")
        if passed_over:
            log.warning("%s: %d subject(s) of the speaker file have no rows of the test task(s) %s and are passed "
                        "over, as the seed did: %s", source, len(passed_over), test_tasks, passed_over[:10])
    n_test = sizes[1] if sizes else len(candidates) if test_subjects or test_pool else \
        _count(test_fraction, len(candidates))
    chosen_test = _draw(candidates, n_test, rng, "test", source)

    rest = sorted(set(subjects[is_train_task]) - set(chosen_test))
    n_train = sizes[0] if sizes and sizes[0] else len(rest)
    chosen_train = _draw(rest, n_train, rng, "training", source)
    if val_subjects:
        missing = sorted(set(val_subjects) - set(chosen_train))
        if missing:
            raise DataError(f"{source}: validation subject(s) {missing} are not training subjects of the "
                            f"task(s) {train_tasks}")
        chosen_val = sorted(set(val_subjects))
    else:
        n_val = sizes[2] if sizes and len(sizes) == 3 else 0 if sizes else _count(val_fraction, len(chosen_train))
        chosen_val = _draw(chosen_train, n_val, rng, "validation", source)
    if len(chosen_val) >= len(chosen_train):
        raise DataError(f"{source}: {len(chosen_val)} validation subject(s) leave no training subject "
                        f"({len(chosen_train)} have rows of the task(s) {train_tasks})")
    parts = {"train": table[is_train_task & subjects.isin(set(chosen_train) - set(chosen_val))]}
    if chosen_val:
        parts["val"] = table[is_train_task & subjects.isin(chosen_val)]
    parts["test"] = table[is_test_task & subjects.isin(chosen_test)]
    if parts["test"].empty:
        raise DataError(f"{source}: no test subject drawn (raise --test_fraction, or give --split_size)")
    return parts
