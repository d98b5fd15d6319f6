"""``audiotune pretrain``: self-supervised pretraining, no labels needed."""
from __future__ import annotations

import argparse
import json
import sys

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args, refuse_other_values
from audiotune.cli.flags import add_config_flags, refuse_other_options
from audiotune.cli.show import after_stopped_run, quiet_lightning
from audiotune.config import PRETRAINING, DataConfig, RunConfig, TrainConfig
from audiotune.data.layout import read_splits
from audiotune.outputs import BEST_VAL_LOSS, EPOCHS_RUN, PRETRAIN_OBJECTIVE, STEPS_RUN

# The options pretraining reads: the audio as the encoder reads it (augmented while training), the encoder, its
# optimisation and batches, and where it runs. The rest belongs to labels and heads (label file, classifier,
# losses, class weights and balance, target scaling), to choosing and stopping by a labelled metric (monitor,
# patience, EMA weights, BatchNorm adaptation), to frozen-encoder caching and to the HTML report; pretraining keeps
# the epoch of the lowest validation loss (--keep last: the last epoch), validating on val.csv, else on --val_share
# (default 10 %) of the rows.
# (--cache_dir stays: the audio store lives there too.)
PRETRAIN_OPTIONS = (
    "data.prefix", "data.study", "data.data_split_root", "data.val_size", "data.seed", "data.na_values",
    "data.on_error", "data.mixup",
    "audio", "features", "augment", "model",
    "train.epochs", "train.batch_size", "train.learning_rate", "train.optim", "train.weight_decay", "train.scheduler",
    "train.max_lr", "train.grad_clip", "train.accumulate_grad_batches", "train.warmup_steps", "train.warmup_ratio",
    "train.flat_ratio", "train.training_steps",
    "train.bucket_sampler", "train.num_buckets", "train.dynamic_batch", "train.max_seconds", "train.group_batches",
    "train.val_share", "train.save_top_k", "train.keep", "train.resume", "train.overwrite", "train.allow_changes",
    "train.debug",
    "runtime.num_workers", "runtime.features_on", "runtime.precision", "runtime.accelerator", "runtime.devices",
    "runtime.strategy", "runtime.num_nodes", "runtime.cache_dir", "runtime.audio_cache", "runtime.audio_cache_gb",
    "runtime.logger",
)
NOT_PRETRAINING = ("not an option of pretrain, which trains the encoder on its self-supervised objective without "
                   "labels or heads and keeps the epoch of the lowest validation loss or the last (its options: "
                   "audiotune pretrain --help)")


# what those of training's options mean here (after each one's help)
PRETRAIN_NOTES = {
    "data.val_size": "; here only 0 is taken (no validation without a val part; with one, it is refused); by "
                     "default pretraining validates on the val part, else on --val_share of the rows",
    "train.val_share": "; here 0, the default, is a tenth of the rows (no validation: --val_size 0)",
    "train.save_top_k": "; here by the validation loss (pretrain has no --monitor)",
    "train.keep": "; here by the validation loss (pretrain has no --monitor)",
}


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_config_flags(parser, PRETRAIN_OPTIONS, model=model or "ssast",
                     defaults={"model.model": "ssast"}, stages=PRETRAINING,
                     why="pretrain trains the encoder on its self-supervised objective", notes=PRETRAIN_NOTES)
    refuse_other_options(parser, NOT_PRETRAINING)
    parser.add_argument("--unlabelled_dir", dest="data.data_split_root", default=argparse.SUPPRESS, metavar="FOLDER",
                        help="a folder of audio files to pretrain on (same as -d FOLDER)")


def _validation_rule(args: argparse.Namespace, config: RunConfig) -> None:
    """Pretraining validates on the val part, else on --val_share (default 10 %) of the rows, or on nothing with
    --val_size 0; a count of subjects (training's rule) would be ignored, so it is an error. With a val part,
    --val_share and a --val_size 0 given here would do nothing (a recipe's --val_size 0 is its rule for a split
    without one), so they are errors too, but not for a resumed run (it goes on as it was made)."""
    size, share = config.data.val_size, config.train.val_share
    if size and ("data.val_size" in vars(args) or size != DataConfig().val_size):
        raise ValueError(f"--val_size {size}: pretraining validates on the val part, else on --val_share of the "
                         "rows (default 10 %), not on a number of subjects; --val_size 0: no validation without "
                         "a val part")
    given = " ".join([f"--val_share {share}"] * bool(share) +
                     ["--val_size 0"] * ("data.val_size" in vars(args) and not size))
    if given and not config.train.resume:
        root = config.data.data_split_root
        val = read_splits(root, config.data.prefix).get("val")
        if val is not None and share and "train.val_share" not in vars(args):  # a --config file's (a run's)
            print(f"--config {args.config}: --val_share {share}: does nothing with the val part of {root} (the "
                  "file was written before it was refused); read at its default", file=sys.stderr)
            config.train.val_share = TrainConfig().val_share
            given = given.replace(f"--val_share {share}", "").strip()
        if val is not None and given:
            raise ValueError(f"{given}: {root} has a val part ({val.attrs.get('source', 'val')}), on which pretraining "
                             f"validates whatever {given} says; leave it out, or pretrain on a table without one "
                             "(-d its train.csv) to validate on --val_share of its rows, or on none with --val_size 0")


def _config(args: argparse.Namespace, read_inputs: bool = True) -> RunConfig:
    config = config_from_args(args, read_inputs=read_inputs)
    refuse_other_values(config, args, PRETRAIN_OPTIONS, NOT_PRETRAINING)
    return config


def check(args: argparse.Namespace) -> None:
    """Values out of range, options pretraining does not read, an objective the backbone does not have or one
    without what it needs (--objective ptapt without --pseudo_labels)."""
    from audiotune.engine.pretrain import check_pretraining

    check_pretraining(_config(args, read_inputs=False))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.pretrain import pretrain

    quiet_lightning(args.verbose)
    config = _config(args)
    _validation_rule(args, config)
    metrics = pretrain(config)
    if not metrics:
        return  # another process of a multi-process (DDP) run: rank 0 reports
    print(json.dumps({k: metrics[k] for k in (PRETRAIN_OBJECTIVE, EPOCHS_RUN, STEPS_RUN, BEST_VAL_LOSS)}, indent=2))
    print(f"run directory: {storage.final_place(config.exp_dir)}", file=sys.stderr)  # stdout: the JSON only


COMMAND = Command(
    "pretrain", "self-supervised pretraining, no labels needed: SSAST masked patches (--model ssast) or wav2vec2 "
                "task-adaptive pretraining (--model hf -c CHECKPOINT --objective tapt)", arguments, run,
    after_interrupt=after_stopped_run, check=check,
    examples="audiotune pretrain -d table.csv -o run --model_size tiny --task pretrain_joint\n"
             "audiotune pretrain --config seeds/naip_ssast_pretrain -i prefix -d split -o run\n"
             "audiotune pretrain --model hf -c facebook/wav2vec2-base --objective tapt -d split -o run")
