"""The README's Layout table is the code's: every room of ``src/audiotune`` has a row, imports only the rooms its
row names (``everything below``: every room of a later row; rooms of one row may read one another), and no row
names a room above it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "audiotune"
ANYWHERE = {"__init__"}  # the package's own __init__ (its version) is read by any room


def layout_rows() -> list[tuple[list[str], str]]:
    """(rooms, what they may import) of each row of the README's Layout table, top to bottom."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Layout\n"):]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rooms = [name.rstrip("/").removesuffix(".py") for name in re.findall(r"`([^`]+)`", cells[0])]
            rows.append((rooms, cells[2]))
    return rows


def room_of(module: str) -> str:
    """``audiotune.data.audio`` -> ``data``; ``audiotune`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_rooms(room: str) -> set[str]:
    """The rooms the files of ``room`` import (function-level and type-checking imports included)."""
    place = PACKAGE / room
    files = sorted(place.rglob("*.py")) if place.is_dir() else [PACKAGE / f"{room}.py"]
    found = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {room_of(alias.name) for alias in node.names if alias.name.split(".")[0] == "audiotune"}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "audiotune":  # from audiotune import storage, __version__
                    found |= {alias.name if (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py")
                              .is_file() else "__init__" for alias in node.names}
                elif node.module.split(".")[0] == "audiotune":
                    found.add(room_of(node.module))
    return found - {room} - ANYWHERE


def test_every_room_has_one_row() -> None:
    listed = [room for rooms, _ in layout_rows() for room in rooms]
    on_disk = {path.stem for path in PACKAGE.iterdir() if (path.suffix == ".py" or (path / "__init__.py").is_file())
               and path.stem not in ("__init__", "__main__")}
    assert len(listed) == len(set(listed)) and set(listed) == on_disk


@pytest.mark.parametrize("row", range(len(layout_rows())))
def test_a_room_imports_only_what_its_row_names(row: int) -> None:
    rows = layout_rows()
    rooms, allowed = rows[row]
    below = {room for later, _ in rows[row + 1:] for room in later}
    may = below if allowed == "everything below" else set() if allowed == "nothing of audiotune" else \
        set(re.findall(r"`([^`]+)`", allowed))
    assert may <= below, f"{rooms}: its row names rooms that are not below it: {sorted(may - below)}"
    for room in rooms:  # the rooms of one row may read one another (vertex_results reads vertex)
        extra = imported_rooms(room) - may - set(rooms)
        assert not extra, f"{room} imports {sorted(extra)}, which its row does not name"
