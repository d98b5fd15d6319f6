"""Command line: each subcommand parses its flags, builds a config and calls one function."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Any

from audiotune import __version__, storage, vertex
from audiotune.config import RANGES, SECTIONS, RunConfig, check_config, describe_range, load_config
from audiotune.data.errors import DataError
from audiotune.outputs import check_output_path, write_csv, write_json
from audiotune.staging import staged
from audiotune.taps import TAP_WINDOW

DESCRIPTION = """\
audiotune turns labelled audio into classifiers and embeddings: fine-tune or probe pretrained encoders
(wav2vec2-style Hugging Face models, SSAST) or train ECAPA-TDNN from scratch, then evaluate, cross-validate
and extract embeddings. Every command reads a CSV table (path + label columns) or a split directory
(train.csv, val.csv, test.csv) and writes one run directory that the other commands read back."""
EPILOG = """\
start here:
  audiotune manifest AUDIO_DIR --out table.csv --pattern '(?P<label>[a-z]+)_\\d+\\.wav'
  audiotune split table.csv --out split
  echo label > labels.txt
  audiotune train -d split -l labels.txt -o run --model ecapa_tdnn -e 10
  audiotune evaluate --run run -d split/test.csv
recipes: audiotune train --config configs/ecapa_short_speech.yaml ...
every command: audiotune COMMAND --help"""

# seed boolean flags whose meaning maps onto another option: (section, name, value if true, value if false)
SEED_SWITCHES = {"fbank": ("features", "features", "fbank", "mfcc")}


def parse_bool(text: str | bool) -> bool:
    """'True'/'False'/'1'/'0'/'yes'/'no' as the seeds' command lines pass booleans."""
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("true", "1", "yes", "y", "on"):
        return True
    if value in ("false", "0", "no", "n", "off", "none"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {text!r}")


def integer(text: str) -> int:
    """An integer, also written as a whole float ("300.0": how tuning services pass discrete values)."""
    try:
        return int(text)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise ValueError(f"{text!r} is not a whole number") from None
        return int(number)


def _none_lower(text: str) -> str:
    return "none" if text.strip().lower() == "none" else text


def _spellings(name: str, extra: tuple[str, ...] = ()) -> list[str]:
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    return list(extra) + flags


def _add_field(group: argparse._ArgumentGroup, section: str, spec: dataclasses.Field, hints: dict) -> None:
    meta = spec.metadata
    if meta.get("cli") is False:
        return
    kind = hints[spec.name]
    text = meta.get("help", "")
    if (section, spec.name) in RANGES:
        text += f" (valid: {describe_range(*RANGES[section, spec.name])})"
    kwargs: dict[str, Any] = {"dest": f"{section}.{spec.name}", "default": argparse.SUPPRESS, "help": text}
    if meta.get("choices"):
        kwargs["choices"] = meta["choices"]
    if meta.get("choices") and "none" in meta["choices"]:
        kwargs["type"] = _none_lower  # the seeds pass "None"
    elif bool in (kind, *typing.get_args(kind)):
        kwargs.update(nargs="?", const=True, type=parse_bool, metavar="BOOL")
    elif typing.get_origin(kind) is list:
        kwargs.update(nargs="+", type=typing.get_args(kind)[0])
    else:
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        kwargs["type"] = integer if base is int else base
    group.add_argument(*_spellings(spec.name, meta.get("flags", ())), **kwargs)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Every RunConfig option as a flag (``--x_y`` and ``--x-y``), plus the seeds' spellings."""
    parser.add_argument("--config", help="YAML config to start from (flags override it)")
    parser.add_argument(*_spellings("exp_dir", ("-o",)), dest="exp_dir", default=argparse.SUPPRESS,
                        help="run directory for every output")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section)
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            _add_field(group, section, spec, hints)
    seeds = parser.add_argument_group("seed command-line compatibility")
    seeds.add_argument("--fbank", nargs="?", const=True, type=parse_bool, default=argparse.SUPPRESS,
                       metavar="BOOL", help="same as --features fbank")
    seeds.add_argument("--mono", choices=("mean", "sum"), default=argparse.SUPPRESS,
                       help="same as --channel_mode mean|sum")
    seeds.add_argument("--reduce", nargs="?", const=True, type=parse_bool, default=argparse.SUPPRESS,
                       metavar="BOOL", help="True: mix channels down (--mono, default mean); "
                                            "False: same as --channel_mode none (mono files only)")
    _storage_flags(parser)


