"""``audiotune import naip|ser|tap2key|clusters|taps``: what was trained or made with a seed system, as audiotune
artefacts."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from audiotune import storage
from audiotune.cli import train
from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args
from audiotune.cli.flags import add_audio_dir, add_option_flag, add_out, add_path, parsed_role, spellings
from audiotune.cli.seed_flags import Refused
from audiotune.cli.values import FlatCounts, cluster_counts
from audiotune.config import RunConfig
from audiotune.outputs import IMPORTED_WEIGHTS
from audiotune.storage import Role

SEED_ARGS_FILE = "args.pkl"  # the seeds' pickled arguments, next to their *_mdl.pt
OVERWRITE = "train.overwrite"  # the dest train gives --overwrite, which remote staging reads


def add_run_output(parser: argparse.ArgumentParser, *extra: str) -> None:
    """``-o/--exp_dir``: the run directory an import writes, spelt as train's (``extra``: older spellings)."""
    add_path(parser, *spellings("exp_dir", ("-o", *extra)), role=Role.RUN_OUTPUT, dest="exp_dir", required=True,
             metavar="PATH", help="the imported run")


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    kinds = parser.add_subparsers(dest="import_kind", required=True)
    naip = kinds.add_parser(
        "naip", allow_abbrev=False,
        help="a naip-w2v2 / naip-ssast / naip-ecapa-tdnn model (*_mdl.pt + args.pkl) as a run directory",
        description="Reads the seed's *_mdl.pt (weights only) and args.pkl (argparse.Namespace and plain values "
                    "only: a pickle naming anything else is refused before any of it runs), turns the seed's "
                    "arguments into a config through the train command's own flags, maps the weights onto "
                    "audiotune's parameter names and writes a run directory that evaluate, extract and export "
                    "read (and whose encoder/ train -c reads).")
    add_path(naip, "weights", role=Role.INPUT, help="the seed's *_mdl.pt (a torch state dict)")
    add_path(naip, "--args", role=Role.INPUT, dest="seed_args",
             help=f"the seed's pickled arguments (default: {SEED_ARGS_FILE} beside the weights)")
    add_run_output(naip)
    add_path(naip, *spellings("checkpoint", ("-c",)), role=Role.INPUT, dest="checkpoint",
             help="naip-w2v2: the encoder the seed fine-tuned (hub id or folder) when args.pkl's checkpoint is "
                  "not reachable here; its architecture and feature extractor are read, not its weights")
    add_option_flag(naip, "train.overwrite", dest=OVERWRITE)
    ser = kinds.add_parser(
        "ser", allow_abbrev=False,
        help="the wav2vec2 of an FT-w2v2-ser Lightning checkpoint (V-FT, TAPT, P-TAPT) as an encoder folder; "
             "a V-FT classifier with --classes as a run directory",
        description="Reads only the checkpoint's state_dict, weights only: the class references Lightning 1.4 "
                    "stored beside it (callback keys) are bound to inert stand-ins, never imported. Writes a "
                    "save_pretrained folder (with TAPT's quantizer when the checkpoint has it) that train, "
                    "pretrain and cluster read with -c; with --classes, a V-FT checkpoint's whole classifier as a "
                    "run directory that evaluate, extract and export read (its encoder/ for -c).")
    add_path(ser, "checkpoint", role=Role.INPUT, help="the seed's .ckpt (last.ckpt, our_method.ckpt, ...)")
    add_path(ser, "-o", "--out", role=Role.OUTPUT_DIR, dest="out", required=True, metavar="PATH",
             help="encoder folder to write (with --classes: run directory)")
    ser.add_argument("--classes", nargs="+", metavar="CLASS",
                     help="V-FT: the classes of its head's outputs, in the seed's order (its emoset, e.g. anger "
                          "happy neutral sad): import the whole classifier as a run directory")
    add_option_flag(ser, "train.overwrite", dest=OVERWRITE, help="with --classes: replace the run already in --out")
    add_path(ser, *spellings("architecture", ("-c",)), role=Role.INPUT, dest="architecture",
             default="facebook/wav2vec2-base",
             help="hub id or folder whose config and feature extractor the seed fine-tuned (default "
                  "facebook/wav2vec2-base, the seed's; offline: a local copy)")
    tap2key = kinds.add_parser(
        "tap2key", allow_abbrev=False,
        help="a model trained by tap2key's Wav2vec2_tap2key.py (a Hugging Face Wav2Vec2ForSequenceClassification "
             "folder) as a run directory",
        description="Reads the folder the seed's Trainer saved (config.json with id2label; model.safetensors, or "
                    "pytorch_model.bin weights only) and writes the run `train --config seeds/tap2key` builds: its "
                    "encoder (encoder/, for -c), the projector as the head's dense layer and the classifier as its "
                    "output layer, the classes in id2label's order. evaluate, extract and export read it and score "
                    "as the seed model.")
    add_path(tap2key, "checkpoint", role=Role.INPUT,
             help="the seed's model folder: a checkpoint-N folder, or its Trainer's output_dir (the checkpoint "
                  "its trainer_state.json names best, the model the seed ended with)")
    add_run_output(tap2key, "--out")  # the spelling it had first
    add_option_flag(tap2key, "train.overwrite", dest=OVERWRITE)
    clusters = kinds.add_parser(
        "clusters", allow_abbrev=False,
        help="the seed's all-clus.json (or one K-clus.json) as the pseudo-label parquet of "
                         "pretrain --objective ptapt",
        description="all-clus.json holds {wav: [[labels of K1], [labels of K2], ...]} in the order of the seed's "
                    "cluster.py --num_clusters, which is not stored: give the same K values. With --audio_dir (the "
                    "seed's --datadir, also taken) each clip's labels are fitted to wav2vec2-base's frame count of "
                    "its audio.")
    add_path(clusters, "labels", role=Role.INPUT, help="all-clus.json or K-clus.json")
    clusters.add_argument(*spellings("num_clusters"), dest="num_clusters", type=cluster_counts, nargs="+",
                          action=FlatCounts, required=True,
                          help="the K values in the seed's order (64 512 4096, or as the seed wrote them: 64,512,4096)")
    add_audio_dir(clusters, "16 kHz wav files named as the JSON's keys: fit each clip's labels to its frames")
    add_out(clusters, required=True, help="parquet to write")
    taps = kinds.add_parser(
        "taps", allow_abbrev=False,
        help="tap2key recording folders (05.wav_samples + 04.labels) or the splits its create_dataset.py saved "
             "as a segment table",
        description="Pairs each recording's tap samples ({take}_{i:03}_8chan.wav, in order) with the rows of its "
                    "label CSV one to one; a recording whose counts differ is an error, or with --on_error skip "
                    "is left out and listed in OUT.skipped.csv. A folder create_dataset.py saved with save_to_disk "
                    "(its test split) gives its taps as it holds them, each with its split's name.")
    add_path(taps, "folders", role=Role.LOCAL, nargs="+",
             help="recording folders of the tap2key layout, the flat folder create_dataset.py read (--data_dir), "
                  "or a split it saved (--save_te96k)")
    add_path(taps, *spellings("audio_dir"), role=Role.LOCAL, dest="audio_dir", default="", metavar="FOLDER",
             help="a saved split: the folder holding its tap samples now, where the seed's paths no longer lead "
                  "(found by file name)")
    add_out(taps, required=True, help="segment CSV to write")
    add_option_flag(taps, "data.on_error", help="a recording whose tap and label counts differ: raise an error, or "
                                                "skip it and list it in OUT.skipped.csv")


