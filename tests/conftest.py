"""Shared fixtures: paths to the optional ../shared data, small generated audio."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(relative: str) -> Path:
    """Path under ../shared, skipping the test with a clear message when it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data directory is absent)")
    return path
