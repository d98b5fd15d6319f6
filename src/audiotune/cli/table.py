"""``audiotune table``: a label table from the seed layout's UID/metadata.json files (clinical recordings)."""
from __future__ import annotations

import argparse

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.flags import add_option_flag, add_out, add_path, add_storage_flags, spellings
from audiotune.cli.seed_flags import in_bucket
from audiotune.cli.values import parse_bool
from audiotune.storage import Role


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_path(parser, "prefix", role=Role.AUDIO, metavar="FOLDER", nargs="?", default="",
             help="folder of UID/metadata.json + UID/waveform.EXT (the seeds' PREFIX/STUDY), searched recursively")
    add_option_flag(parser, "data.prefix", dest="seed_prefix", metavar="PREFIX",
                    help="the seeds' spelling of FOLDER: PREFIX[/STUDY] (with -b BUCKET: gs://BUCKET/PREFIX[/STUDY])")
    add_option_flag(parser, "data.study")
    add_out(parser, short=False, required=True,
             help="table CSV to write (uid, path, subject, task, expected_rate, one column per score)")
    parser.add_argument(*spellings("edit_feats"), dest="edit_feats", nargs="?", const=True, type=parse_bool,
                        default=False, metavar="BOOL",
                        help="binary targets from severity scores: -1 and 6 empty, 0 and 1 -> 0, 2 to 5 -> 1")
    add_option_flag(parser, "data.on_error",
                    help="skip: leave out metadata files that cannot be read and list them beside --out")
    add_storage_flags(parser)


def seed_folder(args: argparse.Namespace) -> None:
    """FOLDER from the seeds' ``-i PREFIX -s STUDY`` (read from ``-b BUCKET`` when not a URL), before staging."""
    if args.prefix and args.seed_prefix:
        raise ValueError(f"{args.prefix} and -i {args.seed_prefix}: give the folder once")
    if not args.prefix and not args.seed_prefix:
        raise ValueError("the folder of UID/metadata.json files is required (FOLDER, or the seeds' -i PREFIX -s "
                         "STUDY)")
    folder = args.prefix or args.seed_prefix
    args.prefix = in_bucket(args, storage.join(folder, args.study) if args.study else folder)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.data.metadata_table import build_table
    from audiotune.storage import final_path

    table, skipped = build_table(args.prefix, args.out, args.edit_feats, args.on_error)
    listed = f", {len(skipped)} skipped (listed next to it)" if len(skipped) else ""
    counts = {"recording": len(table), "subject": table["subject"].nunique(), "task": table["task"].nunique()}
    print(f"{final_path(args.out)}: " + ", ".join(f"{n} {name}{'s' * (n != 1)}" for name, n in counts.items()) + listed)


COMMAND = Command("table", "build a label table from UID/metadata.json files (clinical seed layout)", arguments, run,
                  default_outputs=seed_folder,
                  examples="audiotune table lake/STUDY --out study.csv --edit_feats")
