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


def test_a_missing_audio_file_is_named_before_the_model_loads(trained_run: dict, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The table and its audio are checked first: a large encoder is not loaded to then fail on a missing file."""
    import pandas as pd

    import audiotune.engine.extract as extract

    table = pd.read_csv(trained_run["split"] / "test.csv")
    table.loc[0, "uid"] = "nowhere"
    missing = tmp_path / "missing.csv"
    table.to_csv(missing, index=False)
    loaded = []
    monkeypatch.setattr(extract, "load_embedder", lambda *args, **kwargs: loaded.append(args))
    out = tmp_path / "emb.parquet"
    with pytest.raises(extract.DataError, match="nowhere/metadata.json: metadata.json not found"):
        extract_embeddings(str(trained_run["run"]), str(missing), str(out), "ft",
                           data={"prefix": str(trained_run["prefix"])})
    assert loaded == [] and not out.exists()


def test_ft_embeddings_pooled_by_max_are_refused_naming_the_flag_before_the_model_loads(
        trained_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ft embeddings merge the heads by mean or sum (the seeds refused max too): said with -pm and what to use."""
    import audiotune.engine.extract as extract

    loaded = []
    monkeypatch.setattr(extract, "load_embedder", lambda *args, **kwargs: loaded.append(args))
    out = tmp_path / "emb.parquet"
    with pytest.raises(ValueError, match=r"^--pooling_mode max: ft embeddings merge the heads by mean or sum; use "
                                         r"-pm mean or -pm sum, or --embedding_type pt, wt or st to pool the frames "
                                         r"by max$"):
        extract_embeddings(str(trained_run["run"]), str(trained_run["split"] / "test.csv"), str(out), "ft",
                           pooling="max", data={"prefix": str(trained_run["prefix"])})
    assert loaded == [] and not out.exists()


def test_an_output_that_is_not_an_earlier_extracts_is_never_replaced(trained_run: dict, tmp_path: Path) -> None:
    """A run's own predictions.parquet (the run would no longer read back), or any other file, given as --out is
    refused before any work; embeddings written before are replaced."""
    import shutil

    from audiotune.cli import main

    run = tmp_path / "run"
    shutil.copytree(trained_run["run"], run)
    table = str(trained_run["split"] / "test.csv")
    for out in (run / "predictions.parquet", tmp_path / "notes.parquet"):
        if not out.exists():
            out.write_text("not parquet")
        before = out.read_bytes()
        with pytest.raises(ValueError, match=f"--out {out}: "):
            extract_embeddings(str(run), table, str(out), "pt")
        assert out.read_bytes() == before
    assert main(["report", str(run)]) == 0
    embeddings = tmp_path / "emb.parquet"
    for _ in range(2):
        assert main(["extract", "--run", str(run), "-d", table, "--out", str(embeddings)]) == 0


def test_an_embeddings_file_says_how_it_was_made_and_a_replacement_says_what_it_replaced(
        trained_run: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The seed put the layer, pooling and type in the file name; here the file's schema metadata holds them (and
    the encoder and command), so that a file named by its type alone still says which state it holds."""
    import pyarrow.parquet as pq

    from audiotune.engine.extract import embeddings_meta

    run, table, out = str(trained_run["run"]), str(trained_run["split"] / "test.csv"), tmp_path / "emb.parquet"
    data = {"prefix": str(trained_run["prefix"])}
    extract_embeddings(run, table, str(out), "pt", layer=0, data=data)
    made = embeddings_meta(out)
    assert made is not None and {k: made[k] for k in ("embedding_type", "layer", "frame_pooling", "run")} == \
        {"embedding_type": "pt", "layer": 0, "frame_pooling": "mean", "run": True}
    assert made["encoder"] == str(Path(run).resolve()) and "command" in made
    # the crop the clips were read with, the run's own (its --eval_clip_length -1: scored as trained), in seconds
    assert made["clip_seconds"] == 10.0
    assert pq.read_table(out).column_names == ["uid", "split", "embedding"]
    extract_embeddings(run, table, str(out), "ft", data=data)
    made = embeddings_meta(out)
    assert (made["embedding_type"], made["layer"], made["heads_merged_by"]) == ("ft", -1, "mean")
    assert f"{out}: replaced embeddings of pt of layer 0 (mean-pooled)" in caplog.text
