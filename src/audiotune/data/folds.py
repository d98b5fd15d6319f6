"""Cross-validation folds from one of three sources, each fold a train/val/test split written as CSVs.

Sources (``-d``):

- a table (``.csv``): leave-one-group-out over ``group`` (every value of the column is the test set once,
  in natural sort order), or ``folds`` > 0 group-disjoint folds stratified by ``stratify`` (seeded);
- a directory of split folders ``fold_1/``, ``fold_2/``, … each with train.csv, test.csv, optional val.csv
  (what ``audiotune split --folds`` writes);
- a directory of JSON split files (``{"Train": …, "Val": …, "Test": …}``, see :mod:`audiotune.data.json_splits`),
  one fold per file in natural name order.

Validation of a fold that has none (always for tables): ``val_group="next"`` takes the next fold's test
rows (the next group for leave-one-group-out, wrapping around), removed from training; ``"draw"`` draws
``val_size`` groups of ``group`` from the fold's training rows with the seed; ``"none"`` leaves the fold
without validation (every other group trains; each run keeps its last epoch). ``"auto"`` (the default) is
``"none"`` for JSON split files, whose empty (or missing) ``Val`` means no validation, as in the speech-emotion
recipe they come from (every training speaker trains, the last epoch is kept), and ``"next"`` for the others.
"""
from __future__ import annotations

import dataclasses
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from audiotune import storage
from audiotune.data.errors import DataError
from audiotune.data.json_splits import read_json_split
from audiotune.data.layout import SUBJECT, read_splits, read_table, split_file
from audiotune.data.splits import draw_validation, group_values, kfold_tables
from audiotune.outputs import SPLITS

VAL_GROUPS = ("auto", "next", "draw", "none")
FOLD_DIR = re.compile(r"^fold_(\d+)$")
FOLD_PLACEHOLDER = "{fold}"  # in a path option of cv (an encoder per fold): the name of each fold, as Fold.name


@dataclass
class FoldOptions:
    """How folds are made and validated; see the module docstring."""

    folds: int = 0
    group: str = SUBJECT
    stratify: str | None = None
    val_group: str = "auto"
    audio_dir: str = ""
    json_label: str = "label"


@dataclass
class Fold:
    """One fold: its tables (train, val, test; ``path`` absolute) and a description for folds.json."""

    number: int
    tables: dict[str, pd.DataFrame]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"fold_{self.number}"


