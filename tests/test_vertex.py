"""Vertex AI job specs checked against the API's own message types (google-cloud-aiplatform, no network),
the tuning metric a trial reports, and the multi-worker layout."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_uid_dataset, small_train_args
from google.cloud.aiplatform_v1.types import CustomJob, HyperparameterTuningJob
from google.protobuf import json_format

from audiotune import vertex
from audiotune.cli import main

SPACE = """metric: val_uar
goal: maximize
parameters:
  learning_rate: {type: double, min: 1.0e-5, max: 1.0e-3, scale: log}
  layer: {type: integer, min: 0, max: 12}
  clf_bottleneck: {type: discrete, values: [300, 700, 768]}
  pooling_mode: {type: categorical, values: [mean, max]}
"""
COMMAND = ["train", "--model", "hf", "-d", "gs://b/split", "-l", "gs://b/labels.txt", "-o", "gs://b/runs/{trial}"]


def parse(spec: dict, message) -> object:
    """The spec as the API's protobuf message: an unknown field or a wrong type is an error here."""
    return json_format.ParseDict(spec, message.pb(message()))


def test_tuning_job_spec_is_a_valid_api_message(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    out = tmp_path / "tune.json"
    assert main(["vertex", "tune", "--name", "w2v2-sweep", "--image", "europe-docker.pkg.dev/p/r/audiotune:cuda",
                 "--space", str(tmp_path / "space.yaml"), "--trials", "12", "--parallel", "3", "--out", str(out),
                 "--", *COMMAND]) == 0
    job = parse(json.loads(out.read_text()), HyperparameterTuningJob)
    assert job.max_trial_count == 12 and job.parallel_trial_count == 3
    assert [p.parameter_id for p in job.study_spec.parameters] == ["learning_rate", "layer", "clf_bottleneck",
                                                                   "pooling_mode"]
    assert job.study_spec.parameters[0].scale_type == job.study_spec.parameters[0].ScaleType.UNIT_LOG_SCALE
    assert job.study_spec.metrics[0].metric_id == "val_uar"
    container = job.trial_job_spec.worker_pool_specs[0].container_spec
    assert list(container.command) == ["audiotune"]
    assert list(container.args) == [*COMMAND, "--hypertune_metric", "val_uar"]


def test_multi_worker_job_spec(tmp_path: Path) -> None:
    out = tmp_path / "job.json"
    assert main(["vertex", "job", "--name", "ddp", "--image", "img", "--replicas", "3", "--accelerator_count", "2",
                 "--base_output", "gs://b/jobs", "--out", str(out), "--", *COMMAND[:-2], "-o", "gs://b/runs/ddp",
                 "--devices", "2"]) == 0
    job = parse(json.loads(out.read_text()), CustomJob)
    pools = job.job_spec.worker_pool_specs
    assert [p.replica_count for p in pools] == [1, 2]  # a chief and two workers
    assert pools[1].machine_spec.accelerator_count == 2
    assert list(pools[0].container_spec.args)[-2:] == ["--num_nodes", "3"]
    assert job.job_spec.base_output_directory.output_uri_prefix == "gs://b/jobs"


@pytest.mark.parametrize("space, message", [
    ("metric: val_uar\nparameters: {rate: {type: double, min: 1, max: 2}}", "unrecognized arguments: --rate=1.0"),
    ("metric: val_uar\nparameters: {learning_rate: {type: double, min: 2, max: 1}}", "must be below max"),
    ("metric: val_uar\nparameters: {learning_rate: {type: double, min: 0, max: 1, scale: log}}", "needs min > 0"),
    ("metric: val_uar\nparameters: {layer: {type: float, min: 0, max: 1}}", "needs a type"),
    ("parameters: {layer: {type: integer, min: 0, max: 3}}", "needs 'metric'"),
])
def test_bad_search_space_is_refused_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture, space: str,
                                                    message: str) -> None:
    (tmp_path / "space.yaml").write_text(space)
    out = tmp_path / "tune.json"
    assert main(["vertex", "tune", "--name", "t", "--image", "img", "--space", str(tmp_path / "space.yaml"),
                 "--out", str(out), "--", *COMMAND]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_mistyped_job_command_fails_now(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["vertex", "job", "--name", "t", "--image", "img", "--out", str(tmp_path / "j.json"), "--",
                 "train", "--epoch", "3"]) == 2
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_discrete_values_arrive_as_whole_floats() -> None:
    from audiotune.cli import build_parser

    args = build_parser().parse_args(["train", "--clf_bottleneck=300.0", "--layer=6"])
    assert vars(args)["classifier.clf_bottleneck"] == 300 and vars(args)["classifier.layer"] == 6
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--clf_bottleneck=300.5"])


def test_cluster_spec_gives_lightning_its_node_layout() -> None:
    cluster = {"workerpool0": ["chief-0:2222"], "workerpool1": ["w-0:2222", "w-1:2222"]}
    chief = {"CLUSTER_SPEC": json.dumps({"cluster": cluster, "task": {"type": "workerpool0", "index": 0}})}
    worker = {"CLUSTER_SPEC": json.dumps({"cluster": cluster, "task": {"type": "workerpool1", "index": 1}})}
    assert vertex.cluster_environment(chief) == {"MASTER_ADDR": "chief-0", "MASTER_PORT": "2222", "NODE_RANK": "0"}
    assert vertex.cluster_environment(worker)["NODE_RANK"] == "2"
    assert vertex.cluster_environment({}) == {}
    assert vertex.cluster_environment({**chief, "MASTER_ADDR": "set"}) == {}  # torchrun or the user set it


@pytest.mark.slow
def test_a_trial_reports_its_metric_in_its_own_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    metric_file = tmp_path / "hypertune" / "output.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(metric_file))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    ds = make_uid_dataset(tmp_path)
    assert main([*small_train_args(ds, tmp_path / "runs" / "trial_{trial}"), "--hypertune_metric", "val_uar"]) == 0
    run = tmp_path / "runs" / "trial_7"
    uar = json.loads((run / "metrics.json").read_text())["val"]["uar"]
    line = json.loads(metric_file.read_text().splitlines()[-1])
    assert line["trial"] == "7" and float(line["val_uar"]) == pytest.approx(uar) and line["global_step"] == "0"
    assert main([*small_train_args(ds, tmp_path / "r2"), "--hypertune_metric", "val_nope"]) == 2
    assert "known: " in capsys.readouterr().err


@pytest.mark.parametrize("flags, command, message", [
    (["--accelerator_count", "-1"], COMMAND, "--accelerator_count -1: at least 1 NVIDIA_TESLA_T4"),
    (["--accelerator_count", "0"], COMMAND, "(for a job without one: --accelerator_type NONE)"),
    (["--boot_disk_gb", "10"], COMMAND, "--boot_disk_gb 10: Vertex AI takes 100 to 65536"),
    ([], [*COMMAND[:-1], "/tmp/runs/{trial}"], "the job's --exp_dir /tmp/runs/{trial}"),
])
def test_job_specs_that_would_not_do_what_they_say_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               flags: list[str], command: list[str],
                                                               message: str) -> None:
    out = tmp_path / "job.json"
    assert main(["vertex", "job", "--name", "t", "--image", "img", *flags, "--out", str(out), "--", *command]) == 2
    err = capsys.readouterr().err
    assert message in err and not out.exists()
    if not flags:
        assert "not in a bucket; the job's own disk is discarded" in err
    assert main(["vertex", "job", "--name", "t", "--image", "img", "--accelerator_type", "NONE",
                 "--accelerator_count", "0", "--out", str(out), "--", *COMMAND]) == 0  # a CPU job, said so


