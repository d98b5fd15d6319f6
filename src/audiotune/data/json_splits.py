"""JSON split files of the speech-emotion recipe: ``{"Train": {...}, "Val": {...}, "Test": {...}}``.

Each split maps an utterance key to its label. The key is the audio file's name relative to the audio
folder (``os.path.join(datadir, key)`` in the original recipe), extension included. A value may be:

- a class name or number (``"angry"``, ``3``): written to the label column (``label`` unless told otherwise);
- a vote distribution (``{"angry": 2, "sad": 1}``): the label column gets the class with most votes (ties go
  to the first class in sorted order), and one column ``LABEL=CLASS`` per class holds its vote share; in a file
  with vote distributions a plain class name is all the votes for that class;
- a record with a ``wav`` or ``path`` entry (``{"wav": "a/b.wav", "emotion": "sad", "speaker": "F1"}``): the
  file is that path and every other entry becomes a column of the same name;
- ``null``, an empty name or one of ``--na_values``: no label (as an empty cell of a CSV split).

An empty ``Val`` (or a missing one) means the file has no validation split. Keys are matched without
regard to case (``train``/``Train``); any other top-level key is an error naming the file.
"""
from __future__ import annotations

import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.data.errors import DataError
from audiotune.data.labels import LabelGroup, class_name
from audiotune.outputs import SPLITS

VOTE_SEPARATOR = "="  # vote-share columns are named LABEL=CLASS
PATH_KEYS = ("wav", "path")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _value(item: Any, missing: frozenset[str]) -> Any:
    """A label or record entry as a table cell: None where it is missing (``null``, or text in ``missing``)."""
    return None if item is None or isinstance(item, str | numbers.Real) and str(item) in missing else item


def _entry_row(key: str, value: Any, label: str, audio_dir: str, where: str, missing: frozenset[str]
               ) -> dict[str, Any]:
    """One table row (uid, path, label columns) from one utterance entry of a split; ``missing``: the texts read
    as no value (the empty one and ``--na_values``)."""
    row: dict[str, Any] = {"uid": str(key)}
    file_name: str = str(key)
    if value is None or isinstance(value, str) or _is_number(value):
        row[label] = _value(value, missing)
    elif isinstance(value, dict) and any(name in value for name in PATH_KEYS):
        path_key = next(name for name in PATH_KEYS if name in value)
        file_name = str(value[path_key])
        row.update({name: _value(item, missing) for name, item in value.items() if name not in PATH_KEYS})
    elif isinstance(value, dict) and value and all(_is_number(v) for v in value.values()):
        total = float(sum(value.values()))
        if total <= 0:
            raise DataError(f"{where}: '{key}' has votes summing to {total:g}; a vote distribution needs a "
                            "positive total")
        classes = sorted(str(name) for name in value)
        votes = {str(name): float(count) for name, count in value.items()}
        row[label] = max(classes, key=lambda name: (votes[name], -classes.index(name)))
        row.update({f"{label}{VOTE_SEPARATOR}{name}": votes[name] / total for name in classes})
    else:
        raise DataError(f"{where}: '{key}' has a value of type {type(value).__name__}; expected a label, a "
                        "vote distribution {class: votes} or a record with a 'wav' or 'path' entry")
    row["path"] = storage.resolve(file_name, audio_dir)
    return row