def natural_key(text: str) -> list[Any]:
    """Sort key that puts 'S2' before 'S10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def source_kind(source: str | Path) -> str:
    """'table', 'folders' or 'json' for a fold source; DataError for anything else."""
    root = str(source)
    if not root:
        raise DataError("-d/--data_split_root is required: a table (.csv), a folder of fold_N/ split folders, "
                        "or a folder of JSON split files")
    if root.lower().endswith(".csv"):
        if not storage.isfile(root):
            raise DataError(f"{root}: table not found")
        return "table"
    if not storage.isdir(root):
        raise DataError(f"{root}: neither a table (.csv) nor a directory of fold folders or JSON split files")
    has_folders = bool(_fold_folders(root))
    has_json = bool(_json_files(root))
    if has_folders and has_json:
        raise DataError(f"{root}: holds both fold_N/ folders and JSON split files; keep one kind of fold source")
    if not has_folders and not has_json:
        raise DataError(f"{root}: no fold_N/ split folders and no JSON split files in this directory")
    return "folders" if has_folders else "json"


def _groups(table: pd.DataFrame, group: str, source: str) -> pd.Series:
    return group_values(table, group, source)


def _group_list(table: pd.DataFrame, group: str) -> list[str] | None:
    if group == "uid" or group in table.columns:
        return sorted(group_values(table, group, "").unique(), key=natural_key)
    return None


def _table_folds(source: str, options: FoldOptions, seed: int) -> list[Fold]:
    """Leave-one-group-out, or k group-disjoint folds; validation is applied later."""
    table = read_table(source, tuple(c for c in (options.group, options.stratify) if c))
    groups = _groups(table, options.group, source)
    if options.folds:
        parts = kfold_tables(table, options.folds, 0.0, options.stratify, options.group, seed, source)
        return [Fold(k, {"train": p["train"], "test": p["test"]},
                     {"source": source, "kind": f"{options.folds}-fold by '{options.group}'"
                      + (f", stratified by '{options.stratify}'" if options.stratify else "")})
                for k, p in enumerate(parts, start=1)]
    if options.stratify:
        raise DataError("--stratify needs --folds K (leave-one-group-out has nothing to stratify)")
    names = sorted(groups.unique(), key=natural_key)
    if len(names) < 2:
        raise DataError(f"{source}: leave-one-group-out needs at least 2 values of '{options.group}', "
                        f"found {len(names)} ({names})")
    return [Fold(k, {"train": table[groups != name], "test": table[groups == name]},
                 {"source": source, "kind": f"leave one '{options.group}' out"})
            for k, name in enumerate(names, start=1)]


def _fold_folders(source: str) -> list[str]:
    """The fold_N/ folders of ``source`` (a local folder or a URL), in numeric order."""
    names = [name for name in storage.listdir(source) if FOLD_DIR.match(name)]
    folders = [storage.join(source, name) for name in sorted(names, key=lambda n: int(n.removeprefix("fold_")))]
    return [folder for folder in folders if storage.isdir(folder)]


def _json_files(source: str) -> list[str]:
    """The JSON split files of ``source`` (a local folder or a URL), in natural name order."""
    names = sorted((name for name in storage.listdir(source) if name.lower().endswith(".json")), key=natural_key)
    return [path for path in (storage.join(source, name) for name in names) if storage.isfile(path)]


def _folder_folds(source: str) -> list[Fold]:
    """One fold per fold_N/ folder, in numeric order; each needs train.csv and test.csv."""
    folders = _fold_folders(source)
    folds = []
    for k, folder in enumerate(folders, start=1):
        tables = read_splits(folder)
        missing = [name for name in ("train", "test") if name not in tables]
        if missing:
            raise DataError(f"{folder}: no {' or '.join(f'{m}.csv' for m in missing)}; every fold folder needs "
                            "train.csv and test.csv (val.csv is optional)")
        folds.append(Fold(k, tables, {"source": str(folder), "kind": "split folder"}))
    return folds


def _json_folds(source: str, options: FoldOptions) -> list[Fold]:
    """One fold per JSON split file, in natural name order."""
    files = _json_files(source)
    if options.audio_dir and not storage.isdir(options.audio_dir):
        raise DataError(f"{options.audio_dir}: --audio_dir is not a directory")
    return [Fold(k, read_json_split(path, options.audio_dir or None, options.json_label),
                 {"source": str(path), "kind": "JSON split file"})
            for k, path in enumerate(files, start=1)]


def resolved_val_group(val_group: str, kind: str) -> str:
    """The validation rule of a fold source of ``kind`` (see :func:`source_kind`): ``auto`` is ``none`` for JSON
    split files and ``next`` for the others; any other rule is itself."""
    if val_group not in VAL_GROUPS:
        raise ValueError(f"--val_group {val_group!r}: choose one of {', '.join(VAL_GROUPS)}")
    if val_group != "auto":
        return val_group
    return "none" if kind == "json" else "next"


def _add_validation(folds: list[Fold], options: FoldOptions, seed: int, val_size: int) -> None:
    """Give every fold without a validation split one, by ``options.val_group`` (resolved, not ``auto``)."""
    for index, fold in enumerate(folds):
        if "val" in fold.tables:
            fold.info["validation"] = "from the source"
            continue
        if options.val_group == "none":
            why = ("its JSON split file has an empty Val" if fold.info.get("kind") == "JSON split file"
                   else "--val_group none")
            fold.info["validation"] = f"none ({why}): every training row trains and the run's last epoch is kept"
            continue
        train, test = fold.tables["train"], fold.tables["test"]
        where = f"{fold.name} ({fold.info['source']})"
        if options.val_group == "next":
            following = folds[(index + 1) % len(folds)]
            val = following.tables["test"]
            overlap = val.index.intersection(test.index)
            if len(overlap):
                raise DataError(f"{where}: the next fold's test rows overlap this fold's test rows "
                                f"(e.g. {list(overlap[:3])}); --val_group next needs disjoint test sets")
            train = train[~train.index.isin(val.index)]
            fold.info["validation"] = f"the test rows of {following.name} (--val_group next)"
        else:
            _groups(train, options.group, f"{where} train")
            train, val = draw_validation(train, val_size, seed, options.group, f"{where} train")
            fold.info["validation"] = f"{val_size} '{options.group}' group(s) drawn from train with seed {seed}"
        if train.empty:
            raise DataError(f"{where}: no training rows left once validation is taken out; "
                            + _no_training_left(options, len(folds)))
        fold.tables = {"train": train, "val": val, "test": test}


def _no_training_left(options: FoldOptions, count: int) -> str:
    """What to change when a fold's validation took every training row."""
    others = "--val_group draw (--val_size groups drawn from the training rows) or --val_group none (no validation)"
    if options.val_group == "draw":
        return f"--val_size takes every training '{options.group}' group; lower it, or use --val_group none"
    if options.folds:
        return (f"with --folds {options.folds} and --val_group next, the next fold's test rows are all that is not "
                f"this fold's test; use --folds 3 or more, or {others}")
    return (f"leave-one-group-out with --val_group next needs at least 3 values of '{options.group}' "
            f"(found {count}); or use {others}")


