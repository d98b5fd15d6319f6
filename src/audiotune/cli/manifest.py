"""``audiotune manifest``: a manifest CSV from a folder of audio."""
from __future__ import annotations

import argparse

from audiotune.cli.command import Command
from audiotune.cli.flags import add_option_flag, add_out, add_path, spellings
from audiotune.storage import Role


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_path(parser, "audio_dir", role=Role.AUDIO, help="folder of audio files (searched recursively)")
    add_out(parser, required=True,
             help="manifest CSV to write; paths are relative to it (in full where the audio is elsewhere, e.g. "
                  "in a bucket)")
    parser.add_argument("--pattern", help=r"regex with named groups over file names, e.g. "
                                          r"'(?P<digit>\d)_(?P<subject>[a-z]+)_\d+\.wav'")
    parser.add_argument(*spellings("folder_label"), dest="folder_label",
                        help="label column filled from each file's parent folder (folder-per-class)")
    add_option_flag(parser, "data.on_error", help="files the pattern does not match: raise an error, or skip them "
                                                  "and list them beside --out")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.data.manifest import build_manifest
    from audiotune.storage import final_path

    table, skipped = build_manifest(args.audio_dir, args.out, args.pattern, args.folder_label, args.on_error)
    listed = f", {len(skipped)} skipped (listed next to it)" if len(skipped) else ""
    print(f"{final_path(args.out)}: {len(table)} files{listed}")


COMMAND = Command("manifest", "build a manifest CSV from a folder of audio", arguments, run,
                  examples="audiotune manifest recordings/ --out manifest.csv --pattern "
                           "'(?P<digit>\\d)_(?P<subject>[a-z]+)_\\d+\\.wav'\n"
                           "audiotune manifest recordings/ --out manifest.csv --folder_label label    (a folder per "
                           "class)")