def _storage_flags(parser: argparse.ArgumentParser) -> None:
    """The seed systems' Google Cloud Storage flags; any path may also be a gs:// URL (see audiotune.staging)."""
    group = parser.add_argument_group("cloud storage (every path may also be gs://BUCKET/...)")
    group.add_argument("-b", "--bucket_name", "--bucket-name", dest="bucket_name",
                       help="bucket that --cloud uploads to (seed flag)")
    group.add_argument("-p", "--project_name", "--project-name", dest="project_name",
                       help="Google Cloud project of the buckets")
    group.add_argument("--cloud", nargs="?", const=True, type=parse_bool, default=False, metavar="BOOL",
                       help="also upload the output folder to gs://BUCKET/CLOUD_DIR when the command finishes")
    group.add_argument("--cloud_dir", "--cloud-dir", dest="cloud_dir", default="",
                       help="folder inside -b/--bucket_name that --cloud uploads to")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A RunConfig from defaults (or --config), with every flag given on the command line applied."""
    config = load_config(args.config) if getattr(args, "config", None) else RunConfig()
    return apply_flags(config, args)


def apply_flags(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``config`` with every config flag of ``args`` (those given on the command line) set."""
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            setattr(getattr(config, section), name, value)
        elif key == "exp_dir":
            config.exp_dir = value
        elif key in SEED_SWITCHES:
            section, name, if_true, if_false = SEED_SWITCHES[key]
            setattr(getattr(config, section), name, if_true if value else if_false)
    _channel_aliases(args, config)
    return check_config(config)


def _channel_aliases(args: argparse.Namespace, config: RunConfig) -> None:
    """The seeds' --reduce/--mono spell a channel mode; an explicit --channel_mode must agree with them."""
    given = vars(args)
    if "reduce" not in given and "mono" not in given:
        return
    alias = "none" if given.get("reduce") is False else given.get("mono", "mean")
    explicit = given.get("audio.channel_mode")
    if explicit is not None and explicit != alias:
        raise ValueError(f"--channel_mode {explicit} contradicts --reduce/--mono (which mean --channel_mode {alias})")
    config.audio.channel_mode = alias


def _run_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", "--trained_mdl_path", "--trained-mdl-path", "-mp", "--finetuned_mdl_path",
                        "--finetuned-mdl-path", dest="run", required=True,
                        help="run directory of `audiotune train` (or the model.safetensors inside it)")


def _run_flags(parser: argparse.ArgumentParser) -> None:
    _run_flag(parser)
    parser.add_argument(*_spellings("data_split_root", ("-d",)), dest="data_split_root", required=True,
                        help="one CSV, or a split directory")
    parser.add_argument(*_spellings("batch_size", ("-bs",)), dest="batch_size", type=int)
    parser.add_argument(*_spellings("num_workers", ("-nw",)), dest="num_workers", type=int)
    parser.add_argument(*_spellings("on_error"), dest="on_error", choices=("raise", "skip"))
    _storage_flags(parser)


