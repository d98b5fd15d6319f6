"""``audiotune taps detect|align``: taps and keystrokes in long recordings."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiotune.atomic import OutputError, written_together
from audiotune.cli.command import Command
from audiotune.cli.flags import add_out, add_path, add_section_flags, refuse_flags_of, spellings
from audiotune.cli.seed_flags import Refused
from audiotune.cli.values import options_of
from audiotune.data.errors import DataError
from audiotune.outputs import (
    ALIGN_PLOT_SUFFIX,
    TAPS_PLOT_SUFFIX,
    TAPS_SUMMARY_SUFFIX,
    check_output_path,
    sidecar,
    write_csv,
    write_json,
)
from audiotune.storage import Role
from audiotune.taps import ALIGN_WRITES, DETECT_WRITES, TAP_WINDOW, check_written, file_key, written_files
from audiotune.taps.align import AlignOptions
from audiotune.taps.align_inputs import SEED_PATTERN
from audiotune.taps.detect import DetectOptions

DETECT, ALIGN = DetectOptions(), AlignOptions()  # the defaults the flags show


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    commands = parser.add_subparsers(dest="taps_command", required=True)
    detect = commands.add_parser(
        "detect", help="peaks of the high-passed channel mean, streamed in blocks; writes path,time,height rows",
        description="Channel mean (or --channel_select) -> zero-phase Butterworth high-pass -> optional "
                    "envelope -> peaks at least --min_distance apart above --height, or above --factor x the "
                    "recording's noise floor (the --floor_quantile of |trace|). The rows feed `audiotune "
                    "segment --before/--after`.")
    add_path(detect, "recordings", role=Role.AUDIO, nargs="+", help="audio files (any channel count)")
    add_out(detect, required=True,
             help="CSV to write: path, time, height, energy_ch0, ...; beside it OUT.report.json (the options, "
                  "each recording's threshold and noise floor)")
    detect.add_argument("--cutoff", type=float, default=DETECT.cutoff,
                        help=f"high-pass cutoff in Hz (default {DETECT.cutoff:g})")
    detect.add_argument("--order", type=int, default=DETECT.order,
                        help=f"Butterworth order, applied forwards and backwards (default {DETECT.order})")
    detect.add_argument(*spellings("min_distance"), dest="min_distance", type=float, default=DETECT.min_distance,
                        help=f"seconds between two peaks; the higher one stays (default {DETECT.min_distance:g})")
    detect.add_argument("--height", type=float, help="fixed threshold on the trace (default: adaptive)")
    detect.add_argument(*spellings("peak_height"), dest="peak_height", type=float,
                        help="fixed threshold in tap2key's units (its --peak_height: the WAV's integer samples / 2^32, "
                             "so half of --height for 32- and 24-bit PCM); instead of --height")
    detect.add_argument("--factor", type=float, default=DETECT.factor,
                        help=f"adaptive threshold: factor x noise floor (default {DETECT.factor:g})")
    detect.add_argument(*spellings("floor_quantile"), dest="floor_quantile", type=float,
                        default=DETECT.floor_quantile,
                        help=f"noise floor: this quantile of |trace| over the recording (default "
                             f"{DETECT.floor_quantile:g})")
    detect.add_argument("--envelope", type=float, default=DETECT.envelope,
                        help=f"seconds of short-time RMS of the trace (0: signed trace, positive peaks only; "
                             f"default {DETECT.envelope:g})")
    detect.add_argument("--relative", type=float, default=DETECT.relative,
                        help=f"threshold at least this x the median height of the --top strongest peaks (0 = off; "
                             f"for recordings whose noise floor is near zero, e.g. behind a noise gate; default "
                             f"{DETECT.relative:g})")
    detect.add_argument("--top", type=int, default=DETECT.top,
                        help=f"strong peaks that set the --relative reference (default {DETECT.top})")
    detect.add_argument("--edge", type=float, default=DETECT.edge,
                        help=f"seconds at both ends of each recording where peaks are dropped (start/stop "
                             f"transients; default {DETECT.edge:g})")
    detect.add_argument("--release", type=float, default=DETECT.release,
                        help=f"drop a peak that follows a kept one within this many seconds and is below "
                             f"--release_ratio x its height (0 = off; a release or stop click; default "
                             f"{DETECT.release:g})")
    detect.add_argument(*spellings("release_ratio"), dest="release_ratio", type=float, default=DETECT.release_ratio,
                        help=f"see --release (default {DETECT.release_ratio:g})")
    detect.add_argument(*spellings("channel_select"), dest="channel_select", type=int, nargs="+",
                        help="channels averaged into the trace (0-based; default all)")
    detect.add_argument(*spellings("block_seconds"), dest="block_seconds", type=float, default=DETECT.block_seconds,
                        help=f"seconds read at a time (memory bound; the peaks do not depend on it; default "
                             f"{DETECT.block_seconds:g})")
    add_path(detect, "--plot", role=Role.OUTPUT_DIR,
             help=f"folder for one diagnostic PNG per recording, STEM{TAPS_PLOT_SUFFIX} after its file name; "
                  f"recordings that share a file name (in different folders) have their place in the list added: "
                  f"STEM_N{TAPS_PLOT_SUFFIX} (N from 1)")
    add_section_flags(detect, ("runtime.report",))  # the page beside --out, with the timelines of --plot
    align = commands.add_parser(
        "align", help="pair detected taps one to one with touch-log events; writes a labelled segment table",
        description="Each touch (Down events of the touch logs) is labelled by its nearest key centre and expected "
                    "to sound --latency seconds after its timestamp; taps and touches are paired one to one (the "
                    "most pairs within --selectivity, then the smallest time errors). Without --latency it is "
                    "estimated. Writes OUT (segments: uid, path, offset, duration, time, label, x, y, ...), "
                    "OUT.unmatched.csv and OUT.report.json.")
    add_path(align, "taps", role=Role.TABLE, help="taps table from `audiotune taps detect` (path, time, ...); its "
                                                  "relative paths are relative to its folder")
    add_path(align, *spellings("touch_log"), role=Role.TABLE, dest="touch_log", nargs="+", required=True,
                       help="touch-log CSV(s) (no header: timestamp, touch id, event, x, y, ...); concatenated")
    add_path(align, "--keys", role=Role.TABLE, required=True,
             help="key centres CSV: x, y, label (header optional; 'none' points absorb off-key touches)")
    add_out(align, required=True, help="segment CSV to write")
    align.add_argument("--latency", type=float,
                       help="seconds from a logged touch to its sound (negative: the sound is earlier; the tap2key "
                            "system used -0.15); default: estimated from the data")
    align.add_argument("--selectivity", type=float, default=ALIGN.selectivity,
                       help=f"seconds a tap may lie from its touch's expected time (default {ALIGN.selectivity:g})")
    align.add_argument(*spellings("max_latency"), dest="max_latency", type=float, default=ALIGN.max_latency,
                       help=f"largest |latency| searched when it is estimated (default {ALIGN.max_latency:g} s)")
    align.add_argument(*spellings("keep_none"), dest="keep_none", action="store_true",
                       help="keep taps matched to off-key touches, labelled 'none' (default: listed in "
                            "OUT.unmatched.csv)")
    align.add_argument(*spellings("max_key_distance"), dest="max_key_distance", type=float,
                       help="a touch farther than this from every key centre is 'none' (sensor units; default: off, "
                            "every touch is labelled by its nearest key)")
    align.add_argument(*spellings("time_pattern"), dest="time_pattern", default=SEED_PATTERN,
                       help=f"recording start in each file name: last7 (the last 7 integer groups: hour, minute, "
                            f"second, fraction, month, day, year) or a strptime pattern such as %%Y%%m%%d-%%H%%M%%S "
                            f"(default {SEED_PATTERN})")
    align.add_argument(*spellings("start_column"), dest="start_column",
                       help="column of the taps table holding each recording's start time (instead of the name)")
    align.add_argument("--until", type=float,
                       help="label only the touches expected in the first this many seconds of each recording "
                            "(tap2key labelled the first 60; default: the whole recording); the later ones are "
                            "listed as late in OUT.unmatched.csv")
    align.add_argument("--event", default=ALIGN.event,
                       help=f"the touch-log event that marks a touch (default {ALIGN.event})")
    align.add_argument("--before", type=float, default=TAP_WINDOW[0],
                       help=f"segment seconds before each tap (default {TAP_WINDOW[0]:.6g}: 2192 samples at 96 kHz)")
    align.add_argument("--after", type=float, default=TAP_WINDOW[1],
                       help=f"segment seconds after each tap (default {TAP_WINDOW[1]}: 6000 samples at 96 kHz)")
    add_path(align, "--plot", role=Role.OUTPUT_DIR,
             help=f"folder for one PNG per recording: taps, touches and their labels (STEM{ALIGN_PLOT_SUFFIX} after "
                  f"its file name; STEM_N{ALIGN_PLOT_SUFFIX} where recordings share a file name)")
    add_section_flags(align, ("runtime.report",))
    # tap2key's WavPreprocess.py --sample wrote a WAV file per tap: here the segment table of align names each tap's
    # window in its recording, and train reads the windows from it
    detect.add_argument("--sample", action=Refused,
                        replacement="tap2key's WAV file per tap; pair the taps with the touches by `audiotune taps "
                                    "align TAPS.csv ... --out SEGMENTS.csv`, whose segments train reads (-d)")
    align.add_argument("--sample", action=Refused,
                       replacement="tap2key's WAV file per tap; not needed: train reads each tap's window from the "
                                   "segment table --out writes (`audiotune split OUT --group uid ...`, then "
                                   "`audiotune train -d SPLIT`)")
    # tap2key's WavPreprocess.py took the options of both steps: each step names the other's
    for step, other, name in ((detect, align, "align"), (align, detect, "detect")):
        refuse_flags_of(step, list(other._option_string_actions), f"an option of `audiotune taps {name}`")


def check_plot(plot: str | None) -> None:
    """``--plot``, the folder for the PNG files: one line naming the flag, before any work, where no folder can be
    written there (a file in the way, no permission)."""
    if plot is None:
        return
    probe = Path(plot) / "plot.png"
    try:
        check_output_path(probe)
    except OutputError as err:
        reason = "a file, not a folder" if Path(plot).exists() else str(err).removeprefix(f"{probe}: ")
        raise DataError(f"--plot {plot}: cannot be the folder for the plots ({reason})") from None


def check_out(out: str, recordings: list[str], report: bool) -> None:
    """detect's ``--out``: a CSV file; neither it nor a file written beside it is one of the recordings."""
    if Path(out).suffix.lower() != ".csv":
        raise DataError(f"--out {out}: the taps table is a CSV file; give a path ending in .csv")
    check_written(out, DETECT_WRITES, {file_key(path): "one of the recordings" for path in recordings}, report)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.taps_command == "align":
        run_align(args)
        return
    from audiotune import storage
    from audiotune.storage import final_path
    from audiotune.taps.detect import (
        HIST_EDGES,
        OVERVIEW_BINS,
        check_recordings,
        detect,
        detection_summary,
        taps_table,
    )
    from audiotune.taps.plots import plot_detection, plot_names

    options = options_of(DetectOptions, args,
                         channel_select=tuple(args.channel_select) if args.channel_select else None)
    options.validate()
    report = vars(args).get("runtime.report", True)
    check_out(args.out, args.recordings, report)
    out = check_output_path(args.out)
    check_plot(args.plot)
    check_recordings(args.recordings)
    window = TAP_WINDOW
    detections = []
    for path in args.recordings:
        found = detect(path, options, window, overview_bins=OVERVIEW_BINS if args.plot or report else 0)
        floor = f", noise floor {found.floor:.3g}" if found.floor is not None else ""
        print(f"{path}: {len(found.positions)} taps (threshold {found.threshold:.3g}{floor})")
        if not len(found.positions):
            why = f"--edge {options.edge:g} s at each end leaves nothing of its {found.duration:g} s" \
                if 2 * options.edge >= found.duration else "its noise floor is below what can be measured: is it " \
                "silent?" if found.floor is not None and found.floor <= HIST_EDGES[0] else \
                "lower --factor, --height or --peak_height"
            print(f"warning: no taps found in {path}: the table has no row of it, so `audiotune taps align` counts "
                  f"its touches in no recording; {why}", file=sys.stderr)
        detections.append(found)
    names = plot_names([found.path for found in detections], TAPS_PLOT_SUFFIX) if args.plot else {}
    with written_together([*written_files(out, DETECT_WRITES, report), *(Path(args.plot or "") / name
                                                                          for name in names.values())]):
        write_csv(taps_table(detections, out), out, index=False)
        write_json(sidecar(out, TAPS_SUMMARY_SUFFIX), detection_summary(detections, out, options, window))
        for found in detections if args.plot else ():
            plot_detection(found, Path(args.plot) / names[found.path], window)
        page = ""
        if report:
            from audiotune.engine.taps_report import detection_report

            page = f"report: {final_path(detection_report(detections, out, window))}"
    total = sum(len(d.positions) for d in detections)
    plots = f"; plots in {storage.final_place(args.plot)}" if args.plot else ""
    print(f"{final_path(out)}: {total} taps in {len(detections)} recordings{plots}; summary in "
          f"{sidecar(out, TAPS_SUMMARY_SUFFIX).name}")
    if page:
        print(page)


