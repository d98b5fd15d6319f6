"""The check of a table's audio before a run (:func:`scan_audio`), and the record of the audio that passed it, so
that a file is decoded for it once, not by every command that reads it (``train`` then ``evaluate`` and
``extract`` on the same test split, each fold of ``cv``, each trial of ``sweep``).

The check (:func:`~audiotune.data.audio.check_clip`) streams each row's span to find empty, all-zero and
non-finite audio: a full decode of every compressed file. What it found for a usable row (the prepared length)
is kept under the cache folder, one file per set of audio settings
(``ROOT/checked/<settings digest>.json``), keyed by the file's absolute path, size, modification time and inode, the
row's span and its expected rate. A file written again (another size, time or inode), other settings or another
span are checked again; a row that failed is not kept, so it fails again with its reason. Remote files are always
checked. Removing the folder checks everything again.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from audiotune import storage
from audiotune.data.audio import EXPECTED_RATE, AudioSpec, Span, check_clip, span_of
from audiotune.data.audio_store import spec_digest
from audiotune.data.errors import DataError
from audiotune.interrupts import raise_if_terminated
from audiotune.machine import usable_cpus
from audiotune.outputs import write_bytes

logger = logging.getLogger(__name__)

SCAN_THREADS = 8  # files the check reads at once, at most
CHECKS = 2  # the version of the checks a record holds the results of: a record of another is not read (2: the
# samples are also bounded, data.audio.LOUDEST)
FOLDER = "checked"  # under the cache folder


def _span_key(span: Span, expected_rate: float) -> str:
    rate = None if expected_rate is None or (isinstance(expected_rate, float) and math.isnan(expected_rate)) \
        else float(expected_rate)
    return json.dumps([span.offset, span.duration, list(span.channels) if span.channels else None, rate])


class CheckRecord:
    """The prepared lengths of the rows that passed the check under one set of audio settings: read from
    ``ROOT/checked/<settings digest>.json``, added to while a table is checked (from several threads),
    written back by :meth:`save`."""

    def __init__(self, root: str | Path, spec: AudioSpec):
        self.path = Path(root) / FOLDER / f"{spec_digest(spec)}.json"
        self._files: dict[str, dict[str, Any]] = self._read()
        self._added: dict[str, dict[str, Any]] = {}
        self._stats: dict[str, tuple[str, list[int] | None]] = {}
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            kept = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: everything is checked
        return kept.get("files", {}) if isinstance(kept, dict) and kept.get("checks") == CHECKS else {}

    def _stat(self, path: str) -> tuple[str, list[int] | None]:
        """The file's absolute path and [size, modification time, inode] (:func:`~audiotune.storage.file_version`);
        None for a remote or missing file."""
        if storage.is_remote(path):
            return path, None
        if path not in self._stats:
            try:
                absolute, *version = storage.file_version(path)
            except OSError:
                absolute, version = os.path.abspath(path), None
            self._stats[path] = (absolute, version)
        return self._stats[path]

    def length(self, path: str, span: Span, expected_rate: float) -> int | None:
        """The prepared length this row was found to have, if the file has not changed since."""
        absolute, stat = self._stat(path)
        if stat is None:
            return None
        with self._lock:
            entry = self._added.get(absolute) or self._files.get(absolute)
        if not entry or entry["stat"] != stat:
            return None
        found = entry["spans"].get(_span_key(span, expected_rate))
        return int(found) if found is not None else None

    def add(self, path: str, span: Span, expected_rate: float, length: int) -> None:
        """Keep what the check found for a usable row (a local file only)."""
        absolute, stat = self._stat(path)
        if stat is None:
            return
        with self._lock:
            entry = self._added.get(absolute)
            if entry is None:  # the file's first row added: its kept rows go on, unless the file changed
                kept = self._files.get(absolute)
                entry = self._added[absolute] = {"stat": stat, "spans": dict(kept["spans"]) if kept and
                                                 kept["stat"] == stat else {}}
            entry["spans"][_span_key(span, expected_rate)] = int(length)

    def save(self) -> None:
        """Write the rows added to the record, merged with what another command may have written meanwhile; a
        folder that cannot be written is said and the run goes on (its rows are checked again next time)."""
        if not self._added:
            return
        files = {**self._read(), **self._added}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(self.path, json.dumps({"checks": CHECKS, "files": files}, separators=(",", ":")))
        except OSError as err:  # OutputError included
            logger.warning("%s: cannot keep the record of checked audio (%s); the audio is checked again next "
                           "time", self.path, err)
        self._files, self._added = files, {}


def scan_audio(table: pd.DataFrame, spec: AudioSpec, split: str, min_samples: int = 0,
               record: CheckRecord | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every row of a table; returns the table with ``num_samples`` (after preparation) and the failures.

    Missing, unreadable, empty, all-zero, non-finite and wrong-rate audio, spans past the end of their file,
    channels the file lacks and clips shorter than ``min_samples`` once prepared (too short for the model:
    fewer samples than one feature frame or the encoder's receptive field) are found here rather than in
    the middle of an epoch. With a ``record``, a row an earlier check found usable is not read again while its
    file is unchanged, and what this check finds is added to it.
    """
    lengths, failures = check_rows(table, spec, split, min_samples, record)
    return usable_rows(table, lengths), failures


