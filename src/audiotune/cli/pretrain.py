"""``audiotune pretrain``: self-supervised pretraining, no labels needed."""
from __future__ import annotations

import argparse
import json
import sys

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.flags import add_config_flags, config_from_args
from audiotune.cli.show import quiet_lightning
from audiotune.config import PRETRAINING


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_config_flags(parser, model=model or "ssast",
                     defaults={"model.model": "ssast", "options.task": "pretrain_joint"}, stages=PRETRAINING,
                     why="pretrain trains the encoder on its self-supervised objective")
    parser.add_argument("--unlabelled_dir", dest="data.data_split_root", default=argparse.SUPPRESS,
                        help="a folder of audio files to pretrain on (same as -d FOLDER)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.pretrain import pretrain

    quiet_lightning(args.verbose)
    config = config_from_args(args)
    metrics = pretrain(config)
    if not metrics:
        return  # another process of a multi-process (DDP) run: rank 0 reports
    print(json.dumps({k: metrics[k] for k in ("objective", "epochs_run", "steps_run", "best_val_loss")}, indent=2))
    print(f"run directory: {storage.final_place(config.exp_dir)}", file=sys.stderr)  # stdout: the JSON only


COMMAND = Command(
    "pretrain", "self-supervised pretraining, no labels needed: SSAST masked patches (--model ssast) or wav2vec2 "
                "task-adaptive pretraining (--model hf -c CHECKPOINT --objective tapt)", arguments, run,
    after_interrupt="the same command with --resume continues from the last finished epoch")
