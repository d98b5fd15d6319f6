"""``audiotune evaluate``: score a CSV or split directory with a trained run."""
from __future__ import annotations

import argparse
import json
import sys

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.flags import add_path, add_section_flags, refuse_other_options, spellings
from audiotune.cli.run_flags import SCORING_DATA, add_run_options, add_scoring_flags, scoring_data, scoring_options
from audiotune.cli.show import summary
from audiotune.engine.aggregate import AGGREGATE_MODES
from audiotune.outputs import EVALUATE_DIR, run_dir_of
from audiotune.storage import Role

ROWS = ("data.complete_rows",)  # evaluate scores targets: which labelled rows it keeps, over the run's choice
DATA = (*SCORING_DATA, *ROWS)


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_scoring_flags(parser, data_note="; here labelled rows: a CSV, or every split of a split directory")
    add_path(parser, *spellings("exp_dir", ("-o",)), role=Role.OUTPUT_DIR, dest="exp_dir",
             help="output folder (default RUN/evaluate)")
    parser.add_argument("--aggregate", choices=AGGREGATE_MODES,
                        help="rows that are windows of one recording (a 'recording' column): also score each "
                             "recording from the mean or max of its windows' scores (default mean; none: only "
                             "the rows)")
    add_run_options(parser, ("train.adapt_bn",))
    add_section_flags(parser, (*ROWS, "runtime.report"))
    # the seeds' eval mode took every training flag (one parser); the run's config.yaml holds them here
    refuse_other_options(parser, "not an option of evaluate, which scores with the run's own options (its "
                                     "config.yaml: labels, audio, features, model): leave it out")


def default_outputs(args: argparse.Namespace) -> None:
    args.exp_dir = args.exp_dir or storage.join(args.run, EVALUATE_DIR)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.evaluate import evaluate_run
    from audiotune.engine.report import report_when_done

    metrics = evaluate_run(args.run, args.data_split_root, args.exp_dir, aggregate=args.aggregate,
                           adapt_bn=args.adapt_bn, data=scoring_data(args, DATA), **scoring_options(args))
    if not metrics:
        return  # another process of a multi-process run: rank 0 reports
    print(json.dumps({k: summary(v) for k, v in metrics.items()}, indent=2))  # stdout: this JSON only
    if vars(args).get("runtime.report", True):
        print(report_when_done(args.exp_dir, args.data_split_root, run_dir_of(args.run), scoring_data(args, DATA)),
              file=sys.stderr)


COMMAND = Command("evaluate", "score a CSV or split directory with a trained run", arguments, run,
                  default_outputs=default_outputs,
                  examples="audiotune evaluate --run run -d split/test.csv\n"
                           "audiotune evaluate --run run -d split    (every split of the directory)")
