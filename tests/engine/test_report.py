"""Reports of run directories: every section, the wrong clips as the model read them, the options that change
what is shown, and what the page says when something is missing."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from conftest import read_report, scores_of_run, small_train_args

from audiotune.cli import main
from audiotune.config.sections import RESUME_HINT
from audiotune.engine.report import write_report
from audiotune.outputs import (
    CHECKPOINT_DIR,
    COMMAND_FILE,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    MODEL_FILE,
    invoked,
    record_command,
)

RUN_SECTIONS = ["overview", "config", "metrics", "per-class", "confusion", "curves", "scatter", "groups", "clips"]


def expected_clips(predictions: pd.DataFrame, split: str, per_class: int) -> int:
    """The wrong clips of the uid dataset's heads (pitch; loud, long), counted here from the predictions."""
    rows = predictions[predictions["split"] == split]
    wrong = rows[rows["true:pitch"] != rows["predicted:pitch"]]
    count = sum(min(per_class, n) for n in wrong.groupby("true:pitch").size())
    for column in ("loud", "long"):
        miss = rows[(rows[f"score:{column}"] >= 0.5) != (rows[f"target:{column}"] >= 0.5)]
        count += sum(min(per_class, n) for n in miss.groupby(f"target:{column}").size())
    return count


def source_samples(prefix: Path, uid: str) -> int:
    """Samples of a clip once read by the model: the 8 kHz file resampled to 16 kHz, whole (shorter than the crop)."""
    return sf.info(str(prefix / uid / "waveform.wav")).frames * 2


@pytest.mark.slow
def test_train_writes_a_report_with_every_section_and_the_wrong_clips_playable(trained_run: dict) -> None:
    run = trained_run["run"]
    page = read_report(run / "report.html")
    assert page["sections"] == RUN_SECTIONS
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert page["audio"] == expected_clips(predictions, "test", 5) > 0
    for uid, samples, rate in page["clips"]:
        assert uid.startswith("fay") and rate == 16000  # the test split, resampled as the model read it
        assert len(samples) == source_samples(trained_run["prefix"], uid)
    text = (run / "report.html").read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    assert "The test split by &#x27;subject&#x27;" in text
    curves = text.split('<section id="curves">')[1].split("</section>")[0]
    assert [c for c in ("loss", "monitored metric", "learning rate") if f"<figcaption>{c}</figcaption>" in curves] \
        == ["loss", "learning rate"]  # the monitored metric is the validation loss
    assert 'class="kept"' in curves and "best val_loss" in curves


@pytest.mark.slow
def test_fewer_clips_a_size_cap_and_another_group_column(trained_run: dict, tmp_path: Path) -> None:
    run = trained_run["run"]
    out = tmp_path / "one.html"
    assert main(["report", str(run), "-o", str(out), "--clips", "1", "--clip_kb", "3", "--group_by", "pitch"]) == 0
    page = read_report(out)
    predictions = pd.read_parquet(run / "predictions.parquet")
    text = out.read_text()
    links = re.findall(r'<a class="source" href="([^"]+)"', text)  # clips over the cap: their source linked
    assert links and page["audio"] + len(links) == expected_clips(predictions, "test", 1)
    assert set(links) <= {(trained_run["prefix"] / f"fay{k}" / "waveform.wav").as_uri() for k in range(4)}
    assert "larger than 3 kB even compressed" in text and "The test split by &#x27;pitch&#x27;" in text
    assert all(len(samples) == source_samples(trained_run["prefix"], uid) for uid, samples, _ in page["clips"])
    val = tmp_path / "val.html"
    assert main(["report", str(run), "-o", str(val), "--split", "val"]) == 0
    assert read_report(val)["audio"] == expected_clips(predictions, "val", 5)
    assert {uid[:3] for uid, _, _ in read_report(val)["clips"]} == {"eve"}  # the validation speaker
    none = tmp_path / "none.html"
    assert main(["report", str(run), "-o", str(none), "--clips", "0"]) == 0
    assert read_report(none)["audio"] == 0