def build_folds(source: str, options: FoldOptions, seed: int = 0, val_size: int = 50) -> list[Fold]:
    """Every fold of ``source`` with train, val and test tables, validated; nothing is written."""
    kind = source_kind(source)
    options = dataclasses.replace(options, val_group=resolved_val_group(options.val_group, kind))
    if kind != "table" and (options.folds or options.stratify):
        raise DataError(f"{source}: --folds and --stratify make folds from a table (.csv); this source "
                        "already holds its folds")
    if kind == "table":
        folds = _table_folds(source, options, seed)
    elif kind == "folders":
        folds = _folder_folds(source)
    else:
        folds = _json_folds(source, options)
    if len(folds) < 2:
        raise DataError(f"{source}: cross-validation needs at least 2 folds, found {len(folds)}")
    _add_validation(folds, options, seed, val_size)
    for fold in folds:
        fold.info["rows"] = {name: len(table) for name, table in fold.tables.items()}
        for name, table in fold.tables.items():
            if table.empty:
                raise DataError(f"{fold.name} ({fold.info['source']}): the {name} split is empty")
            found = _group_list(table, options.group)
            if found is not None:
                fold.info[f"{name}_groups"] = found
    return folds


def fold_csv(table: pd.DataFrame, out_dir: Path) -> bytes:
    """One split table as CSV bytes, with ``path`` relative to ``out_dir`` so data and folds move together."""
    if "path" in table.columns:
        table = table.assign(path=list(map(storage.relative_to(out_dir), table["path"])))
    buffer = io.StringIO()
    table.to_csv(buffer, index_label="uid")
    return buffer.getvalue().encode()


def fold_files(folds: list[Fold], out_dir: str | Path) -> dict[Path, bytes]:
    """The CSV files of every fold under ``out_dir/fold_K/`` and their contents."""
    out_dir = Path(out_dir)
    return {out_dir / fold.name / split_file(name): fold_csv(table, out_dir / fold.name)
            for fold in folds for name, table in fold.tables.items()}


def check_fold_files(files: dict[Path, bytes], out_dir: str | Path) -> None:
    """Fold CSVs already on disk under ``out_dir`` must equal the new ones, and be all the source makes now:
    finished runs were trained on them, and a fold the source no longer makes would drop out of the summary."""
    made = {path.parent for path in files if FOLD_DIR.match(path.parent.name)}

    def splits(folder: Path) -> list[Path]:
        return [folder / split_file(name) for name in SPLITS if (folder / split_file(name)).is_file()]

    gone = sorted((folder for folder in Path(out_dir).iterdir() if FOLD_DIR.match(folder.name) and folder not in made
                   and splits(folder)), key=lambda folder: int(folder.name.removeprefix("fold_"))) \
        if Path(out_dir).is_dir() else []
    if gone:
        raise DataError(f"{gone[0]}: a fold of this experiment that its source no longer makes"
                        + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else "")
                        + f" (it makes {len(made)}); its runs would drop out of the mean: the experiment directory "
                        "belongs to other inputs: use a new --exp_dir, or give the source its folds again")
    changed = [str(path) for path, data in files.items() if path.is_file() and path.read_bytes() != data]
    changed += [str(path) for folder in sorted(made) for path in splits(folder) if path not in files]  # a split gone
    if changed:
        raise DataError(f"{changed[0]}: differs from the fold this source makes now"
                        + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
                        + "; the experiment directory belongs to other inputs: use a new --exp_dir")