def _device_flags(parser: argparse.ArgumentParser) -> None:
    """--accelerator/--devices/--precision of a command that loads a run; they override the run's config."""
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "cuda", "mps"),
                        help="where the model runs: auto takes the GPU when there is one (default: the run's)")
    parser.add_argument("--devices", help="which device: auto, a count (the first is used) or a list of indices "
                                          "such as 0,1 or [1] (the first is used) (default: the run's)")
    parser.add_argument("--precision", choices=("32", "bf16"), help="inference precision (default: the run's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiotune", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more, and show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"audiotune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a classifier; writes a run directory")
    add_config_flags(train)
    train.add_argument("--hypertune_metric", help="report this metric (e.g. val_uar) when training ends, as a "
                                                  "Vertex AI tuning trial does (see `audiotune vertex tune`)")

    evaluate = commands.add_parser("evaluate", help="score a CSV or split directory with a trained run")
    _run_flags(evaluate)
    _device_flags(evaluate)
    evaluate.add_argument(*_spellings("exp_dir", ("-o",)), dest="exp_dir", help="output folder (default RUN/evaluate)")
    evaluate.add_argument("--aggregate", default="mean", choices=("none", "mean", "max"),
                          help="rows that are windows of one recording (a 'recording' column): also score each "
                               "recording from the mean or max of its windows' scores (default mean)")
    evaluate.add_argument("--adapt_bn", metavar="none|split|COLUMN",
                          help="re-estimate BatchNorm statistics before scoring, on the whole split's clips or on "
                               "each group of COLUMN (e.g. subject) apart, or none (test-time adaptation to new "
                               "speakers or microphones; default: the run's)")

    extract = commands.add_parser("extract", help="write embeddings to parquet")
    _run_flags(extract)
    _device_flags(extract)
    extract.add_argument("--out", help="parquet file (default RUN/embeddings_TYPE.parquet)")
    extract.add_argument(*_spellings("embedding_type"), dest="embedding_type", default="ft",
                         choices=("pt", "wt", "st", "ft"))
    extract.add_argument("--layer", type=int, help="hidden state for pt embeddings (default: the run's)")
    extract.add_argument(*_spellings("pooling_mode", ("-pm",)), dest="pooling_mode", choices=("mean", "sum", "max"))

    export = commands.add_parser(
        "export", help="a trained run's classifier as ONNX or TorchScript: waveforms in, logits and embeddings out",
        description="Writes FILE (inputs: waveforms (batch, samples) float32 at the run's sample rate, lengths "
                    "(batch,) int64; outputs: logits, embedding_ft, embedding_pooled; any batch size and length) "
                    "and FILE.json, which describes inputs, preprocessing, outputs and classes.")
    _run_flag(export)
    export.add_argument("--format", default="onnx", choices=("onnx", "torchscript"), help="default onnx")
    export.add_argument("--out", required=True, help="model file to write, e.g. model.onnx (FILE.json beside it)")

    attention = commands.add_parser("attention", help="per-layer attention maps and rollout of one clip (PNG)")
    _run_flag(attention)
    _device_flags(attention)
    attention.add_argument("--audio", required=True, help="audio file")
    attention.add_argument(*_spellings("exp_dir", ("-o",)), dest="exp_dir",
                           help="output folder (default RUN/attention)")

    manifest = commands.add_parser("manifest", help="build a manifest CSV from a folder of audio")
    manifest.add_argument("audio_dir")
    manifest.add_argument("--out", required=True, help="manifest CSV to write")
    manifest.add_argument("--pattern", help=r"regex with named groups over file names, e.g. "
                                            r"'(?P<digit>\d)_(?P<subject>[a-z]+)_\d+\.wav'")
    manifest.add_argument(*_spellings("folder_label"), dest="folder_label",
                          help="label column filled from each file's parent folder (folder-per-class)")
    manifest.add_argument(*_spellings("on_error"), dest="on_error", default="raise", choices=("raise", "skip"))

    segment = commands.add_parser(
        "segment", help="segment table (uid, path, offset, duration) from an event table or sliding windows",
        description="Event table (path, time, ...) with --before/--after: one segment per event. "
                    "Recording table (path, ...) with --window [--hop]: sliding windows grouped by a "
                    "'recording' column. Other columns are carried; paths are written relative to --out.")
    segment.add_argument("table", help="event table (path, time, ...) or recording table (path, ...), CSV")
    segment.add_argument("--out", required=True, help="segment CSV to write")
    segment.add_argument("--before", type=float, help="events: seconds before each event's time")
    segment.add_argument("--after", type=float, help="events: seconds after each event's time")
    segment.add_argument("--window", type=float, help="recordings: window length in seconds")
    segment.add_argument("--hop", type=float, help="recordings: seconds between window starts (default: --window)")
    segment.add_argument(*_spellings("on_error"), dest="on_error", default="raise", choices=("raise", "skip"),
                         help="events whose segment leaves its file: raise an error, or skip them and list them "
                              "in OUT.skipped.csv")

    split = commands.add_parser("split", help="subject-disjoint, stratified train/val/test CSVs (or k folds)")
    split.add_argument("manifest", help="manifest CSV")
    split.add_argument("--out", required=True, help="output directory")
    split.add_argument(*_spellings("test_fraction"), dest="test_fraction", type=float, default=0.2)
    split.add_argument(*_spellings("val_fraction"), dest="val_fraction", type=float, default=0.1)
    split.add_argument(*_spellings("test_subjects"), dest="test_subjects", nargs="+")
    split.add_argument(*_spellings("val_subjects"), dest="val_subjects", nargs="+")
    split.add_argument("--stratify", help="label column to stratify by")
    split.add_argument("--group", default="subject", help="column no two splits may share (default subject)")
    split.add_argument("--folds", type=int, default=0, help="write k folds as fold_1..fold_k")
    split.add_argument("--seed", type=int, default=0)

    pretrain = commands.add_parser(
        "pretrain", help="self-supervised pretraining, no labels needed: SSAST masked patches (--model ssast) or "
                         "wav2vec2 task-adaptive pretraining (--model hf -c CHECKPOINT --objective tapt)")
    add_config_flags(pretrain)
    pretrain.add_argument("--unlabelled_dir", dest="data.data_split_root", default=argparse.SUPPRESS,
                          help="a folder of audio files to pretrain on (same as -d FOLDER)")

    probe = commands.add_parser("probe", help="train the same head on every hidden state of a frozen encoder")
    add_config_flags(probe)

    cv = commands.add_parser(
        "cv", help="cross-validation: every fold x --repeats seeds as run directories, then cv_summary.json",
        description="-d is a table (.csv; folds by --group, or --folds K), a folder of fold_N/ split folders, or "
                    "a folder of JSON split files ({\"Train\": ..., \"Val\": ..., \"Test\": ...}). Every other "
                    "flag is a train flag. Run the same command again to resume.")
    add_config_flags(cv)
    folds = cv.add_argument_group("folds")
    folds.add_argument("--group", default="subject",
                       help="table: column whose values are left out one at a time (or kept together in --folds)")
    folds.add_argument("--folds", type=int, default=0, help="table: K group-disjoint folds instead of one per group")
    folds.add_argument("--stratify", help="table with --folds: label column to stratify the folds by")
    folds.add_argument("--val_group", "--val-group", dest="val_group", default="next",
                       choices=("next", "draw", "none"),
                       help="validation of a fold without one: the next fold's test rows (default), --val_size "
                            "groups drawn from its training rows, or none (every other group trains; each run "
                            "keeps its last epoch)")
    folds.add_argument("--repeats", type=int, default=1, help="runs per fold, with seeds --seed .. --seed+R-1")
    folds.add_argument("--audio_dir", "--audio-dir", "--datadir", dest="audio_dir", default="",
                       help="JSON split files: folder the utterance names are relative to (default: the JSON's)")
    folds.add_argument("--json_label", "--json-label", dest="json_label", default="label",
                       help="JSON split files: column that receives each utterance's label")

    cluster = commands.add_parser(
        "cluster", help="k-means pseudo-labels for every frame of every clip (the targets of --objective ptapt)",
        description="Frames of hidden state --layer of an encoder (-c CHECKPOINT, or --run RUN for a trained "
                    "run's fine-tuned encoder) are sampled into a fixed buffer, clustered with faiss k-means for "
                    "each K, then every frame of every clip of -d is assigned. Writes uid, k, labels rows to "
                    "--out (parquet) and the cluster usage to OUT_STEM.clusters.json.")
    add_config_flags(cluster)
    cluster.add_argument("--run", help="trained run directory whose (fine-tuned) encoder makes the frames "
                                       "(default: the -c encoder as loaded)")
    cluster.add_argument("--out", required=True, help="parquet file of frame labels")
    cluster.add_argument("--num_clusters", "--num-clusters", dest="num_clusters", type=int, nargs="+",
                         default=[64, 512, 4096], help="cluster counts K, one label sequence each (default 64 512 "
                                                       "4096, as the seed system's IEMOCAP recipe)")
    cluster.add_argument("--sample_ratio", "--sample-ratio", dest="sample_ratio", type=float, default=0.2,
                         help="share of each clip's frames offered to the k-means sample (default 0.2)")
    cluster.add_argument("--max_frames", "--max-frames", dest="max_frames", type=int, default=0,
                         help="rows of the preallocated k-means sample buffer (memory: rows x dim x 4 bytes; "
                              "default 256 x the largest K)")
    cluster.add_argument("--niter", type=int, default=20, help="k-means iterations (default 20)")

    taps = commands.add_parser("taps", help="taps and keystrokes in long recordings: detect, align")
    taps_commands = taps.add_subparsers(dest="taps_command", required=True)
    detect = taps_commands.add_parser(
        "detect", help="peaks of the high-passed channel mean, streamed in blocks; writes path,time,height rows",
        description="Channel mean (or --channel_select) -> zero-phase Butterworth high-pass -> optional "
                    "envelope -> peaks at least --min_distance apart above --height, or above --factor x the "
                    "recording's noise floor (the --floor_quantile of |trace|). The rows feed `audiotune "
                    "segment --before/--after`.")
    detect.add_argument("recordings", nargs="+", help="audio files (any channel count)")
    detect.add_argument("--out", required=True, help="CSV to write: path, time, height, energy_ch0, ...")
    detect.add_argument("--cutoff", type=float, default=1200.0, help="high-pass cutoff in Hz (default 1200)")
    detect.add_argument("--order", type=int, default=3, help="Butterworth order, applied forwards and backwards")
    detect.add_argument(*_spellings("min_distance"), dest="min_distance", type=float, default=0.125,
                        help="seconds between two peaks; the higher one stays (default 0.125)")
    detect.add_argument("--height", type=float, help="fixed threshold on the trace (default: adaptive)")
    detect.add_argument("--factor", type=float, default=8.0, help="adaptive threshold: factor x noise floor")
    detect.add_argument(*_spellings("floor_quantile"), dest="floor_quantile", type=float, default=0.5,
                        help="noise floor: this quantile of |trace| over the recording (default 0.5)")
    detect.add_argument("--envelope", type=float, default=0.0,
                        help="seconds of short-time RMS of the trace (0: signed trace, positive peaks only)")
    detect.add_argument("--relative", type=float, default=0.0,
                        help="threshold at least this x the median height of the --top strongest peaks (0 = off; "
                             "for recordings whose noise floor is near zero, e.g. behind a noise gate)")
    detect.add_argument("--top", type=int, default=15, help="strong peaks that set the --relative reference")
    detect.add_argument("--edge", type=float, default=0.0,
                        help="seconds at both ends of each recording where peaks are dropped (start/stop transients)")
    detect.add_argument("--release", type=float, default=0.0,
                        help="drop a peak that follows a kept one within this many seconds and is below "
                             "--release_ratio x its height (0 = off; a release or stop click)")
    detect.add_argument(*_spellings("release_ratio"), dest="release_ratio", type=float, default=0.8)
    detect.add_argument(*_spellings("channel_select"), dest="channel_select", type=int, nargs="+",
                        help="channels averaged into the trace (0-based; default all)")
    detect.add_argument(*_spellings("block_seconds"), dest="block_seconds", type=float, default=60.0,
                        help="seconds read at a time (memory bound; the peaks do not depend on it)")
    detect.add_argument("--plot", help="folder for one diagnostic PNG per recording")
    align = taps_commands.add_parser(
        "align", help="pair detected taps one to one with touch-log events; writes a labelled segment table",
        description="Each touch (Down events of the touch logs) is labelled by its nearest key centre and expected "
                    "to sound --latency seconds after its timestamp; taps and touches are paired one to one (the "
                    "most pairs within --selectivity, then the smallest time errors). Without --latency it is "
                    "estimated. Writes OUT (segments: uid, path, offset, duration, time, label, x, y, ...), "
                    "OUT.unmatched.csv and OUT.report.json.")
    align.add_argument("taps", help="taps table from `audiotune taps detect` (path, time, ...)")
    align.add_argument(*_spellings("touch_log"), dest="touch_log", nargs="+", required=True,
                       help="touch-log CSV(s) (no header: timestamp, touch id, event, x, y, ...); concatenated")
    align.add_argument("--keys", required=True, help="key centres CSV: x, y, label (header optional; 'none' points "
                                                     "absorb off-key touches)")
    align.add_argument("--out", required=True, help="segment CSV to write")
    align.add_argument("--latency", type=float,
                       help="seconds from a logged touch to its sound (negative: the sound is earlier; the tap2key "
                            "system used -0.15); default: estimated from the data")
    align.add_argument("--selectivity", type=float, default=0.1,
                       help="seconds a tap may lie from its touch's expected time (default 0.1)")
    align.add_argument(*_spellings("max_latency"), dest="max_latency", type=float, default=1.0,
                       help="largest |latency| searched when it is estimated (default 1 s)")
    align.add_argument(*_spellings("keep_none"), dest="keep_none", action="store_true",
                       help="keep taps matched to off-key touches, labelled 'none' (default: listed in "
                            "OUT.unmatched.csv)")
    align.add_argument(*_spellings("max_key_distance"), dest="max_key_distance", type=float,
                       help="a touch farther than this from every key centre is 'none' (sensor units)")
    align.add_argument(*_spellings("time_pattern"), dest="time_pattern", default="last7",
                       help="recording start in each file name: last7 (the last 7 integer groups: hour, minute, "
                            "second, fraction, month, day, year) or a strptime pattern such as %%Y%%m%%d-%%H%%M%%S")
    align.add_argument(*_spellings("start_column"), dest="start_column",
                       help="column of the taps table holding each recording's start time (instead of the name)")
    align.add_argument("--event", default="Down", help="the touch-log event that marks a touch (default Down)")
    align.add_argument("--before", type=float, default=TAP_WINDOW[0],
                       help=f"segment seconds before each tap (default {TAP_WINDOW[0]}: 2192 samples at 96 kHz)")
    align.add_argument("--after", type=float, default=TAP_WINDOW[1],
                       help=f"segment seconds after each tap (default {TAP_WINDOW[1]}: 6000 samples at 96 kHz)")
    align.add_argument("--plot", help="folder for one PNG per recording: taps, touches and their labels")

    stats = commands.add_parser("stats", help="feature mean and std of a split, for --dataset_mean/--dataset_std")
    add_config_flags(stats)
    stats.add_argument("--split", default="train")
    stats.add_argument("--out", help="also write the result as JSON here")
    vertex.add_parser(commands)
    sweep = commands.add_parser(
        "sweep", help="hyperparameter search (Optuna): every trial a train run directory under -o",
        description="Every flag other than the sweep's own is a train flag that all trials share; the space's "
                    "parameters are train flags too. Run the same command again (or several at once, one per "
                    "device) to continue the sweep.")
    add_config_flags(sweep)
    options = sweep.add_argument_group("sweep")
    options.add_argument("--space", required=True,
                         help="search space YAML: metric (a validation metric, e.g. val_uar), goal, algorithm "
                              "(bayesian, random, grid) and parameters (the format of `audiotune vertex tune`)")
    options.add_argument("--trials", type=integer, default=10, help="finished (complete or pruned) trials to reach")
    options.add_argument("--pruner", choices=("median", "none"), default="median",
                         help="stop a trial whose validation metric is below the median of earlier trials at the "
                              "same epoch")
    options.add_argument("--prune_after", "--prune-after", dest="prune_after", type=integer, default=2,
                         help="epochs every trial trains before it may be pruned")
    options.add_argument("--startup_trials", "--startup-trials", dest="startup_trials", type=integer, default=3,
                         help="finished trials before any trial is pruned")
    options.add_argument("--storage", default="",
                         help="Optuna storage URL shared by processes on several machines (default: sqlite "
                              "study.db in -o)")
    options.add_argument("--study_name", "--study-name", dest="study_name", default="audiotune")
    options.add_argument("--heartbeat", type=integer, default=30,
                         help="seconds between a running trial's signs of life; one silent for twice this long is "
                              "run again (its process died)")
    options.add_argument("--max_failed", "--max-failed", dest="max_failed", type=integer, default=0,
                         help="failed trials tolerated before the sweep stops with the error")
    for command in commands.choices.values():
        command.allow_abbrev = False  # a seed flag such as -b must never be read as a prefix of another
    return parser