def test_evaluate_writes_its_report_unless_told_not_to(trained_run: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    run, test_csv = trained_run["run"], trained_run["split"] / "test.csv"
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "-d", str(test_csv), "-o", str(tmp_path / "with")]) == 0
    page = read_report(tmp_path / "with" / "report.html")
    assert page["sections"] == RUN_SECTIONS and page["audio"] > 0
    text = (tmp_path / "with" / "report.html").read_text()  # the copy metrics.json keeps as "data" is not a split
    assert "<td class=text>test</td>" in text and "<td class=text>data</td>" not in text and "(data, n=" not in text
    assert "data" in json.loads((tmp_path / "with" / "metrics.json").read_text())
    printed = capsys.readouterr()
    assert json.loads(printed.out)["test"]["n"] == 4  # stdout is the metrics' JSON alone (`| python -m json.tool`)
    assert f"report: {tmp_path / 'with' / 'report.html'}" in printed.err
    assert main(["evaluate", "--run", str(run), "-d", str(test_csv), "-o", str(tmp_path / "without"),
                 "--report", "False"]) == 0
    assert (tmp_path / "without" / "metrics.json").is_file()
    assert not (tmp_path / "without" / "report.html").exists()


def test_a_run_without_predictions_or_config_says_so(trained_run: dict, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.yaml", "metrics.json"):
        shutil.copy(trained_run["run"] / name, bare / name)
    page = read_report(write_report(bare))
    assert page["sections"] == RUN_SECTIONS and page["audio"] == 0
    assert "no predictions.parquet in this directory" in (bare / "report.html").read_text()
    (bare / "config.yaml").unlink()
    text = write_report(bare, tmp_path / "no_config.html").read_text()
    assert "no config.yaml here or in the folder above" in text


def test_an_interrupted_run_is_reported_as_one_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"  # what a stopped `train` leaves: its last checkpoint and config, no weights, no scores
    (run / CHECKPOINT_DIR).mkdir(parents=True)
    (run / CHECKPOINT_DIR / LAST_CHECKPOINT).write_bytes(b"checkpoint")
    (run / CONFIG_FILE).write_text("version: 2\n")
    typed = ["train", "-d", "split", "-l", "labels.txt", "-o", str(run), "-e", "50"]
    with invoked(typed):
        record_command(run)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"audiotune report: error: {run}: training was stopped before it finished (checkpoints/last.ckpt, "
                   f"no model.safetensors), so there is nothing to report yet; {RESUME_HINT} (it was: "
                   f"`audiotune {shlex.join(typed)}`)")
    assert "evaluate" not in err and not (run / "report.html").exists()
    (run / COMMAND_FILE).unlink()  # no record of the command: the hint alone
    with pytest.raises(ValueError, match=f"nothing to report yet; {re.escape(RESUME_HINT)}$"):
        write_report(run)
    shutil.rmtree(run / CHECKPOINT_DIR)
    (run / MODEL_FILE).write_bytes(b"weights")  # weights without checkpoints (an imported run): evaluate them first
    with pytest.raises(ValueError, match="a run without scores of its own"):
        write_report(run)
    # stopped before its first checkpoint (a config, the command's record): evaluating it could not work
    (run / MODEL_FILE).unlink()
    (run / COMMAND_FILE).write_text(json.dumps([{"command_line": "audiotune train -o run"}]))
    with pytest.raises(ValueError, match=r"was stopped before it wrote anything to report \(no model.safetensors, "
                                         r"checkpoint or scores\); run that command again \(with --overwrite, where "
                                         r"it takes one\) \(it was: `audiotune train -o run`\)$"):
        write_report(run)


