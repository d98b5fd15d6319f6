"""Label files and targets.

A label file has one head per line, its columns comma-separated, optionally ending in ``:kind``:

- ``name:binary`` (0/1 columns; several on a line make one multi-label head),
- ``name:categorical`` (one column of class names or integer codes),
- ``name:regression`` (real-valued columns; one output per column),
- ``a,b,c:soft`` (vote counts or probabilities of ONE categorical head whose classes are the column names).

An undeclared line is inferred from the training values: only 0/1 is binary, class names or integers
are categorical; non-integer numbers are an error asking for ``:regression`` rather than a guess.

Targets are encoded with NaN where a head has no target for a row (an empty cell; for a soft head a row
of all-zero or empty votes), so a row keeps every head it is labelled for (``--complete_rows`` keeps only
the rows labelled in every label column, as the NAIP seeds' dropna did).
"""
from __future__ import annotations

import logging
import math
import shlex
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.config import HEAD_KINDS, HeadSpec
from audiotune.data.audio import EXPECTED_RATE
from audiotune.data.errors import DataError
from audiotune.outputs import safe_name

log = logging.getLogger(__name__)
# the NAIP seeds' label derived from its parts when a split was loaded (1 where either is above 0); `audiotune table`
# derives it into the table (data/metadata_table.py)
DISTORTIONS = "distortions"
DISTORTION_PARTS = ("distorted Cs", "distorted V")
# cells that other tools write for a missing value; here they are values unless --na_values names them (lower case)
MISSING_SPELLINGS = ("na", "n/a", "nan", "none", "null")


@dataclass
class LabelGroup:
    """One line of a label file: its columns, the declared kind (None: inferred) and where it was written."""

    columns: list[str]
    kind: str | None = None
    where: str = "labels"


def read_label_file(path: str | Path) -> list[LabelGroup]:
    """Column groups of a label file, one per non-empty line, with their declared kinds."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is not part of the first name
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: label file is not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                        "UTF-8") from None
    groups = []
    shown = storage.remote_name(str(path))  # a bucket's label file by its URL, not the local copy read
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{shown}:{number}"
        text, kind = line.strip(), None
        if ":" in text:
            text, _, declared = text.rpartition(":")
            kind = declared.strip().lower()
            if kind not in HEAD_KINDS:
                raise DataError(f"{where}: unknown head kind ':{declared.strip()}' (choose one of "
                                f"{', '.join(':' + k for k in HEAD_KINDS)})")
        columns = [name.strip() for name in text.split(",") if name.strip()]
        if (line.strip() or kind) and not columns:
            raise DataError(f"{where}: line names no column")
        if kind == "soft" and len(columns) < 2:
            raise DataError(f"{where}: a :soft head needs two or more vote columns (one per class), got {columns}")
        if columns:
            groups.append(LabelGroup(columns, kind, where))
    if not groups:
        raise DataError(f"{path}: label file names no column")
    flat = [c for group in groups for c in group.columns]
    if len(flat) != len(set(flat)):
        twice = sorted({c for c in flat if flat.count(c) > 1})
        raise DataError(f"{path}: a column is named twice: {twice}")
    return groups


def _numbers(values: pd.Series) -> pd.Series | None:
    """The values as numbers, or None when some value is not a number."""
    try:
        return pd.to_numeric(values)
    except (ValueError, TypeError):
        return None


def _is_binary(values: pd.Series) -> bool:
    numbers = _numbers(values)
    return numbers is not None and bool(numbers.isin([0, 1]).all())


def _show(value: object) -> str:
    """A cell value as the user wrote it (``2``, ``'high'``), not as numpy spells it."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _first_bad(values: pd.Series, good: pd.Series) -> str:
    return _show(values[~good].iloc[0])


