"""The record of the clips a run learnt from (clips_read.csv): written by train and pretrain as they read their
tables, with the rows of the runs their inputs came from (P-TAPT's stage-1 classifier), and read back (a run written
before it: its config's data read again)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audiotune.config import RunConfig, save_config
from audiotune.data.pseudo_labels import METADATA_KEY, SCHEMA, FramesMade
from audiotune.engine.clips_read import COLUMNS, find_run, labels_run, run_rows, write_clips_read
from audiotune.outputs import CLIPS_READ_FILE, CONFIG_FILE


def pseudo_labels(path: Path, encoder: str, run: bool, **recorded: object) -> Path:
    """A labels file as `audiotune cluster` writes it (one clip), clustered from ``encoder``."""
    meta = FramesMade(encoder=encoder, run=run, model="hf", layer=-1, sample_rate=16000, hop_samples=320,
                      num_clusters=[2]).record(**recorded)
    table = pa.Table.from_pylist([{"uid": "a", "k": 2, "labels": [0, 1]}], schema=SCHEMA)
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()}), path)
    return path


def own_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Tables as pretraining reads them: a train part with a segment, a val part, and a test part (not learnt)."""
    return {"train": pd.DataFrame({"path": [str(folder / "x.wav")], "offset": [1.5], "duration": [2.0]},
                                  index=pd.Index(["x"], name="uid")),
            "val": pd.DataFrame({"path": [str(folder / "y.wav")]}, index=pd.Index(["y"], name="uid")),
            "test": pd.DataFrame({"path": [str(folder / "z.wav")]}, index=pd.Index(["z"], name="uid"))}


def test_train_records_its_train_and_val_clips(trained_run: dict) -> None:
    rows, recorded = run_rows(trained_run["run"])
    assert recorded and list(rows.columns) == COLUMNS
    table = trained_run["table"]
    expected = {uid: "train" for uid in table.index[table.subject.isin(["ann", "bob", "cat", "dan"])]}
    expected |= {uid: "val" for uid in table.index[table.subject == "eve"]}
    assert dict(zip(rows.uid, rows.split)) == expected  # fay's test clips were scored, not learnt from
    assert set(rows.stage) == {"train"} and set(rows.run) == {str(trained_run["run"].resolve())}
    assert list(rows.path) == [str(trained_run["prefix"] / uid / "waveform.wav") for uid in rows.uid]
    assert rows.offset.isna().all() and rows.duration.isna().all()  # whole files


