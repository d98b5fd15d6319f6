"""From command-line data options to checked tables and targets, with every dropped row written down."""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audiotune import storage
from audiotune.config import HeadSpec, RunConfig, TrainConfig, option_default
from audiotune.data.audio import SEGMENT_COLUMNS, SPAN_COLUMNS, AudioSpec, file_rate
from audiotune.data.balance import training_share
from audiotune.data.checked_audio import CheckRecord, scan_audio
from audiotune.data.errors import DataError, listing, refuse_unless_skipped
from audiotune.data.input_spec import InputSpec
from audiotune.data.json_splits import json_label_groups
from audiotune.data.labels import (
    LabelGroup,
    derivation_hint,
    drop_missing_targets,
    encode_targets,
    fit_target_scaling,
    infer_heads,
    lost_classes,
    read_label_file,
    rows_of_classes,
)
from audiotune.data.layout import SUBJECT, attach_paths, read_splits, split_file
from audiotune.data.splits import draw_validation, share_count
from audiotune.outputs import DROPPED_FILE, ONE_TABLE, SCORED_SPLITS, SKIPPED_FILE, VALIDATION_FILE, write_csv

log = logging.getLogger(__name__)
# checks a split's audio: (table, spec, split, min_samples, record of earlier checks) -> (usable rows with
# num_samples, failures)
Scanner = Callable[[pd.DataFrame, AudioSpec, str, int, CheckRecord | None], tuple[pd.DataFrame, pd.DataFrame]]


@dataclass
class PreparedData:
    """Checked tables per split (with ``path``, ``expected_rate``, ``num_samples``) and their targets."""

    tables: dict[str, pd.DataFrame]
    targets: dict[str, np.ndarray]
    heads: list[HeadSpec]
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)
    dropped: pd.DataFrame = field(default_factory=pd.DataFrame)
    drawn_val: pd.DataFrame | None = None  # validation rows drawn from train.csv (written as validation.csv)

    def name_one_table(self, data_split_root: str | Path) -> str | None:
        """The rows of one CSV named after its file (``test`` for test.csv), as the splits of a directory are, by
        every command that writes them by split; returns that name (None for a directory, or a CSV named after
        ``ONE_TABLE``, whose name stays)."""
        if list(self.tables) != [ONE_TABLE] or not str(data_split_root).lower().endswith(".csv"):
            return None
        section = Path(str(data_split_root)).stem or ONE_TABLE
        self.tables = {section: self.tables[ONE_TABLE]}
        self.targets = {section: self.targets[ONE_TABLE]}
        for frame in (self.skipped, self.dropped):  # their rows named by the same section
            if "split" in frame.columns:
                frame["split"] = frame["split"].replace(ONE_TABLE, section)
        return section if section != ONE_TABLE else None

    def write_reports(self, out_dir: str | Path) -> list[Path]:
        """skipped.csv (bad audio), dropped_rows.csv (rows that reach no model) and validation.csv (drawn
        validation rows) when there is anything to list, each list said in the log; an earlier list of the same
        name is removed."""
        written = []
        for frame, name, what in ((self.skipped, SKIPPED_FILE, "skipped (bad audio, --on_error skip)"),
                                  (self.dropped, DROPPED_FILE, "left out, each with its reason")):
            path = Path(out_dir) / name
            if len(frame):
                write_csv(frame, path, index=frame.index.name == "uid", index_label="uid" if frame.index.name else None)
                written.append(path)
                log.warning("%d row(s) %s: listed in %s", len(frame), what, path)
            else:
                path.unlink(missing_ok=True)
        if self.drawn_val is not None:
            written.append(write_csv(self.drawn_val, Path(out_dir) / VALIDATION_FILE, index_label="uid"))
        return written


