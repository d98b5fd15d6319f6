"""Vertex AI: job specs for any audiotune command, the tuning metric a trial reports, and multi-worker layout.

- :func:`custom_job` / :func:`tuning_job` build a CustomJob / HyperparameterTuningJob as the Vertex AI REST API
  takes it (JSON, camelCase field names; ``gcloud ai custom-jobs create --config`` and the Python client's
  ``CustomJob.from_dict`` read the same). The container runs ``audiotune COMMAND ARGS``; a tuning job appends
  ``--PARAMETER=VALUE`` for every parameter of its search space (read from YAML, :func:`read_space`).
- :func:`report_metric` writes the metric of a tuning trial where Vertex AI reads it: the JSON lines file of
  ``cloudml-hypertune`` (``$CLOUD_ML_HP_METRIC_FILE``, default ``/tmp/hypertune/output.metrics``).
- :func:`cluster_environment` turns the ``CLUSTER_SPEC`` Vertex AI gives every replica of a multi-worker job
  into the variables Lightning's DDP reads (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiotune.config import SECTIONS
from audiotune.config.files import parse_yaml
from audiotune.config.sections import MONITORS, monitor_key
from audiotune.launch import NODE_VARIABLES
from audiotune.outputs import write_bytes

METRIC_FILE = "/tmp/hypertune/output.metrics"
PARAMETER_TYPES = ("double", "integer", "discrete", "categorical")
SCALES = {"linear": "UNIT_LINEAR_SCALE", "log": "UNIT_LOG_SCALE", "reverse_log": "UNIT_REVERSE_LOG_SCALE"}
ALGORITHMS = {"bayesian": "ALGORITHM_UNSPECIFIED", "grid": "GRID_SEARCH", "random": "RANDOM_SEARCH"}


class VertexError(ValueError):
    """A search space or job option that Vertex AI would reject; the message names the file or flag."""


MIN_BOOT_DISK_GB, MAX_BOOT_DISK_GB = 100, 65536  # what Vertex AI accepts for a boot disk


@dataclass
class Machine:
    """One replica's machine; ``replicas`` > 1 makes a chief pool and a worker pool of the same machine."""

    image: str
    machine_type: str = "n1-highmem-2"  # the NAIP systems' Vertex AI config
    accelerator_type: str = "NVIDIA_TESLA_T4"
    accelerator_count: int = 1
    replicas: int = 1
    boot_disk_type: str = "pd-ssd"
    boot_disk_gb: int = 100


NO_ACCELERATOR = "NONE"
ACCELERATOR_FAMILIES = ("NVIDIA_", "TPU_")  # how Vertex AI's AcceleratorType names begin


def _api_accelerators() -> list[str]:
    """The accelerator types of the installed Vertex AI client (its AcceleratorType), or none without it."""
    try:
        from google.cloud.aiplatform_v1.types.accelerator_type import AcceleratorType
    except ImportError:
        return []
    return [kind.name for kind in AcceleratorType if kind.value]  # type: ignore[attr-defined]


def accelerator_type(value: str) -> str:
    """``--accelerator_type`` as the API names it: ``nvidia-tesla-t4`` (Compute Engine's spelling) is
    ``NVIDIA_TESLA_T4``; a name that is none of the installed client's types (without the client: that begins
    with none of :data:`ACCELERATOR_FAMILIES`) is an error now, not when the job is created."""
    name = value.strip().upper().replace("-", "_") or NO_ACCELERATOR
    if name == NO_ACCELERATOR:
        return name
    known = _api_accelerators()
    if name not in known if known else not name.startswith(ACCELERATOR_FAMILIES):
        choices = ", ".join(known) if known else "a name of Vertex AI's AcceleratorType, e.g. NVIDIA_TESLA_T4"
        raise VertexError(f"--accelerator_type {value}: not a Vertex AI accelerator type; choose {choices}, or "
                          f"{NO_ACCELERATOR} for a job without one")
    return name


def bucket_url(value: str, what: str) -> str:
    """``value`` if it is a place in a bucket (``gs://BUCKET/...``), else an error naming ``what``."""
    if not value.startswith("gs://") or not value[len("gs://"):].split("/", 1)[0]:
        raise VertexError(f"{what} {value}: not in a bucket; the job's own disk is discarded when it ends, so "
                          "write to gs://BUCKET/...")
    return value


