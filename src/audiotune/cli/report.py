"""``audiotune report``: one self-contained HTML page of a run, an evaluation, a cross-validation, a sweep or a
layer probe, or the page of a taps table drawn again."""
from __future__ import annotations

import argparse
import os

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.flags import add_out, add_path, add_section_flags, add_storage_flags
from audiotune.cli.run_flags import SCORING_DATA, add_run_flag, scoring_data
from audiotune.cli.values import integer
from audiotune.outputs import REPORT_FILE, TAPS_REPORT_SUFFIX, sidecar
from audiotune.report import CLIP_KB, CLIPS_PER_CLASS
from audiotune.storage import Role


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_path(parser, "source", role=Role.RUN, metavar="RUN_OR_EXPERIMENT",
             help="run directory (train), evaluation folder (evaluate), cross-validation folder (cv), sweep "
                  "folder (sweep), probe folder (probe), or the table that `taps detect` or `taps align` wrote "
                  "(--out), whose page is drawn again beside it")
    add_out(parser,
            help=f"the HTML file to write (default RUN_OR_EXPERIMENT/{REPORT_FILE}; a taps table OUT.csv: "
                  f"OUT{TAPS_REPORT_SUFFIX})")
    add_path(parser, "-d", "--data_split_root", "--data-split-root", role=Role.TABLE, dest="data_split_root",
             default="", help="the table the run scored, for its clips and groups (default: the run's own "
                              "--data_split_root, or the table an evaluation folder recorded)")
    add_run_flag(parser, required=False, default="",
                 help="the run an evaluation folder scored with (default: the run it recorded, else the folder above "
                      "it)")
    parser.add_argument("--split", default="", help="the split whose clips are played and broken down by group "
                                                     "(default test, else val, else the one scored; a cross-"
                                                     "validation: over its folds)")
    parser.add_argument("--group_by", "--group-by", dest="group_by", default="",
                        help="column of the table to break the scores down by (default: subject, when there is one)")
    parser.add_argument("--clips", type=integer, default=CLIPS_PER_CLASS,
                        help=f"the most confidently wrong clips shown per head and true class (default "
                             f"{CLIPS_PER_CLASS}; 0: none)")
    parser.add_argument("--clip_kb", "--clip-kb", dest="clip_kb", type=integer, default=CLIP_KB,
                        help=f"largest embedded clip in kB: a longer clip is compressed, else linked to its source "
                             f"with its start and end, as clips in remote storage are (default {CLIP_KB})")
    add_section_flags(parser, SCORING_DATA)
    add_storage_flags(parser)


def default_outputs(args: argparse.Namespace) -> None:
    source = str(args.source).rstrip("/")
    if storage.is_remote(source) and storage.isfile(source):  # what it draws from sits beside it, not inside
        raise ValueError(f"{source}: a file in remote storage; the page of a taps table is drawn again from a local "
                         "copy of its folder (its summary and recordings beside it): copy the folder and report the "
                         "local table; report a run, an evaluation, a cross-validation, a sweep or a probe by its "
                         "folder")
    # a taps table's page is beside it, where `taps detect` or `taps align` wrote it
    args.out = args.out or (str(sidecar(source, TAPS_REPORT_SUFFIX)) if os.path.isfile(source)
                            else storage.join(source, REPORT_FILE))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.report import write_report

    written = write_report(args.source, args.out, args.data_split_root, args.group_by, args.clips, args.clip_kb,
                           args.run, args.split, scoring_data(args))
    print(f"report: {storage.final_path(written)}")


COMMAND = Command("report", "one self-contained HTML page of a run, an evaluation, a cross-validation, a sweep "
                            "or a probe: metrics, plots and the clips it got wrong, playable; or of a taps table",
                  arguments, run,
                  default_outputs=default_outputs,
                  examples="audiotune report run    (RUN/report.html; also a cv, sweep or probe folder, or a taps "
                           "table)\n"
                           "audiotune report run/evaluate -d split/test.csv -o review.html --group_by subject "
                           "--clips 3")