def test_bad_sources_and_columns_are_one_line_errors(trained_run: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    table = trained_run["split"] / "test.csv"
    assert main(["report", str(table)]) == 2  # a table, not a folder: said so, nothing written beside it
    assert f"error: {table}: a file, and not the table of `audiotune taps detect` or `taps align` (no " \
           f"test.report.json beside it); report a folder: a run, an evaluation" in capsys.readouterr().err
    unscored = tmp_path / "imported"  # a run that `audiotune import` made: a config and weights, no scores yet
    unscored.mkdir()
    shutil.copy(trained_run["run"] / "config.yaml", unscored / "config.yaml")
    assert main(["report", str(unscored)]) == 2
    err = capsys.readouterr().err
    assert "a run without scores of its own" in err and f"audiotune report {unscored / 'evaluate'}" in err
    out = tmp_path / "r.html"
    assert main(["report", str(trained_run["run"]), "-o", str(out), "--group_by", "speaker"]) == 2
    err = capsys.readouterr().err
    assert "--group_by speaker" in err and "no such column" in err and "split" in err
    assert "subject" in err and "expected_rate" not in err and "audio_unfound" not in err  # the table's own only
    assert main(["report", str(trained_run["run"]), "-o", str(out), "--split", "train"]) == 2
    assert "--split train" in capsys.readouterr().err
    assert main(["report", str(trained_run["run"]), "-o", str(out), "--clips", "-1"]) == 2
    assert "--clips -1" in capsys.readouterr().err and not out.exists()
    assert not out.exists()


def test_segments_are_played_as_read_and_placed_in_their_recording(trained_run: dict, tmp_path: Path) -> None:
    import numpy as np

    run = scores_of_run(trained_run, tmp_path / "run", data_split_root=str(tmp_path / "segments.csv"), prefix="")
    long = tmp_path / "long.wav"
    sf.write(long, np.random.default_rng(0).uniform(-0.3, 0.3, (3 * 8000, 2)), 8000)  # 3 s, two channels
    uids = sorted(pd.read_parquet(run / "predictions.parquet").query("split == 'test'")["uid"])
    pd.DataFrame({"uid": uids, "path": str(long), "subject": "fay", "offset": [0.5 * k for k in range(len(uids))],
                  "duration": 0.4, "channels": "1"}).to_csv(tmp_path / "segments.csv", index=False)
    page = read_report(write_report(run))
    assert page["audio"] > 0 and all(len(samples) == 6400 for _, samples, _ in page["clips"])  # 0.4 s at 16 kHz
    text = (run / "report.html").read_text()
    for uid, _, _ in page["clips"]:
        start = 0.5 * uids.index(uid)
        assert f"{start:.2f} s to {start + 0.4:.2f} s of long.wav, channels [1]" in text


def test_train_with_report_false_writes_none(trained_run: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main([*small_train_args(trained_run, run), "-e", "0", "--report", "False"]) == 0
    assert (run / "metrics.json").is_file() and not (run / "report.html").exists()


def test_a_table_that_moved_is_said_on_the_page(trained_run: dict, tmp_path: Path) -> None:
    run = scores_of_run(trained_run, tmp_path / "run", data_split_root=str(tmp_path / "moved"))
    page = read_report(write_report(run))
    assert page["audio"] == 0 and page["sections"] == RUN_SECTIONS
    assert "the scored table cannot be read" in (run / "report.html").read_text()
    assert read_report(write_report(run, data_split_root=str(trained_run["split"])))["audio"] > 0


def test_a_sweep_folder_gets_the_sweep_page(tmp_path: Path) -> None:
    import json

    pd.DataFrame({"trial": [0, 1], "state": ["complete", "complete"], "value": [0.8, 0.6],
                  "param_learning_rate": [1e-3, 1e-4], "run_dir": ["trial_0", "trial_1"]}).to_csv(
        tmp_path / "sweep_trials.csv", index=False)
    (tmp_path / "sweep_summary.json").write_text(json.dumps(
        {"metric": "val_loss", "goal": "minimize", "trials": {"complete": 2},
         "best": {"trial": 1, "value": 0.6, "params": {"learning_rate": 1e-4}}}))
    assert main(["report", str(tmp_path)]) == 0
    page = read_report(tmp_path / "report.html")
    assert page["sections"] == ["overview", "objective", "parameters", "trials"] and page["svg"] == 2


def test_an_evaluation_folder_records_what_it_scored_and_the_command_lines(trained_run: dict, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run, test_csv = trained_run["run"], trained_run["split"] / "test.csv"
    monkeypatch.chdir(trained_run["split"])  # relative paths, a folder outside the run: recorded absolute
    evaluation = tmp_path / "elsewhere"
    typed = ["evaluate", "--run", str(run), "-d", "test.csv", "-o", str(evaluation), "--report", "False"]
    assert main(typed) == 0
    assert json.loads((evaluation / "evaluation.json").read_text()) == {
        "run": str(run.resolve()), "run_relative": os.path.relpath(run.resolve(), evaluation.resolve()),
        "data_split_root": str(test_csv.resolve()), "data": {}}
    [command] = json.loads((evaluation / "command.json").read_text())
    assert command["argv"] == ["audiotune", *typed] and command["cwd"] == str(trained_run["split"])
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(evaluation)]) == 0  # neither -d nor --run: both recorded
    page = read_report(evaluation / "report.html")
    text = (evaluation / "report.html").read_text()
    predictions = pd.read_parquet(evaluation / "predictions.parquet")
    assert page["audio"] == expected_clips(predictions, "test", 5) > 0
    assert "The test split by &#x27;subject&#x27;" in text and "evaluation: elsewhere" in text
    config = text.split('<section id="config">')[1].split("</section>")[0]
    assert "this evaluation: the command line that wrote it" in config and "the run it scored" in config
    assert "audiotune evaluate --run" in config and "--report False" in config
    assert "audiotune train -i" in config and f"in {trained_run['split']}" in config
    (evaluation / "evaluation.json").unlink()  # a folder of an earlier release: the table is asked for
    assert main(["report", str(evaluation), "--run", str(run)]) == 0
    assert read_report(evaluation / "report.html")["audio"] == 0
    assert "give -d TABLE" in (evaluation / "report.html").read_text()


def test_an_evaluation_copied_with_its_run_reads_the_copy(trained_run: dict, tmp_path: Path) -> None:
    """A run and the evaluation inside it, copied elsewhere: the copy's page shows the copied run's config, not
    the config of the run the evaluation was first made from (which may have been resumed since)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run["run"], run)
    assert main(["evaluate", "--run", str(run), "-d", str(trained_run["split"] / "test.csv"), "-o",
                 str(run / "scored"), "--report", "False"]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "config.yaml").write_text((copy / "config.yaml").read_text() + "# the copy\n")
    assert main(["report", str(copy / "scored")]) == 0
    config = (copy / "scored" / "report.html").read_text().split('<section id="config">')[1]
    assert "# the copy" in config
    shutil.rmtree(copy)  # only the evaluation folder moved: the run it recorded is read
    shutil.copytree(run / "scored", tmp_path / "scored")
    assert main(["report", str(tmp_path / "scored")]) == 0
    assert "# the copy" not in (tmp_path / "scored" / "report.html").read_text()
    assert read_report(tmp_path / "scored" / "report.html")["audio"] > 0


def test_a_run_page_shows_the_command_that_trained_it(trained_run: dict) -> None:
    [command] = json.loads((trained_run["run"] / "command.json").read_text())
    assert command["argv"] == ["audiotune", *small_train_args(trained_run, trained_run["run"])]
    config = (trained_run["run"] / "report.html").read_text().split('<section id="config">')[1].split("</section>")[0]
    assert config.index("config.yaml (the whole") < config.index("this run: the command line that wrote it")
    assert "<details><summary>this run: the command line" in config  # collapsed, as the config is
    assert command["command_line"].replace("'", "&#x27;") in config


def test_a_pretraining_run_s_page_says_what_it_is_and_marks_the_epoch_it_kept(tmp_path: Path) -> None:
    """A pretraining run scores no split: its page says so (not that metrics.json is missing), lists its objective,
    steps, best loss and encoder, and marks the epoch of the best validation loss it kept, not the last."""
    run = tmp_path / "tapt"
    (run / "logs").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "objective": "tapt", "task": "tapt", "epochs_run": 3, "steps_run": 30,
        "history": {"val_loss": [4.5, 4.25, 4.75], "train_loss_epoch": [5.0, 4.5, 4.0]}, "best_val_loss": 4.25,
        "weights": "best validation loss (best.ckpt)", "outputs": ["encoder"]}))
    pd.DataFrame({"epoch": [0, 0, 1, 1, 2, 2], "step": [9, 9, 19, 19, 29, 29],
                  "train_loss_epoch": [5.0, None, 4.5, None, 4.0, None],
                  "val_loss": [None, 4.5, None, 4.25, None, 4.75]}).to_csv(run / "logs" / "metrics.csv", index=False)
    page = write_report(run).read_text()
    assert "no metrics.json" not in page and "The last epoch is kept" not in page
    assert "a pretraining run (tapt)" in page and "it wrote encoder" in page
    assert "Dashed line: the kept epoch (2)." in page
    assert re.search(r"steps_run</td><td[^>]*>30<", page) and re.search(r"best_val_loss</td><td[^>]*>4.25<", page)


def test_an_evaluation_stopped_while_writing_is_refused_until_it_is_run_again(
        trained_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """An evaluation stopped after its predictions but before metrics.json (written last) is not drawn as a page
    of finished scores: the report names the folder and the command to run again, which recovers it."""
    import audiotune.engine.evaluate as evaluate

    out = tmp_path / "eval"
    typed = ["evaluate", "--run", str(trained_run["run"]), "-d", str(trained_run["split"] / "test.csv"), "-o",
             str(out), "--report", "False"]
    assert main(typed) == 0
    written = evaluate.write_json

    def stopped(path: Path, value: object, *args: object, **kwargs: object) -> Path:
        if Path(path).name == "metrics.json":
            raise KeyboardInterrupt
        return written(path, value, *args, **kwargs)

    monkeypatch.setattr(evaluate, "write_json", stopped)
    assert main(typed) == 130
    assert (out / "predictions.parquet").is_file() and not (out / "metrics.json").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"audiotune report: error: {out}: scoring was stopped before it finished (predictions.parquet, no "
        f"metrics.json), so its scores are not complete; run the command that wrote it again: "
        f"`audiotune {shlex.join(typed)}`")
    assert not (out / "report.html").exists()
    monkeypatch.setattr(evaluate, "write_json", written)
    assert main(typed) == 0 and main(["report", str(out)]) == 0
    assert read_report(out / "report.html")["sections"] == RUN_SECTIONS


@pytest.mark.parametrize("command", ["cv", "sweep"])
def test_a_stopped_cv_or_sweep_and_its_run_stopped_while_scoring_say_to_run_the_command_again(
        tmp_path: Path, command: str, capsys: pytest.CaptureFixture) -> None:
    """A cross-validation or sweep killed before its summary, and its run killed after the weights but before the
    scores, are named as stopped, with the command line that goes on, not as folders report cannot read."""
    experiment = tmp_path / "exp"
    run = experiment / ("fold_1/run_1" if command == "cv" else "trial_0")
    (run / CHECKPOINT_DIR).mkdir(parents=True)
    (experiment / ("cv_config.yaml" if command == "cv" else "sweep.yaml")).write_text("version: 2\n")
    (run / CHECKPOINT_DIR / LAST_CHECKPOINT).write_bytes(b"checkpoint")
    (run / MODEL_FILE).write_bytes(b"weights")
    (run / CONFIG_FILE).write_text("version: 2\n")
    typed = [command, "-d", "split", "-l", "labels.txt", "-o", str(experiment), "-e", "5"]
    with invoked(typed):
        record_command(experiment)
        record_command(run)
    summary = "cv_summary.json" if command == "cv" else "sweep_summary.json"
    name = "cross-validation" if command == "cv" else "sweep"
    assert main(["report", str(experiment)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"audiotune report: error: {experiment}: a {name} stopped before it finished (no {summary}), so there is "
        f"nothing to report yet; run the same command again, which keeps its finished runs and goes on: "
        f"`audiotune {shlex.join(typed)}`")
    assert main(["report", str(run)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"audiotune report: error: {run}: training was stopped while scoring its weights (model.safetensors, no "
        f"metrics.json), so there is nothing to report yet; the same `{command}` command again resumes it (it was: "
        f"`audiotune {shlex.join(typed)}`)")
    assert not any(experiment.rglob("report.html"))


def test_clips_whose_audio_is_gone_say_why_and_keep_their_group(trained_run: dict, tmp_path: Path) -> None:
    """The run's audio moved away (a run folder copied to another machine): each wrong clip says its audio is not
    found and why, and the breakdown still groups every clip by its subject."""
    run = scores_of_run(trained_run, tmp_path / "copied", prefix=str(tmp_path / "gone"))
    text = write_report(run).read_text()
    cards = re.findall(r'<div class="clip" data-uid="([^"]+)">(.*?)</div>', text)
    assert cards and "<audio" not in text
    for uid, card in cards:
        assert f"its audio is not found: {tmp_path / 'gone' / uid / 'metadata.json'}" in card
    groups = text.split('<section id="groups">')[1].split("</section>")[0]
    assert "<td class=text>fay</td><td>4</td>" in groups and "(none)" not in groups


def test_a_linked_clips_fragment_ends_where_the_scoring_crop_ended_its_reading() -> None:
    """A clip over the size cap is linked to its source at the segment the model read: the crop of scored clips
    from the segment's start, where it shortened the segment (a file's length from its header)."""
    from audiotune.data.audio import Span
    from audiotune.engine.report import source_link

    url, text = source_link("/a/b.wav", Span(), crop=0.2, seconds=0.25)
    assert url == "file:///a/b.wav#t=0.000,0.200" and text == "/a/b.wav, 0.00 s to 0.20 s"
    assert source_link("/a/b.wav", Span(), crop=10.0, seconds=2.0) == ("file:///a/b.wav", "/a/b.wav")  # all read
    assert source_link("/a/b.wav", Span(1.0, 3.0), crop=2.0)[0].endswith("#t=1.000,3.000")  # cut to 2 s
    assert source_link("/a/b.wav", Span(1.0, 1.5), crop=2.0)[0].endswith("#t=1.000,2.500")  # shorter than the crop
    # its length unknown (a file in a bucket is not read): the crop ends the fragment, which a shorter file ends first
    assert source_link("/a/b.wav", Span(1.0), crop=2.0) == ("file:///a/b.wav#t=1.000,3.000",
                                                             "/a/b.wav, 1.00 s to at most 3.00 s")
    assert source_link("gs://b/c.wav", Span(), crop=10.0)[0].endswith("/b/c.wav#t=0.000,10.000")
    assert source_link("/a/b.wav", Span(1.0))[0].endswith("#t=1.000")  # no crop: to the end


def test_a_cv_stopped_after_a_rerun_asked_for_more_repeats_says_its_summary_is_of_fewer(tmp_path: Path) -> None:
    """The summary on disk is the earlier, finished one: the page says the cross-validation now asks for more and
    that the same command goes on, instead of drawing the old summary as the experiment's."""
    exp = tmp_path / "cv"
    exp.mkdir()
    (exp / "cv_summary.json").write_text(json.dumps({"folds": 2, "repeats": 1, "runs": 2}))
    (exp / "cv_config.yaml").write_text("source: table.csv\nrepeats: 3\n")
    text = write_report(exp).read_text()
    assert "this summary is of 1 repeat(s) per fold, and cv_config.yaml asks for 3" in text
    assert "run the same command again, which keeps its finished runs and goes on" in text
    (exp / "cv_config.yaml").write_text("source: table.csv\nrepeats: 1\n")
    assert "this summary is of" not in write_report(exp).read_text()