def _command_split(args: argparse.Namespace) -> None:
    from audiotune.data.layout import read_table
    from audiotune.data.splits import group_values, kfold_tables, split_table, write_split

    table = read_table(args.manifest, tuple(c for c in (args.group, args.stratify) if c))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a folder")
    stale = sorted(p.name for p in out.glob("fold_*") if p.is_dir()) if out.is_dir() else []
    if args.folds:
        stale = [name for name in stale if name.removeprefix("fold_").isdigit()
                 and int(name.removeprefix("fold_")) > args.folds]
    if stale:
        raise DataError(f"--out {out}: holds folds of an earlier split ({stale[:3]}{' ...' if len(stale) > 3 else ''})"
                        " that this split would not replace; choose an empty folder")
    if args.folds:
        folds = kfold_tables(table, args.folds, args.val_fraction, args.stratify, args.group, args.seed, args.manifest)
        for number, parts in enumerate(folds, start=1):
            write_split(parts, Path(args.out) / f"fold_{number}")
            print(f"fold_{number}: " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
        return
    parts = split_table(table, args.test_fraction, args.val_fraction, args.stratify, args.group, args.seed,
                        args.test_subjects, args.val_subjects, args.manifest)
    write_split(parts, args.out)
    for name, part in parts.items():
        print(f"{name}: {len(part)} rows, {group_values(part, args.group, name).nunique()} {args.group} groups")


def _quiet_lightning(verbose: bool) -> None:
    """Lightning sets INFO when imported: its hardware and tips banner on every run, unless -v."""
    if not verbose:
        logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)


