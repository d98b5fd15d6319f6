"""``audiotune attention``: per-layer attention maps and rollout of one clip (PNG)."""
from __future__ import annotations

import argparse

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.flags import add_path, spellings
from audiotune.cli.run_flags import add_device_flags, add_run_flag
from audiotune.outputs import ATTENTION_DIR
from audiotune.storage import Role


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_run_flag(parser)
    add_device_flags(parser)
    add_path(parser, "--audio", role=Role.INPUT, required=True, help="audio file")
    add_path(parser, *spellings("exp_dir", ("-o",)), role=Role.OUTPUT_DIR, dest="exp_dir",
             help="output folder (default RUN/attention)")


def default_outputs(args: argparse.Namespace) -> None:
    args.exp_dir = args.exp_dir or storage.join(args.run, ATTENTION_DIR)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.attention import attention_maps

    files = attention_maps(args.run, args.audio, args.exp_dir, args.accelerator, args.devices, args.precision)
    print(f"{len(files)} attention maps in {files[0].parent}")


COMMAND = Command("attention", "per-layer attention maps and rollout of one clip (PNG)", arguments, run,
                  default_outputs=default_outputs,
                  examples="audiotune attention --run run --audio clip.wav    (a transformer encoder's run: SSAST, "
                           "wav2vec2, ...; maps in RUN/attention)")
