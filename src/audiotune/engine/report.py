"""Reports of what commands wrote: a run directory (train, evaluate) or a cross-validation's experiment directory
read back, the wrong clips read as the model read them, and one self-contained HTML page written beside them; the
table of `taps detect` or `taps align` drawn again as its page (engine/taps_report.py)."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from audiotune import storage
from audiotune.config import RunConfig
from audiotune.data.audio import EXPECTED_RATE, Span, load_clip, open_audio, span_of
from audiotune.data.errors import DataError
from audiotune.data.layout import SUBJECT, attach_paths, read_splits
from audiotune.engine.inference import override_data
from audiotune.engine.probe_report import is_probe, read_probe
from audiotune.engine.taps_report import is_taps_table, rebuild_page
from audiotune.models.backbones import input_spec
from audiotune.models.checkpoint import rebuild_config, resume_advice
from audiotune.outputs import (
    BEST_VAL_LOSS,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CV_CONFIG_FILE,
    CV_FOLDS_FILE,
    CV_RUNS_TABLE,
    CV_SUMMARY_FILE,
    DROPPED_FILE,
    ENSEMBLE_PREDICTIONS_FILE,
    EPOCHS_RUN,
    EVALUATE_DIR,
    EVALUATION_FILE,
    KEPT_WEIGHTS,
    LAST_CHECKPOINT,
    LOG_DIR,
    LOG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PREDICTIONS_FILE,
    PROBE_FILE,
    REPORT_FILE,
    SKIPPED_FILE,
    SWEEP_SPACE_FILE,
    SWEEP_SUMMARY_FILE,
    SWEEP_TRIALS_TABLE,
    TAPS_REPORT_SUFFIX,
    TAPS_SUMMARY_SUFFIX,
    VAL_LOSS_COLUMN,
    check_output_path,
    command_history,
    from_training_dir,
    repeat_dir,
    sidecar,
    write_bytes,
)
from audiotune.report import CLIP_KB, CLIPS_PER_CLASS
from audiotune.report.clips import Clip, wrong_clips
from audiotune.report.experiment_page import ExperimentReport, render_experiment
from audiotune.report.probe_page import render_probe
from audiotune.report.run_page import RunReport, render_run
from audiotune.report.sweep_page import SweepReport, render_sweep

log = logging.getLogger(__name__)

def write_report(source: str | Path, out: str | Path | None = None, data_split_root: str = "",
                 group_by: str = "", clips_per_class: int = CLIPS_PER_CLASS, clip_kb: int = CLIP_KB,
                 run: str | Path = "", split: str = "", data: dict[str, Any] | None = None) -> Path:
    """Write the HTML report of run or experiment directory ``source`` to ``out`` (default SOURCE/report.html).

    ``data_split_root``: the table the run scored (default: the run's own ``--data_split_root``), which names each
    clip's audio and the ``group_by`` column (default ``subject`` when the table has one). ``run``: the run whose
    config.yaml made an evaluation folder (default: ``source`` or the folder above it). ``split``: the split whose
    clips are played and broken down (default test, else val, else the one scored). ``data``: data options (``prefix``,
    ``study``) over the run's own, as ``evaluate -i/-s`` gives them."""
    source = Path(source)
    if not source.exists():
        raise ValueError(f"{source}: not found; report a folder: a run, an evaluation, a cross-validation, a sweep or "
                         "a probe, or the table of `audiotune taps detect` or `taps align`")
    # the options of a run's page given (each an option of the run's page, which reads and plays its clips)
    given = {"-d": data_split_root, "--group_by": group_by, "--run": run, "--split": split,
             "--clips": None if clips_per_class == CLIPS_PER_CLASS else clips_per_class,
             "--clip_kb": None if clip_kb == CLIP_KB else clip_kb,
             **{f"--{name}": value for name, value in (data or {}).items()}}
    if source.is_file():
        return _taps_page(source, out, given)
    if clips_per_class < 0 or clip_kb <= 0:
        raise ValueError(f"--clips {clips_per_class}, --clip_kb {clip_kb}: give clips >= 0 and a size cap > 0")
    out = check_output_path(Path(out) if out else source / REPORT_FILE)
    if (source / CV_SUMMARY_FILE).is_file():
        _refuse_page_options(given, "of a cross-validation", ("--split", "--clips", "--clip_kb"))
        page = render_experiment(read_experiment(source, clips_per_class, clip_kb, split))
    elif (source / SWEEP_SUMMARY_FILE).is_file():
        _refuse_page_options(given, "of a sweep (each trial's run has its own page)")
        trials = source / SWEEP_TRIALS_TABLE
        page = render_sweep(SweepReport(f"sweep: {shown_name(source)}", shown_place(source),
                                        _read_json(source / SWEEP_SUMMARY_FILE),
                                        pd.read_csv(trials) if trials.is_file() else None,
                                        [("this sweep", command_history(source))]))
    elif is_probe(source):
        _refuse_page_options(given, "of a probe (a table of layers, no clips)")
        page = render_probe(read_probe(source))
    elif (source / PREDICTIONS_FILE).is_file() and not (source / METRICS_FILE).is_file():
        raise ValueError(stopped_scoring(source))
    elif (source / METRICS_FILE).is_file():
        page = render_run(read_run(source, data_split_root, group_by, clips_per_class, clip_kb, run, split, data))
    elif (source / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file():  # trained here, stopped before its scores
        raise ValueError(interrupted_run(source))
    elif (source / CV_CONFIG_FILE).is_file() or (source / SWEEP_SPACE_FILE).is_file():
        raise ValueError(stopped_experiment(source))
    elif not (source / MODEL_FILE).is_file() and command_history(source):  # stopped before anything to read
        raise ValueError(stopped_early(source))
    elif (source / CONFIG_FILE).is_file():  # an imported run
        raise ValueError(f"{source}: a run without scores of its own (no {METRICS_FILE} or {PREDICTIONS_FILE}); "
                         f"report an evaluation of it: `audiotune evaluate --run {source} -d TABLE`, then "
                         f"`audiotune report {source / EVALUATE_DIR}`")
    else:
        raise ValueError(f"{source}: neither a run directory (no {METRICS_FILE} or {PREDICTIONS_FILE}), a "
                         f"cross-validation (no {CV_SUMMARY_FILE}), a sweep (no {SWEEP_SUMMARY_FILE}) nor a probe "
                         f"(no {PROBE_FILE})")
    return write_bytes(out, page)


def shown_place(source: Path) -> str:
    """The folder as the page names it: its remote URL when it is a local copy of a bucket's folder or a staging
    folder on its way there (the cache of the machine that drew the page is no place for a colleague)."""
    return storage.remote_name(str(source.resolve()))


def shown_name(source: Path) -> str:
    """The folder's name as the page's title gives it: its remote one, where the folder is a local copy of a
    bucket's or a staging folder on its way there (whose own name is made up)."""
    return storage.name(shown_place(source))


def _refuse_page_options(given: dict[str, Any], page: str, takes: tuple[str, ...] = ()) -> None:
    """An option of a run's page given for another ``page`` that does not take it (all but ``takes``): an error
    naming it, instead of a page drawn without it."""
    for flag, value in given.items():
        if value not in (None, "") and flag not in takes:
            raise ValueError(f"{flag} {value}: an option of a run's page (its clips, scores and breakdown); the page "
                             f"{page} has none: leave {flag} out")


def _taps_page(table: Path, out: str | Path | None, given: dict[str, Any]) -> Path:
    """The page of `taps detect` or `taps align` that wrote ``table``, drawn again (default: beside it, where the
    command wrote it); the options of a run's page refused."""
    if not is_taps_table(table):
        raise ValueError(f"{table}: a file, and not the table of `audiotune taps detect` or `taps align` (no "
                         f"{sidecar(table, TAPS_SUMMARY_SUFFIX).name} beside it); report a folder: a run, an "
                         "evaluation, a cross-validation, a sweep or a probe, or a taps table")
    _refuse_page_options(given, f"of the taps table {table}")
    return rebuild_page(table, check_output_path(Path(out) if out else sidecar(table, TAPS_REPORT_SUFFIX)))


def interrupted_run(source: Path) -> str:
    """What to do with a run stopped before it finished training (its last checkpoint, no trained weights): resume
    it, as the command that was stopped said, with the command line that wrote it last."""
    stopped = f"was stopped while scoring its weights ({MODEL_FILE}, no {METRICS_FILE})" \
        if (source / MODEL_FILE).is_file() else \
        f"was stopped before it finished ({CHECKPOINT_DIR}/{LAST_CHECKPOINT}, no {MODEL_FILE})"
    return f"{source}: training {stopped}, so there is nothing to report yet; {resume_advice(source)}"


def stopped_experiment(source: Path, summarised: bool = False) -> str:
    """What to do with a cross-validation or sweep stopped before its summary (``summarised``: before its summary
    of a rerun asking for more runs): the same command again goes on."""
    cv = (source / CV_CONFIG_FILE).is_file()
    commands = [entry.get("command_line") for entry in command_history(source)]
    last = f": `{commands[-1]}`" if commands and isinstance(commands[-1], str) else ""
    goes_on = f"run the same command again, which keeps its finished runs and goes on{last}"
    if summarised:
        return f"it was stopped before it finished (or is running now); {goes_on}"
    return (f"{source}: a {'cross-validation' if cv else 'sweep'} stopped before it finished (no "
            f"{CV_SUMMARY_FILE if cv else SWEEP_SUMMARY_FILE}), so there is nothing to report yet; {goes_on}")


def stopped_early(source: Path) -> str:
    """What to do with a folder whose command was stopped before it wrote anything to read back (no weights, no
    checkpoint, no scores): run it again with --overwrite, which replaces what it left."""
    commands = [entry.get("command_line") for entry in command_history(source)]
    last = f" (it was: `{commands[-1]}`)" if commands and isinstance(commands[-1], str) else ""
    return (f"{source}: the command that wrote it was stopped before it wrote anything to report (no {MODEL_FILE}, "
            f"checkpoint or scores); run that command again (with --overwrite, where it takes one){last}")


def stopped_scoring(source: Path) -> str:
    """What to do with a folder whose scoring was stopped part-way (its predictions, not the metrics written last):
    run the command that wrote it again, which replaces the folder."""
    commands = [entry.get("command_line") for entry in command_history(source)]
    last = f": `{commands[-1]}`" if commands and isinstance(commands[-1], str) else ""
    return (f"{source}: scoring was stopped before it finished ({PREDICTIONS_FILE}, no {METRICS_FILE}), so its "
            f"scores are not complete; run the command that wrote it again{last}")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot be read as JSON ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return value


def read_experiment(source: Path, clips_per_class: int = CLIPS_PER_CLASS, clip_kb: int = CLIP_KB,
                    split: str = "") -> ExperimentReport:
    """A cross-validation's summary, runs table, config and command lines, and the wrong clips over its folds."""
    runs = source / CV_RUNS_TABLE
    config = source / CV_CONFIG_FILE
    report = ExperimentReport(title=f"cross-validation: {shown_name(source)}", source=shown_place(source),
                              summary=_read_json(source / CV_SUMMARY_FILE),
                              runs=pd.read_csv(runs) if runs.is_file() else None,
                              config_yaml=config.read_text() if config.is_file() else "",
                              clips_per_class=clips_per_class, max_clip_bytes=clip_kb * 1000,
                              commands=[("this cross-validation", command_history(source))])
    asked = (yaml.safe_load(report.config_yaml) or {}).get("repeats") if report.config_yaml else None
    if isinstance(asked, int) and asked != report.summary.get("repeats"):  # a rerun with more, stopped
        report.notes.append(f"this summary is of {report.summary.get('repeats')} repeat(s) per fold, and "
                            f"{CV_CONFIG_FILE} asks for {asked}: {stopped_experiment(source, summarised=True)}")
    _fold_clips(source, report, split)
    return report


def _fold_clips(source: Path, report: ExperimentReport, split: str) -> None:
    """The most confidently wrong clips per head and true class over every fold's ``split`` (default test, else
    val): each fold scored by its repeats averaged (ensemble_predictions.parquet), else by its first run; each clip
    read from its fold's table as the fold's run read it."""
    names = list(_read_json(source / CV_FOLDS_FILE)) if (source / CV_FOLDS_FILE).is_file() else []
    folds = {}
    for name in names:
        run_dir = source / name / repeat_dir(1)
        scored = next((p for p in (source / name / ENSEMBLE_PREDICTIONS_FILE, run_dir / PREDICTIONS_FILE)
                       if p.is_file()), None)
        if scored is not None and (run_dir / CONFIG_FILE).is_file():
            config = rebuild_config(run_dir)  # its audio and its encoder's input from any folder
            folds[name] = (config, pd.read_parquet(scored).assign(fold=name))
    if not folds:
        report.clips_missing = "no fold has predictions and a config: no clips to play"
        return
    predictions = pd.concat([table for _, table in folds.values()], ignore_index=True)
    splits = list(predictions["split"].unique())
    if split and split not in splits:
        raise ValueError(f"--split {split}: the folds score {', '.join(map(str, splits))}")
    report.split = split or next((s for s in ("test", "val") if s in splits), splits[0])
    heads = [dataclasses.asdict(h) for h in next(iter(folds.values()))[0].heads]
    report.clips = wrong_clips(predictions, heads, report.split, report.clips_per_class)
    chosen = predictions[predictions["split"] == report.split]
    fold_of = dict(zip(chosen["uid"].astype(str), chosen["fold"]))
    for name, (config, _) in folds.items():
        clips = [clip for clip in report.clips if fold_of.get(clip.uid) == name]
        if not clips:
            continue
        try:
            table = _scored_table(config, str(source / name), report.split)
        except (DataError, OSError) as err:
            for clip in clips:
                clip.problem = f"{source / name}: the fold's table cannot be read ({err})"
            continue
        _load(clips, table, config)


def _config_dir(source: Path, run: str | Path = "", recorded: str = "", relative: str = "") -> Path | None:
    """The run directory whose config.yaml made these outputs: ``run`` when given, else ``source``, the run an
    evaluation recorded (seen from its folder, ``relative``, so a copy of both reads the copy; else where it was,
    ``recorded``), or the run it sits in."""
    if run:
        if not (Path(run) / CONFIG_FILE).is_file():
            raise ValueError(f"--run {run}: not a run directory (no {CONFIG_FILE})")
        return Path(run)
    candidates = (source, *([source / relative] if relative else []), *([Path(recorded)] if recorded else []),
                  source.parent)
    return next((d for d in candidates if (d / CONFIG_FILE).is_file()), None)


UNFOUND = "audio_unfound"  # a column of the table read here: why a row's audio was not found (its path is empty)


def _scored_table(config: RunConfig, data_split_root: str, split: str) -> pd.DataFrame:
    """Every row of the scored table(s) with its audio path, by uid: a row whose audio is not found (moved, deleted)
    keeps its columns (its group) with an empty path and the reason in UNFOUND. A uid in several splits (a training
    row left out with --allow_overlap) is the row of ``split``, the one the page shows."""
    tables = []
    splits = read_splits(data_split_root, na_values=config.data.na_values)
    for name, table in sorted(splits.items(), key=lambda item: item[0] != split):
        # (audio none of which is found: each clip says so)
        with_paths, failed = attach_paths(table, config.data.prefix, config.data.study, name, none_found=True)
        unfound = table.drop(index=with_paths.index).assign(path="")
        unfound[UNFOUND] = unfound.index.map(dict(zip(failed["uid"], failed["reason"])))
        tables += [with_paths, unfound]
    joined = pd.concat(tables)
    joined.index = joined.index.astype(str)
    return joined[~joined.index.duplicated()]


def _place(row: pd.Series) -> str:
    """Where a segment lies in its recording (empty for a whole file)."""
    span = span_of(row)
    if span.is_whole:
        return ""
    end = "the end" if span.duration is None else f"{span.offset + span.duration:.2f} s"
    channels = f", channels {list(span.channels)}" if span.channels else ""
    return f"{span.offset:.2f} s to {end} of {Path(str(row['path'])).name}{channels}"


def source_link(path: str, span: Span, crop: float = 0.0, seconds: float | None = None) -> tuple[str, str]:
    """The segment's source as a browser opens it, its start and end as a media fragment (``#t=START,END``), and
    the link's text. ``crop``: the seconds the model read from the segment's start (0: all of it); ``seconds``: the
    segment's own length where known (a local file's header), so that a crop that shortened it ends the fragment."""
    length = span.duration if span.duration is not None else seconds
    at_most = crop > 0 and length is None  # (a remote file's length is not read: the crop ends it, if it is longer)
    if crop > 0 and (length is None or length > crop):
        span = dataclasses.replace(span, duration=crop)
    if span.offset == 0 and span.duration is None:
        return storage.browser_url(path), path
    end = None if span.duration is None else span.offset + span.duration
    fragment = f"#t={span.offset:.3f}" + ("" if end is None else f",{end:.3f}")
    return (storage.browser_url(path) + fragment, f"{path}, {span.offset:.2f} s to "
            + ("the end" if end is None else f"at most {end:.2f} s" if at_most else f"{end:.2f} s"))


def _load(clips: list[Clip], table: pd.DataFrame, config: RunConfig) -> None:
    """Each clip's segment as the model read it (span, channel mode, resampling, scoring crop), and the link to its
    source; remote audio is linked, not read."""
    spec = input_spec(config).audio(train=False)
    for clip in clips:
        if clip.uid not in table.index:
            clip.problem = f"'{clip.uid}' is not in the table read"
            continue
        row = table.loc[clip.uid]
        if not str(row["path"]):
            reason = row.get(UNFOUND)
            clip.problem = f"its audio is not found: {reason if isinstance(reason, str) else 'no path'}"
            continue
        try:
            clip.place, span, path = _place(row), span_of(row), str(row["path"])
            clip.link, clip.link_text = source_link(path, span, spec.clip_length)
            if not storage.is_remote(path):
                if spec.clip_length > 0 and span.duration is None:  # its header: did the crop shorten it?
                    with open_audio(path) as handle:
                        seconds = handle.frames / handle.samplerate - span.offset
                    clip.link, clip.link_text = source_link(path, span, spec.clip_length, seconds)
                clip.wave, clip.rate = load_clip(path, spec, float(row.get(EXPECTED_RATE, float("nan"))), span)
        except (DataError, OSError) as err:
            clip.problem = f"cannot be read: {err}"


def _left_out(source: Path) -> dict[str, dict[str, int]]:
    """The rows of each split that the command writing ``source`` left out, by the list beside its outputs that
    names them (bad audio skipped, rows that reached no model): its scores are of the rest."""
    counts = {}
    for name in (SKIPPED_FILE, DROPPED_FILE):
        if (source / name).is_file():
            listed = pd.read_csv(source / name, usecols=lambda column: column == "split", dtype=str)
            if "split" in listed.columns:
                counts[name] = {str(k): int(v) for k, v in listed["split"].value_counts().items()}
    return counts


def _best_loss_epoch(metrics: dict) -> int | None:
    """The epoch (from 1) whose weights a pretraining run kept for their best validation loss; None when it kept its
    last epoch or the loss is not in its history."""
    losses = (metrics.get("history") or {}).get(VAL_LOSS_COLUMN) or []
    best = metrics.get(BEST_VAL_LOSS)
    if best is None or not str(metrics.get(KEPT_WEIGHTS, "")).startswith("best"):
        return None
    return next((epoch for epoch, loss in enumerate(losses, 1) if math.isclose(loss, best, rel_tol=1e-6)), None)


def read_run(source: Path, data_split_root: str = "", group_by: str = "", clips_per_class: int = CLIPS_PER_CLASS,
             clip_kb: int = CLIP_KB, run: str | Path = "", split: str = "",
             data: dict[str, Any] | None = None) -> RunReport:
    """Everything a run page shows; what is missing is said on the page. An evaluation folder's EVALUATION_FILE
    gives the run, the table and the data options it scored with, unless given here."""
    scored = _read_json(source / EVALUATION_FILE) if (source / EVALUATION_FILE).is_file() else {}
    config_dir = _config_dir(source, run, str(scored.get("run") or ""), str(scored.get("run_relative") or ""))
    config = rebuild_config(config_dir) if config_dir else None  # its audio and encoder's input from any folder
    if config is not None and config_dir is not None:
        recorded = dict(scored.get("data") or {})  # as the evaluation was given them: from where it ran
        if recorded.get("prefix"):
            recorded["prefix"] = from_training_dir(str(recorded["prefix"]), source)
        override_data(config, {**recorded, **(data or {})})
    metrics = _read_json(source / METRICS_FILE) if (source / METRICS_FILE).is_file() else {}
    predictions = pd.read_parquet(source / PREDICTIONS_FILE) if (source / PREDICTIONS_FILE).is_file() else None
    log_csv = source / LOG_DIR / LOG_FILE
    selection = metrics.get("selection") or {}
    kept = selection.get("epoch") or (metrics.get(EPOCHS_RUN) if metrics.get("trained") else None) or \
        _best_loss_epoch(metrics)
    report = RunReport(
        title=f"{'evaluation' if config_dir != source else 'run'}: {shown_name(source)}",
        source=shown_place(source), metrics=metrics, predictions=predictions,
        config_yaml=(config_dir / CONFIG_FILE).read_text() if config_dir else "",
        heads=[dataclasses.asdict(h) for h in config.heads] if config else [],
        log=pd.read_csv(log_csv) if log_csv.is_file() else None, kept_epoch=kept,
        clips_per_class=clips_per_class, max_clip_bytes=clip_kb * 1000)
    report.left_out = _left_out(source)
    evaluation = config_dir is not None and config_dir != source
    report.commands = [("this evaluation" if evaluation else "this run", command_history(source)),
                       *([("the run it scored", command_history(config_dir))] if evaluation and config_dir else [])]
    if config is None:
        report.notes.append(f"no {CONFIG_FILE} here or in the folder above: heads and audio settings unknown")
    if predictions is None or config is None:
        report.clips_missing = report.groups_missing = "no predictions or no config: nothing to break down or play"
        return report
    splits = list(predictions["split"].unique())
    if split and split not in splits:
        raise ValueError(f"--split {split}: {source / PREDICTIONS_FILE} scores {', '.join(map(str, splits))}")
    report.split = split or next((s for s in ("test", "val") if s in splits), splits[0] if splits else "")
    root = data_split_root or str(scored.get("data_split_root") or "") or \
        (from_training_dir(config.data.data_split_root, source) if config_dir == source else "")
    if not root:
        missing = f"the table an evaluation scored is not recorded in its folder (no {EVALUATION_FILE}): give -d " \
                  "TABLE to `audiotune report`"
        report.clips_missing = report.groups_missing = missing
        return report
    try:
        table = _scored_table(config, root, report.split)
    except (DataError, OSError) as err:
        missing = f"the scored table cannot be read ({err}); give it as -d TABLE to `audiotune report`"
        report.clips_missing = report.groups_missing = missing
        return report
    column = group_by or SUBJECT
    if column in table.columns:
        report.group_by, report.groups = column, table[column]
    elif group_by:
        own = [c for c in table.columns if c not in (UNFOUND, EXPECTED_RATE)]  # those the reading adds left out
        raise ValueError(f"--group_by {group_by}: {root} has no such column (columns: {', '.join(own)})")
    else:
        report.groups_missing = (f"the table has no '{SUBJECT}' column: `audiotune report {shown_place(source)} "
                                 "--group_by COLUMN` breaks the scores down by another")
    report.clips = wrong_clips(predictions, report.heads, report.split, clips_per_class)
    _load(report.clips, table, config)
    return report


def report_when_done(directory: str | Path, data_split_root: str = "", run: str | Path = "",
                     data: dict[str, Any] | None = None) -> str:
    """The report a command writes when it ends (``--report``): the line to print. The command's outputs are
    complete already, so a report that cannot be written is said, not raised."""
    try:
        written = write_report(directory, data_split_root=data_split_root, run=run, data=data)
        return f"report: {storage.final_path(written)}"
    except (OSError, ValueError) as err:  # DataError is a ValueError
        return f"report not written: {err}"
