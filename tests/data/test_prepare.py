"""Preparing a run's data: the rows every split keeps and the list of those left out."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_ECAPA

from audiotune.cli import build_parser, config_from_args, main
from audiotune.config import HeadSpec, RunConfig
from audiotune.data.errors import DataError
from audiotune.data.prepare import _check_label_columns, head_options_at_defaults, prepare_training_data
from audiotune.models.backbones import input_spec
from audiotune.outputs import DROPPED_FILE


def blank_long_in_first_rows(split: Path, rows: int = 2) -> dict[str, list[str]]:
    """Empty the ``long`` cell of the first ``rows`` rows of every split: those rows miss one head's column."""
    blanked = {}
    for name in ("train", "val", "test"):
        table = pd.read_csv(split / f"{name}.csv", index_col="uid")
        table.iloc[:rows, table.columns.get_loc("long")] = np.nan
        table.to_csv(split / f"{name}.csv")
        blanked[name] = list(table.index[:rows])
    return blanked


def prepare(ds: dict, exp_dir: Path, *extra: str):
    args = build_parser().parse_args(["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l",
                                      str(ds["labels"]), "-o", str(exp_dir), "--model", "ecapa_tdnn", *extra])
    config = config_from_args(args)
    exp_dir.mkdir(parents=True)
    prepared = prepare_training_data(config, input_spec(config), exp_dir)
    prepared.write_reports(exp_dir)
    return prepared


def test_complete_rows_leaves_out_and_lists_each_splits_rows_missing_a_label(uid_dataset: dict,
                                                                                tmp_path: Path) -> None:
    blanked = blank_long_in_first_rows(uid_dataset["split"])
    kept = prepare(uid_dataset, tmp_path / "kept")
    assert {split: len(table) for split, table in kept.tables.items()} == {"train": 16, "val": 4, "test": 4}
    assert not (tmp_path / "kept" / DROPPED_FILE).exists()  # each row is labelled for some head

    complete = prepare(uid_dataset, tmp_path / "complete", "--complete_rows")
    assert {split: len(table) for split, table in complete.tables.items()} == {"train": 14, "val": 2, "test": 2}
    assert not np.isnan(np.concatenate(list(complete.targets.values()))).any()
    dropped = pd.read_csv(tmp_path / "complete" / DROPPED_FILE, dtype={"uid": str})
    assert {split: sorted(rows["uid"]) for split, rows in dropped.groupby("split")} == \
        {split: sorted(uids) for split, uids in blanked.items()}
    assert dropped["reason"].str.contains(r"no target for \['long'\]").all()


def test_debug_keeps_the_first_eight_rows_that_are_kept_as_the_seed_took_them(uid_dataset: dict,
                                                                               tmp_path: Path) -> None:
    """The seed dropped the rows missing a label, then took 8: with --complete_rows, --debug trains on 8 complete
    rows even where the first rows of the table miss one."""
    blanked = blank_long_in_first_rows(uid_dataset["split"], rows=3)
    prepared = prepare(uid_dataset, tmp_path / "debug", "--complete_rows", "--debug")
    train = prepared.tables["train"]
    table = pd.read_csv(uid_dataset["split"] / "train.csv", dtype={"uid": str})
    assert list(train.index) == [uid for uid in table["uid"] if uid not in blanked["train"]][:8]


def test_every_list_of_rows_left_out_is_said_in_the_log(tmp_path: Path, caplog) -> None:
    import logging

    from audiotune.data.prepare import PreparedData

    dropped = pd.DataFrame({"split": ["test"], "reason": ["no target for any head"]}, index=pd.Index(["c"], name="uid"))
    skipped = pd.DataFrame({"uid": ["a", "b"], "split": ["train", "val"], "reason": ["gone", "gone"]})
    with caplog.at_level(logging.WARNING):
        PreparedData({}, {}, [], skipped=skipped, dropped=dropped).write_reports(tmp_path)
    assert f"2 row(s) skipped (bad audio, --on_error skip): listed in {tmp_path / 'skipped.csv'}" in caplog.text
    assert f"1 row(s) left out, each with its reason: listed in {tmp_path / DROPPED_FILE}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        PreparedData({}, {}, []).write_reports(tmp_path)
    assert caplog.text == "" and not (tmp_path / DROPPED_FILE).exists()