class _SeedArgsParser(argparse.ArgumentParser):
    """The train command's flags, reading a seed's arguments: a value it refuses is an error naming the file."""

    source = ""

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"{self.source}: a seed argument is not a valid train flag: {message}")


def seed_config(flags: dict[str, Any], source: str, recipe: str = "") -> tuple[RunConfig, list[str], list[str]]:
    """A config from the seed's arguments, each applied as the train flag of its name (the same option
    declarations and seed spellings as ``audiotune train``), over the seed's ``recipe`` as ``--config`` reads it
    (what the seed did without an argument for it), less what of the recipe is not the seed run's
    (:func:`~audiotune.engine.seed_import.recipe_for_the_run`); returns it, the arguments applied and those the
    train command has no flag for (or refuses as acting elsewhere: SSAST's --mask_patch acts only in pretraining)."""
    from audiotune.engine.seed_import import recipe_for_the_run

    parser = _SeedArgsParser(prog="audiotune train", allow_abbrev=False, add_help=False)
    parser.source = source
    train.arguments(parser, flags.get("model"))
    known = parser._option_string_actions  # every spelling the train command accepts
    argv: list[str] = []
    applied, left = [], []
    for name, value in flags.items():
        option = f"--{name}"
        action = known.get(option)
        if action is None or isinstance(action, Refused) or action.dest in ("exp_dir", "config") or \
                name.startswith(("cloud", "bucket", "project")):
            left.append(name)
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if action.nargs is None and len(values) != 1:
            left.append(name)
            continue
        argv += [option, *map(str, values)]
        applied.append(name)
    config = _parsed(parser, argv, source)
    if recipe:
        config = recipe_for_the_run(_parsed(parser, ["--config", recipe, *argv], source), config)
    return config, applied, left


