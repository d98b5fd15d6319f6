"""A label table from the seed layout's ``UID/metadata.json`` files (clinical recordings).

Every ``metadata.json`` under the folder becomes one row, indexed by its ``uid``:

- ``features`` (a list of ``{name, score}``) and the optional ``diag`` list become one column per name; a name
  listed twice in one file keeps its highest score;
- ``subject`` and ``task`` become columns (read as text), ``path`` names the ``waveform.EXT`` beside the file
  (``encoding`` picks EXT) and ``expected_rate`` holds its ``sample_rate_hz``, checked when the audio is read;
- with ``edit_feats`` the severity scores become binary targets: -1 and 6 (not rated) become empty, 0 and 1
  become 0, 2 to 5 become 1 (any other score is an error naming the file);
- ``distortions`` is filled, where a file gives no score for it, from ``distorted Cs`` and ``distorted V``:
  1 when either is above 0, 0 when both are 0, empty when neither says more.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.config.sections import RAISE
from audiotune.data.audio import EXPECTED_RATE
from audiotune.data.errors import DataError, refuse_unless_skipped
from audiotune.data.labels import DISTORTION_PARTS, DISTORTIONS
from audiotune.data.layout import METADATA_FILE, SUBJECT, metadata_rate, waveform_name
from audiotune.outputs import check_output_path, skip_list, write_csv, write_with_skip_list

IDENTIFIERS = (SUBJECT, "task")
RESERVED = ("uid", "path", EXPECTED_RATE, *IDENTIFIERS)  # columns the table writes itself
SEVERITY_TO_BINARY = {-1: math.nan, 0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0, 6: math.nan}


def _scores(entries: Any, key: str, source: str) -> dict[str, float]:
    """``[{name, score}, ...]`` as ``{name: score}``; a name listed twice keeps its highest score."""
    if not isinstance(entries, list):
        raise DataError(f"{source}: '{key}' must be a list of {{name, score}} entries")
    scores: dict[str, float] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "name" not in entry or "score" not in entry:
            raise DataError(f"{source}: '{key}' entry {entry!r} needs a name and a score")
        name, score = str(entry["name"]), entry["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(f"{source}: '{key}' score of {name!r} is {score!r}, not a number")
        scores[name] = max(float(score), scores.get(name, -math.inf))
    return scores


class RootFiles:
    """Every file under a root (listed once): whether a path is one, and a folder's file names (grouped by folder
    once, when first asked: one pass, not one per folder)."""

    def __init__(self, files: Iterable[str]) -> None:
        self.files = set(files)
        self._by_folder: dict[str, list[str]] | None = None

    def __contains__(self, path: object) -> bool:
        return path in self.files

    def names_in(self, folder: str) -> list[str]:
        if self._by_folder is None:
            self._by_folder = {}
            for path in self.files:
                self._by_folder.setdefault(storage.parent(path), []).append(storage.name(path))
        return self._by_folder.get(folder, [])


def _waveform(folder: str, meta: dict, files: RootFiles, source: str) -> str:
    """The waveform file of a uid folder (:func:`~audiotune.data.layout.waveform_name`), from the root's listing."""
    path = storage.join(folder, waveform_name(meta, lambda: files.names_in(folder), source))
    if path not in files:
        raise DataError(f"{source}: no {storage.name(path)} beside it (the file its 'encoding' names)")
    return path


def metadata_row(meta: Any, source: str, files: RootFiles) -> dict[str, Any]:
    """The table row of one metadata.json (``source``: its path; ``files``: every file under the root)."""
    if not isinstance(meta, dict):
        raise DataError(f"{source}: not a JSON object")
    folder = storage.parent(source)
    uid = str(meta.get("uid", storage.name(folder)))
    if uid != storage.name(folder):
        raise DataError(f"{source}: uid {uid!r} is not the name of its folder {storage.name(folder)!r}")
    missing = [key for key in (*IDENTIFIERS, "features") if meta.get(key) in (None, "")]
    if missing:
        raise DataError(f"{source}: no {', '.join(repr(k) for k in missing)}")
    rate = metadata_rate(meta, source)
    features = _scores(meta["features"], "features", source)
    diag = _scores(meta.get("diag", []), "diag", source)
    clash = sorted((set(features) & set(diag)) | ((set(features) | set(diag)) & set(RESERVED)))
    if clash:
        raise DataError(f"{source}: score name(s) {clash} clash with a diag/feature name or a table column")
    row: dict[str, Any] = {"uid": uid, "path": _waveform(folder, meta, files, source),
                           SUBJECT: str(meta[SUBJECT]), "task": str(meta["task"])}
    row[EXPECTED_RATE] = rate
    return {**row, **diag, **features}