def test_the_options_of_a_runs_page_are_refused_for_a_page_without_them(tmp_path: Path) -> None:
    """A cross-validation's page takes --split and --clips but no breakdown by a column; a sweep's none: a page
    drawn without what was asked of it would look as if the option had been read."""
    exp = tmp_path / "cv"
    exp.mkdir()
    (exp / "cv_summary.json").write_text(json.dumps({"folds": 2, "repeats": 1, "runs": 2}))
    with pytest.raises(ValueError, match=r"^--group_by speaker: an option of a run's page .*; the page of a "
                                         r"cross-validation has none: leave --group_by out"):
        write_report(exp, group_by="speaker")
    write_report(exp, clips_per_class=2)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep_summary.json").write_text(json.dumps({"metric": "val_uar", "goal": "maximize", "trials": {}}))
    with pytest.raises(ValueError, match=r"^--clips 2: .* the page of a sweep \(each trial's run has its own page\)"):
        write_report(sweep, clips_per_class=2)
    assert write_report(sweep).is_file()


def test_a_page_without_a_subject_column_names_the_command_that_breaks_scores_down(trained_run: dict,
                                                                                  tmp_path: Path) -> None:
    """The page said "give --group_by COLUMN", which `evaluate` does not take: it names `audiotune report`."""
    table = pd.read_csv(trained_run["split"] / "test.csv").drop(columns="subject")
    table.to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "eval"
    assert main(["evaluate", "--run", str(trained_run["run"]), "-i", str(trained_run["prefix"]), "-d",
                 str(tmp_path / "test.csv"), "-o", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert f"`audiotune report {out} --group_by COLUMN` breaks the scores down by another" in page