def _command_taps(args: argparse.Namespace) -> None:
    if args.taps_command == "align":
        _command_taps_align(args)
        return
    from audiotune.taps.detect import (
        DetectOptions,
        check_recordings,
        detect,
        plot_detection,
        taps_table,
    )

    options = DetectOptions(cutoff=args.cutoff, order=args.order, min_distance=args.min_distance,
                            height=args.height, factor=args.factor, floor_quantile=args.floor_quantile,
                            envelope=args.envelope, relative=args.relative, top=args.top, edge=args.edge,
                            release=args.release, release_ratio=args.release_ratio, block_seconds=args.block_seconds,
                            channel_select=tuple(args.channel_select) if args.channel_select else None)
    options.validate()
    out = check_output_path(args.out)
    check_recordings(args.recordings)
    window = TAP_WINDOW
    detections = []
    for path in args.recordings:
        found = detect(path, options, window, overview_bins=4000 if args.plot else 0)
        floor = f", noise floor {found.floor:.3g}" if found.floor is not None else ""
        print(f"{path}: {len(found.positions)} taps (threshold {found.threshold:.3g}{floor})")
        detections.append(found)
    write_csv(taps_table(detections, out), out, index=False)
    if args.plot:
        for found in detections:
            plot_detection(found, Path(args.plot) / f"{Path(found.path).stem}_taps.png", window)
    total = sum(len(d.positions) for d in detections)
    print(f"{out}: {total} taps in {len(detections)} recordings" + (f"; plots in {args.plot}" if args.plot else ""))


