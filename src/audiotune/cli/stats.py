"""``audiotune stats``: feature mean and std of a split, for --dataset_mean/--dataset_std."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audiotune.cli.command import Command
from audiotune.cli.flags import add_config_flags, add_path, config_from_args
from audiotune.outputs import check_output_path, write_csv, write_json
from audiotune.storage import Role


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_config_flags(parser, ("data", "audio", "features", "model", "runtime"), model=model, writes_run=False,
                     backbone_flags=False)
    parser.add_argument("--split", default="train")
    add_path(parser, "--out", role=Role.OUTPUT_FILE, help="also write the result as JSON here")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.extract import feature_stats, skipped_list_path
    from audiotune.models.backbones import resolve_config

    config = resolve_config(config_from_args(args))
    if args.out:
        check_output_path(args.out)
    result, skipped = feature_stats(config, config.data.data_split_root, args.split)
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    if len(skipped):
        if args.out:
            listed = write_csv(skipped, skipped_list_path(Path(args.out)), index=False)
            print(f"{len(skipped)} clip(s) left out of the statistics: listed in {listed}", file=sys.stderr)
        else:
            print(f"{len(skipped)} clip(s) left out of the statistics:", file=sys.stderr)
            for reason in skipped["reason"]:
                print(f"  {reason}", file=sys.stderr)


COMMAND = Command("stats", "feature mean and std of a split, for --dataset_mean/--dataset_std", arguments, run)