def _check_declared(group: LabelGroup, table: pd.DataFrame, source: str) -> None:
    """A declared kind must fit the training values; the error names the label file line, table and column."""
    for column in group.columns:
        values = table[column].dropna()
        numbers = _numbers(values)
        if group.kind == "binary" and not _is_binary(values):
            good = numbers.isin([0, 1]) if numbers is not None else values.isin([0, 1])
            raise DataError(f"{group.where}: column '{column}' is declared :binary but {source} holds "
                            f"{_first_bad(values, good)} (binary targets are 0 or 1)")
        if group.kind in ("regression", "soft"):
            if numbers is None:
                good = pd.to_numeric(values, errors="coerce").notna()
                raise DataError(f"{group.where}: column '{column}' is declared :{group.kind} but {source} holds "
                                f"{_first_bad(values, good)}, which is not a number")
            finite = np.isfinite(numbers.to_numpy(dtype=float))
            if not finite.all():
                raise DataError(f"{group.where}: column '{column}' of {source} holds a non-finite value")
        if group.kind == "soft" and numbers is not None and (numbers < 0).any():  # None raised above
            raise DataError(f"{group.where}: vote column '{column}' of {source} holds the negative value "
                            f"{_first_bad(values, numbers >= 0)} (votes are counts or probabilities)")


def _infer_kind(group: LabelGroup, table: pd.DataFrame, source: str) -> str:
    kinds = {}
    for column in group.columns:
        values = table[column].dropna()
        numbers = _numbers(values)
        if numbers is not None and not (numbers == np.round(numbers)).all():
            example = values[numbers != np.round(numbers)].iloc[0]
            raise DataError(f"{group.where}: column '{column}' of {source} holds non-integer numbers (e.g. "
                            f"{_show(example)}); for a real-valued target declare it `{','.join(group.columns)}"
                            f":regression` in the label file (or `:categorical` / `:soft`)")
        kinds[column] = "binary" if _is_binary(values) else "categorical"
    categorical = [c for c, kind in kinds.items() if kind == "categorical"]
    if categorical and len(group.columns) > 1:  # binary 0/1 columns share a head; one value besides is named
        column = categorical[0]
        values = table[column].dropna()
        other = values[~pd.to_numeric(values, errors="coerce").isin([0, 1])].iloc[0]
        missing = str(other).strip().lower() in MISSING_SPELLINGS
        raise DataError(f"{group.where or source}: column '{column}' of {source} holds {_show(other)} besides 0 and 1, "
                        "so it cannot share a line of binary columns: "
                        + (f"--na_values {shlex.quote(str(other))} reads it as missing; " if missing else "")
                        + "a categorical column goes alone on its line")
    return "categorical" if categorical else "binary"


def derivation_hint(missing: Sequence[str], columns: Iterable[str]) -> str:
    """How a label column that the NAIP seeds derived when loading a split (``distortions``, from its parts) is had
    here, where the table holds it (README: clinical tables), when ``missing`` names it and ``columns`` hold its
    parts; else ``""``."""
    if DISTORTIONS not in missing or not set(DISTORTION_PARTS) <= set(columns):
        return ""
    return (f"; the seeds derived '{DISTORTIONS}' from {' and '.join(map(repr, DISTORTION_PARTS))} when loading: add "
            "that column (1 where either is above 0, 0 where both are 0), or build the table with `audiotune table`, "
            "which derives it")


