"""`audiotune extract`'s engine: what it refuses before it reads anything."""
from __future__ import annotations

from pathlib import Path

import pytest

from audiotune.engine.extract import extract_embeddings


@pytest.mark.parametrize("kind", ["ft", "st", "wt"])
def test_a_layer_is_refused_for_embeddings_that_read_the_runs_own(tmp_path: Path, kind: str) -> None:
    """The seeds' ft, st and wt embeddings ignored --layer; here it would change the state the heads read."""
    out = tmp_path / "emb.parquet"
    with pytest.raises(ValueError, match=f"--layer 0: chooses the hidden state of pt embeddings; {kind} embeddings"):
        extract_embeddings(str(tmp_path / "run"), "table.csv", str(out), kind, layer=0)
    assert not out.exists()