def run_align(args: argparse.Namespace) -> None:
    from audiotune import storage
    from audiotune.storage import final_path
    from audiotune.taps.align import align_csv
    from audiotune.taps.plots import plot_alignment, plot_names

    options = options_of(AlignOptions, args)
    check_plot(args.plot)
    if min(args.before, args.after) < 0 or args.before + args.after <= 0:
        raise DataError(f"--before {args.before} / --after {args.after}: seconds >= 0, together more than 0")
    report_page = vars(args).get("runtime.report", True)
    with written_together(written_files(args.out, ALIGN_WRITES, report_page)) as also:
        result = align_csv(args.taps, args.touch_log, args.keys, args.out, options, (args.before, args.after),
                           args.time_pattern, args.start_column, report=report_page)
        names = plot_names(list(dict.fromkeys(result.alignment.events["path"])), ALIGN_PLOT_SUFFIX) if args.plot else {}
        also(Path(args.plot or "") / name for name in names.values())
        for path, name in names.items():
            plot_alignment(path, result.alignment.events, result.alignment.leftover, Path(args.plot) / name)
        page = ""
        if report_page:
            from audiotune.engine.taps_report import alignment_report

            page = f"report: {final_path(alignment_report(result))}"
    report = result.alignment.report()
    for row in report["recordings"]:
        error = f", median error {row['median_error'] * 1000:+.1f} ms" if row["median_error"] is not None else ""
        print(f"{row['path']}: {row['matched']} of {row['taps']} taps matched to {row['touches']} touches"
              f" ({row['unmatched_taps']} taps, {row['unmatched_touches']} touches unmatched{error})")
    how = "estimated" if report["latency_estimated"] else "given"
    print(f"latency {report['latency'] * 1000:+.1f} ms ({how}); {report['matched']} matched, "
          f"{report['matched_none']} off-key, {report['unmatched_taps']} taps and {report['unmatched_touches']} "
          f"touches unmatched, " + (f"{report['touches_after_until']} touches after --until, "
                                    if args.until is not None else "")
          + f"{report['touches_outside_recordings']} touches in no recording "
          f"(listed in {result.leftover_path.name})")
    skipped = f", {len(result.skipped)} too near a file's edge (listed in {result.skipped_path.name})" \
        if result.skipped_path else ""
    print(f"{final_path(result.out)}: {len(result.segments)} segments{skipped}; report in {result.report_path.name}")
    if args.plot:
        print(f"plots in {storage.final_place(args.plot)}")
    if page:
        print(page)


COMMAND = Command("taps", "taps and keystrokes in long recordings: detect, align", arguments, run,
                  examples="audiotune taps detect recordings/*.wav --out taps.csv --release 0.15 --plot plots\n"
                           "audiotune taps align taps.csv --touch_log logs/*_nnode.csv --keys keys.csv --out "
                           "segments.csv")