def worker_pools(command: list[str], machine: Machine) -> list[dict[str, Any]]:
    """Worker pool specs: pool 0 is the chief (rank 0), pool 1 holds the other ``replicas - 1``."""
    if machine.replicas < 1:
        raise VertexError(f"--replicas {machine.replicas}: at least 1")
    accelerator = accelerator_type(machine.accelerator_type)
    cpu_only = accelerator == NO_ACCELERATOR
    if machine.accelerator_count < 0 or (not cpu_only and machine.accelerator_count == 0):
        raise VertexError(f"--accelerator_count {machine.accelerator_count}: at least 1 "
                          f"{machine.accelerator_type} (for a job without one: --accelerator_type NONE)")
    if not MIN_BOOT_DISK_GB <= machine.boot_disk_gb <= MAX_BOOT_DISK_GB:
        raise VertexError(f"--boot_disk_gb {machine.boot_disk_gb}: Vertex AI takes {MIN_BOOT_DISK_GB} to "
                          f"{MAX_BOOT_DISK_GB}")
    spec: dict[str, Any] = {"machineSpec": {"machineType": machine.machine_type},
                            "diskSpec": {"bootDiskType": machine.boot_disk_type,
                                         "bootDiskSizeGb": machine.boot_disk_gb},
                            "containerSpec": {"imageUri": machine.image, "command": ["audiotune"],
                                              "args": list(command)}}
    if not cpu_only:
        spec["machineSpec"].update(acceleratorType=accelerator, acceleratorCount=machine.accelerator_count)
    pools = [{**spec, "replicaCount": "1"}]
    if machine.replicas > 1:
        pools.append({**spec, "replicaCount": str(machine.replicas - 1)})
    return pools


def custom_job(name: str, command: list[str], machine: Machine, base_output: str = "") -> dict[str, Any]:
    """A CustomJob running ``audiotune COMMAND``; ``base_output`` (gs://) sets the job's AIP_MODEL_DIR root."""
    job_spec: dict[str, Any] = {"workerPoolSpecs": worker_pools(command, machine)}
    if base_output:
        job_spec["baseOutputDirectory"] = {"outputUriPrefix": bucket_url(base_output, "--base_output")}
    return {"displayName": name, "jobSpec": job_spec}


def _number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VertexError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise VertexError(f"{where}: {value!r} is not finite")
    return number


# search parameters that are no setting of a trial (options by name, any of their spellings), and why
NOT_SEARCHED = {
    ("o", "exp_dir", "config"): "where each trial writes and the config it starts from are the command's",
    ("monitor",): "each trial keeps the epoch of the space's metric (its --monitor)",
    ("devices", "num_nodes", "strategy"): "the processes a trial runs in are the command's (a sweep runs one per "
                                          "trial; a tuning job's machines are its --replicas)",
}


def _not_searched(name: str) -> str | None:
    """Why flag ``name`` cannot be a search parameter: where the trial writes, what it starts from, the metric it
    keeps its epoch by and the processes it runs in (the command's own, :data:`NOT_SEARCHED`), or what one command
    does (``--resume``: an action, no setting of the run)."""
    spelt = {name, name.replace("-", "_")}
    for section in SECTIONS.values():
        for spec in dataclasses.fields(section):
            names = {spec.name, *(flag.lstrip("-") for flag in spec.metadata.get("flags", ()))}
            if spelt & {*names, *(n.replace("-", "_") for n in names)}:
                spelt.add(spec.name)
                if spec.metadata.get("action"):
                    return f"--{spec.name} is what one command does, not a setting of the run"
    return next((why for names, why in NOT_SEARCHED.items() if spelt & set(names)), None)


def _parameter(name: str, spec: Any, source: str) -> dict[str, Any]:
    where = f"{source}: parameter {name!r}"
    not_searched = _not_searched(name)
    if not_searched:
        raise VertexError(f"{where}: not a search parameter: {not_searched}")
    if not isinstance(spec, dict) or spec.get("type") not in PARAMETER_TYPES:
        raise VertexError(f"{where}: needs a type, one of {', '.join(PARAMETER_TYPES)}")
    kind = spec["type"]
    keys = ("type", "min", "max", "scale") if kind in ("double", "integer") else ("type", "values")
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise VertexError(f"{where}: unknown key(s) {unknown}; a {kind} parameter has {', '.join(keys)}")
    out: dict[str, Any] = {"parameterId": name}
    if kind in ("double", "integer"):
        low, high = _number(spec.get("min"), f"{where} min"), _number(spec.get("max"), f"{where} max")
        if low >= high:
            raise VertexError(f"{where}: min {low} must be below max {high}")
        if kind == "integer":
            if low != int(low) or high != int(high):
                raise VertexError(f"{where}: an integer range needs whole min and max")
            out["integerValueSpec"] = {"minValue": str(int(low)), "maxValue": str(int(high))}
        else:
            out["doubleValueSpec"] = {"minValue": low, "maxValue": high}
        scale = spec.get("scale", "linear")
        if scale not in SCALES:
            raise VertexError(f"{where}: scale {scale!r}, expected one of {', '.join(SCALES)}")
        if scale != "linear" and low <= 0:
            raise VertexError(f"{where}: a {scale} scale needs min > 0")
        out["scaleType"] = SCALES[scale]
    else:
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise VertexError(f"{where}: needs a non-empty list of values")
        if kind == "discrete":
            out["discreteValueSpec"] = {"values": sorted(_number(v, f"{where} value") for v in values)}
        else:
            out["categoricalValueSpec"] = {"values": [str(v) for v in values]}
    return out