def test_an_option_of_a_head_kind_the_label_file_lacks_is_refused_naming_the_file_and_its_heads(
        uid_dataset: dict, tmp_path: Path, capsys) -> None:
    """--labeling_method acts only on soft (vote) heads, --standardize_targets only on regression heads: for a
    label file without one they are refused before anything is written (train and cv); with one they act."""
    labels = uid_dataset["labels"]  # pitch (categorical) and loud,long (binary)
    data = ["-i", str(uid_dataset["prefix"]), "-l", str(labels), *SMALL_ECAPA]
    out = tmp_path / "run"
    assert main(["train", "-d", str(uid_dataset["split"]), "-o", str(out), *data, "--labeling_method", "hard",
                 "--standardize_targets", "false"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"audiotune train: error: --labeling_method hard: acts only on soft (vote) heads, and {labels} has none "
        "(pitch; loud,long); declare vote columns as one head `a,b,c:soft`, or leave --labeling_method out / "
        f"--standardize_targets false: acts only on regression heads, and {labels} has none (pitch; loud,long); "
        "declare real-valued columns `NAME:regression`, or leave --standardize_targets out")
    assert not out.exists()
    table = tmp_path / "table.csv"
    uid_dataset["table"].to_csv(table)
    assert main(["cv", "-d", str(table), "--group", "subject", "--folds", "3", "-o", str(out), *data,
                 "--labeling_method", "sample"]) == 2
    assert "--labeling_method sample: acts only on soft (vote) heads" in capsys.readouterr().err
    assert not out.exists()

    for lines, flag in (("pitch\nloud,long:soft\n", "--labeling_method"), ("pitch\nloud:regression\n",
                                                                            "--standardize_targets")):
        uid_dataset["labels"].write_text(lines)
        prepare(uid_dataset, tmp_path / flag, flag, "hard" if flag == "--labeling_method" else "false")
    uid_dataset["labels"].write_text("pitch\nloud,long\n")  # a run made with it before resumes
    prepare(uid_dataset, tmp_path / "resumed", "--labeling_method", "hard", "--resume")


def test_a_head_option_that_does_nothing_with_the_runs_labels_is_put_back_at_its_default(uid_dataset: dict,
                                                                                          tmp_path: Path) -> None:
    """For a run a cv or sweep folder made before the options were refused starts: the label file's heads, or a JSON
    split file's own labels (a soft head over its votes) decide which do nothing; labels that cannot be read change
    nothing (the run says why)."""
    labels = uid_dataset["labels"]  # pitch (categorical) and loud,long (binary)
    config = RunConfig()
    config.data.label_txt = str(labels)
    config.train.labeling_method, config.train.standardize_targets = "hard", False
    assert head_options_at_defaults(config) == [
        f"--labeling_method hard: acts only on soft (vote) heads, and {labels} has none",
        f"--standardize_targets false: acts only on regression heads, and {labels} has none"]
    assert (config.train.labeling_method, config.train.standardize_targets) == ("distribution", True)

    votes = tmp_path / "votes.json"
    votes.write_text(json.dumps({"Train": {"a.wav": {"calm": 2, "angry": 1}}, "Test": {"b.wav": {"calm": 1,
                                                                                                  "angry": 0}}}))
    config = RunConfig()
    config.data.data_split_root = str(votes)
    config.train.labeling_method, config.train.standardize_targets = "hard", False
    assert head_options_at_defaults(config) == [
        f"--standardize_targets false: acts only on regression heads, and {votes} has none"]
    assert (config.train.labeling_method, config.train.standardize_targets) == ("hard", True)

    config.data.label_txt, config.train.standardize_targets = str(tmp_path / "missing.txt"), False
    assert head_options_at_defaults(config) == [] and not config.train.standardize_targets


def test_a_table_scored_without_the_distortions_column_says_how_the_seeds_derived_it() -> None:
    """A run with a `distortions` head scored on a seed table that holds only its parts: the error says what the
    NAIP seeds did when loading (derived it) and how to have it here; another missing column gets no such hint."""
    table = pd.DataFrame({"distorted Cs": [0, 1], "distorted V": [0, 0]})
    table.attrs["source"] = "test.csv"
    with pytest.raises(DataError, match=r"^test\.csv: label column\(s\) \['distortions'\] of the run not found "
                                        r"\(leave cells empty where a row has no target\); the seeds derived "
                                        r"'distortions' from 'distorted Cs' and 'distorted V' when loading"):
        _check_label_columns({"test": table}, [HeadSpec("distortions", "binary", ["distortions"])])
    with pytest.raises(DataError, match=r"not found \(leave cells empty where a row has no target\)$"):
        _check_label_columns({"test": table}, [HeadSpec("slow rate", "binary", ["slow rate"])])


def test_a_training_run_says_that_its_audio_is_resampled(uid_dataset: dict, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """8 kHz files for a model that reads 16 kHz: train says once that they are resampled, and how to keep the
    files' rate; at the files' own rate it says nothing."""
    from conftest import small_train_args

    from audiotune.cli import main

    assert main(small_train_args(uid_dataset, tmp_path / "run")) == 0
    said = [r.getMessage() for r in caplog.records if "resampled" in r.getMessage()]
    assert said == ["audio at 8000 Hz is resampled to 16000 Hz, the rate the model reads"]
    caplog.clear()
    assert main(small_train_args(uid_dataset, tmp_path / "same", "--resample_rate", "8000")) == 0
    assert not [r for r in caplog.records if "resampled" in r.getMessage()]
