"""``audiotune probe``: the same head trained on every hidden state of a frozen encoder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args
from audiotune.cli.flags import ONE_PROCESS_NOTES, add_config_flags, refuse_other_options
from audiotune.cli.show import quiet_lightning
from audiotune.cli.stages import refuse_given_idle
from audiotune.config import ENCODING, RunConfig
from audiotune.outputs import PROBE_FILE
from audiotune.storage import final_path

if TYPE_CHECKING:
    import pandas as pd

# The options probe's path reads: a frozen encoder fills the feature cache once, then each head trains on the
# cached pooled states of the layer it probes in one quiet fit in one process, and its last epoch is scored.
# The rest (augmentation and mixup, which the cache cannot serve; --layer/--weighted, which every head sets
# itself; checkpoints, early stopping, loggers, length buckets, processes) is refused as a flag and left at its
# default when a --config file holds it.
PROBE_OPTIONS = (
    "data.prefix", "data.study", "data.data_split_root", "data.label_txt", "data.val_size", "data.seed",
    "data.na_values", "data.on_error", "data.allow_overlap", "data.complete_rows", "data.train_fraction",
    "audio",
    "features.features", "features.waveform_norm", "features.num_mel_bins", "features.target_length",
    "features.n_mfcc", "features.n_fft", "features.n_mels", "features.utterance_norm", "features.pad",
    "features.dataset_mean", "features.dataset_std",
    "model.model", "model.checkpoint",
    "classifier.shared_dense", "classifier.sd_bottleneck", "classifier.clf_bottleneck", "classifier.activation",
    "classifier.final_dropout", "classifier.layernorm", "classifier.pooling_mode", "classifier.frame_activation",
    "classifier.pool_drop_last", "classifier.layer_weights",
    "train.epochs", "train.batch_size", "train.learning_rate", "train.optim", "train.weight_decay", "train.scheduler",
    "train.max_lr", "train.grad_clip", "train.accumulate_grad_batches", "train.warmup_steps", "train.warmup_ratio",
    "train.flat_ratio", "train.training_steps",
    "train.loss", "train.labeling_method", "train.class_weights", "train.balance", "train.standardize_targets",
    "train.ema", "train.val_share", "train.overwrite", "train.debug",
    "runtime.num_workers", "runtime.features_on", "runtime.precision", "runtime.accelerator", "runtime.devices",
    "runtime.cache_dir", "runtime.report",
)


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    # every head reads a frozen encoder (an ECAPA-TDNN too, which train trains by default)
    add_config_flags(parser, PROBE_OPTIONS, model=model, defaults={"model.freeze": True}, stages=ENCODING,
                     why="probe reads a frozen encoder", notes=ONE_PROCESS_NOTES)
    refuse_other_options(parser, "not an option of probe, whose heads train on the cached hidden "
                                                "states of a frozen encoder and are scored after their last epoch "
                                                "(its options: audiotune probe --help)")


def _config(args: argparse.Namespace, read_inputs: bool = True) -> RunConfig:
    config = config_from_args(args, read_inputs=read_inputs, takes=PROBE_OPTIONS)
    refuse_given_idle(config, args, PROBE_OPTIONS)
    return config


def check(args: argparse.Namespace) -> None:
    """Values out of range or contradicting one another, options probe does not read, several processes."""
    from audiotune.engine.probe import check_probe

    check_probe(_config(args, read_inputs=False))


def shown(table: pd.DataFrame) -> str:
    """The probe table as printed: metrics to 3 decimals, one the heads do not have (None) as -."""
    undefined = [c for c in table.columns if table[c].dtype == object and table[c].isna().any()
                 and table[c].map(lambda v: v is None or isinstance(v, float)).all()]
    return table.astype({column: float for column in undefined}).to_string(
        index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.module import trains
    from audiotune.engine.probe import probe
    from audiotune.engine.report import report_when_done

    quiet_lightning(args.verbose)
    config = _config(args)
    table = probe(config)
    print(shown(table))
    print(f"probe table: {final_path(Path(config.exp_dir) / PROBE_FILE)}")
    if not trains(config.train):
        print("no training step (--epochs 0): these are the metrics of untrained heads", file=sys.stderr)
    if config.runtime.report:
        print(report_when_done(config.exp_dir))


COMMAND = Command("probe", "train the same head on every hidden state of a frozen encoder", arguments, run,
                  check=check,
                  examples="audiotune probe --model hf -c facebook/hubert-base-ls960 -d split -l labels.txt -o probe")
