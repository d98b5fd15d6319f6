"""``audiotune split``: subject-disjoint, stratified train/val/test CSVs (or k folds)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from audiotune.cli.command import Command
from audiotune.cli.flags import add_grouping_flags, add_option_flag, add_path, add_storage_flags, spellings
from audiotune.data.errors import DataError
from audiotune.storage import Role

if TYPE_CHECKING:
    import pandas as pd


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_path(parser, "manifest", role=Role.TABLE, help="manifest CSV")
    add_path(parser, "--out", "-o", "--output_dir", role=Role.OUTPUT_DIR, dest="out", required=True,
             help="output directory (-o/--output_dir: the seed's data_splits.py spellings)")
    parser.add_argument(*spellings("test_fraction"), dest="test_fraction", type=float, default=0.2, metavar="X",
                        help="share of the rows held out for test, drawn as whole --group values (at least one); "
                             "with --train_task/--test_task, a share of the subjects")
    parser.add_argument(*spellings("val_fraction"), dest="val_fraction", type=float, default=0.1, metavar="X",
                        help="share of the rows held out for validation, drawn as whole --group values (at least "
                             "one; 0: no val.csv); with --train_task/--test_task, a share of the subjects")
    parser.add_argument(*spellings("test_subjects"), dest="test_subjects", nargs="+", metavar="NAME",
                        help="these --group values make the test split (instead of --test_fraction)")
    add_path(parser, *spellings("existing_spk_split"), role=Role.INPUT, dest="existing_spk_split", metavar="CSV",
             help="as --test_subjects, read from the speakerID column of this CSV (an earlier split's test "
                  "speakers); with --split_size the test subjects are drawn from them")
    parser.add_argument(*spellings("val_subjects"), dest="val_subjects", nargs="+", metavar="NAME",
                        help="these --group values make the validation split (instead of --val_fraction)")
    add_grouping_flags(parser, "column no two splits may share", "write K folds as fold_1..fold_K",
                       "label column to stratify by")
    add_option_flag(parser, "data.seed", help="random seed of the draw (the same seed, the same split)")
    tasks = parser.add_argument_group("by task (a 'task' column, as `audiotune table` writes)")
    tasks.add_argument(*spellings("train_task"), dest="train_task", nargs="+",
                       help="tasks of the train and val rows (default: --test_task)")
    tasks.add_argument(*spellings("test_task"), dest="test_task", nargs="+",
                       help="tasks of the test rows (default: --train_task)")
    tasks.add_argument(*spellings("split_size"), dest="split_size", nargs="+", type=int, metavar="N",
                       help="subject counts TRAIN TEST [VAL] (TRAIN 0: all the rest); default: --test_fraction and "
                            "--val_fraction of the subjects")
    add_storage_flags(parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.atomic import written_together
    from audiotune.data.layout import EVERY_COLUMN, read_table, split_file
    from audiotune.data.splits import group_values, kfold_tables, split_table, write_split
    from audiotune.outputs import SPLITS
    from audiotune.storage import final_path, final_place

    by_task = bool(args.train_task or args.test_task)
    speakers = None  # the seed's --existing_spk_split: the subjects the test ones are drawn from
    if args.existing_spk_split:
        from audiotune.data.task_splits import read_subject_file

        if args.test_subjects:
            raise ValueError("--existing_spk_split and --test_subjects both name the test subjects; give one")
        speakers = read_subject_file(args.existing_spk_split)
    if args.split_size and not by_task:
        raise ValueError("--split_size: subject counts of a split by task; give --train_task and/or --test_task")
    if by_task and (args.stratify or args.folds):
        raise ValueError("--train_task/--test_task: a split by task is drawn by subject, without --stratify or --folds")
    table = read_table(args.manifest, EVERY_COLUMN)  # its cells written again as they are
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a folder")
    stale = sorted(p.name for p in out.glob("fold_*") if p.is_dir()) if out.is_dir() else []
    if args.folds:
        stale = [name for name in stale if name.removeprefix("fold_").isdigit()
                 and int(name.removeprefix("fold_")) > args.folds]
    if stale:
        raise DataError(f"--out {out}: holds folds of an earlier split ({stale[:3]}{' ...' if len(stale) > 3 else ''})"
                        " that this split would not replace; choose an empty folder")
    # the split files of the folder (an earlier split's too): written as one set, so a stopped or failed split
    # leaves none rather than new files beside old ones (folds that overlap, a train.csv beside another's test.csv)
    folders = [out / f"fold_{number}" for number in range(1, args.folds + 1)] if args.folds else [out]
    split_files = [folder / split_file(name) for folder in {out, *folders} for name in SPLITS]
    if args.folds:
        folds = kfold_tables(table, args.folds, args.val_fraction, args.stratify, args.group, args.seed, args.manifest)
        with written_together(split_files):
            for number, parts in enumerate(folds, start=1):
                write_split(parts, out / f"fold_{number}")
            for name in SPLITS:  # an earlier plain split's files: the folder holds folds now
                (out / split_file(name)).unlink(missing_ok=True)
        for number, parts in enumerate(folds, start=1):
            folder = final_place(out / f"fold_{number}")
            print(f"{folder}: " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
            _say_classes_missing(parts, table, args.stratify, f"{folder}/")
        return
    if by_task:
        from audiotune.data.task_splits import task_split

        parts = task_split(table, args.train_task or args.test_task, args.test_task or args.train_task,
                           args.split_size, args.test_fraction, args.val_fraction, args.group, args.seed,
                           args.test_subjects, args.val_subjects, args.manifest, test_pool=speakers)
    else:
        parts = split_table(table, args.test_fraction, args.val_fraction, args.stratify, args.group, args.seed,
                            args.test_subjects or speakers, args.val_subjects, args.manifest)
    with written_together(split_files):
        written = write_split(parts, args.out)
    total = sum(len(part) for part in parts.values())
    for (name, part), path in zip(parts.items(), written, strict=True):  # whole groups: near the fractions asked
        groups = group_values(part, args.group, name).nunique()
        print(f"{final_path(path)}: {len(part)} rows ({len(part) / total:.0%}), {groups} {args.group} "
              f"group{'' if groups == 1 else 's'}")
    if not by_task:
        _say_shares_off(parts, args, total, group_values(table, args.group, args.manifest).nunique())
        _say_classes_missing(parts, table, args.stratify, f"{final_place(Path(args.out))}/")


def _say_classes_missing(parts: dict, table: pd.DataFrame, stratify: str | None, where: str = "") -> None:
    """A --stratify class that a part has no row of (too few rows or subjects for every part to get one): the
    part's metrics cannot score it."""
    from audiotune.data.layout import split_file

    if not stratify:
        return
    counts = table[stratify].value_counts()
    for name, part in parts.items():
        missing = [c for c in counts.index if c not in set(part[stratify])]
        if missing:
            shown = ", ".join(f"{c!r} ({counts[c]} row{'' if counts[c] == 1 else 's'})" for c in missing[:10])
            print(f"{where}{split_file(name)}: no row of '{stratify}' class(es) {shown}"
                  f"{f' and {len(missing) - 10} more' if len(missing) > 10 else ''}: too few rows or subject "
                  "groups for every split to get one")


def _say_shares_off(parts: dict, args: argparse.Namespace, total: int, n_groups: int) -> None:
    """A part drawn by fraction whose share is 5 points or more off what was asked (few groups, each kept whole)."""
    named = {"test": args.test_subjects or args.existing_spk_split, "val": args.val_subjects}
    for name in ("test", "val"):
        asked, share = getattr(args, f"{name}_fraction"), len(parts.get(name, ())) / total
        if name in parts and not named[name] and round(abs(share - asked), 9) >= 0.05:  # (45/180 - 0.2 is 0.0499...)
            print(f"{name}: {share:.0%} of the rows where --{name}_fraction {asked:g} asks {asked:.0%}: the "
                  f"{n_groups} {args.group} groups are each kept whole in one split; name a part's groups with "
                  f"--{name}_subjects")


COMMAND = Command("split", "subject-disjoint, stratified train/val/test CSVs (or k folds)", arguments, run,
                  examples="audiotune split table.csv --out split --stratify label\n"
                           "audiotune split table.csv --out split --test_subjects s1 s2 --val_fraction 0.1\n"
                           "audiotune split table.csv --out folds --folds 5 --stratify label")