def _parsed(parser: _SeedArgsParser, argv: list[str], source: str) -> RunConfig:
    try:
        return config_from_args(parser.parse_args(argv), read_inputs=False)
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(source) else f"{source}: {message}") from None


def _run_naip(args: argparse.Namespace) -> None:
    from audiotune.engine.seed_import import (
        SKIPPED_ARGS,
        check_heads,
        detect_layout,
        read_seed_weights,
        seed_flags,
        seed_heads,
        sizes_in_weights,
        write_seed_run,
    )
    from audiotune.engine.seed_pickle import read_seed_args

    weights, args_file = Path(args.weights), Path(args.seed_args)
    if not weights.is_file():  # before its args.pkl, which is looked for beside it
        raise FileNotFoundError(f"{weights}: " + ("not a file" if weights.exists() else "not found")
                                + "; give the seed's *_mdl.pt weights file")
    if not args_file.is_file():
        raise FileNotFoundError(f"{args_file}: the seed's arguments are needed (pass --args PATH to its args.pkl)")
    seed_args = read_seed_args(args_file)  # refused before anything else is read
    state = read_seed_weights(weights)
    layout = detect_layout(state, weights)
    check_heads(layout, state, weights)
    flags, notes = seed_flags(layout, seed_args, args_file)
    notes += sizes_in_weights(layout, state, flags)
    if args.checkpoint:
        flags["checkpoint"] = args.checkpoint
    config, applied, left = seed_config(flags, str(args_file), layout.recipe)
    config.heads = seed_heads(seed_args, args_file)
    if seed_args.get("debug") in (True, "True"):
        notes.append("--debug True: the seed run read the first 8 rows of each split only; its model and scores "
                     "are of those rows (imported without --debug: audiotune reads every row)")
    record = {IMPORTED_WEIGHTS: str(weights), "args": str(args_file), "applied": applied, "not_applied": left,
              "how_the_seed_run_started": {name: seed_args[name] for name in SKIPPED_ARGS if name in seed_args},
              "notes": notes}
    written = write_seed_run(layout, config, state, args.exp_dir, record, overwrite=vars(args)[OVERWRITE],
                             checkpoint_given=bool(args.checkpoint))
    print(f"{args.exp_dir}: {layout.seed} run imported ({len(state)} tensors, {len(written['dropped'])} unused by "
          f"audiotune; {len(applied)} seed arguments applied, not applied: {', '.join(left) or 'none'})")
    for note in notes:
        print(f"  {note}")


