"""``audiotune stats``: feature mean and std of a split, for --dataset_mean/--dataset_std."""
from __future__ import annotations

import argparse
import json
import sys

from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args
from audiotune.cli.flags import ONE_PROCESS_NOTES, add_config_flags, add_out, refuse_other_options
from audiotune.config import ENCODING
from audiotune.outputs import check_output_path, write_json, write_with_skip_list

# The options stats reads: the table, the features a model of --model computes from each clip as it scores (their
# normalisation is what is measured, so --dataset_mean/--dataset_std are not), and the device that sums them. The
# clips are read one by one in this process, each once, and each clip's features are measured at its own length:
# --target_length and --pad, which pad or crop the clips of a batch, would change nothing, and are refused.
# (--cache_dir stays: the record of checked audio and the audio store live there.)
STATS_OPTIONS = (
    "data.prefix", "data.study", "data.data_split_root", "data.na_values", "data.on_error",
    "audio", "features.features", "features.waveform_norm", "features.num_mel_bins",
    "features.n_mfcc", "features.n_fft", "features.n_mels", "features.utterance_norm",
    "model.model", "model.checkpoint",
    "runtime.accelerator", "runtime.devices", "runtime.cache_dir", "runtime.audio_cache", "runtime.audio_cache_gb",
)


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_config_flags(parser, STATS_OPTIONS, model=model, writes_run=False, backbone_flags=False, stages=ENCODING,
                     why="stats reads clips as they are scored", notes=ONE_PROCESS_NOTES)
    add_out(parser, help="also write the result as JSON here")
    refuse_other_options(parser, "not an option of stats, which measures the features a model of --model "
                                 "computes from each clip of a split when it scores, each clip at its own length "
                                 "(before a batch's padding or --target_length; its options: audiotune stats --help)")
    parser.add_argument("--split", default=None,
                        help="the split measured: train, val or test of a split directory or JSON split file "
                             "(default: train); the rows of one CSV and the clips of an audio folder are named "
                             "data, measured by default")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.device import check_one_process
    from audiotune.engine.extract import feature_stats
    from audiotune.models.backbones import resolve_config

    config = resolve_config(config_from_args(args, takes=STATS_OPTIONS))
    check_one_process(config.runtime.devices, command="stats")
    if args.out:
        check_output_path(args.out)
    result, skipped = feature_stats(config, config.data.data_split_root, args.split, args.out)
    print(json.dumps(result, indent=2))
    listed = None
    if args.out:
        listed = write_with_skip_list(args.out, skipped, lambda path: write_json(path, result))
    if len(skipped):
        if listed is not None:
            print(f"{len(skipped)} clip(s) left out of the statistics: listed in {listed}", file=sys.stderr)
        else:
            print(f"{len(skipped)} clip(s) left out of the statistics:", file=sys.stderr)
            for reason in skipped["reason"]:
                print(f"  {reason}", file=sys.stderr)


COMMAND = Command("stats", "feature mean and std of a split, for --dataset_mean/--dataset_std", arguments, run,
                  examples="audiotune stats -d split --features fbank --num_mel_bins 80 --out stats.json")
