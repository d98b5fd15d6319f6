"""The tap2key system's per-tap sample folders as a segment table that ``train`` reads.

tap2key's ``WavPreprocess.py --sample`` wrote, per recording folder, one WAV per detected tap
(``05.wav_samples/{take}_{i:03}_8chan.wav``: 8192 samples x 8 channels at 96 kHz) and one label CSV per
recording (``04.labels/{take}_label.csv``, no header: timestamp, key label, x, y, ...). ``create_dataset.py`` then
zipped the sorted samples of all recordings with the concatenated labels, correct only where every recording had
as many samples as labels. Here the pairs are made per recording (the i-th sample with the i-th label, as the
seed paired them when the counts agree), and a recording whose counts differ is an error naming it, or with
``skip`` is left out and listed with the reason. The flat folder ``create_dataset.py`` read (samples and label
CSVs side by side) is read the same way, and a split it saved (:mod:`~audiotune.engine.seed_tap_splits`) gives its
taps as it holds them, each row with its ``split``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from audiotune.config.sections import RAISE
from audiotune.data.errors import DataError, refuse, refuse_unless_skipped
from audiotune.engine.seed_tap_splits import is_saved_split, saved_split_rows
from audiotune.outputs import check_output_path, skip_list, write_csv, write_with_skip_list

SAMPLES_DIR = "05.wav_samples"
LABELS_DIR = "04.labels"
SAMPLE_NAME = re.compile(r"^(?P<take>.+)_(?P<tap>\d+)_\d+chan\.wav$")
LABEL_SUFFIX = "_label.csv"
LABEL_COLUMNS = ("timestamp", "label", "x", "y")  # the first four columns of a seed label CSV


@dataclass
class TapImport:
    """What :func:`import_tap_samples` wrote: the table, the recordings left out and where they are listed."""

    out: Path
    segments: pd.DataFrame
    skipped: pd.DataFrame
    skipped_path: Path | None


def _labels(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable tap2key label CSV ({err})") from None
    if table.shape[1] < len(LABEL_COLUMNS):
        raise DataError(f"{path}: expected columns timestamp, key label, x, y (no header); found {table.shape[1]}")
    table = table.iloc[:, :len(LABEL_COLUMNS)]
    table.columns = list(LABEL_COLUMNS)
    return table


def _takes(folder: Path) -> tuple[dict[str, list[tuple[int, Path]]], dict[str, Path]]:
    samples_dir, labels_dir = folder / SAMPLES_DIR, folder / LABELS_DIR
    if not samples_dir.is_dir() and any(SAMPLE_NAME.match(path.name) for path in folder.glob("*.wav")):
        samples_dir = labels_dir = folder  # the flat folder create_dataset.py read (its --data_dir)
    if not samples_dir.is_dir():
        raise DataError(f"{folder}: no {SAMPLES_DIR}/ folder (tap2key's WavPreprocess.py --sample writes it), no "
                        "*_8chan.wav samples (create_dataset.py's --data_dir) and no saved split")
    samples: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(samples_dir.iterdir()):
        named = SAMPLE_NAME.match(path.name)
        if named:
            samples.setdefault(named["take"], []).append((int(named["tap"]), path))
    labels = {p.name[: -len(LABEL_SUFFIX)]: p for p in sorted(labels_dir.glob(f"*{LABEL_SUFFIX}"))} \
        if labels_dir.is_dir() else {}
    return samples, labels


def _uid(path: Path) -> tuple[str, str, int | None]:
    """A sample's uid, take and tap number (``{take}_{tap:03d}``, as its recording folder's rows are named)."""
    named = SAMPLE_NAME.match(path.name)
    return (f"{named['take']}_{int(named['tap']):03d}", named["take"], int(named["tap"])) if named else \
        (path.stem, path.stem, None)


def _saved_split(folder: Path, out: Path, audio_dir: Path | None) -> list[dict]:
    """The rows of a split the seed saved (``split`` its name), each sample found where the seed recorded it or,
    moved since, by its file name in ``audio_dir``."""
    rows, missing = [], []
    for row in saved_split_rows(folder).itertuples(index=False):
        path = Path(row.path)
        if not path.is_file() and audio_dir is not None and (audio_dir / path.name).is_file():
            path = audio_dir / path.name
        if not path.is_file():
            missing.append(row.path)
            continue
        uid, take, tap = _uid(path)
        rows.append({"uid": uid, "path": os.path.relpath(path.resolve(), out.parent.resolve()), "label": row.label,
                     "session": take, "tap": tap, "split": row.split})
    refuse(missing, f"tap sample(s) of the split saved in {folder} not found",
           "(give --audio_dir FOLDER: the folder that holds them now, found there by file name)")
    return rows


def import_tap_samples(folders: list[str | Path], out: str | Path, on_error: str = RAISE,
                       audio_dir: str | Path | None = None) -> TapImport:
    """One row per tap sample (``uid, path, label, session, tap, timestamp, x, y``; paths relative to ``out``); a
    split the seed saved with ``save_to_disk`` gives its rows with their ``split`` instead of the touch columns."""
    out = check_output_path(out)
    rows, skipped = [], []
    folders_of: dict[str, list[str]] = {}  # uid -> the folders holding it (a take is one uid per tap)
    for folder in map(Path, folders):
        if is_saved_split(folder):
            for row in _saved_split(folder, out, Path(audio_dir) if audio_dir else None):
                folders_of.setdefault(row["uid"], []).append(str(folder))
                rows.append(row)
            continue
        samples, labels = _takes(folder)
        for take in sorted(set(samples) | set(labels)):
            taps = sorted(samples.get(take, []))
            label_file = labels.get(take)
            table = _labels(label_file) if label_file else None
            count = 0 if table is None else len(table)
            if table is None or len(taps) != count:
                reason = f"{len(taps)} tap samples, {count} labels" + ("" if table is not None else " (no label CSV)")
                skipped.append({"folder": str(folder), "session": take, "reason": reason})
                continue
            for (tap, path), label in zip(taps, table.itertuples(index=False)):
                folders_of.setdefault(f"{take}_{tap:03d}", []).append(str(folder))
                rows.append({"uid": f"{take}_{tap:03d}", "path": os.path.relpath(path.resolve(), out.parent.resolve()),
                             "label": label.label, "session": take, "tap": tap, "timestamp": label.timestamp,
                             "x": label.x, "y": label.y})
    skipped_table = pd.DataFrame(skipped, columns=["folder", "session", "reason"])
    refuse_unless_skipped([f"{r.folder}/{r.session}: {r.reason}" for r in skipped_table.itertuples()],
                          "recording(s) whose tap samples and labels cannot be paired one to one (fix the "
                          "detection)", on_error, skip_list(out).name)
    if not rows:
        raise DataError(f"{', '.join(map(str, folders))}: no tap sample paired with a label")
    refuse([f"{uid}: in {', '.join(places)}" for uid, places in folders_of.items() if len(places) > 1],
           "tap sample uid(s) found more than once (a take given twice?)",
           "(a take's samples are imported once: give each of its folders once)")
    segments = pd.DataFrame(rows)
    listed = write_with_skip_list(out, skipped_table, lambda path: write_csv(segments, path, index=False))
    return TapImport(out, segments, skipped_table, listed)
