"""Label files and targets.

A label file has one classifier head per line, its columns comma-separated. A column holding only
0/1 is a binary target (one BCE output each, several per head = multi-label); a column of class names
or integers is categorical (one head, one output per class, cross-entropy) and must be alone on its line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from audiotune.config import HeadSpec
from audiotune.data.layout import DataError


def read_label_file(path: str | Path) -> list[list[str]]:
    """Column groups of a label file, one list per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    groups = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        columns = [name.strip() for name in line.split(",") if name.strip()]
        if line.strip() and not columns:
            raise DataError(f"{path}:{number}: line names no column")
        if columns:
            groups.append(columns)
    if not groups:
        raise DataError(f"{path}: label file names no column")
    flat = [c for group in groups for c in group]
    if len(flat) != len(set(flat)):
        raise DataError(f"{path}: a column is named twice")
    return groups


def _is_binary(values: pd.Series) -> bool:
    try:
        numbers = pd.to_numeric(values)
    except (ValueError, TypeError):
        return False
    return bool(numbers.isin([0, 1]).all())


def infer_heads(groups: list[list[str]], table: pd.DataFrame, source: str = "labels") -> list[HeadSpec]:
    """Head specs from the label groups and the values in ``table`` (the training split)."""
    missing = [c for group in groups for c in group if c not in table.columns]
    if missing:
        raise DataError(f"{source}: label column(s) {missing} not in the table "
                        f"(columns: {[c for c in table.columns if c not in ('path', 'expected_rate')]})")
    heads = []
    for group in groups:
        kinds = {column: "binary" if _is_binary(table[column].dropna()) else "categorical" for column in group}
        categorical = [c for c, kind in kinds.items() if kind == "categorical"]
        if categorical and len(group) > 1:
            raise DataError(f"{source}: categorical column(s) {categorical} must be alone on their line "
                            f"(binary 0/1 columns can share a head)")
        if categorical:
            values = table[group[0]].dropna()
            if values.empty:
                raise DataError(f"{source}: column '{group[0]}' has no values")
            classes = sorted({_class_name(v) for v in values}, key=_class_sort_key)
            heads.append(HeadSpec(name=group[0], kind="categorical", columns=list(group), classes=classes))
        else:
            heads.append(HeadSpec(name="+".join(group), kind="binary", columns=list(group)))
    return heads


def _class_name(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _class_sort_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def drop_missing_targets(table: pd.DataFrame, heads: list[HeadSpec], split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table into rows with every target present and the listed rows that lack one."""
    columns = [c for head in heads for c in head.columns]
    if not columns:
        return table, table.iloc[0:0]
    missing = table[columns].isna().any(axis=1)
    dropped = table.loc[missing, columns].copy()
    dropped["split"] = split
    dropped["reason"] = [f"missing target(s): {[c for c in columns if pd.isna(row[c])]}"
                         for _, row in table.loc[missing, columns].iterrows()]
    return table.loc[~missing], dropped


def encode_targets(table: pd.DataFrame, heads: list[HeadSpec], source: str = "split") -> np.ndarray:
    """Targets as (rows, outputs) float32: binary columns as 0/1, categorical as one-hot."""
    blocks = []
    for head in heads:
        if head.kind == "binary":
            values = table[head.columns].apply(pd.to_numeric, errors="coerce")
            bad = ~values.isin([0, 1])
            if bad.to_numpy().any():
                row, column = next((r, c) for c in bad.columns for r in bad.index[bad[c]])
                raise DataError(f"{source}: row '{row}' column '{column}' is not 0/1")
            blocks.append(values.to_numpy(dtype=np.float32))
        else:
            names = [_class_name(v) for v in table[head.columns[0]]]
            unknown = sorted(set(names) - set(head.classes))
            if unknown:
                raise DataError(f"{source}: column '{head.columns[0]}' has classes {unknown} "
                                f"not seen in training (known: {head.classes})")
            index = {name: i for i, name in enumerate(head.classes)}
            one_hot = np.zeros((len(names), len(head.classes)), dtype=np.float32)
            one_hot[np.arange(len(names)), [index[n] for n in names]] = 1.0
            blocks.append(one_hot)
    if not blocks:
        return np.zeros((len(table), 0), dtype=np.float32)
    return np.concatenate(blocks, axis=1)