def infer_heads(groups: Sequence[LabelGroup | Sequence[str]], table: pd.DataFrame,
                source: str = "labels") -> list[HeadSpec]:
    """Head specs from the label groups (declared or inferred kinds) and the values in ``table`` (training)."""
    label_groups = [g if isinstance(g, LabelGroup) else LabelGroup(list(g)) for g in groups]
    missing = [c for group in label_groups for c in group.columns if c not in table.columns]
    if missing:
        raise DataError(f"{source}: label column(s) {missing} not in the table "
                        f"(columns: {[c for c in table.columns if c not in ('path', EXPECTED_RATE)]})"
                        f"{derivation_hint(missing, table.columns)}")
    heads = []
    for group in label_groups:
        empty = [c for c in group.columns if table[c].isna().all()]
        if empty:
            raise DataError(f"{source}: label column(s) {empty} ({group.where}) have no values")
        if group.kind is not None:
            _check_declared(group, table, source)
        kind = group.kind or _infer_kind(group, table, source)
        if group.kind is None:
            log.warning("%s: %s inferred %s from the values of %s (%s); declare `%s:KIND` in the label file to choose",
                        group.where or "labels", ",".join(group.columns), kind, source,
                        "only 0 and 1" if kind == "binary" else "class names or integer codes",
                        ",".join(group.columns))
        if kind == "binary" and len(group.columns) == 1 and table[group.columns[0]].dropna().nunique() < 2:
            raise DataError(f"{source}: binary column '{group.columns[0]}' holds only "
                            f"{_show(table[group.columns[0]].dropna().iloc[0])} in these rows: a classifier needs "
                            "both 0 and 1")
        if kind == "categorical":
            if len(group.columns) > 1:
                raise DataError(f"{group.where}: categorical column(s) {group.columns} must be alone on their "
                                f"line (several vote columns of one head: declare them `:soft`)")
            classes = sorted({class_name(v) for v in table[group.columns[0]].dropna()}, key=_class_sort_key)
            looks_missing = [c for c in classes if c.strip().lower() in MISSING_SPELLINGS]
            if looks_missing:
                log.warning("%s: column '%s' of %s holds %s, read as class name(s): only an empty cell is missing "
                            "(--na_values %s reads them as missing)", group.where, group.columns[0], source,
                            looks_missing, " ".join(map(shlex.quote, looks_missing)))
            for spellings in _one_number_spelt_twice(classes):
                log.warning("%s: column '%s' of %s holds %s as different classes: one number written %d ways; write "
                            "each class one way", group.where, group.columns[0], source, spellings, len(spellings))
            for spellings in _one_name_written_twice(classes):
                log.warning("%s: column '%s' of %s holds %s as different classes: one name with other spaces "
                            "around it or in other Unicode forms; write each class one way", group.where,
                            group.columns[0], source, ascii(spellings))
            if len(classes) < 2:
                raise DataError(f"{source}: column '{group.columns[0]}' holds one class only ({classes}) in these "
                                "rows: a classifier needs at least two (check the split, or --na_values if other "
                                "classes were read as missing)")
            heads.append(HeadSpec(name=group.columns[0], kind="categorical", columns=list(group.columns),
                                  classes=classes))
        elif kind == "soft":
            heads.append(HeadSpec(name="+".join(group.columns), kind="soft", columns=list(group.columns),
                                  classes=list(group.columns)))
        else:
            heads.append(HeadSpec(name="+".join(group.columns), kind=kind, columns=list(group.columns)))
    _refuse_shared_names(heads, label_groups)
    return heads


def _refuse_shared_names(heads: list[HeadSpec], groups: list[LabelGroup]) -> None:
    """Two heads whose outputs (a binary column ``x=y`` and class ``y`` of a categorical column ``x``) or whose
    names in file names (``a b`` and ``a/b`` are both ``a_b``) are one would write over each other's scores and
    plots."""
    named: dict[str, int] = {}
    for k, head in enumerate(heads):
        for what, name in ([("output", output) for output in head.output_names]
                           + [("file name", f"{safe_name(head.name)}.png")]):
            other = named.setdefault(f"{what} {name}", k)
            if other != k:
                raise DataError(f"{groups[other].where} ({heads[other].name}) and {groups[k].where} ({head.name}): "
                                f"two heads with the {what} {name!r}, which would write over each other's scores and "
                                "plots; rename a column")


def lost_classes(heads: list[HeadSpec], before: pd.DataFrame, after: pd.DataFrame) -> dict[str, list[str]]:
    """Per label column, the classes of a categorical head (the values of a one-column binary head) that rows of
    ``before`` hold and none of ``after`` do (the rows a command left out took them all)."""
    lost = {}
    for head in heads:
        if head.kind not in ("categorical", "binary") or len(head.columns) != 1:
            continue
        column = head.columns[0]
        kept = {class_name(v) for v in after[column].dropna()}
        gone = sorted({class_name(v) for v in before[column].dropna()} - kept, key=_class_sort_key)
        if gone:
            lost[column] = gone
    return lost


def rows_of_classes(table: pd.DataFrame, column: str, classes: Iterable[str]) -> pd.Index:
    """The index (uids) of ``table``'s rows whose ``column`` holds one of ``classes``."""
    names = table[column].map(lambda v: None if pd.isna(v) else class_name(v))
    return table.index[names.isin(list(classes)).to_numpy()]


