"""``audiotune train``: train a classifier; writes a run directory."""
from __future__ import annotations

import argparse
import json
import sys

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args
from audiotune.cli.flags import add_config_flags
from audiotune.cli.help import shared_group
from audiotune.cli.show import after_stopped_run, quiet_lightning, summary
from audiotune.outputs import SCORED_SPLITS


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_config_flags(parser, model=model)
    shared_group(parser, "seed command-line compatibility", summarised=True).add_argument(
        "--valid_split", "--valid-split", dest="valid_split", type=float, default=argparse.SUPPRESS, metavar="SHARE",
        help="the SER seed's share of the training clips kept for training: the others, drawn at random, validate "
             "(--val_share 1-SHARE); 1.0: no validation (--val_size 0)")
    parser.add_argument("--hypertune_metric", metavar="METRIC", help="report this metric (e.g. val_uar) to a Vertex "
                                                                     "AI tuning job (`audiotune vertex tune`)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune import vertex
    from audiotune.engine.report import report_when_done
    from audiotune.engine.train import train

    quiet_lightning(args.verbose)
    config = config_from_args(args)
    metrics = train(config)
    if not metrics:
        return  # another process of a multi-process (DDP) run: rank 0 reports
    # stdout: the metrics' JSON only (`| python -m json.tool`); what else is said goes to stderr
    print(json.dumps({k: summary(v) for k, v in metrics.items() if k in SCORED_SPLITS}, indent=2))
    if not metrics.get("trained", True):
        print("no training step (--epochs 0): these are the metrics of the untrained model", file=sys.stderr)
    if args.hypertune_metric:
        value = vertex.metric_value(metrics, args.hypertune_metric)
        reported = vertex.report_metric(args.hypertune_metric, value)
        print(f"{args.hypertune_metric} {value:.6g} reported to {reported}", file=sys.stderr)
    print(f"run directory: {storage.final_place(config.exp_dir)}", file=sys.stderr)
    if config.runtime.report:
        print(report_when_done(config.exp_dir), file=sys.stderr)


def check(args: argparse.Namespace) -> None:
    """Values out of range or contradicting one another, and options that act where train never runs or not where
    --freeze puts the encoder (a backbone's default --freeze is settled once its checkpoint is read)."""
    from audiotune.engine.train import check_training
    from audiotune.models.option_checks import refuse_inactive

    config = config_from_args(args, read_inputs=False)
    check_training(config)
    refuse_inactive(config)


COMMAND = Command("train", "train a classifier; writes a run directory", arguments, run,
                  examples="audiotune train -d split -l labels.txt -o run --model ecapa_tdnn -e 10\n"
                           "audiotune train --config ecapa_short_speech -d split -l labels.txt -o run\n"
                           "audiotune train --model hf -c facebook/wav2vec2-base -d split -l labels.txt -o run",
                  after_interrupt=after_stopped_run, check=check)
