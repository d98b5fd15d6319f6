"""``audiotune vertex job|tune [options] -- COMMAND ARGS``: a Vertex AI job spec that runs an audiotune command;
``audiotune vertex results JOB.json --out trials.csv``: the trials of a finished tuning job, best first."""
from __future__ import annotations

import argparse
import math

import pandas as pd

from audiotune import storage, vertex, vertex_results
from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args
from audiotune.cli.flags import CONFIG_SECTIONS, add_out, add_path, path_roles, spellings
from audiotune.cli.help import HelpFormatter
from audiotune.cli.values import integer
from audiotune.storage import Role

WRITTEN = (Role.OUTPUT_FILE, Role.OUTPUT_DIR, Role.RUN_OUTPUT, Role.EXPERIMENT)  # lost with the job's disk


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    kinds = parser.add_subparsers(dest="vertex_command", required=True)
    for kind in ("job", "tune"):
        job = kinds.add_parser(kind, help="CustomJob spec" if kind == "job" else
                               "HyperparameterTuningJob spec from a search-space YAML",
                               description="Everything after -- is the audiotune command the container runs, "
                                           "e.g. -- train -d gs://B/split -l gs://B/labels.txt -o gs://B/runs/r1",
                               formatter_class=HelpFormatter)  # each option's default after its help
        job.allow_abbrev = False
        job.add_argument("--name", required=True, help="display name of the job")
        job.add_argument("--image", required=True, help="container image with audiotune (see Dockerfile.cuda)")
        job.add_argument(*spellings("machine_type"), dest="machine_type", default=vertex.Machine.machine_type,
                         help="Compute Engine machine type of each machine")
        job.add_argument(*spellings("accelerator_type"), dest="accelerator_type",
                         default=vertex.Machine.accelerator_type, help="GPU type of each machine; NONE for a CPU job")
        job.add_argument(*spellings("accelerator_count"), dest="accelerator_count", type=integer,
                         default=vertex.Machine.accelerator_count, help="GPUs per machine")
        job.add_argument("--replicas", type=integer, default=1,
                         help="machines (nodes); above 1 the command gets --num_nodes and runs as DDP")
        job.add_argument(*spellings("boot_disk_gb"), dest="boot_disk_gb", type=integer,
                         default=vertex.Machine.boot_disk_gb, help="boot disk of each machine, in GB")
        add_out(job, required=True, help="JSON spec to write")
        if kind == "job":
            job.add_argument(*spellings("base_output"), dest="base_output", default="",
                             help="gs:// root of the job's AIP_MODEL_DIR")
        else:
            add_path(job, "--space", role=Role.INPUT, required=True,
                     help="search space YAML (metric, goal, parameters)")
            job.add_argument("--trials", type=integer, default=10, help="trials in all")
            job.add_argument("--parallel", type=integer, default=2, help="trials run at once")
            job.add_argument(*spellings("max_failed"), dest="max_failed", type=integer, default=None,
                             help="failed trials tolerated; one more fails the job, as one more stops a sweep "
                                  "(default: Vertex AI decides)")
        job.add_argument("job_command", nargs="...", metavar="-- COMMAND",
                         help="the audiotune command the job runs, and its flags")
    results = kinds.add_parser("results", help="trials table of a finished hyperparameter-tuning job",
                               description="JOB.json: `gcloud ai hp-tuning-jobs describe JOB_ID --region REGION "
                                           "--format json`; one row per trial, best first by the study's metric",
                               formatter_class=HelpFormatter)
    add_path(results, "job", role=Role.INPUT, metavar="JOB.json", help="the tuning job's description (JSON)")
    add_out(results, required=True, help="trials table to write (.csv or .parquet)")


