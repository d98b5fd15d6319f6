"""`audiotune vertex results`: the trials of a finished tuning job's description (as the API's own types print
it), best first."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import VERTEX_COMMAND, VERTEX_SPACE, api_message
from google.cloud.aiplatform_v1.types import HyperparameterTuningJob
from google.protobuf import json_format

from audiotune import vertex_results
from audiotune.cli import main


def _trial(number: int, state: str, values: tuple, uar: float | None = None, reason: str = "") -> dict:
    names = ("learning_rate", "layer", "clf_bottleneck", "pooling_mode")
    trial = {"id": str(number), "state": state, "startTime": "2026-05-01T10:00:00Z",
             "parameters": [{"parameterId": n, "value": v} for n, v in zip(names, values)]}
    if uar is not None:
        trial["finalMeasurement"] = {"stepCount": "4", "metrics": [{"metricId": "val_uar", "value": uar}]}
    if state != "ACTIVE":
        trial["endTime"] = "2026-05-01T10:20:30.500Z"
    if reason:
        trial["infeasibleReason"] = reason
    return trial


def _finished_job(tmp_path: Path, goal: str = "maximize") -> Path:
    """What `gcloud ai hp-tuning-jobs describe --format json` prints for a job that `vertex tune` wrote: the spec
    with the service's fields and five trials (one infeasible, one still running), through the API's own types."""
    (tmp_path / "space.yaml").write_text(VERTEX_SPACE)
    spec = tmp_path / "tune.json"
    assert main(["vertex", "tune", "--name", "w2v2-sweep", "--image", "img", "--space", str(tmp_path / "space.yaml"),
                 "--trials", "5", "--out", str(spec), "--", *VERTEX_COMMAND[:-1], "gs://b/sweep/trial_{trial}"]) == 0
    written = json.loads(spec.read_text())
    written["studySpec"]["metrics"][0]["goal"] = goal.upper()  # a job whose study minimises (made elsewhere)
    job = {**written, "name": "projects/1/locations/europe-west4/hyperparameterTuningJobs/9",
           "state": "JOB_STATE_SUCCEEDED", "createTime": "2026-05-01T09:59:00Z", "trials": [
               _trial(1, "SUCCEEDED", (1e-4, 6.0, 300.0, "mean"), 0.62),
               _trial(2, "SUCCEEDED", (3e-4, 9.0, 768.0, "max"), 0.71),
               _trial(3, "INFEASIBLE", (1e-3, 12.0, 700.0, "mean"), reason="train exited with status 2"),
               _trial(4, "ACTIVE", (2e-5, 3.0, 300.0, "max")),
               _trial(5, "SUCCEEDED", (5e-5, 0.0, 700.0, "mean"), 0.55)]}
    described = json_format.MessageToJson(api_message(job, HyperparameterTuningJob))  # camelCase, enum names
    path = tmp_path / "job.json"
    path.write_text(described)
    return path


def test_results_table_of_a_finished_tuning_job(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    job = _finished_job(tmp_path)
    capsys.readouterr()
    assert main(["vertex", "results", str(job), "--out", str(tmp_path / "trials.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (f"{tmp_path / 'trials.csv'}: 5 trials (3 succeeded, 1 infeasible, 1 active), best first by "
                          "val_uar (maximize)")
    assert printed[1] == ("best trial 2: val_uar 0.71 (learning_rate=0.0003, layer=9, clf_bottleneck=768, "
                          "pooling_mode=max); run gs://b/sweep/trial_2")
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials.columns) == ["trial", "state", "learning_rate", "layer", "clf_bottleneck", "pooling_mode",
                                    "val_uar", "steps", "seconds", "infeasible_reason", "run"]
    assert trials["trial"].tolist() == [2, 1, 5, 3, 4]  # by val_uar, then the trials without it
    assert trials["layer"].tolist() == [9, 6, 0, 12, 3] and trials["pooling_mode"][0] == "max"
    assert trials["seconds"][0] == 1230.5 and trials["steps"][0] == 4
    assert trials["infeasible_reason"][3] == "train exited with status 2"
    assert trials["run"][1] == "gs://b/sweep/trial_1"

    assert main(["vertex", "results", str(_finished_job(tmp_path, "minimize")), "--out",
                 str(tmp_path / "trials.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "trials.parquet")["trial"].tolist() == [5, 1, 2, 3, 4]
    assert "best trial 5: val_uar 0.55" in capsys.readouterr().out


def test_results_of_a_job_without_a_finished_trial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    job = json.loads(_finished_job(tmp_path).read_text())
    job["trials"] = [t for t in job["trials"] if "finalMeasurement" not in t]
    (tmp_path / "running.json").write_text(json.dumps(job))
    assert main(["vertex", "results", str(tmp_path / "running.json"), "--out", str(tmp_path / "t.csv")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no trial reported val_uar"
    assert pd.read_csv(tmp_path / "t.csv")["trial"].tolist() == [3, 4]


@pytest.mark.parametrize("content, message", [
    ("spec", "no trials (no 'state'): a job spec, or a job that has not run a trial yet"),
    ('{"displayName": "j", "jobSpec": {"workerPoolSpecs": []}}', "not a hyperparameter-tuning job "
                                                                 "(`gcloud ai hp-tuning-jobs describe JOB --format "
                                                                 "json`): no 'studySpec'"),
    ("[1, 2]", "not a hyperparameter-tuning job (`gcloud ai hp-tuning-jobs describe JOB --format json`): no "
               "'studySpec'"),
    ("trials: 3", "not a readable JSON file"),
    ('{"studySpec": {"metrics": [{"metricId": "val_uar"}]}, "trials": [{"id": "1", "parameters": [{"value": 1}]}]}',
     "not a hyperparameter-tuning job description as gcloud prints it (KeyError: 'parameterId')"),
])
def test_results_refuses_a_file_that_is_not_a_tuning_job(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         content: str, message: str) -> None:
    job = _finished_job(tmp_path)
    if content == "spec":
        job = tmp_path / "tune.json"  # the spec `vertex tune` wrote: not a job that ran
    else:
        job.write_text(content)
    capsys.readouterr()
    assert main(["vertex", "results", str(job), "--out", str(tmp_path / "trials.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"audiotune vertex: error: {job}: {message}") and err.count("\n") == 1
    assert not (tmp_path / "trials.csv").exists()


def test_results_needs_a_csv_or_parquet_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["vertex", "results", str(_finished_job(tmp_path)), "--out", str(tmp_path / "trials.xlsx")]) == 2
    assert f"--out {tmp_path / 'trials.xlsx'}: give a .csv or .parquet file name" in capsys.readouterr().err


def test_results_reads_and_writes_a_bucket(gcs, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import BUCKET

    gcs.fs().put_file(str(_finished_job(tmp_path)), f"{BUCKET}/jobs/job.json")
    capsys.readouterr()
    assert main(["vertex", "results", f"gs://{BUCKET}/jobs/job.json", "--out", f"gs://{BUCKET}/jobs/trials.csv"]) == 0
    assert capsys.readouterr().out.startswith(f"gs://{BUCKET}/jobs/trials.csv: 5 trials")
    with gcs.fs().open(f"{BUCKET}/jobs/trials.csv") as stream:
        assert pd.read_csv(stream)["trial"].tolist() == [2, 1, 5, 3, 4]


def test_a_metric_of_zero_left_out_of_the_json_is_zero(tmp_path: Path) -> None:
    job = json.loads(_finished_job(tmp_path).read_text())
    job["trials"] = [_trial(1, "SUCCEEDED", (1e-4, 6.0, 300.0, "mean"), 0.0), job["trials"][2]]
    described = json_format.MessageToJson(api_message(job, HyperparameterTuningJob))
    assert json.loads(described)["trials"][0]["finalMeasurement"]["metrics"] == [{"metricId": "val_uar"}]
    (tmp_path / "zero.json").write_text(described)
    table, objective, goal = vertex_results.collect_trials(tmp_path / "zero.json", tmp_path / "t.csv")
    assert (objective, goal) == ("val_uar", "MAXIMIZE")
    assert table["trial"].tolist() == [1, 3] and table["val_uar"][0] == 0.0 and pd.isna(table["val_uar"][1])
