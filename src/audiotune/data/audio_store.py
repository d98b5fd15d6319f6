"""The audio store: each row's prepared audio (decoded, channel-mapped, resampled, cropped) kept on disk.

Decoding a compressed file and resampling it costs more than reading the result back, and training reads
every row once per epoch. An entry's key joins the file's content, the row's span and the audio settings,
so a changed file, span or setting makes a new entry instead of reusing a stale one. Entries are
safetensors files, written aside and renamed into place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from audiotune import partials, storage
from audiotune.data.audio import AudioSpec, Span

logger = logging.getLogger(__name__)
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def content_digest(path: str) -> str:
    """Digest of a file's bytes, computed once per process for a given path, size and modification time.

    A remote object's digest comes from its metadata (generation, checksum), without reading it."""
    if storage.is_remote(path):
        return storage.content_id(path)
    key = storage.file_version(path)
    if key not in _DIGESTS:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def segment_key(path: str, span: Span) -> str:
    """Key of a row's audio: the file's content and the span of it that the row reads."""
    if span.is_whole:
        return content_digest(path)  # the key of whole-file rows stays the plain content digest
    described = json.dumps([content_digest(path), span.offset, span.duration, span.channels])
    return hashlib.blake2b(described.encode(), digest_size=16).hexdigest()


# settings added after stores and feature caches were first written: left out of their keys at these values, so
# what earlier releases stored is still found
LATER_SETTINGS: dict[str, Any] = {"remove_dc": False, "resampled_length": "round", "pad_clips": False}


def keyed_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as the audio store's and the feature cache's keys digest them (:data:`LATER_SETTINGS`)."""
    return {k: v for k, v in settings.items() if k not in LATER_SETTINGS or v != LATER_SETTINGS[k]}


def spec_digest(spec: AudioSpec) -> str:
    """Digest of the audio settings that shape a prepared clip."""
    return hashlib.blake2b(json.dumps(keyed_settings(dataclasses.asdict(spec)), sort_keys=True).encode(),
                           digest_size=8).hexdigest()


CHECKSUM = "crc32"  # the metadata key of an entry's checksum


def checksum(values: np.ndarray) -> str:
    """The CRC-32 of a stored entry's values (an audio clip, a cache entry's states), kept beside them: an entry
    whose bytes changed after it was written (zeroed by a crash, overwritten) is made again, not read as it is
    (entries of earlier releases have none)."""
    return str(zlib.crc32(np.ascontiguousarray(values).data))


class AudioStore:
    """Prepared clips under ``ROOT/audio/<settings digest>/<row key>.safetensors``."""

    def __init__(self, root: str | Path, spec: AudioSpec):
        self.folder = Path(root) / "audio" / spec_digest(spec)
        self.unwritable = False  # a write failed (said once): the clips are served, not kept
        self.checked: set[str] = set()  # entries this process checked once: later epochs skip the checksum

    def load(self, path: str, span: Span, prepare: Callable[[], tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
        """The stored clip of this row, or ``prepare()``'s result, stored for the next time."""
        key = segment_key(path, span)
        entry = self.folder / f"{key}.safetensors"
        if entry.is_file():
            try:
                with safe_open(str(entry), framework="np") as handle:
                    stored, metadata = handle.get_tensor("audio"), handle.metadata()
                if key not in self.checked and CHECKSUM in metadata:
                    if metadata[CHECKSUM] != checksum(stored):
                        raise ValueError("its samples are not those it was written with")
                    self.checked.add(key)
                return stored, int(metadata["rate"])
            except (OSError, SafetensorError, KeyError, TypeError, ValueError) as err:  # cut short, emptied, damaged
                logger.warning("%s: a stored clip of %s that cannot be read (%s): prepared again", entry, path, err)
        clip, rate = prepare()
        try:  # under a name of its own: workers may write the same entry at once
            self.folder.mkdir(parents=True, exist_ok=True)
            samples = np.ascontiguousarray(clip, dtype=np.float32)
            with partials.partial_place(entry, crowded=True) as partial:  # written into: its lock holds it
                partial.write_bytes(save({"audio": samples}, metadata={"rate": str(rate), CHECKSUM: checksum(samples)}))
                partial.replace(entry)
        except (OSError, SafetensorError) as err:  # a full disk, a quota, a read-only folder: served, not kept
            if not self.unwritable:
                logger.warning("%s: the audio store cannot keep prepared clips (%s); they are prepared again "
                               "every epoch", self.folder, err)
            self.unwritable = True
        return clip, rate
