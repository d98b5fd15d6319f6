"""``audiotune segment``: a segment table from an event table or sliding windows."""
from __future__ import annotations

import argparse

from audiotune.cli.command import Command
from audiotune.cli.flags import add_option_flag, add_out, add_path
from audiotune.storage import Role


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_path(parser, "table", role=Role.TABLE,
             help="event table (path, time, ...) or recording table (path, ...), CSV; its relative paths are "
                  "relative to its folder")
    add_out(parser, required=True, help="segment CSV to write")
    parser.add_argument("--before", type=float, help="events: seconds before each event's time")
    parser.add_argument("--after", type=float, help="events: seconds after each event's time")
    parser.add_argument("--window", type=float, help="recordings: window length in seconds")
    parser.add_argument("--hop", type=float, help="recordings: seconds between window starts (default: --window)")
    add_option_flag(parser, "data.on_error", help="events whose segment leaves its file, and events or recordings "
                                                  "whose file is missing or unreadable: raise an error, or skip "
                                                  "them and list them in OUT.skipped.csv")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.data.segments import segment_csv
    from audiotune.storage import final_path

    segmented = segment_csv(args.table, args.out, args.before, args.after, args.window, args.hop, args.on_error)
    print(segmented.summary(final_path))


COMMAND = Command(
    "segment", "segment table (uid, path, offset, duration) from an event table or sliding windows", arguments, run,
    description="Event table (path, time, ...) with --before/--after: one segment per event. Recording table "
                "(path, ...) with --window [--hop]: sliding windows grouped by a 'recording' column. Other columns "
                "are carried; paths are written relative to --out (in full where the audio and --out are not in one "
                "place, e.g. audio in a bucket and a local --out).",
    examples="audiotune segment events.csv --before 0.02 --after 0.1 --out segments.csv\n"
             "audiotune segment recordings.csv --window 4 --hop 2 --out windows.csv")
