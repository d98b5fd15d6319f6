"""The record of audio that passed the check before a run, so that a file is decoded for it once, not by every
command that reads it (``train`` then ``evaluate`` and ``extract`` on the same test split, each fold of ``cv``,
each trial of ``sweep``).

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
from pathlib import Path
from typing import Any

from audiotune import storage
from audiotune.data.audio import AudioSpec, Span
from audiotune.data.audio_store import spec_digest
from audiotune.outputs import write_bytes

logger = logging.getLogger(__name__)

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
