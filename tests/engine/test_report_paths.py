"""Relative paths in a run's config (its table, its audio prefix) are read from the folder the run was trained in,
as its command record says, so `audiotune report` finds the clips from any folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import read_report, scores_of_run

from audiotune.engine.report import write_report
from audiotune.outputs import from_training_dir


def _relative_run(trained_run: dict, tmp_path: Path) -> Path:
    """A copy of the trained run whose config names its table and audio relative to the dataset's folder."""
    root = trained_run["root"]
    return scores_of_run(trained_run, tmp_path / "run", data_split_root=str(trained_run["split"].relative_to(root)),
                         prefix=str(trained_run["prefix"].relative_to(root)))


def test_a_relative_table_is_read_from_where_the_run_was_trained(trained_run: dict, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = _relative_run(trained_run, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    page = read_report(write_report(run))  # no record of where it was trained: relative to here, not found
    assert page["audio"] == 0 and "the scored table cannot be read" in (run / "report.html").read_text()
    (run / "command.json").write_text(json.dumps([{"argv": ["audiotune", "train", "-d", "split"],
                                                    "cwd": str(trained_run["root"])},
                                                   {"argv": ["audiotune", "train", "--resume"], "cwd": "/nowhere"}]))
    page = read_report(write_report(run))
    assert page["audio"] > 0 and {uid[:3] for uid, _, _ in page["clips"]} == {"fay"}  # the test speaker's clips


def test_only_relative_local_paths_move() -> None:
    run = Path("/runs/r")
    assert from_training_dir("", run) == ""
    assert from_training_dir("/data/split", run) == "/data/split"
    assert from_training_dir("gs://b/split", run) == "gs://b/split"
    assert from_training_dir("data/split", Path("/no/record")) == "data/split"


def test_a_run_trained_with_relative_paths_reports_from_another_folder(uid_dataset: dict,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import small_train_args

    from audiotune.cli import main

    root = uid_dataset["root"]
    monkeypatch.chdir(root)
    relative = {**uid_dataset, "prefix": Path("audio"), "split": Path("split"), "labels": Path("labels.txt")}
    assert main(small_train_args(relative, Path("run"), "--report", "False")) == 0
    assert yaml.safe_load((root / "run" / "config.yaml").read_text())["data"]["data_split_root"] == "split"
    (root / "elsewhere").mkdir()
    monkeypatch.chdir(root / "elsewhere")
    page = read_report(write_report(root / "run"))
    assert page["audio"] > 0 and all(uid.startswith("fay") for uid, _, _ in page["clips"])
    # evaluate and extract find the run's audio as the report does: from where the run was trained
    table = str(root / "split" / "test.csv")
    assert main(["evaluate", "--run", str(root / "run"), "-d", table, "-o", "eval", "--report", "False"]) == 0
    assert main(["extract", "--run", str(root / "run"), "-d", table, "--out", "e.parquet"]) == 0
    assert (root / "elsewhere" / "eval" / "metrics.json").is_file() and (root / "elsewhere" / "e.parquet").is_file()


def test_a_uid_in_two_splits_is_the_row_of_the_split_the_page_shows(tmp_path: Path) -> None:
    """With --allow_overlap a test row may share its uid with a training row that names other audio: the page of
    the test split plays, and groups, the test row."""
    import soundfile as sf
    from conftest import tone

    from audiotune.config import RunConfig
    from audiotune.engine.report import _scored_table

    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", tone(300, 0.5, 16000), 16000)
    split = tmp_path / "split"
    split.mkdir()
    (split / "train.csv").write_text(f"uid,path,subject\nx,{tmp_path / 'a.wav'},ann\ny,{tmp_path / 'c.wav'},ann\n")
    (split / "test.csv").write_text(f"uid,path,subject\nx,{tmp_path / 'b.wav'},fay\n")
    for shown, path, subject in (("test", "b.wav", "fay"), ("train", "a.wav", "ann")):
        table = _scored_table(RunConfig(), str(split), shown)
        assert Path(table.loc["x", "path"]).name == path and table.loc["x", "subject"] == subject
        assert len(table) == 2


def test_a_frozen_encoders_run_trained_with_a_relative_checkpoint_reports_from_another_folder(
        uid_dataset: dict, hf_checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The page reads the run's input from the encoder it exported (encoder/), as evaluate rebuilds it: a relative
    -c, read from another folder, named no checkpoint (transformers took it for a malformed hub id)."""
    import shutil

    from audiotune.cli import main

    shutil.copytree(hf_checkpoints["w2v_layer"], tmp_path / "encoder_here")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "hf", "-c", "encoder_here", "-i", str(uid_dataset["prefix"]), "-d",
                 str(uid_dataset["split"]), "-l", str(uid_dataset["labels"]), "-o", "run", "-e", "1", "-bs", "4",
                 "--report", "False"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    page = read_report(write_report(tmp_path / "run"))
    assert page["audio"] > 0


def test_a_run_trained_with_relative_paths_resumes_from_another_folder(uid_dataset: dict,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The same files named from elsewhere (absolute paths) are no change to allow, and the run's own config.yaml,
    given as --config from another folder, names its files as the run was made: either way it resumes."""
    from conftest import small_train_args

    from audiotune.cli import main

    root = uid_dataset["root"]
    monkeypatch.chdir(root)
    relative = {**uid_dataset, "prefix": Path("audio"), "split": Path("split"), "labels": Path("labels.txt")}
    assert main([*small_train_args(relative, Path("run")), "--report", "False"]) == 0
    (root / "elsewhere").mkdir()
    monkeypatch.chdir(root / "elsewhere")
    absolute = [*small_train_args(uid_dataset, root / "run"), "--report", "False", "--resume"]
    assert main([*absolute, "-e", "2"]) == 0
    assert main(["train", "--config", str(root / "run" / "config.yaml"), "-o", str(root / "run"), "-e", "3",
                 "--resume", "--report", "False"]) == 0
    assert json.loads((root / "run" / "metrics.json").read_text())["epochs_run"] == 3
    moved = [*small_train_args({**uid_dataset, "labels": root / "split" / "train.csv"}, root / "run"), "--resume"]
    assert main([*moved, "-e", "4"]) == 2  # other files named: a change


def test_a_run_resumed_from_another_folder_records_its_paths_from_where_it_was_made(
        uid_dataset: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resumed from the folder above with paths relative to it, the run's config.yaml still names its files from
    the folder it was made in: the first command line resumes it again there, and --config reads it anywhere."""
    import yaml
    from conftest import small_train_args

    from audiotune.cli import main

    root = uid_dataset["root"]
    monkeypatch.chdir(root)
    relative = {**uid_dataset, "prefix": Path("audio"), "split": Path("split"), "labels": Path("labels.txt")}
    made = [*small_train_args(relative, Path("run")), "--report", "False"]
    assert main(made) == 0
    recorded = yaml.safe_load((root / "run" / "config.yaml").read_text())["data"]
    monkeypatch.chdir(root.parent)
    above = {key: Path(root.name) / value for key, value in relative.items() if key in ("prefix", "split", "labels")}
    assert main([*small_train_args({**relative, **above}, Path(root.name) / "run"), "--report", "False", "--resume",
                 "-e", "2"]) == 0
    data = yaml.safe_load((root / "run" / "config.yaml").read_text())["data"]
    assert {key: data[key] for key in ("data_split_root", "label_txt", "prefix")} == \
        {key: recorded[key] for key in ("data_split_root", "label_txt", "prefix")} == \
        {"data_split_root": "split", "label_txt": "labels.txt", "prefix": "audio"}
    monkeypatch.chdir(root)
    assert main([*made, "--resume", "-e", "3"]) == 0
    monkeypatch.chdir(root.parent)
    assert main(["train", "--config", str(root / "run" / "config.yaml"), "-o", str(root / "run"), "-e", "4",
                 "--resume", "--report", "False"]) == 0
    assert json.loads((root / "run" / "metrics.json").read_text())["epochs_run"] == 4


def test_a_runs_config_without_o_writes_that_run_from_anywhere_and_a_copied_runs_config_asks_for_o(
        uid_dataset: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """`--config RUN/config.yaml` without -o is that run, whose exp_dir names it from where it was made: resumed
    from the folder above, it goes on in RUN (no new run beside the command); a copy's config still names the
    original, which --overwrite would have replaced: an error asking for -o."""
    import shutil

    from conftest import small_train_args

    from audiotune.cli import main

    root = uid_dataset["root"]
    monkeypatch.chdir(root)
    relative = {**uid_dataset, "prefix": Path("audio"), "split": Path("split"), "labels": Path("labels.txt")}
    assert main([*small_train_args(relative, Path("runs/A")), "--report", "False"]) == 0
    monkeypatch.chdir(root.parent)
    before = sorted(p.name for p in root.parent.iterdir())
    assert main(["train", "--config", f"{root.name}/runs/A/config.yaml", "--resume", "-e", "2"]) == 0
    assert json.loads((root / "runs/A/metrics.json").read_text())["epochs_run"] == 2
    assert sorted(p.name for p in root.parent.iterdir()) == before
    monkeypatch.chdir(root)
    shutil.copytree("runs/A", "runs/B")
    (root / "runs/A/notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["train", "--config", "runs/B/config.yaml", "--overwrite", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert f"the config of the run in runs/B, but it records {root / 'runs/A'} as its run directory" in err
    assert "-o runs/B: this run" in err and (root / "runs/A/notes.txt").is_file()
    assert main(["train", "--config", "runs/B/config.yaml", "-o", "runs/B", "--resume", "-e", "3",
                 "--report", "False"]) == 0
    assert json.loads((root / "runs/B/metrics.json").read_text())["epochs_run"] == 3
    # another YAML file kept in a run's folder (a sweep's best_config.yaml beside its command.json) is options only
    options = yaml.safe_load((root / "runs/B/config.yaml").read_text())
    del options["exp_dir"]
    (root / "runs/B/mine.yaml").write_text(yaml.safe_dump(options))
    assert main(["train", "--config", "runs/B/mine.yaml", "--report", "False"]) == 0
    assert (root / "experiments" / "model.safetensors").is_file()