def _run_ser(args: argparse.Namespace) -> None:
    from audiotune.engine.seed_ser import import_ser_encoder
    from audiotune.engine.seed_vft import VFT_HEAD, import_vft_run

    if vars(args)[OVERWRITE] and not args.classes:
        raise ValueError("--overwrite replaces a run directory (--classes); an encoder folder is never replaced")
    if args.classes:
        done = import_vft_run(args.checkpoint, args.architecture, args.classes, args.out, vars(args)[OVERWRITE])
        print(f"{args.out}: V-FT classifier of {args.checkpoint} imported as a run ({done['tensors']} tensors, "
              f"classes {' '.join(args.classes)}); not carried: {', '.join(done['dropped']) or 'nothing'} (unused "
              "by the seed's forward)")
    else:
        done = import_ser_encoder(args.checkpoint, args.architecture, args.out)
        kind = "with TAPT's quantizer" if done["pretraining_heads"] else "encoder only"
        print(f"{args.out}: wav2vec2 of {args.checkpoint} ({done['tensors']} tensors, {kind}); not carried: "
              f"{', '.join(done['unused']) or 'nothing'}")
        if any(f"{unused}." in VFT_HEAD for unused in done["unused"]):  # eager.pt: without model.
            print("  its V-FT classifier imports as a run directory with --classes C1 C2 ... (the seed's class "
                  "order)")
    if done["stand_ins"]:
        print(f"  read weights only; not read: {', '.join(done['stand_ins'])} (Lightning's bookkeeping)")


def _run_tap2key(args: argparse.Namespace) -> None:
    from audiotune.engine.seed_tap2key import import_tap2key_run

    done = import_tap2key_run(args.checkpoint, args.exp_dir, overwrite=vars(args)[OVERWRITE])
    print(f"{args.exp_dir}: {done['architecture']} of {done['folder']} imported as a run ({done['tensors']} tensors, "
          f"classes {' '.join(done['classes'])}); not carried: {', '.join(done['dropped']) or 'nothing'}")
    for note in done["notes"]:
        print(f"  {note}")


def _run_clusters(args: argparse.Namespace) -> None:
    from audiotune.engine.seed_ser import import_clusters

    ks = args.num_clusters
    meta = import_clusters(args.labels, ks, args.out, args.audio_dir or None)
    fitted = meta["frames_fitted"]
    print(f"{args.out}: {meta['clips']} clips x K={ks}" + (f"; {len(fitted)} clip(s) fitted to their frame count"
                                                            if fitted else "")
          + ("" if meta["frames_checked"] else "; frame counts not checked (no --audio_dir)"))


def _run_taps(args: argparse.Namespace) -> None:
    from audiotune.engine.seed_taps import import_tap_samples

    done = import_tap_samples(args.folders, args.out, args.on_error, args.audio_dir or None)
    text = f"{args.out}: {len(done.segments)} tap samples, {done.segments['label'].nunique()} labels"
    if done.skipped_path:
        text += f"; {len(done.skipped)} recording(s) skipped (listed in {done.skipped_path})"
    print(text)


def default_paths(args: argparse.Namespace) -> None:
    """``naip``: the args.pkl beside the weights (in the same bucket folder for gs:// weights), as the seeds
    looked for it. ``ser --classes``: ``--out`` is a run directory (one holding a run is refused without
    ``--overwrite``, in a bucket too)."""
    if args.import_kind == "naip" and not args.seed_args:
        args.seed_args = storage.join(storage.parent(args.weights), SEED_ARGS_FILE)
    if args.import_kind == "ser" and args.classes:
        parsed_role(args, "out", Role.RUN_OUTPUT)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    {"naip": _run_naip, "ser": _run_ser, "tap2key": _run_tap2key, "clusters": _run_clusters,
     "taps": _run_taps}[args.import_kind](args)


COMMAND = Command("import", "turn a seed system's model, cluster labels or tap samples into audiotune artefacts",
                  arguments, run, default_outputs=default_paths,
                  examples="audiotune import naip EXP/split_3_adamw_epoch10_ecapa_tdnn_fbank_mdl.pt -o run\n"
                           "audiotune import ser last.ckpt -c facebook/wav2vec2-base --out encoder\n"
                           "audiotune import tap2key output_dir/checkpoint-1200 -o run\n"
                           "audiotune import clusters all-clus.json --num_clusters 64 512 4096 --out labels.parquet")