def class_name(value: object) -> str:
    """A label cell as a class name: a whole number read as a float (``1.0``, from a column with empty cells) is
    the class ``1``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _one_number_spelt_twice(classes: list[str]) -> list[list[str]]:
    """Class names that are one number written in several ways (``2`` and ``2.0``, ``7`` and ``007``)."""
    by_number: dict[float, list[str]] = {}
    for name in classes:
        key = _class_sort_key(name)
        if key[0] == 0:
            by_number.setdefault(key[1], []).append(name)
    return [names for names in by_number.values() if len(names) > 1]


def _as_classes(names: list[str], head: HeadSpec, source: str) -> list[str]:
    """``names`` (numbers, as :func:`class_name` writes them) as the head's classes of the same number: a
    column of numbers only is read as numbers, so its cells' spelling (``01``, ``1.0``) is gone, but training
    may have read the column as text (beside a cell that is not a number) and named its classes so. A number that
    two classes are (``01`` and ``1``) cannot be told apart here: an error."""
    by_number: dict[float, list[str]] = {}
    for name in head.classes:
        key = _class_sort_key(name)
        if key[0] == 0:
            by_number.setdefault(key[1], []).append(name)
    mapped = {}
    for name in dict.fromkeys(names):
        same = by_number.get(_class_sort_key(name)[1], []) if _class_sort_key(name)[0] == 0 else []
        if len(same) > 1:
            raise DataError(f"{source}: column '{head.columns[0]}' holds only numbers, so its cells were read as "
                            f"numbers and {name} may be any of the run's classes {same}: write the column with a "
                            "cell that is not a number, or each class one way")
        mapped[name] = same[0] if same else name
    return [mapped[name] for name in names]


def _one_name_written_twice(classes: list[str]) -> list[list[str]]:
    """Class names that are one name with other spaces around it (``yes`` and ``yes ``) or in other Unicode
    forms of the same letters (``café`` as one character ``é`` or as ``e`` and an accent), which look alike."""
    by_name: dict[str, list[str]] = {}
    for name in classes:
        by_name.setdefault(unicodedata.normalize("NFKC", name).strip(), []).append(name)
    return [names for names in by_name.values() if len(names) > 1]


def _class_sort_key(name: str) -> tuple[int, float, str]:
    """Numbers in order, then names; 'nan' and 'inf' are names (a NaN key would leave the order to chance)."""
    try:
        number = float(name)
    except ValueError:
        return (1, 0.0, name)
    return (0, number, name) if math.isfinite(number) else (1, 0.0, name)


def _numeric_block(table: pd.DataFrame, head: HeadSpec, source: str) -> np.ndarray:
    """The head's columns as float64 (NaN where empty); a value that is not a number names its row and column."""
    values = table[head.columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & table[head.columns].notna()
    if bad.to_numpy().any():
        row, column = next((r, c) for c in bad.columns for r in bad.index[bad[c]])
        raise DataError(f"{source}: row '{row}' column '{column}' of the {head.kind} head '{head.name}' is "
                        f"{_show(table.loc[row, column])}, not a number")
    return values.to_numpy(dtype=np.float64)


def _encode_head(table: pd.DataFrame, head: HeadSpec, source: str) -> np.ndarray:
    if head.kind == "categorical":
        column = table[head.columns[0]]
        present = column.notna().to_numpy()
        names = [class_name(v) for v in column[present]]
        if pd.api.types.is_numeric_dtype(column):  # the file's cells were read as numbers: match them as numbers
            names = _as_classes(names, head, source)
        unknown = sorted(set(names) - set(head.classes))
        if unknown:
            raise DataError(f"{source}: column '{head.columns[0]}' has classes {unknown} "
                            f"not seen in training (known: {head.classes})")
        index = {name: i for i, name in enumerate(head.classes)}
        block = np.full((len(table), len(head.classes)), np.nan)
        block[present] = 0.0
        block[np.flatnonzero(present), [index[n] for n in names]] = 1.0
        return block
    block = _numeric_block(table, head, source)
    if head.kind == "binary":
        bad = ~np.isnan(block) & ~np.isin(block, [0.0, 1.0])
        if bad.any():
            row, j = np.argwhere(bad)[0]
            raise DataError(f"{source}: row '{table.index[row]}' column '{head.columns[j]}' is "
                            f"{_show(table.iloc[row][head.columns[j]])}, not 0/1: the head '{head.name}' is binary "
                            f"(its training values are 0 and 1); if the column holds classes, declare "
                            f"`{head.columns[j]}:categorical` in the label file")
        return block
    finite = np.isfinite(block) | np.isnan(block)
    if not finite.all():
        row, j = np.argwhere(~finite)[0]
        raise DataError(f"{source}: row '{table.index[row]}' column '{head.columns[j]}' is not finite")
    if head.kind == "soft":
        if (block < 0).any():
            row, j = np.argwhere(block < 0)[0]
            raise DataError(f"{source}: row '{table.index[row]}' vote column '{head.columns[j]}' is negative")
        # empty vote cells count as no votes; a row with no votes at all has no target for this head
        votes = np.nan_to_num(block, nan=0.0)
        total = votes.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, votes / total, np.nan)
    return block