SPACE_KEYS = ("metric", "goal", "algorithm", "parameters")  # a search space file's


def read_space(path: str | Path) -> dict[str, Any]:
    """A search space YAML: ``metric`` (e.g. val_uar), ``goal`` (maximize/minimize), ``algorithm``
    (bayesian, grid, random) and ``parameters``: ``NAME: {type: double|integer, min, max, scale}`` or
    ``NAME: {type: discrete|categorical, values: [...]}``, NAME being a flag of the command."""
    path = Path(path)
    try:
        space = parse_yaml(path.read_text(), path)
    except OSError as err:
        raise VertexError(f"{path}: not a readable YAML file ({err})") from err
    except ValueError as err:
        raise VertexError(str(err)) from None
    unknown = sorted(set(space) - set(SPACE_KEYS)) if isinstance(space, dict) else []
    if unknown:
        raise VertexError(f"{path}: unknown key(s) {unknown}; a search space has {', '.join(SPACE_KEYS)}")
    if not isinstance(space, dict) or not isinstance(space.get("parameters"), dict) or not space["parameters"]:
        raise VertexError(f"{path}: needs a 'parameters' mapping (NAME: {{type: ..., ...}})")
    if not isinstance(space.get("metric"), str) or "_" not in space["metric"]:
        raise VertexError(f"{path}: needs 'metric', a split and a metric name such as val_uar or val_loss")
    goal = str(space.get("goal", "maximize")).lower()
    if goal not in ("maximize", "minimize"):
        raise VertexError(f"{path}: goal {goal!r}, expected maximize or minimize")
    algorithm = str(space.get("algorithm", "bayesian")).lower()
    if algorithm not in ALGORITHMS:
        raise VertexError(f"{path}: algorithm {algorithm!r}, expected one of {', '.join(ALGORITHMS)}")
    parameters = [_parameter(str(name), spec, str(path)) for name, spec in space["parameters"].items()]
    return {"metric": space["metric"], "goal": goal, "algorithm": algorithm, "parameters": parameters}


def space_monitor(space: dict[str, Any], source: str) -> str:
    """The ``--monitor`` of the space's metric (a validation metric that picks the best epoch; never a test
    metric); the space's goal must be that metric's direction."""
    split, _, name = space["metric"].partition("_")
    if split != "val" or name not in MONITORS:
        known = ", ".join(monitor_key(m) for m in MONITORS)
        raise VertexError(f"{source}: metric {space['metric']!r}: a search tunes a validation metric that picks "
                          f"the best epoch, one of {known} (never a test metric)")
    wanted = "maximize" if MONITORS[name] == "max" else "minimize"
    if space["goal"] != wanted:
        raise VertexError(f"{source}: {space['metric']} is {wanted}d, but the space says goal: {space['goal']}")
    return name


def _edges(parameter: dict[str, Any]) -> list[str]:
    """A parameter's values as the command line receives them that stand for all it takes: a range's ends, every
    listed value."""
    for key in ("doubleValueSpec", "integerValueSpec"):
        if key in parameter:
            return [str(parameter[key]["minValue"]), str(parameter[key]["maxValue"])]
    return [str(v) for v in (parameter.get("discreteValueSpec") or parameter["categoricalValueSpec"])["values"]]