def read_json_split(path: str | Path, audio_dir: str | Path | None = None, label: str = "label",
                    require: tuple[str, ...] = ("train", "test"), na_values: Sequence[str] = ()
                    ) -> dict[str, pd.DataFrame]:
    """Tables ``train``, ``val`` and ``test`` (those not empty) of one JSON split file, indexed by ``uid``.

    ``audio_dir`` is the folder the utterance keys are relative to (default: the JSON file's folder);
    ``label`` names the column that receives plain and majority-vote labels. Paths come out absolute.
    A split named in ``require`` that is missing or empty is an error (cross-validation needs Train and Test);
    ``na_values``: the labels read as missing besides ``null`` and the empty one.
    """
    path = str(path)
    try:
        with storage.open_input(path) as handle:
            raw = json.loads(handle.read().decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON split file ({err})") from err
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object {{\"Train\": ..., \"Val\": ..., \"Test\": ...}}")
    if list(raw) == ["data"] and isinstance(raw["data"], list):  # the early SSAST's train_ssast.json
        raise DataError(f"{path}: the early SSAST split format ({{\"data\": [{{\"wav\": UID, \"labels\": "
                        "[...]}}]}}), which is not read: write it as a split CSV (uid, then one column per label, "
                        "named as its label_df.csv's display_name in the vector's order; one file per split, "
                        "train.csv and test.csv in a folder for -d) and list the columns in the label file (-l)")
    base = str(audio_dir) if audio_dir else storage.parent(path)
    missing = frozenset(("", *na_values))
    tables: dict[str, pd.DataFrame] = {}
    for key, entries in raw.items():
        split = str(key).lower()  # Train, Val, Test: the split names capitalised
        if split not in SPLITS:
            raise DataError(f"{path}: unknown split '{key}' (expected Train, Val and Test)")
        if split in tables:
            raise DataError(f"{path}: split '{key}' is given twice (keys are matched without regard to case)")
        if not isinstance(entries, dict):
            raise DataError(f"{path}: '{key}' must map utterance names to labels, not {type(entries).__name__}")
        rows = [_entry_row(name, value, label, base, f"{path} [{key}]", missing) for name, value in entries.items()]
        if rows:
            tables[split] = pd.DataFrame(rows).set_index("uid")
            tables[split].attrs["source"] = f"{path} [{key}]"
    if any(column.startswith(label + VOTE_SEPARATOR) for table in tables.values() for column in table.columns):
        _plain_labels_as_votes(tables, label)
    for required in require:
        if required not in tables:
            purpose = ("cross-validation trains on Train and scores Test in every fold" if "test" in require
                       else "nothing to train on")
            raise DataError(f"{path}: the '{required.capitalize()}' split is missing or empty; {purpose}")
    return {name: tables[name] for name in SPLITS if name in tables}


def _plain_labels_as_votes(tables: dict[str, pd.DataFrame], label: str) -> None:
    """A plain label in a file of vote distributions: every vote for its class (its ``LABEL=CLASS`` share 1, the
    others empty: no votes), so that the head over the vote shares has its target too; every split gets every
    class's vote column (a split of plain labels only too; one without labels keeps none)."""
    def plain(table: pd.DataFrame) -> pd.Series:
        votes = [column for column in table.columns if column.startswith(label + VOTE_SEPARATOR)]
        labelled = table[label].notna()
        return labelled & table[votes].isna().all(axis=1) if votes else labelled

    labelled = {split: table for split, table in tables.items() if label in table.columns}
    names = {split: table.loc[plain(table), label].map(class_name) for split, table in labelled.items()}
    columns = {column for table in labelled.values() for column in table.columns
               if column.startswith(label + VOTE_SEPARATOR)}
    columns |= {f"{label}{VOTE_SEPARATOR}{name}" for plain_names in names.values() for name in plain_names}
    for split, table in labelled.items():
        for column in sorted(columns - set(table.columns)):
            table[column] = np.nan
        for uid, name in names[split].items():
            table.loc[uid, f"{label}{VOTE_SEPARATOR}{name}"] = 1.0


def json_label_groups(tables: dict[str, pd.DataFrame], path: str, label: str = "label") -> list[LabelGroup]:
    """The head a JSON split file labels when no label file is given: a soft head over its vote shares
    (``LABEL=CLASS`` columns) when any utterance has votes, else one head on ``label``."""
    columns = sorted({c for t in tables.values() for c in t.columns if c.startswith(label + VOTE_SEPARATOR)})
    if columns:
        return [LabelGroup(columns, "soft", f"{path} (vote distributions)")]
    return [LabelGroup([label], None, f"{path} (labels)")]
