"""Vertex AI job specs checked against the API's own message types (google-cloud-aiplatform, no network),
the tuning metric a trial reports, and the multi-worker layout."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import BUCKET, VERTEX_COMMAND, VERTEX_SPACE, api_message, make_uid_dataset, small_train_args
from google.cloud.aiplatform_v1.types import AcceleratorType, CustomJob, HyperparameterTuningJob

from audiotune import vertex
from audiotune.cli import main


def test_tuning_job_spec_is_a_valid_api_message(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(VERTEX_SPACE)
    out = tmp_path / "tune.json"
    assert main(["vertex", "tune", "--name", "w2v2-sweep", "--image", "europe-docker.pkg.dev/p/r/audiotune:cuda",
                 "--space", str(tmp_path / "space.yaml"), "--trials", "12", "--parallel", "3", "--out", str(out),
                 "--", *VERTEX_COMMAND]) == 0
    job = api_message(json.loads(out.read_text()), HyperparameterTuningJob)
    assert job.max_trial_count == 12 and job.parallel_trial_count == 3
    assert [p.parameter_id for p in job.study_spec.parameters] == ["learning_rate", "layer", "clf_bottleneck",
                                                                   "pooling_mode"]
    assert job.study_spec.parameters[0].scale_type == job.study_spec.parameters[0].ScaleType.UNIT_LOG_SCALE
    assert job.study_spec.metrics[0].metric_id == "val_uar"
    container = job.trial_job_spec.worker_pool_specs[0].container_spec
    assert list(container.command) == ["audiotune"]
    # a trial keeps the epoch of the metric it reports, as a sweep's does
    assert list(container.args) == [*VERTEX_COMMAND, "--monitor", "uar", "--hypertune_metric", "val_uar"]


def test_multi_worker_job_spec(tmp_path: Path) -> None:
    out = tmp_path / "job.json"
    assert main(["vertex", "job", "--name", "ddp", "--image", "img", "--replicas", "3", "--accelerator_count", "2",
                 "--base_output", "gs://b/jobs", "--out", str(out), "--", *VERTEX_COMMAND[:-2], "-o", "gs://b/runs/ddp",
                 "--devices", "2"]) == 0
    job = api_message(json.loads(out.read_text()), CustomJob)
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
    # what is not written as a space says is refused, not read as something else
    ("metric: val_uar\nparameters: {learning_rate: {type: double, min: 1e-4, max: 1e-2, scael: log}}",
     "parameter 'learning_rate': unknown key(s) ['scael']; a double parameter has type, min, max, scale"),
    ("metric: val_uar\nparameterz: {}\nparameters: {layer: {type: integer, min: 0, max: 3}}",
     "unknown key(s) ['parameterz']; a search space has metric, goal, algorithm, parameters"),
    ("metric: val_uar\nparameters:\n  layer: {type: integer, min: 0, max: 3}\n  layer: {type: integer, min: 5, max: 9}",
     "not valid YAML at line 4, column 3: 'layer' is written twice in one mapping"),
    # where a trial writes, and what one command does, are no settings to search
    ("metric: val_uar\nparameters: {exp_dir: {type: categorical, values: [a, b]}}",
     "parameter 'exp_dir': not a search parameter: where each trial writes"),
    ("metric: val_uar\nparameters: {resume: {type: categorical, values: ['true', 'false']}}",
     "parameter 'resume': not a search parameter: --resume is what one command does"),
])
def test_bad_search_space_is_refused_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture, space: str,
                                                    message: str) -> None:
    (tmp_path / "space.yaml").write_text(space)
    out = tmp_path / "tune.json"
    assert main(["vertex", "tune", "--name", "t", "--image", "img", "--space", str(tmp_path / "space.yaml"),
                 "--out", str(out), "--", *VERTEX_COMMAND]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_search_space_that_is_not_yaml_is_one_line_naming_the_place(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("metric: [\n")
    assert main(["vertex", "tune", "--name", "t", "--image", "img", "--space", str(space),
                 "--out", str(tmp_path / "tune.json"), "--", *VERTEX_COMMAND]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{space}: not valid YAML at line 2, column 1: expected the node content" in err

def test_a_job_whose_command_writes_a_local_disk_only_is_refused(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """A sweep's folder is local only (its study database); a job's container has no disk that outlives it."""
    assert main(["vertex", "job", "--name", "s", "--image", "img", "--out", str(tmp_path / "j.json"), "--", "sweep",
                 "--space", "s.yaml", "-d", "gs://b/split", "-l", "gs://b/labels.txt", "-o", "gs://b/sweep"]) == 2
    assert "the job's command `audiotune sweep` reads or writes --exp_dir on a local disk only" in \
        capsys.readouterr().err and not (tmp_path / "j.json").exists()


def test_a_job_without_a_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["vertex", "job", "--name", " ", "--image", "img", "--out", str(tmp_path / "j.json"), "--",
                 *VERTEX_COMMAND]) == 2
    assert "--name: give the job a name" in capsys.readouterr().err and not (tmp_path / "j.json").exists()


def test_a_mistyped_job_command_fails_now(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["vertex", "job", "--name", "t", "--image", "img", "--out", str(tmp_path / "j.json"), "--",
                 "train", "--epoch", "3"]) == 2
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


PRETRAIN_HF = ["pretrain", "--model", "hf", "-c", "facebook/wav2vec2-base"]
LABELLED = ["--model", "ecapa_tdnn", "-l", "gs://b/labels.txt"]


@pytest.mark.parametrize("command, bad, message", [
    (PRETRAIN_HF, ["--objective", "ptapt"], "--objective ptapt: give the frame labels to predict with --pseudo_labels"),
    (["pretrain"], ["--freeze", "true"], "--freeze true: pretraining trains the encoder"),
    (["pretrain"], ["--objective", "tapt"], "--objective tapt: --model ssast pretrains with"),
    (["pretrain"], ["--epochs", "0"], "--epochs 0: pretraining needs at least one epoch"),
    (["probe", *LABELLED], ["--devices", "2"], "probe runs in one process on one device"),
    (["probe", *LABELLED], ["--epochs", "-1"], "--epochs -1: must be in [0, inf)"),
    (["cv", *LABELLED, "--group", "spk"], ["--repeats", "0"], "--repeats 0: need at least 1"),
    (["cv", *LABELLED, "--group", "spk"], ["--overwrite", "true"], "cv keeps finished runs and resumes the others"),
    (["train", *LABELLED], ["--balance", "oversample", "--bucket_sampler", "true"],
     "--balance oversample draws its own epochs"),
])
def test_what_the_jobs_command_refuses_of_its_options_fails_before_the_spec(
        tmp_path: Path, capsys: pytest.CaptureFixture, command: list[str], bad: list[str], message: str) -> None:
    """Each command's own check of its options runs here, not after the job's machine started; without the
    offending options the same command makes a spec."""
    out = tmp_path / "job.json"
    job = ["vertex", "job", "--name", "t", "--image", "img", "--out", str(out), "--"]
    where = ["-d", "gs://b/split", "-o", "gs://b/runs/r"]
    assert main([*job, *command, *bad, *where]) == 2
    assert message in capsys.readouterr().err and not out.exists()
    assert main([*job, *command, *where]) == 0, capsys.readouterr().err
    assert out.exists()


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
    assert vertex.cluster_environment({**chief, "TORCHELASTIC_RUN_ID": "x"}) == {}  # torchrun's own variables
    assert vertex.cluster_environment({**worker, "MASTER_ADDR": "a", "MASTER_PORT": "1", "NODE_RANK": "5"}) == {}
    assert vertex.cluster_environment({**worker, "MASTER_ADDR": "a", "MASTER_PORT": "1", "GROUP_RANK": "5"}) == {}
    # a container that sets where machine 0 is itself (and RANK, which Lightning does not read): which machine this is
    assert vertex.cluster_environment({**worker, "MASTER_ADDR": "a", "MASTER_PORT": "1", "RANK": "2"}) == {
        "NODE_RANK": "2"}


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
    (["--accelerator_count", "-1"], VERTEX_COMMAND, "--accelerator_count -1: at least 1 NVIDIA_TESLA_T4"),
    (["--accelerator_count", "0"], VERTEX_COMMAND, "(for a job without one: --accelerator_type NONE)"),
    (["--boot_disk_gb", "10"], VERTEX_COMMAND, "--boot_disk_gb 10: Vertex AI takes 100 to 65536"),
    ([], [*VERTEX_COMMAND[:-1], "/tmp/runs/{trial}"], "the job's --exp_dir /tmp/runs/{trial}"),
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
                 "--accelerator_count", "0", "--out", str(out), "--", *VERTEX_COMMAND]) == 0  # a CPU job, said so


def test_a_tuning_job_needs_a_place_per_trial_and_values_in_range(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                  ) -> None:
    (tmp_path / "space.yaml").write_text(VERTEX_SPACE)
    out = tmp_path / "tune.json"
    tune = ["vertex", "tune", "--name", "t", "--image", "img", "--space", str(tmp_path / "space.yaml"), "--out",
            str(out), "--"]
    assert main([*tune, *VERTEX_COMMAND[:-1], "gs://b/runs/all"]) == 2
    assert "every trial would write this one place; put {trial} in it" in capsys.readouterr().err
    (tmp_path / "space.yaml").write_text("metric: val_uar\nparameters: {batch_size: {type: integer, min: -4, "
                                         "max: 0}}\n")
    assert main([*tune, *VERTEX_COMMAND]) == 2
    assert "parameter 'batch_size' = -4: invalid option(s): --batch_size -4: must be in [1, inf)" in \
        capsys.readouterr().err
    assert not out.exists()


def test_options_a_trial_would_refuse_stop_the_spec(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An option acting where train never runs, or not where --freeze puts the encoder, fails before the job: in its
    command, or reached by the space's values alone or two together."""
    out = tmp_path / "spec.json"
    job = ["vertex", "job", "--name", "t", "--image", "img", "--out", str(out), "--", *VERTEX_COMMAND]
    assert main([*job, "--model", "ssast", "--task", "pretrain_joint"]) == 2  # the last --model counts
    assert capsys.readouterr().err.rstrip().endswith("--task pretrain_joint: acts only in audiotune pretrain")
    assert main([*job, "--freeze", "true", "--mask_time_prob", "0.1"]) == 2
    assert "--mask_time_prob 0.1: acts only while the encoder trains; the encoder is frozen" in capsys.readouterr().err
    space = tmp_path / "space.yaml"
    tune = ["vertex", "tune", "--name", "t", "--image", "img", "--space", str(space), "--out", str(out), "--",
            *VERTEX_COMMAND]
    space.write_text("metric: val_uar\nparameters: {task: {type: categorical, values: [ft_cls, pretrain_mpc]}}\n")
    assert main([*tune, "--model", "ssast"]) == 2
    assert f"{space}: parameter 'task' = pretrain_mpc: --task pretrain_mpc: acts only in audiotune pretrain" in \
        capsys.readouterr().err
    space.write_text("metric: val_uar\nparameters: {freeze: {type: categorical, values: [false, true]}, "
                     "mask_time_prob: {type: double, min: 0.1, max: 0.2}}\n")
    assert main(tune) == 2
    assert f"{space}: parameter 'freeze' = True with parameter 'mask_time_prob' = 0.1: --mask_time_prob 0.1: acts " \
           "only while the encoder trains" in capsys.readouterr().err
    assert not out.exists()
    space.write_text("metric: val_uar\nparameters: {mask_time_prob: {type: double, min: 0.1, max: 0.2}}\n")
    assert main([*tune, "--freeze", "false"]) == 0  # a trained encoder masks