def _command_taps_align(args: argparse.Namespace) -> None:
    from audiotune.taps.align import AlignOptions, align_csv, plot_alignment

    options = AlignOptions(latency=args.latency, selectivity=args.selectivity, max_latency=args.max_latency,
                           keep_none=args.keep_none, max_key_distance=args.max_key_distance, event=args.event)
    if min(args.before, args.after) < 0 or args.before + args.after <= 0:
        raise DataError(f"--before {args.before} / --after {args.after}: seconds >= 0, together more than 0")
    result = align_csv(args.taps, args.touch_log, args.keys, args.out, options, (args.before, args.after),
                       args.time_pattern, args.start_column)
    report = result.alignment.report()
    for row in report["recordings"]:
        error = f", median error {row['median_error'] * 1000:+.1f} ms" if row["median_error"] is not None else ""
        print(f"{row['path']}: {row['matched']} of {row['taps']} taps matched to {row['touches']} touches"
              f" ({row['unmatched_taps']} taps, {row['unmatched_touches']} touches unmatched{error})")
    how = "estimated" if report["latency_estimated"] else "given"
    print(f"latency {report['latency'] * 1000:+.1f} ms ({how}); {report['matched']} matched, "
          f"{report['matched_none']} off-key, {report['unmatched_taps']} taps and {report['unmatched_touches']} "
          f"touches unmatched, {report['touches_outside_recordings']} touches in no recording "
          f"(listed in {result.leftover_path.name})")
    skipped = f", {len(result.skipped)} too near a file's edge (listed in {result.skipped_path.name})" \
        if result.skipped_path else ""
    print(f"{result.out}: {len(result.segments)} segments{skipped}; report in {result.report_path.name}")
    if args.plot:
        events = result.alignment.events
        for path in dict.fromkeys(result.alignment.events["path"]):
            plot_alignment(path, events, result.alignment.leftover, Path(args.plot) / f"{Path(path).stem}_align.png")
        print(f"plots in {args.plot}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        if vars(args).get("exp_dir") and "{trial}" in str(args.exp_dir):  # one run directory per tuning trial
            args.exp_dir = str(args.exp_dir).replace("{trial}", vertex.trial_id())
        os.environ.update(vertex.cluster_environment())  # a Vertex AI multi-worker job: where rank 0 is
        with staged(args):
            _dispatch(args)
    except KeyboardInterrupt:
        print(f"audiotune {args.command}: interrupted; outputs not finished were not written", file=sys.stderr)
        return 130
    except Exception as err:  # one line for the user; the traceback with -v
        if args.verbose:
            raise
        print(f"audiotune {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    return 0


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "train":
        from audiotune.engine.train import train

        _quiet_lightning(args.verbose)
        config = config_from_args(args)
        metrics = train(config)
        if not metrics:
            return  # another process of a multi-process (DDP) run: rank 0 reports
        print(json.dumps({k: _summary(v) for k, v in metrics.items() if k in ("val", "test")}, indent=2))
        if not metrics.get("trained", True):
            print("no training step (--epochs 0): these are the metrics of the untrained model")
        if args.hypertune_metric:
            value = vertex.metric_value(metrics, args.hypertune_metric)
            reported = vertex.report_metric(args.hypertune_metric, value)
            print(f"{args.hypertune_metric} {value:.6g} reported to {reported}")
        print(f"run directory: {storage.final_place(config.exp_dir)}")
    elif args.command == "pretrain":
        from audiotune.engine.pretrain import pretrain

        _quiet_lightning(args.verbose)
        vars(args).setdefault("model.model", "ssast")  # the defaults of this command
        vars(args).setdefault("model.task", "pretrain_joint")
        config = config_from_args(args)
        metrics = pretrain(config)
        if not metrics:
            return  # another process of a multi-process (DDP) run: rank 0 reports
        print(json.dumps({k: metrics[k] for k in ("objective", "epochs_run", "steps_run", "best_val_loss")},
                         indent=2))
        print(f"run directory: {storage.final_place(config.exp_dir)}")
    elif args.command == "cv":
        from audiotune.data.folds import FoldOptions
        from audiotune.engine.cv import cross_validate

        _quiet_lightning(args.verbose)
        config = config_from_args(args)
        options = FoldOptions(folds=args.folds, group=args.group, stratify=args.stratify,
                              val_group=args.val_group, audio_dir=args.audio_dir, json_label=args.json_label)
        result = cross_validate(config, config.data.data_split_root, options, args.repeats)
        if not result:
            return  # another process of a multi-process (DDP) run: rank 0 reports
        print(_cv_table(result))
        print(f"experiment directory: {storage.final_place(config.exp_dir)}")
    elif args.command == "cluster":
        from audiotune.engine.cluster import ClusterOptions, cluster, stats_path

        vars(args).setdefault("model.model", "hf")  # the default of this command
        config = config_from_args(args)
        wanted = ClusterOptions(args.num_clusters, config.classifier.layer, args.sample_ratio, args.max_frames,
                                args.niter, config.data.seed)
        result = cluster(config, wanted, args.out, args.run)
        print(f"{result['clips']} clips, {result['sample_frames']} of {result['frames_offered']} offered frames "
              f"clustered (buffer {result['buffer_mib']} MiB)")
        for k, usage in result["clusters"].items():
            print(f"  K={k}: {usage['clusters_used']} clusters used, {usage['empty_clusters']} empty, "
                  f"largest {usage['largest_share']:.1%} of {usage['frames']} frames")
        print(f"frame labels: {_shown(args.out)} (statistics: {_shown(stats_path(Path(args.out)))})")
    elif args.command == "probe":
        from audiotune.engine.probe import probe

        _quiet_lightning(args.verbose)
        config = config_from_args(args)
        table = probe(config)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"probe table: {_shown(Path(config.exp_dir) / 'probe.csv')}")
    elif args.command == "evaluate":
        from audiotune.engine.evaluate import evaluate_run

        metrics = evaluate_run(args.run, args.data_split_root, args.exp_dir, args.on_error, args.batch_size,
                               args.num_workers, args.accelerator, args.devices, args.precision, args.aggregate,
                               args.adapt_bn)
        print(json.dumps({k: _summary(v) for k, v in metrics.items()}, indent=2))
    elif args.command == "extract":
        from audiotune.engine.extract import extract_embeddings

        out = args.out or str(Path(args.run) / f"embeddings_{args.embedding_type}.parquet")
        path = extract_embeddings(args.run, args.data_split_root, out, args.embedding_type, args.layer,
                                  args.pooling_mode, args.batch_size, args.num_workers, args.on_error,
                                  args.accelerator, args.devices, args.precision)
        print(f"embeddings: {_shown(path)}")
    elif args.command == "export":
        from audiotune.engine.export import export_run, sidecar_path

        described = export_run(args.run, args.format, args.out)
        shapes = ", ".join(f"{o['name']} ({', '.join(map(str, o['shape']))})" for o in described["outputs"])
        print(f"{args.format} model: {args.out} ({described['sample_rate']} Hz waveforms in; {shapes})")
        print(f"description: {sidecar_path(args.out)}")
    elif args.command == "attention":
        from audiotune.engine.attention import attention_maps

        files = attention_maps(args.run, args.audio, args.exp_dir, args.accelerator, args.devices,
                               args.precision)
        print(f"{len(files)} attention maps in {files[0].parent}")
    elif args.command == "manifest":
        from audiotune.data.manifest import build_manifest

        table, skipped = build_manifest(args.audio_dir, args.out, args.pattern, args.folder_label, args.on_error)
        print(f"{args.out}: {len(table)} files" + (f", {len(skipped)} skipped (listed next to it)"
                                                    if len(skipped) else ""))
    elif args.command == "segment":
        from audiotune.data.segments import segment_csv

        segmented = segment_csv(args.table, args.out, args.before, args.after, args.window, args.hop,
                                args.on_error)
        print(segmented.summary())
    elif args.command == "vertex":
        spec = vertex.run_command(args, build_parser().parse_args)
        print(f"{args.out}: {'CustomJob' if args.vertex_command == 'job' else 'HyperparameterTuningJob'} "
              f"{spec['displayName']!r}")
    elif args.command == "sweep":
        _command_sweep(args)
    elif args.command == "split":
        _command_split(args)
    elif args.command == "taps":
        _command_taps(args)
    elif args.command == "stats":
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
                print(f"{len(skipped)} clip(s) left out of the statistics: listed in {listed}")
            else:
                print(f"{len(skipped)} clip(s) left out of the statistics:", file=sys.stderr)
                for reason in skipped["reason"]:
                    print(f"  {reason}", file=sys.stderr)


def _command_sweep(args: argparse.Namespace) -> None:
    import copy

    import pandas as pd

    from audiotune.engine.sweep import SweepOptions, sweep

    _quiet_lightning(args.verbose)
    if "exp_dir" not in vars(args):
        raise ValueError("give the sweep's folder with -o/--exp_dir (each trial is a run directory inside it)")
    space = vertex.read_space(args.space)
    base = config_from_args(args)
    parse = build_parser().parse_args
    for parameter in space["parameters"]:  # every parameter is a train flag: a typo fails before any trial
        flag = f"--{parameter['parameterId']}={vertex.sample_value(parameter)}"
        try:
            vertex.check_command(["train", flag], parse)
        except vertex.VertexError as err:
            raise vertex.VertexError(f"{args.space}: parameter {parameter['parameterId']!r} is not a train flag "
                                     f"that takes this value ({str(err).rpartition('error: ')[2]})") from None

    def configure(params: dict) -> RunConfig:
        command = ["train", *(f"--{name}={value}" for name, value in params.items())]
        vertex.check_command(command, parse)  # a value the flag refuses: an error of this trial, not an exit
        return check_config(apply_flags(copy.deepcopy(base), parse(command)))

    options = SweepOptions(trials=args.trials, study_name=args.study_name, storage=args.storage, pruner=args.pruner,
                           prune_after=args.prune_after, startup_trials=args.startup_trials,
                           heartbeat=args.heartbeat, max_failed=args.max_failed, seed=base.data.seed)
    summary = sweep(base.exp_dir, space, configure, base, options, source=args.space)
    table = pd.read_csv(Path(base.exp_dir) / "sweep_trials.csv")
    shown = [c for c in table.columns if c not in ("error", "run_dir") and table[c].notna().any()]
    print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    counts = ", ".join(f"{n} {state}" for state, n in summary["trials"].items() if n)
    print(f"trials: {counts}")
    if summary["best"]:
        best = summary["best"]
        print(f"best: trial {best['trial']}, {summary['metric']} {best['value']:.4f}, "
              + " ".join(f"--{k}={v}" for k, v in best["params"].items()))
        if best["config"]:
            print(f"best config (for --config): {_shown(best['config'])}")
        else:
            print(f"best config: its run directory {best['run_dir']} is on the machine that ran it")
    print(f"sweep directory: {storage.final_place(base.exp_dir)}")


def _shown(path: str | Path) -> str:
    """Where an output ends up: its remote URL when it was written in a staging folder."""
    return storage.join(storage.final_place(Path(path).parent), Path(path).name)


def _one_line(err: BaseException) -> str:
    """The error's own message (what the user must fix), with its type when the message alone says too little."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, (DataError, ValueError, OSError)):
        return text
    return f"{type(err).__name__}: {text} (rerun with -v for the traceback)"


def _cv_table(result: dict) -> str:
    """Mean ± fold std (and the 95 % interval) of each test (else validation) metric."""
    split = "test" if "test" in result["statistics"] else "val"
    lines = [f"{result['folds']} folds x {result['repeats']} repeat(s), {split}:"]
    for metric, values in result["statistics"].get(split, {}).items():
        if values["mean"] is None:
            continue
        spread = f" ± {values['fold_std']:.4f}" if values["fold_std"] is not None else ""
        interval = f"  (95% CI {values['ci95'][0]:.4f} .. {values['ci95'][1]:.4f})" if values["ci95"] else ""
        lines.append(f"  {metric:12s} {values['mean']:.4f}{spread}{interval}")
    if "error" in result.get("ensemble", {}):
        lines.append(f"  no ensemble scores: {result['ensemble']['error']}")
    ensemble = result.get("ensemble", {}).get("statistics", {}).get(split, {})
    if ensemble.get("accuracy", {}).get("mean") is not None:
        values = ensemble["accuracy"]
        spread = f" ± {values['fold_std']:.4f}" if values["fold_std"] is not None else ""
        lines.append(f"  each fold's {result['repeats']} runs averaged (ensemble): accuracy {values['mean']:.4f}"
                     f"{spread}")
    return "\n".join(lines)


def _summary(metrics: dict) -> dict:
    keys = ("n", "accuracy", "macro_f1", "weighted_f1", "uar", "auc", "mae", "rmse", "pearson", "ccc")
    summary = {k: metrics.get(k) for k in keys if metrics.get(k) not in (None, {})}
    if "recording" in metrics:
        summary["recording"] = _summary(metrics["recording"])
    return summary


if __name__ == "__main__":
    sys.exit(main())