def check_rows(table: pd.DataFrame, spec: AudioSpec, split: str, min_samples: int = 0,
               record: CheckRecord | None = None) -> tuple[list[int], pd.DataFrame]:
    """The checks of :func:`scan_audio`: each row's prepared length (-1 where unusable) and the failures, in the
    table's order. Local files are checked up to :data:`SCAN_THREADS` at once, as many as this process has CPUs
    (libsndfile decodes outside Python's lock); remote ones one at a time (fsspec's block cache is not shared
    safely between threads). The rows found in ``record`` are not read; the usable rows read are added to it. An
    interruption ends the check at once (the rows being read finish), raised again between rows if Python dropped
    it."""
    def check(item: tuple[object, dict]) -> tuple[int, dict | None]:
        uid, row = item
        try:
            span = span_of(row)
        except DataError as err:  # a cell of the table, not the audio: named by its row
            return -1, {"uid": uid, "split": split, "path": row["path"], "reason": f"{row['path']} (uid {uid}): "
                                                                                   f"{err}"}
        try:
            path, rate = row["path"], row.get(EXPECTED_RATE, float("nan"))
            length = record.length(path, span, rate) if record is not None else None
            if length is None:
                length = check_clip(path, spec, rate, span)
                if record is not None:
                    record.add(path, span, rate, length)
            if length < min_samples:
                raise DataError(f"{row['path']}: {length} samples once prepared, shorter than the {min_samples} "
                                "the model needs for one output frame")
            return length, None
        except DataError as err:
            return -1, {"uid": uid, "split": split, "path": row["path"], "reason": str(err)}

    rows = list(zip(table.index, table.to_dict("records")))  # plain dicts: a Series per row costs more than the check
    local = not any(storage.is_remote(row["path"]) for _, row in rows)
    threads = min(SCAN_THREADS, usable_cpus(), len(rows)) if local else 1
    checked: list[tuple[int, dict | None]] = []
    if threads > 1:
        pool = ThreadPoolExecutor(threads, thread_name_prefix="audiotune-scan")
        try:
            for result in pool.map(check, rows):
                raise_if_terminated()
                checked.append(result)
        finally:  # stopped (Ctrl-C, SIGTERM, an error): the rows not begun are dropped, not checked first
            pool.shutdown(cancel_futures=True)
    else:
        for row in rows:
            raise_if_terminated()
            checked.append(check(row))
    if record is not None:
        record.save()
    failures = [failure for _, failure in checked if failure is not None]
    return [length for length, _ in checked], pd.DataFrame(failures, columns=["uid", "split", "path", "reason"])


def usable_rows(table: pd.DataFrame, lengths: list[int]) -> pd.DataFrame:
    """The rows of ``table`` that :func:`check_rows` found usable, with their ``num_samples``."""
    table = table.copy()
    table["num_samples"] = lengths
    return table[table["num_samples"] > 0]