def encode_targets(table: pd.DataFrame, heads: list[HeadSpec], source: str = "split") -> np.ndarray:
    """Targets as (rows, outputs) float32: binary 0/1, categorical one-hot, soft vote shares, regression values
    in their original units; NaN wherever a head (for binary and regression: a column) has no target."""
    blocks = [_encode_head(table, head, source) for head in heads]
    if not blocks:
        return np.zeros((len(table), 0), dtype=np.float32)
    return np.concatenate(blocks, axis=1).astype(np.float32)


def drop_missing_targets(table: pd.DataFrame, heads: list[HeadSpec], split: str, source: str | None = None,
                         complete: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table into the rows kept and the listed rows left out (label columns, split, reason): those with
    no target at all, and with ``complete`` (``--complete_rows``) those missing a target in any label column."""
    columns = [c for head in heads for c in head.columns]
    if not columns:
        return table, table.iloc[0:0]
    targets = encode_targets(table, heads, source or split)
    unlabelled = np.isnan(targets).all(axis=1)
    missing = _missing_columns(targets, heads)
    left_out = np.array([bool(gaps) for gaps in missing]) if complete else unlabelled
    dropped = table.loc[left_out, columns].copy()
    dropped["split"] = split
    dropped["reason"] = [f"no target for any head (empty or all-zero: {columns})" if none else
                         f"no target for {gaps} (--complete_rows keeps only rows labelled in every label column)"
                         for none, gaps, out in zip(unlabelled, missing, left_out) if out]
    return table.loc[~left_out], dropped


def _missing_columns(targets: np.ndarray, heads: list[HeadSpec]) -> list[list[str]]:
    """Per row, the label columns without a target (for a categorical or soft head: all of its columns)."""
    missing: list[list[str]] = [[] for _ in range(len(targets))]
    start = 0
    for head in heads:
        empty = np.isnan(targets[:, start:start + head.num_outputs])
        start += head.num_outputs
        per_column = head.kind in ("binary", "regression")
        for row in np.flatnonzero(empty.any(axis=1) if per_column else empty.all(axis=1)):
            missing[row] += [c for j, c in enumerate(head.columns) if empty[row, j]] if per_column else head.columns
    return missing


def fit_target_scaling(heads: list[HeadSpec], train_targets: np.ndarray, enabled: bool) -> None:
    """Set each regression head's ``target_mean``/``target_std`` from the training targets (or clear them).

    A constant column keeps std 1, so it is only centred.
    """
    start = 0
    for head in heads:
        stop = start + head.num_outputs
        if head.kind == "regression":
            block = train_targets[:, start:stop].astype(np.float64)
            if enabled and len(block):
                mean = np.nanmean(block, axis=0)
                std = np.nanstd(block, axis=0)
                head.target_mean = [float(m) if np.isfinite(m) else 0.0 for m in mean]
                head.target_std = [float(s) if np.isfinite(s) and s > 1e-12 else 1.0 for s in std]
            else:
                head.target_mean, head.target_std = [], []
        start = stop
