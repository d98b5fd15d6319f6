"""Settings records of experiment folders (a cross-validation, a sweep): a rerun that asks for other settings
than the folder was made with is refused, naming the settings that differ."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from audiotune.config import with_added_options
from audiotune.outputs import RunDirError


def read_settings_record(path: Path, record: dict) -> dict | None:
    """The settings recorded at ``path`` (None when there are none yet), its ``config`` section completed with the
    options added since it was written, at their defaults (:func:`~audiotune.config.with_added_options`). A
    setting recorded only since it was written (a key of ``record`` it lacks) is unknown there: taken as
    ``record``'s, so a folder made before goes on."""
    if not path.is_file():
        return None
    earlier = yaml.safe_load(path.read_text())
    if isinstance(earlier, dict):
        earlier = {**{key: value for key, value in record.items() if key not in earlier}, **earlier}
    if isinstance(earlier, dict) and isinstance(earlier.get("config"), dict) and isinstance(record.get("config"), dict):
        earlier = {**earlier, "config": with_added_options(earlier["config"], record["config"], str(path))}
    return earlier


def differing_keys(earlier: Any, record: Any, prefix: str = "") -> list[str]:
    """Dotted paths (``config.train.epochs``) of the values that differ between two nested dicts."""
    if earlier == record:
        return []
    if not (isinstance(earlier, dict) and isinstance(record, dict)):
        return [prefix or "(all)"]
    return [path for key in sorted(set(earlier) | set(record), key=str)
            for path in differing_keys(earlier.get(key), record.get(key), f"{prefix}.{key}" if prefix else str(key))]


def check_settings_record(path: Path, record: dict, holds: str, again: str) -> None:
    """A directory made for one set of settings (a cross-validation, a sweep): ``path`` records them, and a
    rerun that asks for others is an error naming the settings that differ. Options added to audiotune since the
    record was written count as their defaults. The record is written by the caller."""
    earlier = read_settings_record(path, record)
    if earlier is not None and earlier != record:
        changed = differing_keys(earlier, record)
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise RunDirError(f"{path}: this directory holds {holds} with other settings (differs in {shown}); "
                          f"{again} with the same arguments or use a new --exp_dir")