def binarize_scores(table: pd.DataFrame, columns: list[str], sources: pd.Series) -> pd.DataFrame:
    """Severity scores as binary targets (:data:`SEVERITY_TO_BINARY`); another score is an error naming its file."""
    table = table.copy()
    for column in columns:
        values = table[column]
        unknown = values.notna() & ~values.isin(list(SEVERITY_TO_BINARY))
        if unknown.any():
            uid = values.index[unknown.to_numpy()][0]
            raise DataError(f"{sources[uid]}: score {values[uid]:g} of {column!r} is not a severity --edit_feats "
                            f"knows ({', '.join(str(k) for k in SEVERITY_TO_BINARY)})")
        table[column] = values.map(SEVERITY_TO_BINARY).astype(float)
    return table


def derive_distortions(table: pd.DataFrame) -> pd.DataFrame:
    """Fill ``distortions`` where it is empty from its parts: 1 when either is above 0, 0 when both are 0, else
    empty (a part without a column in the table is missing on every row)."""
    if not any(c in table.columns for c in DISTORTION_PARTS):
        return table
    values = table.reindex(columns=list(DISTORTION_PARTS))
    derived = pd.Series(np.nan, index=table.index)
    derived[(values == 0).all(axis=1)] = 0.0
    derived[(values > 0).any(axis=1)] = 1.0
    table = table.copy()
    table[DISTORTIONS] = table[DISTORTIONS].fillna(derived) if DISTORTIONS in table.columns else derived
    return table


def build_table(root: str | Path, out_csv: str | Path, edit_feats: bool = False,
                on_error: str = RAISE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table of every metadata.json under ``root`` (a folder or URL), written to ``out_csv``; files that
    cannot be read are an error, or with ``on_error='skip'`` left out and returned (and written beside it)."""
    root = str(root).rstrip("/") if storage.is_remote(root) else str(Path(root).resolve())
    out_csv = check_output_path(Path(out_csv).resolve())
    if not storage.isdir(root):
        raise DataError(f"{root}: folder not found")
    files = RootFiles(storage.find(root))
    sources = sorted((f for f in files.files if storage.name(f) == METADATA_FILE), key=lambda p: p.split("/"))
    if not sources:
        raise DataError(f"{root}: no {METADATA_FILE} in any folder under it (layout: UID/{METADATA_FILE})")
    rows, skipped = [], []
    for source in sources:
        try:
            with storage.open_input(source) as stream:
                meta = json.loads(stream.read())
            rows.append({**metadata_row(meta, source, files), "_source": source})
        except json.JSONDecodeError as err:
            skipped.append({"path": source, "reason": f"{source}: not valid JSON ({err})"})
        except (DataError, UnicodeDecodeError) as err:
            skipped.append({"path": source, "reason": str(err)})
    refuse_unless_skipped([s["reason"] for s in skipped], f"{METADATA_FILE} file(s) under {root} cannot be read",
                          on_error, skip_list(out_csv).name)
    if not rows:
        raise DataError(f"{root}: no {METADATA_FILE} could be read")
    table = pd.DataFrame(rows).set_index("uid")
    if table.index.duplicated().any():
        dupes = table.index[table.index.duplicated()].unique()[:5].tolist()
        raise DataError(f"{root}: uid(s) {dupes} appear in more than one {METADATA_FILE}")
    sources_of = table.pop("_source")
    scores = [c for c in table.columns if c not in RESERVED]
    if edit_feats:
        table = binarize_scores(table, scores, sources_of)
    table = derive_distortions(table)
    table["path"] = list(map(storage.relative_to(out_csv.parent), table["path"]))
    if table[EXPECTED_RATE].isna().all():
        table = table.drop(columns=EXPECTED_RATE)
    skip_table = pd.DataFrame(skipped, columns=["path", "reason"])
    write_with_skip_list(out_csv, skip_table, lambda path: write_csv(table, path, index_label="uid"))
    return table, skip_table