def _results(args: argparse.Namespace) -> None:
    from audiotune.storage import final_path

    table, objective, goal = vertex_results.collect_trials(args.job, args.out)
    states = table["state"].value_counts()
    print(f"{final_path(args.out)}: {len(table)} trials (" + ", ".join(f"{n} {s.lower()}" for s, n in states.items())
          + f"), best first by {objective} ({goal.lower()})")
    best = table.iloc[0]
    if math.isnan(best[objective]):
        print(f"no trial reported {objective}")
        return
    settings = ", ".join(f"{k}={best[k]}" for k in table.attrs["parameters"] if not pd.isna(best[k]))
    print(f"best trial {best['trial']}: {objective} {best[objective]:.4g} ({settings})"
          + (f"; run {best['run']}" if "run" in best else ""))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.vertex_command == "results":
        _results(args)
        return

    def parse(command: list[str]) -> argparse.Namespace:
        parsed = parser.parse_args(command)
        local = [f"--{dest}" for dest, role in path_roles(parsed).items() if role is Role.LOCAL
                 and getattr(parsed, dest, None)]
        if local:  # the job's container reaches buckets only, and its own disk is gone when it ends
            raise vertex.VertexError(f"the job's command `audiotune {parsed.command}` reads or writes "
                                     f"{', '.join(local)} on a local disk only, which a Vertex AI job does not have"
                                     + (" (a search on Vertex AI: `audiotune vertex tune`)"
                                        if parsed.command == "sweep" else ""))
        from audiotune.cli import COMMANDS  # (the commands include this one)

        check = next(command.check for command in COMMANDS if command.name == parsed.command)
        if check is not None and not storage.is_remote(vars(parsed).get("config") or ""):
            check(parsed)  # what the command refuses of its options fails now, not in the job (a recipe in a
            # bucket is read by the job)
        return parsed

    def outputs(command: list[str]) -> dict[str, str]:
        parsed = parser.parse_args(command)
        roles = path_roles(parsed)
        if vars(parsed).get("cloud"):  # the seed's upload after the command: its outputs may stay local
            from audiotune.staging import cloud_url

            return {"--cloud_dir": str(cloud_url(parsed, roles))}
        written = {dest: getattr(parsed, dest, None) for dest, role in roles.items() if role in WRITTEN}
        for dest, value in written.items():
            if value:
                continue
            if dest == "exp_dir" and CONFIG_SECTIONS in vars(parsed):  # the run directory of the config
                config = vars(parsed).get("config") or ""
                if storage.is_remote(config):
                    raise vertex.VertexError(f"the job's --config {config}: in a bucket, where the run directory it "
                                             "may name is not read here; give the job's -o gs://BUCKET/...")
                written[dest] = config_from_args(parsed, read_inputs=False).exp_dir
            elif getattr(parsed, "run", None):  # an output that defaults into the run read (RUN/evaluate, ...)
                written[dest] = storage.join(parsed.run, "")
        return {f"--{dest}": str(value) for dest, value in written.items() if value}

    spec = vertex.run_command(_with_vertex_counts(args), parse, outputs)
    print(f"{args.out}: {'CustomJob' if args.vertex_command == 'job' else 'HyperparameterTuningJob'} "
          f"{spec['displayName']!r}")


def _with_vertex_counts(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with ``--max_failed N`` (failed trials tolerated, as sweep's) as Vertex AI counts it: the failed
    trials that fail the job, N + 1 (0, not given: Vertex AI decides)."""
    tolerated = vars(args).get("max_failed")
    if tolerated is None:
        return argparse.Namespace(**{**vars(args), "max_failed": 0})
    if tolerated < 0:
        raise ValueError(f"--max_failed {tolerated}: the failed trials tolerated, at least 0")
    return argparse.Namespace(**{**vars(args), "max_failed": tolerated + 1})


COMMAND = Command("vertex", "write a Vertex AI CustomJob or hyperparameter-tuning job spec (JSON) that runs an "
                            "audiotune command, or read a finished tuning job's trials", arguments, run,
                  examples="audiotune vertex job --name ft --image IMAGE --out job.json -- train -d gs://B/split "
                           "-l gs://B/labels.txt -o gs://B/runs/r1\n"
                           "audiotune vertex tune --name search --image IMAGE --space space.yaml --out tune.json -- "
                           "train -d gs://B/split -l gs://B/labels.txt -o 'gs://B/runs/{trial}'\n"
                           "audiotune vertex results job.json --out trials.csv")