def test_a_tuning_job_needs_a_place_per_trial_and_values_in_range(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                  ) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    out = tmp_path / "tune.json"
    tune = ["vertex", "tune", "--name", "t", "--image", "img", "--space", str(tmp_path / "space.yaml"), "--out",
            str(out), "--"]
    assert main([*tune, *COMMAND[:-1], "gs://b/runs/all"]) == 2
    assert "every trial would write this one place; put {trial} in it" in capsys.readouterr().err
    (tmp_path / "space.yaml").write_text("metric: val_uar\nparameters: {batch_size: {type: integer, min: -4, "
                                         "max: 0}}\n")
    assert main([*tune, *COMMAND]) == 2
    assert "parameter 'batch_size' = -4: invalid option(s): --batch_size -4: must be in [1, inf)" in \
        capsys.readouterr().err
    assert not out.exists()


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
    (tmp_path / "space.yaml").write_text(SPACE.replace("goal: maximize", f"goal: {goal}"))
    spec = tmp_path / "tune.json"
    assert main(["vertex", "tune", "--name", "w2v2-sweep", "--image", "img", "--space", str(tmp_path / "space.yaml"),
                 "--trials", "5", "--out", str(spec), "--", *COMMAND[:-1], "gs://b/sweep/trial_{trial}"]) == 0
    job = {**json.loads(spec.read_text()), "name": "projects/1/locations/europe-west4/hyperparameterTuningJobs/9",
           "state": "JOB_STATE_SUCCEEDED", "createTime": "2026-05-01T09:59:00Z", "trials": [
               _trial(1, "SUCCEEDED", (1e-4, 6.0, 300.0, "mean"), 0.62),
               _trial(2, "SUCCEEDED", (3e-4, 9.0, 768.0, "max"), 0.71),
               _trial(3, "INFEASIBLE", (1e-3, 12.0, 700.0, "mean"), reason="train exited with status 2"),
               _trial(4, "ACTIVE", (2e-5, 3.0, 300.0, "max")),
               _trial(5, "SUCCEEDED", (5e-5, 0.0, 700.0, "mean"), 0.55)]}
    described = json_format.MessageToJson(parse(job, HyperparameterTuningJob))  # camelCase, enum names
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
    described = json_format.MessageToJson(parse(job, HyperparameterTuningJob))
    assert json.loads(described)["trials"][0]["finalMeasurement"]["metrics"] == [{"metricId": "val_uar"}]
    (tmp_path / "zero.json").write_text(described)
    table, objective, goal = vertex.collect_trials(tmp_path / "zero.json", tmp_path / "t.csv")
    assert (objective, goal) == ("val_uar", "MAXIMIZE")
    assert table["trial"].tolist() == [1, 3] and table["val_uar"][0] == 0.0 and pd.isna(table["val_uar"][1])
