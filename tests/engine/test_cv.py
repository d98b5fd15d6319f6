"""audiotune cv: folds from tables, split folders and JSON split files; repeats; resume; the summary."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from conftest import SMALL_ECAPA, emotion_folds, tone

from audiotune.cli import main
from audiotune.config import HeadSpec, RunConfig, save_config
from audiotune.data.errors import DataError
from audiotune.data.folds import Fold, FoldOptions, build_folds, check_fold_files
from audiotune.data.json_splits import read_json_split
from audiotune.engine.cv_summary import (
    METRIC_KEYS,
    METRIC_RANGES,
    STATISTICS,
    fold_ensemble,
    summarise,
    summary,
    summary_table,
)
from audiotune.engine.evaluate import prediction_table
from audiotune.report.experiment_page import ExperimentReport, render_experiment


def test_statistics_of_a_folds_by_repeats_matrix() -> None:
    values = np.array([[0.8, 0.9], [0.6, 0.7], [1.0, 0.9]])
    result = summarise(values)
    fold_means = values.mean(axis=1)  # 0.85, 0.65, 0.95
    run_means = values.mean(axis=0)  # 0.8, 0.8333
    assert result["mean"] == pytest.approx(values.mean())
    assert result["fold_std"] == pytest.approx(np.std(fold_means, ddof=1))
    assert result["fold_median"] == pytest.approx(0.85)
    assert result["run_std"] == pytest.approx(np.std(run_means, ddof=1))
    assert result["run_median"] == pytest.approx(np.median(run_means))
    half = 4.302652729911275 * np.std(fold_means, ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert result["ci95"] == pytest.approx([values.mean() - half, values.mean() + half])
    assert result["n_runs"] == 6

    values[1, 0] = np.nan  # undefined in one run: averaged over the runs that define it
    assert summarise(values)["n_runs"] == 5
    assert summarise(values)["mean"] == pytest.approx(np.nanmean(values))
    fold_means = np.array([0.85, 0.7, 0.95])  # the interval's width and centre both come from the folds' means
    half = 4.302652729911275 * np.std(fold_means, ddof=1) / np.sqrt(3)
    assert summarise(values)["ci95"] == pytest.approx([fold_means.mean() - half, fold_means.mean() + half])
    single = summarise(np.array([[0.5], [0.7]]))
    assert single["run_std"] is None and single["fold_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_each_fold_has_its_mean_and_standard_deviation_over_its_repeats() -> None:
    """The emotion seed reported each held-out session as the mean +- std of its repeated runs: per_fold and
    per_fold_std (ddof 1; the seed's np.std had ddof 0) give them for every fold of one cv."""
    uar = {(1, 0): 0.70, (1, 1): 0.74, (1, 2): 0.69, (2, 0): 0.80, (2, 1): 0.78, (2, 2): None}
    folds = [Fold(1, {}), Fold(2, {})]
    results = [(folds[f - 1], r, r, {"test": {"n": 4, "uar": value, "accuracy": 0.5}}) for (f, r), value in uar.items()]
    result = summary(results, folds, 3)
    assert result["per_fold"]["test"]["fold_1"]["uar"] == pytest.approx(np.mean([0.70, 0.74, 0.69]))
    assert result["per_fold_std"]["test"]["fold_1"]["uar"] == pytest.approx(np.std([0.70, 0.74, 0.69], ddof=1))
    assert result["per_fold_std"]["test"]["fold_2"]["uar"] == pytest.approx(np.std([0.80, 0.78], ddof=1))
    assert result["per_fold_std"]["test"]["fold_1"]["accuracy"] == 0.0
    one_repeat = summary([(folds[0], 0, 0, {"test": {"n": 4, "uar": 0.7}})], folds[:1], 1)
    assert one_repeat["per_fold_std"]["test"] == {"fold_1": {"uar": None}}


def test_intervals_stay_within_what_the_metric_can_take() -> None:
    spread = np.array([[0.2], [0.95], [0.6]])  # three folds far apart: the t interval alone is about -0.3 .. 1.5
    unbounded = summarise(spread)["ci95"]
    assert unbounded[0] < 0 and unbounded[1] > 1
    assert summarise(spread, METRIC_RANGES["accuracy"])["ci95"] == [0.0, 1.0]
    assert summarise(-spread, METRIC_RANGES["ccc"])["ci95"][0] == -1.0
    close = summarise(np.array([[0.90], [0.95], [0.99]]), METRIC_RANGES["accuracy"])["ci95"]
    assert 0.8 < close[0] < 0.9 and close[1] == 1.0  # only the side past the bound moves
    assert summarise(np.array([[0.1], [0.5]]), METRIC_RANGES["mae"])["ci95"][0] == 0.0
    assert set(METRIC_RANGES) == set(METRIC_KEYS)


def test_several_heads_each_have_statistics_and_a_mean_over_other_heads_is_said() -> None:
    """The top-level metrics are means over heads; with a head undefined in one fold that mean is of other heads
    there, so each head's own statistics are given and a note says it."""
    def metrics(a: float, b: float | None) -> dict:
        heads = {"a": {"uar": a, "accuracy": a}, "b": {"uar": b, "accuracy": 0.5}}
        return {"test": {"n": 4, "uar": np.mean([v for v in (a, b) if v is not None]), "accuracy": (a + 0.5) / 2,
                         "heads": heads}}
    folds = [Fold(1, {}), Fold(2, {})]
    result = summary([(folds[0], 0, 0, metrics(0.8, 0.6)), (folds[1], 0, 0, metrics(0.6, None))], folds, 1)
    assert result["statistics"]["test"]["uar"]["mean"] == pytest.approx((0.7 + 0.6) / 2)  # a+b, then a alone
    assert result["heads"]["test"]["a"]["uar"]["mean"] == pytest.approx(0.7)
    assert result["heads"]["test"]["b"]["uar"]["mean"] == pytest.approx(0.6)
    assert result["heads"]["test"]["b"]["uar"]["n_runs"] == 1
    assert result["heads"]["test"]["b"]["accuracy"]["mean"] == pytest.approx(0.5)
    assert result["notes"] == ["test uar: the mean over heads is of other heads in some runs than in others (a; a, "
                               "b: a head's value is undefined in some runs); each head's own statistics are "
                               "under heads"]
    table = summary_table(result)
    assert table[(table["head"] == "b") & (table["metric"] == "uar")]["mean"].tolist() == pytest.approx([0.6])
    assert table[(table["head"] == "") & (table["metric"] == "uar")]["mean"].tolist() == pytest.approx([0.65])

    page = render_experiment(ExperimentReport("cv", "exp", result))
    statistics = page.split('<section id="statistics">')[1].split("</section>")[0]
    assert "each head&#x27;s own statistics are under heads" in statistics
    assert statistics.count("<tr>") == 1 + 2 + 2 * 2  # the header, the means over heads, each head's two metrics

    one_head = summary([(folds[0], 0, 0, {"test": {"n": 4, "uar": 0.8, "heads": {"a": {"uar": 0.8}}}})], folds[:1], 1)
    assert "heads" not in one_head and "notes" not in one_head  # the top level is that head


def test_confusion_matrices_of_folds_with_other_classes_add_up_by_class_name() -> None:
    """Each run's head has the classes of its fold's training rows: a fold without 'b' but with 'c' adds its counts
    to 'a' and 'c', not to the cells of the first fold's 'b'; a third class is a row and a column of its own."""
    def run(classes: list[str], matrix: list[list[int]]) -> dict:
        head = {"classes": classes, "confusion_matrix": matrix, "uar": 0.5}
        return {"test": {"n": int(np.sum(matrix)), "uar": 0.5, "heads": {"label": head}}}
    folds = [Fold(1, {}), Fold(2, {}), Fold(3, {})]
    runs = [(folds[0], 0, 0, run(["a", "b"], [[3, 1], [0, 2]])), (folds[1], 0, 0, run(["a", "c"], [[4, 0], [2, 1]])),
            (folds[2], 0, 0, run(["a", "b", "c"], [[1, 0, 0], [0, 1, 0], [0, 1, 1]]))]
    summed = summary(runs, folds, 1)["confusion_matrix"]["test"]["label"]
    assert summed == {"classes": ["a", "b", "c"], "matrix": [[8, 1, 0], [0, 3, 0], [2, 1, 2]]}


def write_json_split(path: Path, train: dict, val: dict, test: dict) -> None:
    path.write_text(json.dumps({"Train": train, "Val": val, "Test": test}))


def test_json_split_files_are_folds_with_labels_and_votes(tmp_path: Path) -> None:
    audio = tmp_path / "wavs"
    audio.mkdir()
    folds = tmp_path / "folds"
    folds.mkdir()
    write_json_split(folds / "fold2.json", {"a.wav": "sad", "b.wav": {"sad": 1, "angry": 3}}, {},
                     {"c.wav": "angry"})
    write_json_split(folds / "fold10.json", {"c.wav": "angry"}, {"a.wav": "sad"}, {"b.wav": "sad"})
    built = build_folds(str(folds), FoldOptions(audio_dir=str(audio)))
    assert [f.info["source"] for f in built] == [str(folds / "fold2.json"), str(folds / "fold10.json")]
    # an empty Val: no validation, every Train utterance trains (the recipe's meaning)
    assert sorted(built[0].tables) == ["test", "train"] and list(built[0].tables["train"].index) == ["a.wav", "b.wav"]
    assert "empty Val" in built[0].info["validation"]
    built = build_folds(str(folds), FoldOptions(audio_dir=str(audio), val_group="next"))
    first = built[0].tables
    # --val_group next: the next fold's test rows validate, taken out of training
    assert list(first["val"].index) == ["b.wav"] and list(first["train"].index) == ["a.wav"]
    assert first["val"].loc["b.wav", "label"] == "sad"  # as the next file's Test says
    assert first["train"].loc["a.wav", "path"] == str((audio / "a.wav").resolve())
    votes = read_json_split(folds / "fold2.json", audio)["train"]
    assert votes.loc["b.wav", "label"] == "angry" and votes.loc["b.wav", "label=angry"] == pytest.approx(0.75)
    assert built[1].info["validation"] == "from the source"
    (folds / "bad.json").write_text(json.dumps({"Train": {}, "Test": {"a.wav": "sad"}, "Dev": {}}))
    with pytest.raises(DataError, match="bad.json: unknown split 'Dev'"):
        build_folds(str(folds), FoldOptions())


def test_json_label_names_the_column_and_the_head_of_the_json_files_labels(tmp_path: Path) -> None:
    from audiotune.cli import build_parser
    from audiotune.cli.values import options_of
    from audiotune.data.json_splits import json_label_groups

    audio, folds = emotion_folds(tmp_path, sessions=2, per_session=2)
    heads = {}
    for flags in ([], ["--json_label", "emotion"]):
        args = build_parser().parse_args(["cv", "-d", str(folds), "--audio_dir", str(audio), "-o",
                                          str(tmp_path / "cv"), *flags])
        built = build_folds(str(folds), options_of(FoldOptions, args))
        train = built[0].tables["train"]
        assert train[flags[-1] if flags else "label"].tolist() == ["sad", "happy"]
        tables = {f"{fold.name}/{k}": t for fold in built for k, t in fold.tables.items()}
        heads[tuple(flags)] = [g.columns for g in json_label_groups(tables, str(folds), args.json_label)]
    assert heads == {(): [["label"]], ("--json_label", "emotion"): [["emotion"]]}


def test_grouped_folds_and_drawn_validation(tmp_path: Path) -> None:
    table = small_table(tmp_path, subjects=("ann", "bob", "cat", "dan", "eve", "fay"))
    built = build_folds(str(table), FoldOptions(folds=3, stratify="pitch", val_group="draw"), seed=1, val_size=1)
    assert len(built) == 3
    tested = [set(f.tables["test"]["subject"]) for f in built]
    assert set().union(*tested) == {"ann", "bob", "cat", "dan", "eve", "fay"} and sum(map(len, tested)) == 6
    for fold in built:
        groups = [set(fold.tables[s]["subject"]) for s in ("train", "val", "test")]
        assert len(groups[1]) == 1 and not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        assert set(fold.tables["test"]["pitch"]) == {"low", "high"}  # stratified
    with pytest.raises(DataError, match="--stratify needs --folds K"):
        build_folds(str(table), FoldOptions(stratify="pitch"))


def test_a_fold_scored_by_its_averaged_repeats(tmp_path: Path) -> None:
    """Each run gets a different clip wrong with some confidence; their mean score gets every clip right."""
    head = HeadSpec("word", "categorical", ["word"], classes=["yes", "no"])
    targets = np.array([[1.0, 0.0]] * 3)
    yes = {1: [0.9, 0.4, 0.4], 2: [0.4, 0.9, 0.9]}  # run 1: 1 of 3 right, run 2: 2 of 3
    fold = Fold(1, {})
    for run, p in yes.items():
        run_dir = tmp_path / fold.name / f"run_{run}"
        run_dir.mkdir(parents=True)
        config = RunConfig()
        config.heads = [head]
        save_config(config, run_dir / "config.yaml")
        scores = np.stack([p, 1 - np.asarray(p)], axis=1)
        order = [0, 1, 2] if run == 1 else [2, 0, 1]  # a run may list the clips in another order
        table = prediction_table([f"c{i}" for i in order], "test", scores[order], targets[order], [head])
        table.to_parquet(run_dir / "predictions.parquet")
    metrics, averaged = fold_ensemble(tmp_path, fold, 2)
    assert metrics["test"]["accuracy"] == 1.0 and "val" not in metrics
    assert averaged["uid"].tolist() == ["c0", "c1", "c2"]
    assert averaged["score:word=yes"].tolist() == pytest.approx([0.65, 0.65, 0.65])

    wrong = pd.read_parquet(tmp_path / "fold_1" / "run_2" / "predictions.parquet").iloc[:2]
    wrong.to_parquet(tmp_path / "fold_1" / "run_2" / "predictions.parquet")
    with pytest.raises(ValueError, match="run_2/predictions.parquet: scores other test clips"):
        fold_ensemble(tmp_path, fold, 2)


def small_table(root: Path, subjects: tuple[str, ...] = ("ann", "bob", "cat"), clips: int = 4) -> Path:
    audio = root / "audio"
    audio.mkdir(parents=True)
    rows = []
    for s, subject in enumerate(subjects):
        for k in range(clips):
            path = audio / f"{subject}{k}.wav"
            sf.write(path, tone(300 + 500 * (k % 2), 0.5, 16000, seed=10 * s + k), 16000)
            rows.append({"uid": f"{subject}{k}", "path": str(path), "subject": subject,
                         "pitch": ["low", "high"][k % 2]})
    table = root / "table.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    (root / "labels.txt").write_text("pitch\n")
    return table


def run_cv(root: Path, table: Path, out: Path, *extra: str) -> int:
    return main(["cv", "-d", str(table), "-l", str(root / "labels.txt"), "-o", str(out), "--group", "subject",
                 "--model", "ecapa_tdnn", *SMALL_ECAPA, "-e", "1", "-bs", "4", "--clip_length", "0", *extra])


def test_an_empty_stratify_cell_is_named_before_anything_is_written(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    table = small_table(tmp_path)
    rows = pd.read_csv(table)
    rows.loc[5, "pitch"] = None  # line 7 of the file
    rows.to_csv(table, index=False)
    assert run_cv(tmp_path, table, tmp_path / "cv", "--folds", "3", "--stratify", "pitch") == 2
    err = capsys.readouterr().err
    assert f"{table}: empty 'pitch' cell on 1 line(s) [7]; --stratify needs a class" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "cv").exists()


def test_folds_without_validation_train_on_every_other_group(tmp_path: Path) -> None:
    table = small_table(tmp_path)
    built = build_folds(str(table), FoldOptions(val_group="none"))
    assert [sorted(f.tables) for f in built] == [["test", "train"]] * 3
    assert [sorted(set(f.tables["train"]["subject"])) for f in built] == [["bob", "cat"], ["ann", "cat"],
                                                                          ["ann", "bob"]]
    assert "none" in built[0].info["validation"]
    with_val = build_folds(str(table), FoldOptions())
    assert sorted(set(with_val[0].tables["train"]["subject"])) == ["cat"]


@pytest.mark.slow
def test_cv_without_validation_scores_the_last_epoch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = small_table(tmp_path)
    out = tmp_path / "cv"
    assert run_cv(tmp_path, table, out, "--val_group", "none", "-e", "2") == 0
    summary = json.loads((out / "cv_summary.json").read_text())
    assert set(summary["statistics"]) == {"test"} and summary["runs"] == 3
    assert not (out / "fold_1" / "val.csv").exists() and len(pd.read_csv(out / "fold_1" / "train.csv")) == 8
    metrics = json.loads((out / "fold_1" / "run_1" / "metrics.json").read_text())
    assert "val" not in metrics and metrics["epochs_run"] == 2
    assert not (out / "fold_1" / "run_1" / "checkpoints" / "best.ckpt").exists()


@pytest.mark.slow
def test_json_folds_with_an_empty_val_train_on_every_training_speaker_and_keep_the_last_epoch(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import load_file

    audio, folds = emotion_folds(tmp_path)
    out = tmp_path / "cv"
    assert main(["cv", "-d", str(folds), "--audio_dir", str(audio), "-o", str(out), "--model", "ecapa_tdnn",
                 *SMALL_ECAPA, "-e", "2", "-bs", "4", "--clip_length", "0"]) == 0
    train_rows = list(json.loads((folds / "label_1.json").read_text())["Train"])
    assert pd.read_csv(out / "fold_1" / "train.csv")["uid"].tolist() == train_rows  # both other sessions
    assert not (out / "fold_1" / "val.csv").exists()
    assert "empty Val" in json.loads((out / "folds.json").read_text())["fold_1"]["validation"]
    run = out / "fold_1" / "run_1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert "val" not in metrics and metrics["train_clips"] == len(train_rows) == 8
    assert metrics["validation"] == "none: the last epoch is kept" and metrics["weights"] == "last epoch"
    assert metrics["epochs_run"] == 2 and not (run / "checkpoints" / "best.ckpt").exists()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1  # the second epoch, counted from 0
    saved = load_file(run / "model.safetensors")
    assert all(torch.equal(saved[name], last["state_dict"][f"model.{name}"]) for name in saved)
    summary = json.loads((out / "cv_summary.json").read_text())
    assert set(summary["statistics"]) == {"test"} and "empty Val" in summary["validation"]["fold_2"]
    assert {"micro_f1", "f1_of_macro_pr"} <= set(summary["statistics"]["test"])
    # validation by --monitor cannot be asked of folds without one
    assert main(["cv", "-d", str(folds), "--audio_dir", str(audio), "-o", str(tmp_path / "monitored"),
                 "--model", "ecapa_tdnn", *SMALL_ECAPA, "--monitor", "uar"]) == 2
    assert "--monitor need(s) validation" in capsys.readouterr().err


@pytest.mark.slow
def test_cv_writes_every_run_and_a_summary_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = small_table(tmp_path)
    out = tmp_path / "cv"
    assert run_cv(tmp_path, table, out, "--repeats", "2", "--seed", "3") == 0
    printed = capsys.readouterr().out
    assert "3 folds x 2 repeat(s), test:" in printed and "accuracy" in printed
    assert "each fold's 2 runs averaged (ensemble): accuracy" in printed
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["folds"] == 3 and summary["repeats"] == 2 and summary["runs"] == 6
    for split in ("val", "test"):
        for metric in ("accuracy", "uar", "macro_f1", "weighted_f1", "micro_f1"):
            assert set(summary["statistics"][split][metric]) == set(STATISTICS)
    accuracy = summary["statistics"]["test"]["accuracy"]
    assert accuracy["n_runs"] == 6 and accuracy["run_std"] is not None and len(accuracy["ci95"]) == 2
    assert set(summary["per_fold"]["test"]) == {"fold_1", "fold_2", "fold_3"}
    assert np.asarray(summary["confusion_matrix"]["test"]["pitch"]["matrix"]).sum() == 6 * 4
    assert (out / "plots" / "confusion_test_pitch.png").is_file()
    ensemble = summary["ensemble"]  # each fold scored by its two runs' mean scores
    assert ensemble["runs_averaged"] == 2 and set(ensemble["per_fold"]["test"]) == {"fold_1", "fold_2", "fold_3"}
    assert ensemble["statistics"]["test"]["accuracy"]["n_runs"] == 3
    assert np.asarray(ensemble["confusion_matrix"]["test"]["pitch"]["matrix"]).sum() == 3 * 4
    averaged = pd.read_parquet(out / "fold_2" / "ensemble_predictions.parquet")
    runs_scores = [pd.read_parquet(out / "fold_2" / f"run_{r}" / "predictions.parquet") for r in (1, 2)]
    test = averaged[averaged["split"] == "test"]
    expected = np.mean([t[t["split"] == "test"]["score:pitch=high"].to_numpy() for t in runs_scores], axis=0)
    assert test["score:pitch=high"].to_numpy() == pytest.approx(expected)
    assert (out / "plots" / "confusion_ensemble_test_pitch.png").is_file()
    summary_csv = pd.read_csv(out / "cv_summary.csv")
    assert {"mean", "fold_std", "fold_median", "run_std", "run_median", "ci95_low", "ci95_high"} <= set(summary_csv)
    assert set(summary_csv["scores"]) == {"runs", "ensemble"}
    runs = pd.read_csv(out / "cv_runs.csv")
    assert sorted(set(runs["seed"])) == [3, 4] and len(runs) == 12
    folds = json.loads((out / "folds.json").read_text())
    assert folds["fold_1"]["test_groups"] == ["ann"] and folds["fold_1"]["val_groups"] == ["bob"]
    assert folds["fold_1"]["train_groups"] == ["cat"]
    assert json.loads((out / "fold_2" / "run_2" / "metrics.json").read_text())["test"]["n"] == 4

    # a run killed part-way is trained again; finished runs are kept as they are
    kept = (out / "fold_1" / "run_1" / "metrics.json").stat().st_mtime_ns
    (out / "fold_3" / "run_2" / "metrics.json").unlink()
    assert run_cv(tmp_path, table, out, "--repeats", "2", "--seed", "3") == 0
    assert (out / "fold_1" / "run_1" / "metrics.json").stat().st_mtime_ns == kept
    assert (out / "fold_3" / "run_2" / "metrics.json").is_file()
    assert json.loads((out / "cv_summary.json").read_text())["runs"] == 6

    # unreadable predictions: the runs' summary is still written, the ensemble says why it is missing
    predictions = out / "fold_2" / "run_1" / "predictions.parquet"
    kept_predictions = predictions.read_bytes()
    predictions.write_bytes(b"not parquet")
    capsys.readouterr()
    assert run_cv(tmp_path, table, out, "--repeats", "2", "--seed", "3") == 0
    summary = json.loads((out / "cv_summary.json").read_text())
    assert "fold_2/run_1/predictions.parquet" in summary["ensemble"]["error"] and summary["runs"] == 6
    assert "no ensemble scores" in capsys.readouterr().out
    predictions.write_bytes(kept_predictions)

    # more repeats: the finished runs are kept and a third run is added to each fold
    assert run_cv(tmp_path, table, out, "--repeats", "3", "--seed", "3") == 0
    assert (out / "fold_1" / "run_1" / "metrics.json").stat().st_mtime_ns == kept
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["runs"] == 9 and summary["ensemble"]["runs_averaged"] == 3
    assert sorted(set(pd.read_csv(out / "cv_runs.csv")["seed"])) == [3, 4, 5]

    # a record from before an option existed: the option counts as its default, which keeps the old behaviour
    record = yaml.safe_load((out / "cv_config.yaml").read_text())
    del record["config"]["features"]["vtlp"], record["config"]["train"]["monitor"]
    (out / "cv_config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    assert run_cv(tmp_path, table, out, "--repeats", "3", "--seed", "3") == 0

    # the directory belongs to this cross-validation
    capsys.readouterr()
    assert run_cv(tmp_path, table, out, "--repeats", "3", "--seed", "3", "-lr", "0.1") == 2
    assert "other settings (differs in config.train.learning_rate)" in capsys.readouterr().err
    assert run_cv(tmp_path, table, out, "--repeats", "3", "--seed", "3", "--vtlp", "0.5") == 2
    assert "differs in config.features.vtlp" in capsys.readouterr().err
    assert run_cv(tmp_path, table, out, "--repeats", "2", "--seed", "3") == 2  # fewer repeats than it holds
    assert "other settings" in capsys.readouterr().err


def test_cv_inputs_are_checked_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = small_table(tmp_path, subjects=("ann", "bob"))
    out = tmp_path / "cv"
    assert run_cv(tmp_path, table, out, "--group", "speaker") == 2
    assert "no 'speaker' column" in capsys.readouterr().err
    assert run_cv(tmp_path, table, out) == 2  # two groups: validation leaves no training rows
    assert "no training rows left" in capsys.readouterr().err
    assert run_cv(tmp_path, table, out, "--repeats", "0") == 2
    assert run_cv(tmp_path, table, out, "--val_group", "none", "--patience", "3") == 2
    assert "fold_1" in (err := capsys.readouterr().err) and "--patience need(s) validation" in err
    assert not out.exists()


@pytest.mark.slow
def test_interrupted_cv_keeps_finished_runs_and_trains_none_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    import audiotune.engine.cv as cv_module

    table = small_table(tmp_path)
    out = tmp_path / "cv"
    real, finished = cv_module.train, []

    def interrupt_at(call: int):
        calls = []

        def train(config):
            calls.append(config.exp_dir)
            if len(calls) == call:
                raise KeyboardInterrupt  # Ctrl-C as this run starts
            result = real(config)
            finished.append(config.exp_dir)
            return result
        return train

    for call in (2, 3, 1):  # 3 folds x 2 repeats: stopped after 1 run, then after 2 more, then at once
        monkeypatch.setattr(cv_module, "train", interrupt_at(call))
        assert run_cv(tmp_path, table, out, "--repeats", "2") == 130
        assert "finished runs are kept" in capsys.readouterr().err
        assert out.is_dir()
        assert all((Path(run) / "metrics.json").is_file() for run in finished)
    assert len(finished) == 3
    monkeypatch.setattr(cv_module, "train", interrupt_at(0))
    assert run_cv(tmp_path, table, out, "--repeats", "2") == 0
    assert len(finished) == 6 and len(set(finished)) == 6  # every run trained once
    assert json.loads((out / "cv_summary.json").read_text())["runs"] == 6


def test_every_folds_labels_are_checked_before_the_first_run_trains(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    table = small_table(tmp_path)
    rows = pd.read_csv(table)
    rows.loc[rows["uid"] == "cat0", "pitch"] = "mid"  # only cat has it: the fold testing on cat cannot score it
    rows.to_csv(table, index=False)
    out = tmp_path / "cv"
    assert run_cv(tmp_path, table, out, "--val_group", "none") == 2
    err = capsys.readouterr().err
    assert "fold_3: " in err and "classes ['mid'] not seen in training" in err
    assert not out.exists()  # nothing trained, nothing kept


def test_cv_refuses_a_validation_share_its_folds_would_not_use(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The flag is refused as it is parsed (tests/cli/test_help.py); a --config file's value before anything runs."""
    table = small_table(tmp_path)
    config = tmp_path / "share.yaml"
    config.write_text("train:\n  val_share: 0.2\n")
    assert run_cv(tmp_path, table, tmp_path / "cv", "--config", str(config)) == 2
    assert "--val_share 0.2: cv folds take their validation from --val_group" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()


def test_a_cv_made_with_options_refused_since_goes_on_with_its_command_line(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    """A cross-validation whose record holds ECAPA-TDNN's -pm max and --weighted true (taken before they were refused:
    they did nothing) is run again with the same flags: its finished runs are kept, a missing one trains as without
    them, and the summary is written again; a new folder with them is refused before anything is written."""
    table = small_table(tmp_path)
    out = tmp_path / "cv"
    two_folds = ("--folds", "2", "--val_group", "none")
    assert run_cv(tmp_path, table, out, *two_folds) == 0
    record = yaml.safe_load((out / "cv_config.yaml").read_text())  # as the earlier release recorded it
    record["config"]["classifier"].update(pooling_mode="max", weighted=True)
    (out / "cv_config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    kept = (out / "fold_1" / "run_1" / "metrics.json").stat().st_mtime_ns
    made = pd.read_parquet(out / "fold_2" / "run_1" / "predictions.parquet")
    shutil.rmtree(out / "fold_2" / "run_1")
    (out / "cv_summary.json").unlink()
    assert run_cv(tmp_path, table, out, *two_folds, "-pm", "max", "--weighted", "true") == 0
    assert (out / "fold_1" / "run_1" / "metrics.json").stat().st_mtime_ns == kept
    remade = pd.read_parquet(out / "fold_2" / "run_1" / "predictions.parquet")
    scores = [column for column in made if column.startswith("score:")]
    np.testing.assert_allclose(remade[scores].to_numpy(), made[scores].to_numpy(), atol=1e-5)
    assert json.loads((out / "cv_summary.json").read_text())["runs"] == 2
    capsys.readouterr()
    assert run_cv(tmp_path, table, tmp_path / "new", *two_folds, "-pm", "max") == 2
    assert "--pooling_mode max: --model ecapa_tdnn's hidden state" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_cv_made_with_head_options_refused_since_goes_on_resuming_and_restarting_its_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    """A cross-validation whose records hold --labeling_method hard and --standardize_targets false for a label file
    without soft or regression heads (taken before they were refused: they did nothing) is run again with the same
    flags: a run stopped after its checkpoint resumes with its recorded values, a missing run trains with them at
    their defaults (said once), and a run of that kind resumes in turn; a new folder with them is refused before
    anything is written."""
    table = small_table(tmp_path)
    out = tmp_path / "cv"
    args = ("--folds", "2", "--val_group", "none")
    earlier = {"labeling_method": "hard", "standardize_targets": False}
    flags = ("--labeling_method", "hard", "--standardize_targets", "false")
    assert run_cv(tmp_path, table, out, *args) == 0
    record = yaml.safe_load((out / "cv_config.yaml").read_text())  # as the earlier release recorded it
    record["config"]["train"].update(earlier)
    (out / "cv_config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    for run in ("fold_1", "fold_2"):
        made = yaml.safe_load((out / run / "run_1" / "config.yaml").read_text())
        made["train"].update(earlier)
        (out / run / "run_1" / "config.yaml").write_text(yaml.safe_dump(made, sort_keys=False))
    (out / "fold_1" / "run_1" / "metrics.json").unlink()  # stopped after its last checkpoint
    shutil.rmtree(out / "fold_2" / "run_1")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_cv(tmp_path, table, out, *args, *flags) == 0
    said = caplog.text
    assert f"{out / 'fold_1' / 'run_1'}: resuming from its last checkpoint" in said
    resumed = yaml.safe_load((out / "fold_1" / "run_1" / "config.yaml").read_text())["train"]
    assert {name: resumed[name] for name in earlier} == earlier
    restarted = yaml.safe_load((out / "fold_2" / "run_1" / "config.yaml").read_text())["train"]
    assert (restarted["labeling_method"], restarted["standardize_targets"]) == ("distribution", True)
    lines = [line for line in said.splitlines() if "--labeling_method hard" in line]
    assert len(lines) == 1 and f"{out / 'fold_2' / 'run_1'} starts with what does nothing here" in lines[0], said
    assert (f"--labeling_method hard: acts only on soft (vote) heads, and {tmp_path / 'labels.txt'} has none / "
            f"--standardize_targets false: acts only on regression heads") in lines[0]
    assert json.loads((out / "cv_summary.json").read_text())["runs"] == 2

    (out / "fold_2" / "run_1" / "metrics.json").unlink()  # the run started with the defaults resumes as well
    assert run_cv(tmp_path, table, out, *args, *flags) == 0
    assert (out / "fold_2" / "run_1" / "metrics.json").is_file()

    capsys.readouterr()
    assert run_cv(tmp_path, table, tmp_path / "new", *args, "--labeling_method", "hard") == 2
    assert "--labeling_method hard: acts only on soft (vote) heads" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_rerun_whose_source_makes_fewer_folds_or_splits_is_refused(tmp_path: Path) -> None:
    """A fold file removed from the source between two runs of one experiment: its finished fold would drop out of
    the mean; a fold that lost its val split was trained on other inputs. Both refused, naming the folder or file."""
    exp = tmp_path / "cv"
    files = {exp / f"fold_{k}" / f"{split}.csv": f"uid\n{k}{split}\n".encode()
             for k in (1, 2, 3) for split in ("train", "test")}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (exp / "fold_3" / "run_1").mkdir()
    check_fold_files(files, exp)  # the same folds again
    fewer = {path: data for path, data in files.items() if path.parent.name != "fold_3"}
    with pytest.raises(DataError, match=rf"^{exp / 'fold_3'}: a fold of this experiment that its source no longer "
                                        r"makes \(it makes 2\); its runs would drop out of the mean"):
        check_fold_files(fewer, exp)
    check_fold_files(files, tmp_path / "new")  # no folder there yet
    (exp / "fold_2" / "val.csv").write_text("uid\nv\n")
    with pytest.raises(DataError, match=rf"^{exp / 'fold_2' / 'val.csv'}: differs from the fold this source makes"):
        check_fold_files(files, exp)


def test_a_cv_into_a_bucket_stopped_keeps_its_finished_runs_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture, gcs) -> None:
    """A stopped cv says its finished runs are kept: in a bucket they were not (its folder goes up when it finishes).
    They go up when it stops too, and the same command goes on from them."""
    from conftest import BUCKET

    import audiotune.engine.cv as cv_module

    table = small_table(tmp_path)
    url = f"gs://{BUCKET}/exp/cv"
    real, runs = cv_module.train, []

    def stopped_in_the_second_run(config: RunConfig, **kwargs: object) -> dict:
        if runs:
            raise KeyboardInterrupt
        runs.append(Path(config.exp_dir).relative_to(Path(config.exp_dir).parents[1]).as_posix())
        return real(config, **kwargs)

    monkeypatch.setattr(cv_module, "train", stopped_in_the_second_run)
    assert run_cv(tmp_path, table, url, "--folds", "3") == 130
    assert "finished runs are kept" in capsys.readouterr().err
    assert runs == ["fold_1/run_1"] and gcs.fs().isfile(f"{BUCKET}/exp/cv/fold_1/run_1/metrics.json")
    first = gcs.fs().cat_file(f"{BUCKET}/exp/cv/fold_1/run_1/metrics.json")
    monkeypatch.setattr(cv_module, "train", real)
    assert run_cv(tmp_path, table, url, "--folds", "3") == 0
    assert json.loads(gcs.fs().cat_file(f"{BUCKET}/exp/cv/cv_summary.json"))["runs"] == 3
    assert gcs.fs().cat_file(f"{BUCKET}/exp/cv/fold_1/run_1/metrics.json") == first  # kept, not trained again