def _check_tables(tables: dict[str, pd.DataFrame], heads: list[HeadSpec], config: RunConfig, inputs: InputSpec,
                  targets_needed: bool, training: bool = False, scan: Scanner = scan_audio,
                  listed_in: str = SKIPPED_FILE) -> PreparedData:
    """Paths, targets and audio of every table checked (the audio by ``scan``); ``num_samples`` is each clip's
    prepared length as it will be read: the training crop for the train split of a training run, the scoring crop
    otherwise. Bad audio is an error, or with ``--on_error skip`` left out: the command lists it in
    ``listed_in``."""
    prepared = PreparedData({}, {}, heads)
    skipped, dropped = [], []
    for split, table in tables.items():
        source = table.attrs.get("source", split)
        if targets_needed:
            table, missing = drop_missing_targets(table, heads, split, source, config.data.complete_rows)
            dropped.append(missing)
        if config.train.debug:  # the first 8 rows with targets, as the seeds took them after dropping the others
            table = table.head(8)
        table, unresolved = attach_paths(table, config.data.prefix, config.data.study, split)
        skipped.append(unresolved)
        spec = inputs.audio(train=training and split == "train")
        record = CheckRecord(storage.cache_root(config.runtime.cache_dir), spec)
        table, failures = scan(table, spec, split, inputs.min_samples, record)
        skipped.append(failures)
        prepared.tables[split] = table
        prepared.targets[split] = encode_targets(table, heads, source) if targets_needed else \
            np.zeros((len(table), 0), dtype=np.float32)
    prepared.skipped = pd.concat(skipped, ignore_index=True) if skipped else pd.DataFrame()
    prepared.dropped = pd.concat(dropped) if dropped else pd.DataFrame()
    reasons = prepared.skipped["reason"].astype(str).tolist() if len(prepared.skipped) else []
    refuse_unless_skipped(reasons, "audio file(s) cannot be used", config.data.on_error, listed_in)
    for split, table in prepared.tables.items():
        if table.empty:
            raise DataError(_nothing_left(split, tables[split], prepared))
    if training:
        say_resampling(prepared.tables, inputs.audio(train=False).resample_rate)
    return prepared


RATE_SAMPLES = 16  # files per split whose header says the rates a training run's resampling notice names


def say_resampling(tables: dict[str, pd.DataFrame], rate: int) -> None:
    """Say on stderr, once, that audio at other rates than the model's is resampled: the rates of up to
    :data:`RATE_SAMPLES` local files per split, spread over it (headers only; remote audio is not read)."""
    if not rate:
        return
    rates = set()
    for table in tables.values():
        paths = [p for p in table["path"].astype(str) if p and not storage.is_remote(p)]
        for k in np.unique(np.linspace(0, len(paths) - 1, min(RATE_SAMPLES, len(paths))).astype(int)):
            rates.add(file_rate(paths[k]))
    other = sorted(r for r in rates if r != rate)
    if other:
        # (whether --resample_rate may change it depends on the model: README, Audio)
        log.warning("audio at %s Hz is resampled to %d Hz, the rate the model reads", " and ".join(map(str, other)),
                    rate)


def _nothing_left(split: str, table: pd.DataFrame, prepared: PreparedData) -> str:
    """Why no row of a split is left, with the first reasons (no list has been written at this point)."""
    reasons = _left_out(prepared, split)
    return (f"{table.attrs.get('source', split)}: none of its {len(table)} row(s) can be used "
            f"({len(reasons)} left out):{listing(reasons)}")


def _left_out(prepared: PreparedData, split: str, uids: Collection[str] | None = None) -> list[str]:
    """Why each row of ``split`` (of ``uids`` only, where given) was left out: skipped audio (its reason names the
    file), then dropped rows (named by uid)."""
    reasons: list[str] = []
    for frame, by_uid in ((prepared.skipped, False), (prepared.dropped, True)):
        if len(frame) and "split" in frame.columns:
            part = frame[frame["split"] == split]
            ids = part.index if by_uid else part.get("uid", part.index)
            reasons += [f"{uid}: {reason}" if by_uid else str(reason) for uid, reason in zip(ids, part["reason"])
                        if uids is None or str(uid) in uids]
    return reasons


def _refuse_lost_classes(before: pd.DataFrame, prepared: PreparedData, drawn: pd.DataFrame | None,
                         draw: str) -> None:
    """A class of the training table as read (a value of a one-column binary head) whose every training row went
    (bad audio skipped, rows without targets dropped, rows shared with val/test left out by --allow_overlap, rows
    drawn into validation) cannot be learnt: an error naming it and where its rows went, as the training table
    without those rows is (one class only, or a class of val/test unseen in training)."""
    lost = lost_classes(prepared.heads, before, prepared.tables["train"])
    if not lost:
        return
    source = before.attrs.get("source", "train")
    moved = [] if drawn is None else [str(uid) for uid in drawn.index]
    messages = []
    for column, classes in lost.items():
        uids = {str(uid) for uid in rows_of_classes(before, column, classes)}
        reasons = _left_out(prepared, "train", uids) + [f"{uid}: drawn into validation ({draw})" for uid in moved
                                                        if uid in uids]
        advice = "fix the files, or take the class out of the split"
        if uids & set(moved):
            advice = f"give a val.csv, or draw another validation part (another --seed), or {advice}"
        messages.append(f"{source}: column '{column}' keeps no training clip of {classes} once these rows are left "
                        f"out, and a classifier cannot learn a class it never sees ({advice}):" + listing(reasons))
    raise DataError(" / ".join(messages))