@pytest.mark.parametrize("kind", ["job", "tune"])
def test_job_options_say_what_they_set_and_their_defaults(kind: str, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main(["vertex", kind, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    machine = vertex.Machine("image")
    defaults = {"--machine_type": machine.machine_type, "--accelerator_type": machine.accelerator_type,
                "--accelerator_count": machine.accelerator_count, "--boot_disk_gb": machine.boot_disk_gb}
    if kind == "tune":
        defaults.update({"--trials": 10, "--parallel": 2, "--max_failed": "Vertex AI decides"})
    for flag, default in defaults.items():  # a help text, then the default
        assert re.search(rf"{flag} [A-Z_]+ \w[^()-]*\(default: {default}\)", text), flag


@pytest.mark.parametrize(("given", "count"), [([], 0), (["--max_failed", "0"], 1), (["--max-failed", "2"], 3)])
def test_max_failed_counts_the_failures_tolerated_as_sweep_does(tmp_path: Path, given: list[str], count: int) -> None:
    """sweep --max_failed N goes on through N failed trials and stops at the next; a tuning job given the same flag
    fails at the same trial (Vertex AI's maxFailedTrialCount counts the failure that fails the job; 0: its own
    choice)."""
    (tmp_path / "space.yaml").write_text(VERTEX_SPACE)
    out = tmp_path / "tune.json"
    assert main(["vertex", "tune", "--name", "t", "--image", "img", "--space", str(tmp_path / "space.yaml"),
                 "--out", str(out), *given, "--", *VERTEX_COMMAND]) == 0
    assert json.loads(out.read_text())["maxFailedTrialCount"] == count


def test_a_negative_max_failed_is_refused_before_the_spec_is_written(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "space.yaml").write_text(VERTEX_SPACE)
    out = tmp_path / "tune.json"
    assert main(["vertex", "tune", "--name", "t", "--image", "img", "--space", str(tmp_path / "space.yaml"),
                 "--out", str(out), "--max_failed", "-1", "--", *VERTEX_COMMAND]) == 2
    assert "--max_failed -1: the failed trials tolerated, at least 0" in capsys.readouterr().err
    assert not out.exists()


TRAIN = VERTEX_COMMAND[:-2]  # without -o


@pytest.mark.parametrize(("kind", "flags", "command", "message"), [
    # a place the command writes by default is on the job's disk too
    ("job", [], TRAIN, "the job's --exp_dir ./experiments: not in a bucket"),
    ("job", [], ["evaluate", "--run", "/tmp/r", "-d", "gs://b/t.csv"], "the job's --exp_dir /tmp/r: not in a bucket"),
    ("job", [], [*TRAIN, "-o", "gs://"], "the job's --exp_dir gs://: not in a bucket"),
    ("job", ["--base_output", "/tmp/jobs"], VERTEX_COMMAND, "--base_output /tmp/jobs: not in a bucket"),
    # --cloud's place is checked as the run's would be, and per trial
    ("job", [], [*TRAIN, "-o", "r", "--cloud"], "--cloud uploads the outputs to gs://BUCKET/CLOUD_DIR: give -b"),
    ("tune", [], [*TRAIN, "-o", "r/{trial}", "--cloud", "-b", "b", "--cloud_dir", "sweep"],
     "the job's --cloud_dir gs://b/sweep: every trial would write this one place"),
    ("job", ["--accelerator_type", "T4"], VERTEX_COMMAND, "--accelerator_type T4: not a Vertex AI accelerator type; "
                                                          "choose NVIDIA_TESLA_K80"),
    ("job", ["--replicas", "2"], [*VERTEX_COMMAND, "--num_nodes", "3"],
     "the job's --num_nodes 3: the job has --replicas 2 machine(s)"),
    ("job", [], [*VERTEX_COMMAND, "--num_nodes", "3"], "the job's --num_nodes 3: the job has --replicas 1 machine(s)"),
    ("tune", [], [*VERTEX_COMMAND, "--monitor", "loss"], "the job's --monitor loss: the space's metric sets it to uar"),
    ("job", ["--machine_type", "bogus type"], VERTEX_COMMAND, "--machine_type 'bogus type': give one name"),
    ("job", [], [*TRAIN, "--config", "gs://b/c.yaml"], "the job's --config gs://b/c.yaml: in a bucket, where the run "
                                                       "directory it may name is not read here; give the job's -o"),
    ("job", ["--replicas", "2"], ["attention", "--run", "gs://b/r", "--audio", "gs://b/a.wav"],
     "the job's command `audiotune attention --run gs://b/r --audio gs://b/a.wav --num_nodes 2`: "),
])
def test_a_job_that_would_lose_its_outputs_or_not_start_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   kind: str, flags: list[str], command: list[str],
                                                                   message: str) -> None:
    (tmp_path / "space.yaml").write_text(VERTEX_SPACE)
    space = ["--space", str(tmp_path / "space.yaml")] if kind == "tune" else []
    out = tmp_path / "spec.json"
    assert main(["vertex", kind, "--name", "t", "--image", "img", *space, *flags, "--out", str(out), "--",
                 *command]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(("space", "message"), [
    ("metric: test_uar", "metric 'test_uar': a search tunes a validation metric that picks the best epoch"),
    ("metric: val_nope", "metric 'val_nope': a search tunes a validation metric"),
    ("metric: val_loss\ngoal: maximize", "val_loss is minimized, but the space says goal: maximize"),
])
def test_a_tuning_job_tunes_a_validation_metric_in_its_direction(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  space: str, message: str) -> None:
    (tmp_path / "space.yaml").write_text(space + "\nparameters: {layer: {type: integer, min: 0, max: 2}}\n")
    out = tmp_path / "spec.json"
    assert main(["vertex", "tune", "--name", "t", "--image", "img", "--space", str(tmp_path / "space.yaml"),
                 "--out", str(out), "--", *VERTEX_COMMAND]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_compute_engine_s_accelerator_names_are_the_api_s(tmp_path: Path) -> None:
    out = tmp_path / "job.json"
    assert main(["vertex", "job", "--name", "t", "--image", "img", "--accelerator_type", "nvidia-l4", "--out",
                 str(out), "--", *VERTEX_COMMAND]) == 0
    job = api_message(json.loads(out.read_text()), CustomJob)
    assert job.job_spec.worker_pool_specs[0].machine_spec.accelerator_type == AcceleratorType.NVIDIA_L4


def test_a_trial_uploads_to_its_own_cloud_dir(tmp_path: Path, gcs, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "table.csv"
    table.write_text("path,subject\n" + "".join(f"{i}.wav,s{i}\n" for i in range(6)))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    assert main(["split", str(table), "--out", str(tmp_path / "split"), "--cloud", "-b", BUCKET, "--cloud_dir",
                 "sweep/{trial}"]) == 0
    assert gcs.fs().exists(f"{BUCKET}/sweep/7/split/train.csv")