def test_ptapt_records_the_clips_of_the_run_its_pseudo_labels_were_clustered_from(
        trained_run: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """P-TAPT's stage 1 (a classifier trained on the labels of its clips) counts as much as its own pretraining."""
    stage1 = trained_run["run"]
    labels = pseudo_labels(tmp_path / "labels.parquet", str(stage1 / "model.safetensors"), run=True)
    assert labels_run(str(labels)) == str(stage1)
    out = tmp_path / "ptapt"
    write_clips_read(out, own_tables(tmp_path), "pretrain",
                     {"checkpoint": "facebook/wav2vec2-base", "pseudo_labels": str(labels)})
    rows = pd.read_csv(out / CLIPS_READ_FILE)
    own = rows[rows.stage == "pretrain"]
    assert list(own.uid) == ["x", "y"] and list(own.split) == ["train", "val"]
    assert set(own.run) == {str(out.resolve())}
    assert (own.offset.iloc[0], own.duration.iloc[0]) == (1.5, 2.0)
    assert rows[rows.stage == "train"].uid.tolist() == run_rows(stage1)[0].uid.tolist()
    assert set(rows[rows.stage == "train"].run) == {str(stage1.resolve())}

    # a stage-1 run written before the record: its config's data, read again
    old = tmp_path / "old_stage1"
    config = RunConfig()
    config.data.data_split_root, config.data.prefix = str(trained_run["split"]), str(trained_run["prefix"])
    save_config(config, old / CONFIG_FILE)
    rebuilt, recorded = run_rows(old)
    assert not recorded and len(rebuilt) == 20 and set(rebuilt.split) == {"train", "val"}
    write_clips_read(out, own_tables(tmp_path), "pretrain",
                     {"pseudo_labels": str(pseudo_labels(tmp_path / "old.parquet", str(old), run=True))})
    assert len(pd.read_csv(out / CLIPS_READ_FILE)) == 2 + 20

    # labels clustered from a hub encoder come from no run; from a run that is gone: a warning, its own rows only
    assert labels_run(str(pseudo_labels(tmp_path / "hub.parquet", "facebook/wav2vec2-base", run=False))) is None
    with caplog.at_level(logging.WARNING):
        write_clips_read(out, own_tables(tmp_path), "pretrain",
                         {"pseudo_labels": str(pseudo_labels(tmp_path / "gone.parquet", str(tmp_path / "gone"), True))})
    assert "which is not found" in caplog.text and len(pd.read_csv(out / CLIPS_READ_FILE)) == 2


def test_the_clips_pseudo_labels_were_fitted_on_are_recorded_with_the_run_they_train(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """k-means fitted on clips (``cluster --fit_on all``: test clips too) learnt from them as much as a run does."""
    from audiotune.engine.clips_read import clip_rows

    labels = pseudo_labels(tmp_path / "labels.parquet", "facebook/wav2vec2-base", run=False)
    fitted = clip_rows(own_tables(tmp_path), "cluster", labels, ("train", "val", "test"))  # as cluster writes it
    fitted.to_csv(tmp_path / "labels.fit_rows.csv", index=False)
    out = tmp_path / "ptapt"
    write_clips_read(out, own_tables(tmp_path), "pretrain", {"pseudo_labels": str(labels)})
    rows = pd.read_csv(out / CLIPS_READ_FILE)
    assert rows[rows.stage == "cluster"].uid.tolist() == ["x", "y", "z"]
    assert set(rows[rows.stage == "cluster"].run) == {str(labels.resolve())}
    fitted[["uid", "split"]].to_csv(tmp_path / "labels.fit_rows.csv", index=False)  # an earlier cluster's list
    with caplog.at_level(logging.WARNING):
        write_clips_read(out, own_tables(tmp_path), "pretrain", {"pseudo_labels": str(labels)})
    assert "labels.fit_rows.csv lists uids only" in caplog.text
    assert pd.read_csv(out / CLIPS_READ_FILE).stage.tolist() == ["pretrain", "pretrain"]


def test_an_encoder_started_from_a_pretrained_one_records_that_runs_clips_too(tmp_path: Path) -> None:
    first = tmp_path / "first"
    write_clips_read(first, {"train": own_tables(tmp_path)["test"]}, "pretrain", {})
    save_config(RunConfig(), first / CONFIG_FILE)
    (first / "encoder").mkdir()
    assert find_run(str(first / "encoder")) == first.resolve() and find_run(str(tmp_path / "none")) is None
    second = tmp_path / "second"
    write_clips_read(second, own_tables(tmp_path), "pretrain", {"checkpoint": str(first / "encoder")})
    rows = pd.read_csv(second / CLIPS_READ_FILE)
    assert rows.uid.tolist() == ["x", "y", "z"] and rows.run.tolist()[-1] == str(first.resolve())


def test_a_record_without_its_columns_is_refused_naming_it(tmp_path: Path) -> None:
    from audiotune.data.errors import DataError

    (tmp_path / CLIPS_READ_FILE).write_text("uid,path\na,/a.wav\n")
    with pytest.raises(DataError, match=f"{CLIPS_READ_FILE}: not a record of the clips a run read"):
        run_rows(tmp_path)


def test_a_list_of_fitted_clips_of_other_labels_is_not_taken_for_theirs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Labels fitted on 2 clips beside a list of 3 (an earlier clustering's, left by a process killed between
    writing the two): the list is not read as theirs."""
    from audiotune.engine.clips_read import clip_rows

    labels = pseudo_labels(tmp_path / "labels.parquet", "facebook/wav2vec2-base", run=False, fit_clips=2)
    clip_rows(own_tables(tmp_path), "cluster", labels, ("train", "val", "test")).to_csv(
        tmp_path / "labels.fit_rows.csv", index=False)
    with caplog.at_level(logging.WARNING):
        write_clips_read(tmp_path / "ptapt", own_tables(tmp_path), "pretrain", {"pseudo_labels": str(labels)})
    assert "labels.fit_rows.csv lists 3 clips, the labels were fitted on 2: another clustering's" in caplog.text