def check_space(space: dict[str, Any], source: str, check: Callable[[list[str]], Any]) -> None:
    """Check, before any trial, that every trial's command line is valid: ``check(["--NAME=VALUE", ...])`` (an
    error: a VertexError or ValueError) of each parameter's edge values alone, then of every two parameters' together
    (an option may act only where another puts the encoder, as --freeze does); the first refused is a VertexError
    naming the parameter(s), value(s) and why."""
    edges = {parameter["parameterId"]: _edges(parameter) for parameter in space["parameters"]}
    settings = [{name: value} for name, values in edges.items() for value in values]
    settings += [{a: x, b: y} for a, b in itertools.combinations(edges, 2) for x in edges[a] for y in edges[b]]
    for setting in settings:
        try:
            check([f"--{name}={value}" for name, value in setting.items()])
        except ValueError as err:
            named = " with ".join(f"parameter {name!r} = {value}" for name, value in setting.items())
            raise VertexError(f"{source}: {named}: {str(err).rpartition('error: ')[2]}") from None


def tuning_job(name: str, command: list[str], machine: Machine, space: dict[str, Any], trials: int,
               parallel: int, max_failed: int = 0) -> dict[str, Any]:
    """A HyperparameterTuningJob: each trial runs ``audiotune COMMAND --PARAM=VALUE ...`` and reports
    ``space['metric']`` (the command gets ``--hypertune_metric``; ``command`` keeps the epoch it reports by that
    metric: see :func:`tuned_command`)."""
    if trials < 1 or parallel < 1:
        raise VertexError(f"--trials {trials} --parallel {parallel}: both must be at least 1")
    if max_failed < 0:
        raise VertexError(f"--max_failed {max_failed}: at least 0")
    study = {"metrics": [{"metricId": space["metric"], "goal": space["goal"].upper()}],
             "parameters": space["parameters"], "algorithm": ALGORITHMS[space["algorithm"]]}
    return {"displayName": name, "studySpec": study, "maxTrialCount": trials,
            "parallelTrialCount": min(parallel, trials), "maxFailedTrialCount": max_failed,
            "trialJobSpec": {"workerPoolSpecs": worker_pools([*command, "--hypertune_metric", space["metric"]],
                                                             machine)}}


def write_spec(spec: dict[str, Any], out: str | Path) -> Path:
    return write_bytes(out, json.dumps(spec, indent=2) + "\n")


def trial_id(env: dict[str, str] | None = None) -> str:
    """This tuning trial's id: ``CLOUD_ML_TRIAL_ID``, else the ``trial`` of ``CLUSTER_SPEC``, else 0."""
    env = dict(os.environ) if env is None else env
    if env.get("CLOUD_ML_TRIAL_ID"):
        return env["CLOUD_ML_TRIAL_ID"]
    try:
        return str(json.loads(env.get("CLUSTER_SPEC", "{}")).get("task", {}).get("trial") or "0")
    except json.JSONDecodeError:
        return "0"


def metric_value(metrics: dict[str, Any], name: str) -> float:
    """``val_uar`` -> ``metrics['val']['uar']``; a per-head dict (AUC of several heads) gives its mean. The
    monitored metric (``val_loss`` too) is the value training selected the kept epoch by."""
    selection = metrics.get("selection")
    if isinstance(selection, dict) and selection.get("monitor") == name and math.isfinite(selection["value"]):
        return float(selection["value"])
    split, _, key = name.partition("_")
    value = metrics.get(split, {}).get(key) if isinstance(metrics.get(split), dict) else None
    if isinstance(value, dict):
        numbers = [v for v in value.values() if isinstance(v, (int, float))]
        value = sum(numbers) / len(numbers) if numbers else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        known = sorted(f"{s}_{k}" for s, part in metrics.items() if isinstance(part, dict) for k in part)
        raise VertexError(f"--hypertune_metric {name}: no finite value in this run's metrics "
                          f"(known: {', '.join(known[:20])})")
    return float(value)


