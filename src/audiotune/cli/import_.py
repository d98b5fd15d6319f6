"""``audiotune import naip|ser|clusters|taps``: what was trained or made with a seed system, as audiotune artefacts."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from audiotune.cli import train
from audiotune.cli.command import Command
from audiotune.cli.flags import add_path, config_from_args, spellings
from audiotune.config import RunConfig
from audiotune.storage import Role

SEED_ARGS_FILE = "args.pkl"  # the seeds' pickled arguments, next to their *_mdl.pt


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    kinds = parser.add_subparsers(dest="import_kind", required=True)
    naip = kinds.add_parser(
        "naip", help="a naip-w2v2 / naip-ssast / naip-ecapa-tdnn model (*_mdl.pt + args.pkl) as a run directory",
        description="Reads the seed's *_mdl.pt (weights only) and args.pkl (argparse.Namespace and plain values "
                    "only: a pickle naming anything else is refused before any of it runs), turns the seed's "
                    "arguments into a config through the train command's own flags, maps the weights onto "
                    "audiotune's parameter names and writes a run directory that evaluate, extract and export "
                    "read (and whose encoder/ train -c reads).")
    add_path(naip, "weights", role=Role.INPUT, help="the seed's *_mdl.pt (a torch state dict)")
    add_path(naip, "--args", role=Role.INPUT, dest="seed_args",
             help=f"the seed's pickled arguments (default: {SEED_ARGS_FILE} beside the weights)")
    add_path(naip, *spellings("exp_dir", ("-o",)), role=Role.RUN_OUTPUT, dest="exp_dir", required=True,
             help="run directory to write")
    add_path(naip, *spellings("checkpoint", ("-c",)), role=Role.INPUT, dest="checkpoint",
             help="naip-w2v2: the encoder the seed fine-tuned (hub id or folder) when args.pkl's checkpoint is "
                  "not reachable here; its architecture and feature extractor are read, not its weights")
    naip.add_argument("--overwrite", dest="train.overwrite", action="store_true",
                      help="replace the run already in --exp_dir")


class _SeedArgsParser(argparse.ArgumentParser):
    """The train command's flags, reading a seed's arguments: a value it refuses is an error naming the file."""

    source = ""

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"{self.source}: a seed argument is not a valid train flag: {message}")


def _text(value: Any) -> str:
    return str(value)


def seed_config(flags: dict[str, Any], source: str) -> tuple[RunConfig, list[str], list[str]]:
    """A config from the seed's arguments, each applied as the train flag of its name (the same option
    declarations and seed spellings as ``audiotune train``); returns it, the arguments applied and those the
    train command has no flag for."""
    parser = _SeedArgsParser(prog="audiotune train", allow_abbrev=False, add_help=False)
    parser.source = source
    train.arguments(parser, flags.get("model"))
    known = parser._option_string_actions  # every spelling the train command accepts
    argv: list[str] = []
    applied, left = [], []
    for name, value in flags.items():
        option = f"--{name}"
        action = known.get(option)
        if action is None or action.dest in ("exp_dir", "config") or name.startswith(("cloud", "bucket", "project")):
            left.append(name)
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if action.nargs is None and len(values) != 1:
            left.append(name)
            continue
        argv += [option, *map(_text, values)]
        applied.append(name)
    try:
        config = config_from_args(parser.parse_args(argv))
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(source) else f"{source}: {message}") from None
    return config, applied, left


def _run_naip(args: argparse.Namespace) -> None:
    from audiotune.engine.seed_import import detect_layout, read_seed_weights, seed_flags, seed_heads, write_seed_run
    from audiotune.engine.seed_pickle import read_seed_args

    weights = Path(args.weights)
    args_file = Path(args.seed_args) if args.seed_args else weights.parent / SEED_ARGS_FILE
    if not args_file.is_file():
        raise FileNotFoundError(f"{args_file}: the seed's arguments are needed (pass --args PATH to its args.pkl)")
    seed_args = read_seed_args(args_file)  # refused before anything else is read
    state = read_seed_weights(weights)
    layout = detect_layout(state, weights)
    flags, notes = seed_flags(layout, seed_args, args_file)
    if args.checkpoint:
        flags["checkpoint"] = args.checkpoint
    config, applied, left = seed_config(flags, str(args_file))
    config.heads = seed_heads(seed_args, args_file)
    record = {"weights": str(weights), "args": str(args_file), "applied": applied, "not_applied": left,
              "notes": notes}
    written = write_seed_run(layout, config, state, args.exp_dir, record, overwrite=vars(args)["train.overwrite"])
    print(f"{args.exp_dir}: {layout.seed} run imported ({len(state)} tensors, {len(written['dropped'])} unused by "
          f"audiotune; {len(applied)} seed arguments applied, not applied: {', '.join(left) or 'none'})")
    for note in notes:
        print(f"  {note}")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    {"naip": _run_naip}[args.import_kind](args)


COMMAND = Command("import", "turn a seed system's model, cluster labels or tap samples into audiotune artefacts",
                  arguments, run)
