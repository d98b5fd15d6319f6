"""``audiotune vertex results``: a finished Vertex AI hyperparameter-tuning job's description (``gcloud ai
hp-tuning-jobs describe --format json``) read into a table of its trials, best first (:func:`collect_trials`)."""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from audiotune.outputs import write_csv, write_parquet
from audiotune.vertex import VertexError


def read_tuning_job(path: str | Path) -> dict[str, Any]:
    """A finished (or running) HyperparameterTuningJob as ``gcloud ai hp-tuning-jobs describe --format json``
    prints it: ``studySpec`` (the objective) and ``trials``."""
    try:
        job = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VertexError(f"{path}: not a readable JSON file ({err})") from err
    what = "not a hyperparameter-tuning job (`gcloud ai hp-tuning-jobs describe JOB --format json`)"
    if not isinstance(job, dict) or not isinstance(job.get("studySpec"), dict):
        raise VertexError(f"{path}: {what}: no 'studySpec'")
    metrics = job["studySpec"].get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, dict) and m.get("metricId")
                                                              for m in metrics):
        raise VertexError(f"{path}: {what}: 'studySpec' names no metric")
    if not isinstance(job.get("trials"), list) or not job["trials"]:
        state = job.get("state", "no 'state'")
        raise VertexError(f"{path}: no trials ({state}): a job spec, or a job that has not run a trial yet")
    if not all(isinstance(t, dict) and "id" in t for t in job["trials"]):
        raise VertexError(f"{path}: {what}: a trial without an 'id'")
    return job


def _seconds(trial: dict[str, Any]) -> float:
    try:
        start, end = (datetime.fromisoformat(str(trial[key]).replace("Z", "+00:00"))
                      for key in ("startTime", "endTime"))
    except (KeyError, ValueError):
        return math.nan
    return (end - start).total_seconds()


def _run_directory(job: dict[str, Any]) -> str:
    """The ``-o`` of the trials' command (``{trial}`` in it becomes each trial's id), or ''."""
    pools = job.get("trialJobSpec", {}).get("workerPoolSpecs") or [{}]
    args = [str(a) for a in pools[0].get("containerSpec", {}).get("args", [])]
    for index, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name in ("-o", "--exp_dir", "--exp-dir"):
            return value if equals else args[index + 1] if index + 1 < len(args) else ""
    return ""


def _value(value: Any, whole: bool) -> Any:
    if isinstance(value, float) and whole and value.is_integer():
        return int(value)
    return value


def trials_table(job: dict[str, Any]) -> tuple[pd.DataFrame, str, str]:
    """One row per trial: id, state, parameters, final metrics, steps, seconds, why infeasible, run directory;
    best first by the study's first metric in its goal's direction (trials without it last). ``attrs['parameters']``
    names the parameter columns. Returns the table, the metric and its goal."""
    objective, goal = job["studySpec"]["metrics"][0]["metricId"], str(job["studySpec"]["metrics"][0].get("goal"))
    specs = {p["parameterId"]: p for p in job["studySpec"].get("parameters", [])}
    whole = {name for name, spec in specs.items() if "integerValueSpec" in spec or (
        "discreteValueSpec" in spec and all(float(v).is_integer() for v in spec["discreteValueSpec"]["values"]))}
    trials = job["trials"]
    parameters = list(dict.fromkeys([*specs, *(p["parameterId"] for t in trials for p in t.get("parameters", []))]))
    metrics = list(dict.fromkeys([objective, *(m["metricId"] for t in trials
                                               for m in t.get("finalMeasurement", {}).get("metrics", []))]))
    run = _run_directory(job)
    numbered = all(str(trial["id"]).isdigit() for trial in trials)
    rows = []
    for trial in trials:
        measurement = trial.get("finalMeasurement", {})
        row: dict[str, Any] = {"trial": int(trial["id"]) if numbered else str(trial["id"]),
                               "state": trial.get("state", "")}
        row.update({p["parameterId"]: _value(p.get("value"), p["parameterId"] in whole)
                    for p in trial.get("parameters", [])})
        # JSON of the API leaves out a value of 0 (the protobuf default): a metric listed without one is 0
        row.update({m["metricId"]: float(m.get("value", 0.0)) for m in measurement.get("metrics", [])})
        row.update(steps=int(measurement.get("stepCount", 0)) or None, seconds=_seconds(trial),
                   infeasible_reason=trial.get("infeasibleReason", ""), run=run.replace("{trial}", str(trial["id"])))
        rows.append(row)
    columns = ["trial", "state", *parameters, *metrics, "steps", "seconds", "infeasible_reason"] + (["run"] if run
                                                                                                    else [])
    table = pd.DataFrame(rows, columns=columns)
    score = table[objective].astype(float)
    table = table.assign(_key=-score if goal == "MAXIMIZE" else score).sort_values(
        ["_key", "trial"], na_position="last").drop(columns="_key").reset_index(drop=True)
    table.attrs["parameters"] = parameters
    return table, objective, goal


def collect_trials(job_path: str | Path, out: str | Path) -> tuple[pd.DataFrame, str, str]:
    """``audiotune vertex results``: the trials of a tuning job's description, written to ``out`` (.csv or
    .parquet), best first; the table, the objective and its goal."""
    suffix = Path(out).suffix.lower()
    if suffix not in (".csv", ".parquet", ".pqt"):
        raise VertexError(f"--out {out}: give a .csv or .parquet file name")
    try:
        table, objective, goal = trials_table(read_tuning_job(job_path))
    except VertexError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise VertexError(f"{job_path}: not a hyperparameter-tuning job description as gcloud prints it "
                          f"({type(err).__name__}: {err})") from err
    if suffix == ".csv":
        write_csv(table, out, index=False)
    else:
        write_parquet(table, out, index=False)
    return table, objective, goal