def report_metric(tag: str, value: float, step: int = 0, env: dict[str, str] | None = None) -> Path:
    """Append a trial's metric to the hypertune metrics file that Vertex AI reads (one JSON object per line:
    timestamp, trial, TAG, global_step, values as strings), keeping the last 100 lines."""
    env = dict(os.environ) if env is None else env
    path = Path(env.get("CLOUD_ML_HP_METRIC_FILE", METRIC_FILE))
    lines = path.read_text().splitlines()[-99:] if path.is_file() else []
    lines.append(json.dumps({"timestamp": time.time(), "trial": trial_id(env), tag: str(float(value)),
                             "global_step": str(int(step))}, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, "\n".join(lines) + "\n")
    return path


def cluster_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """Lightning's multi-node variables from Vertex AI's ``CLUSTER_SPEC`` (empty when it is absent, or under
    torchrun): the chief (workerpool0) is node 0, worker ``i`` of workerpool1 node ``i + 1``. Those set already
    are kept: a container that sets ``MASTER_ADDR`` and ``MASTER_PORT`` itself still gets its ``NODE_RANK``."""
    env = dict(os.environ) if env is None else env
    missing = [key for key in NODE_VARIABLES if key not in env and not (key == "NODE_RANK" and "GROUP_RANK" in env)]
    if "CLUSTER_SPEC" not in env or "TORCHELASTIC_RUN_ID" in env or not missing:
        return {}
    try:
        spec = json.loads(env["CLUSTER_SPEC"])
        chief = spec["cluster"]["workerpool0"][0]
        task = spec["task"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
        raise VertexError(f"CLUSTER_SPEC: not the layout Vertex AI writes ({err})") from err
    host, _, port = chief.rpartition(":")
    node = 0 if task.get("type") == "workerpool0" else int(task.get("index", 0)) + 1
    found = dict(zip(NODE_VARIABLES, (host, port or "2222", str(node))))
    return {key: found[key] for key in missing}


def check_command(command: list[str], parse: Any) -> Any:
    """Parse the container's command line here, so a typo fails now and not after the job started; the parsed
    command."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parse(command)
    except SystemExit:
        reason = stderr.getvalue().strip().splitlines()[-1:] or ["not a valid command line"]
        raise VertexError(f"the job's command `audiotune {' '.join(command)}`: {reason[0]}") from None


def check_outputs(outputs: dict[str, str], tuning: bool) -> None:
    """A job's container disk is gone when the job ends: every output path of its command (``{flag: path}``, a
    default one too) must be in a bucket, and a tuning job's must differ per trial (``{trial}``, replaced by the
    trial's id)."""
    for flag, path in outputs.items():
        bucket_url(path, f"the job's {flag}")
        if tuning and "{trial}" not in path:
            raise VertexError(f"the job's {flag} {path}: every trial would write this one place; put {{trial}} in "
                              "it (replaced by each trial's id), e.g. gs://B/runs/{trial}")


def tuned_command(command: list[str], monitor: str, given: str | None) -> list[str]:
    """A trial's ``train`` command keeping the epoch of the space's metric (``--monitor``, as a sweep's trial):
    ``given``, the command's own --monitor, may only be that metric."""
    if given is not None and given != monitor:
        raise VertexError(f"the job's --monitor {given}: the space's metric sets it to {monitor}; leave it out")
    return command if given is not None else [*command, "--monitor", monitor]


def run_command(args: Any, parse: Any, outputs: Any) -> dict[str, Any]:
    """The spec of ``audiotune vertex job|tune``, checked and written to ``--out``. ``parse(command)`` checks a
    command line (argparse's SystemExit on a bad one, ValueError on a value out of range) and returns it parsed;
    ``outputs(command)`` gives its output paths by flag (those it writes by default too)."""
    command = list(args.job_command[1:] if args.job_command[:1] == ["--"] else args.job_command)
    if not args.name.strip():
        raise VertexError("--name: give the job a name (its display name on Vertex AI)")
    for flag, value in (("--image", args.image), ("--machine_type", args.machine_type)):
        if not value.strip() or any(c.isspace() for c in value.strip()):
            raise VertexError(f"{flag} {value!r}: give one name without spaces (the container image's URI; a Compute "
                              "Engine machine type such as n1-highmem-8)")
    if not command:
        raise VertexError("give the command the job runs after --, e.g. -- train -d gs://B/split ...")
    given = vars(check_command(command, parse))
    nodes = given.get("runtime.num_nodes")
    if nodes is not None and nodes != args.replicas:
        raise VertexError(f"the job's --num_nodes {nodes}: the job has --replicas {args.replicas} machine(s), "
                          "which the command runs on; give --replicas alone (it adds --num_nodes)")
    if args.replicas > 1 and nodes is None:
        command += ["--num_nodes", str(args.replicas)]
        check_command(command, parse)  # a command that runs on one machine does not take it
    machine = Machine(args.image, args.machine_type, args.accelerator_type, args.accelerator_count, args.replicas,
                      boot_disk_gb=args.boot_disk_gb)
    check_outputs(outputs(command), tuning=args.vertex_command == "tune")
    if args.vertex_command == "job":
        spec = custom_job(args.name, command, machine, args.base_output)
    else:
        space = read_space(args.space)
        if command[0] != "train":
            raise VertexError("a tuning job runs `train` (the command reports the metric)")
        command = tuned_command(command, space_monitor(space, str(args.space)), given.get("train.monitor"))
        check_space(space, args.space, lambda flags: check_command([*command, *flags], parse))
        spec = tuning_job(args.name, command, machine, space, args.trials, args.parallel, args.max_failed)
    write_spec(spec, args.out)
    return spec