def _subjects(table: pd.DataFrame) -> set[str]:
    if SUBJECT not in table.columns:
        return set()
    return {str(s) for s in table[SUBJECT].dropna()}


def _clip_keys(table: pd.DataFrame) -> pd.Series:
    """Each row's clip: its file and the span of it that the row reads (empty without a path)."""
    if "path" not in table.columns:
        return pd.Series("", index=table.index, dtype=object)
    paths = table["path"].fillna("").astype(str)
    keys = paths
    for column in SPAN_COLUMNS:
        values = table[column] if column in table.columns else pd.Series(np.nan, index=table.index)
        numbers = pd.to_numeric(values, errors="coerce") if column in SEGMENT_COLUMNS else values
        keys = keys + "|" + numbers.map(lambda v: "" if pd.isna(v) else repr(v) if isinstance(v, float) else str(v))
    return keys.where(paths.str.strip() != "", "")  # a row without a path has no clip (it is named as bad input)


def split_overlaps(tables: dict[str, pd.DataFrame], allow: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check that validation and test share no subject, no uid and no clip (one file's span under another uid)
    with train (nor uids with each other).

    Returns the training table and the training rows left out. An overlap is an error naming the shared
    subjects/uids; with ``allow`` the shared training rows are left out and returned, each with its reason.
    """
    train = tables["train"]
    source = {name: table.attrs.get("source", split_file(name)) for name, table in tables.items()}
    reasons = pd.Series("", index=train.index, dtype=object)
    problems = []
    for name in SCORED_SPLITS:
        if name not in tables:
            continue
        shared_subjects = sorted(_subjects(train) & _subjects(tables[name]))
        shared_uids = sorted(set(map(str, train.index)) & set(map(str, tables[name].index)))
        if shared_subjects:
            problems.append(f"{len(shared_subjects)} subject(s) of {source[name]} also in {source['train']}: "
                            f"{shared_subjects[:5]}{' ...' if len(shared_subjects) > 5 else ''}")
            hit = train[SUBJECT].astype(str).isin(shared_subjects) & (reasons == "")
            reasons[hit.to_numpy()] = f"subject also in {name} ({source[name]})"
        if shared_uids:
            problems.append(f"{len(shared_uids)} uid(s) of {source[name]} also in {source['train']}: "
                            f"{shared_uids[:5]}{' ...' if len(shared_uids) > 5 else ''}")
            hit = pd.Series(train.index.astype(str), index=train.index).isin(shared_uids) & (reasons == "")
            reasons[hit.to_numpy()] = f"uid also in {name} ({source[name]})"
        train_clips, clips = _clip_keys(train), _clip_keys(tables[name])
        shared_clips = sorted((set(train_clips) & set(clips)) - {""})
        if shared_clips:  # one file (and span) under two uids
            named = [path.split("|")[0] for path in shared_clips[:3]]
            problems.append(f"{len(shared_clips)} clip(s) of {source[name]} also in {source['train']} under "
                            f"another uid: {named}{' ...' if len(shared_clips) > 3 else ''}")
            hit = train_clips.isin(shared_clips) & (reasons == "")
            reasons[hit.to_numpy()] = f"clip also in {name} ({source[name]})"
    if "val" in tables and "test" in tables:
        shared = sorted(set(map(str, tables["val"].index)) & set(map(str, tables["test"].index)))
        if shared:
            if not allow:
                problems.append(f"{len(shared)} uid(s) of {source['val']} also in {source['test']}: {shared[:5]}")
            else:
                log.warning("%d uid(s) are in both %s and %s (--allow_overlap)", len(shared), source["val"],
                            source["test"])
    if problems and not allow:
        raise DataError("splits overlap (a model would be scored on what it trained or was selected on):\n  "
                        + "\n  ".join(problems) + "\n(fix the split, or pass --allow_overlap to leave the shared "
                        "training rows out; they are then listed in dropped_rows.csv)")
    left_out = reasons != ""
    dropped = train.loc[left_out.to_numpy()].copy()
    dropped = dropped[[c for c in ("path", SUBJECT) if c in dropped.columns]]
    dropped["split"] = "train"
    dropped["reason"] = reasons[left_out]
    kept = train.loc[~left_out.to_numpy()]
    kept.attrs = dict(train.attrs)
    return kept, dropped


def prepare_training_data(config: RunConfig, inputs: InputSpec, exp_dir: str | Path) -> PreparedData:
    """Read the split directory, infer the heads, draw validation subjects if needed, check all audio as the
    model reads it (``inputs``).

    Regression heads get the training split's target mean and std when ``--standardize_targets`` is on.
    """
    root = config.data.data_split_root
    tables = read_splits(root, config.data.prefix, config.data.na_values)
    read = tables.get("train")  # the training table as read, before any of its rows is left out or drawn away
    if "train" not in tables:
        raise DataError(f"{root}: training needs a train split (a split directory with train.csv, or a JSON "
                        "split file with a Train part)")
    from_json = str(root).lower().endswith(".json")
    groups, labels = training_label_groups(config, tables)
    check_head_options(config, groups, labels)
    drawn, draw = None, ""
    train = tables["train"]
    heads = infer_heads(groups, train, source=train.attrs.get("source", split_file("train")))
    _check_label_columns(tables, heads)
    train, overlapping = split_overlaps(tables, config.data.allow_overlap)
    if train.empty:  # --allow_overlap left out every training row
        raise DataError(_nothing_left("train", tables["train"], PreparedData({}, {}, heads, dropped=overlapping)))
    if "val" not in tables and config.data.val_size == 0 and config.train.val_share == 0:
        check_no_validation(config, root)
    elif "val" not in tables:
        # a JSON split file names utterances, not speakers: without a subject column, utterances are drawn
        group = "" if from_json and SUBJECT not in train.columns else SUBJECT
        size = config.data.val_size
        draw = f"--val_size {size} {group or 'utterance'}(s), --seed {config.data.seed}"
        if config.train.val_share > 0:  # a share of the clips, whatever their subjects
            group, size = "", share_count(train, config.train.val_share)
            draw = f"--val_share {config.train.val_share}, --seed {config.data.seed}"
        train, val = draw_validation(train, size, config.data.seed, group,
                                     source=train.attrs.get("source", split_file("train")))
        drawn = val.copy()
        val.attrs["source"] = str(Path(exp_dir) / VALIDATION_FILE)
        tables["val"] = val
    train.attrs = dict(tables["train"].attrs)
    tables["train"] = train
    prepared = _check_tables(tables, heads, config, inputs, targets_needed=True, training=True)
    prepared.dropped = pd.concat([overlapping, prepared.dropped]) if len(overlapping) else prepared.dropped
    if config.data.train_fraction < 1:
        train, targets, left_out = training_share(prepared.tables["train"], prepared.targets["train"], prepared.heads,
                                                  config.data.train_fraction, config.data.seed)
        prepared.tables["train"], prepared.targets["train"] = train, targets
        prepared.dropped = pd.concat([prepared.dropped, left_out]) if len(prepared.dropped) else left_out
    prepared.drawn_val = drawn
    if not config.train.debug:  # --debug keeps 8 rows a split, whatever classes they hold
        _refuse_lost_classes(read, prepared, drawn, draw)
    fit_target_scaling(prepared.heads, prepared.targets["train"], config.train.standardize_targets)
    return prepared


def check_labels(tables: dict[str, pd.DataFrame], groups: list[LabelGroup], na_values: Sequence[str] = (),
                 where: str = "") -> None:
    """The label checks a run makes, without its audio: heads inferred from the train table, every table's
    targets encodable (a class unseen in training, a one-class head, a cell that is not 0/1 ...). For a driver
    that checks all its runs' tables before the first run trains."""
    tables = {split: table.replace(list(na_values), np.nan) if na_values else table for split, table in tables.items()}
    train = tables["train"]
    name = f"{where}: " if where else ""
    try:
        heads = infer_heads(groups, train, source=train.attrs.get("source", f"{where} train"))
        _check_label_columns(tables, heads)
        for split, table in tables.items():
            encode_targets(table, heads, table.attrs.get("source", f"{where} {split}"))
    except DataError as err:
        raise DataError(f"{name}{err}") from None


def check_no_validation(config: RunConfig, root: str) -> None:
    """A run without validation (``--val_size 0`` and no val.csv): nothing picks an epoch or stops early, so
    options that need validation are errors."""
    needs = [flag for flag, used in (("--patience", config.train.patience > 0),
                                     ("--monitor", config.train.monitor != "loss"),
                                     ("--save_top_k", config.train.save_top_k > 1)) if used]
    if needs:
        raise DataError(f"{root}: {' and '.join(needs)} need(s) validation, and this run has none "
                        "(--val_size 0 without val.csv, cv --val_group none, or cv on JSON split files with an "
                        "empty Val): the last epoch is kept")


def training_label_groups(config: RunConfig, tables: dict[str, pd.DataFrame] | None = None,
                          ) -> tuple[list[LabelGroup], str]:
    """The heads a training run's labels declare and where: ``--label_txt``, else the JSON split file's own labels
    (``tables``: its splits, when already read)."""
    root = config.data.data_split_root
    if config.data.label_txt:
        return read_label_file(config.data.label_txt), config.data.label_txt
    if not str(root).lower().endswith(".json"):
        raise DataError("--label_txt is required for training: one line per head, comma-separated columns")
    if tables is None:
        tables = read_splits(root, config.data.prefix, config.data.na_values)
    return json_label_groups(tables, root), str(root)


# the training options that act on heads of one kind only: option -> (that kind, its name, how a label file declares
# one)
HEAD_KIND_OPTIONS = {"labeling_method": ("soft", "soft (vote)", "vote columns as one head `a,b,c:soft`"),
                     "standardize_targets": ("regression", "regression", "real-valued columns `NAME:regression`")}


def idle_head_options(train: TrainConfig, kinds: Collection[str | None]) -> dict[str, Any]:
    """The options of :data:`HEAD_KIND_OPTIONS` that ``train`` sets away from their defaults while no head is of
    their kind (``kinds``: those of the run's heads), with their values: they do nothing."""
    return {name: getattr(train, name) for name, (kind, _, _) in HEAD_KIND_OPTIONS.items()
            if getattr(train, name) != option_default(TrainConfig, name) and kind not in kinds}


def _acts_on_none(name: str, value: Any, source: str) -> str:
    shown = str(value).lower() if isinstance(value, bool) else value  # as the flag takes it
    return f"--{name} {shown}: acts only on {HEAD_KIND_OPTIONS[name][1]} heads, and {source} has none"


def check_head_options(config: RunConfig, groups: list[LabelGroup], source: str) -> None:
    """An option of :data:`HEAD_KIND_OPTIONS` set away from its default for a label file (``source``) without a head
    of its kind does nothing: an error naming the file and its heads. Not for a resumed run (it made no change)."""
    if config.train.resume:
        return
    heads = "; ".join(",".join(group.columns) + (f":{group.kind}" if group.kind else "") for group in groups)
    problems = [f"{_acts_on_none(name, value, source)} ({heads}); declare {HEAD_KIND_OPTIONS[name][2]}, or leave "
                f"--{name} out" for name, value in idle_head_options(config.train, {g.kind for g in groups}).items()]
    if problems:
        raise DataError(" / ".join(problems))


def head_options_at_defaults(config: RunConfig, keep: Collection[str] = ()) -> list[str]:
    """Put each option of :data:`HEAD_KIND_OPTIONS` that does nothing with the run's labels
    (:func:`training_label_groups`) back at its default, but those named in ``keep`` (typed, and refused as they
    are), for a run that starts from a config written before they were refused (a cv or sweep folder's, a run's
    config.yaml: they did nothing then too); returns ``--name value: why`` of each. Labels that cannot be read
    change nothing (the run says why); with every such option at its default they are not read."""
    if not set(idle_head_options(config.train, ())) - set(keep):
        return []
    try:
        groups, source = training_label_groups(config)
    except (OSError, ValueError):
        return []
    idle = {name: value for name, value in idle_head_options(config.train, {group.kind for group in groups}).items()
            if name not in keep}
    for name in idle:
        setattr(config.train, name, option_default(TrainConfig, name))
    return [_acts_on_none(name, value, source) for name, value in idle.items()]


def _check_label_columns(tables: dict[str, pd.DataFrame], heads: list[HeadSpec]) -> None:
    """Every table has every label column (a column may be empty in some rows, not absent)."""
    columns = [c for head in heads for c in head.columns]
    for split, table in tables.items():
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(f"{table.attrs.get('source', split)}: label column(s) {missing} of the run not found "
                            f"(leave cells empty where a row has no target){derivation_hint(missing, table.columns)}")


def prepare_eval_data(config: RunConfig, inputs: InputSpec, data_split_root: str,
                      targets_needed: bool = True, scan: Scanner = scan_audio,
                      listed_in: str = SKIPPED_FILE, tables: dict[str, pd.DataFrame] | None = None) -> PreparedData:
    """Tables for evaluation or extraction, labelled with the run's heads, their audio checked as the model
    reads scored clips (``inputs``) by ``scan`` (several processes share the checks with one that gathers what
    each found); ``listed_in``: where the command lists bad audio that ``--on_error skip`` leaves out.
    ``tables``: the tables of ``data_split_root`` already read (those alone are checked), else every split of it."""
    if tables is None:
        tables = read_splits(data_split_root, config.data.prefix, config.data.na_values)
    if targets_needed:
        _check_label_columns(tables, config.heads)
    return _check_tables(tables, config.heads, config, inputs, targets_needed, scan=scan, listed_in=listed_in)
