"""The splits tap2key's ``create_dataset.py`` saved with Hugging Face ``datasets`` (``save_to_disk``) as segment rows.

The seed split its taps 70/15/15 (stratified, seeded) and saved the test part, untouched, with ``save_to_disk``:
a folder of Arrow stream files (``data-0000N-of-0000M.arrow``), ``state.json`` naming them and
``dataset_info.json`` whose ``label`` feature (a ``ClassLabel``) names the classes; a ``DatasetDict`` is a folder
of such folders listed in ``dataset_dict.json``. Its ``audio`` column holds each tap sample's path (a string, or
an ``Audio`` feature's ``{bytes, path}``). The seed's reported results were scored on this split: read as it is,
``evaluate`` scores the same taps. ``datasets`` is not needed: the files are read with pyarrow.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from audiotune.data.errors import DataError

STATE_FILE = "state.json"
INFO_FILE = "dataset_info.json"
DICT_FILE = "dataset_dict.json"
AUDIO, LABEL = "audio", "label"  # the seed's columns


def is_saved_split(folder: Path) -> bool:
    """Whether ``folder`` is what ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` wrote."""
    return (folder / STATE_FILE).is_file() or (folder / DICT_FILE).is_file()


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable datasets file ({err})") from None


def _table(folder: Path) -> pa.Table:
    state = _json(folder / STATE_FILE)
    files = [folder / entry["filename"] for entry in state.get("_data_files", [])]
    if not files:
        raise DataError(f"{folder / STATE_FILE}: names no data files")
    try:
        table = pa.concat_tables([pa.ipc.open_stream(pa.memory_map(str(path))).read_all() for path in files])
        indices = state.get("_indices_data_files")  # datasets 1.x saved a selection beside the data
        if indices:
            rows = pa.ipc.open_stream(pa.memory_map(str(folder / indices[0]["filename"]))).read_all()
            table = table.take(rows.column(0))
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{folder}: its Arrow files cannot be read ({err})") from None
    return table


def _split_rows(folder: Path, split: str) -> pd.DataFrame:
    """One split folder: ``path`` (as the seed recorded it), ``label`` (its class name) and ``split``."""
    table = _table(folder)
    missing = [name for name in (AUDIO, LABEL) if name not in table.column_names]
    if missing:
        raise DataError(f"{folder}: no {', '.join(missing)} column (found {', '.join(table.column_names)}): the "
                        "split create_dataset.py saved has audio and label (--encode kept only input_values); "
                        "import that split, or the taps' folders")
    audio = table.column(AUDIO).to_pylist()
    paths = [value.get("path") if isinstance(value, dict) else value for value in audio]
    if any(not isinstance(path, str) or not path for path in paths):
        raise DataError(f"{folder}: its audio column holds audio without the tap samples' file names: import the "
                        "taps' folders instead")
    labels = table.column(LABEL).to_pylist()
    feature = (_json(folder / INFO_FILE).get("features") or {}).get(LABEL, {}) if (folder / INFO_FILE).is_file() \
        else {}
    names = feature.get("names") if feature.get("_type") == "ClassLabel" else None
    if names is not None:
        labels = [names[index] for index in labels]
    return pd.DataFrame({"path": paths, "label": labels, "split": split})


def saved_split_rows(folder: Path) -> pd.DataFrame:
    """Every split of a saved ``Dataset`` (its ``split``: the folder's name) or ``DatasetDict`` (each split's name)."""
    if (folder / DICT_FILE).is_file():
        return pd.concat([_split_rows(folder / name, name) for name in _json(folder / DICT_FILE).get("splits", [])],
                         ignore_index=True)
    return _split_rows(folder, folder.name)
