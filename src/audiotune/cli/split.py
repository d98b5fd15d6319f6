"""``audiotune split``: subject-disjoint, stratified train/val/test CSVs (or k folds)."""
from __future__ import annotations

import argparse
from pathlib import Path

from audiotune.cli.command import Command
from audiotune.cli.flags import add_path, spellings
from audiotune.data.errors import DataError
from audiotune.storage import Role


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_path(parser, "manifest", role=Role.TABLE, help="manifest CSV")
    add_path(parser, "--out", role=Role.OUTPUT_DIR, required=True, help="output directory")
    parser.add_argument(*spellings("test_fraction"), dest="test_fraction", type=float, default=0.2)
    parser.add_argument(*spellings("val_fraction"), dest="val_fraction", type=float, default=0.1)
    parser.add_argument(*spellings("test_subjects"), dest="test_subjects", nargs="+")
    parser.add_argument(*spellings("val_subjects"), dest="val_subjects", nargs="+")
    parser.add_argument("--stratify", help="label column to stratify by")
    parser.add_argument("--group", default="subject", help="column no two splits may share (default subject)")
    parser.add_argument("--folds", type=int, default=0, help="write k folds as fold_1..fold_k")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.data.layout import read_table
    from audiotune.data.splits import group_values, kfold_tables, split_table, write_split

    table = read_table(args.manifest, tuple(c for c in (args.group, args.stratify) if c))
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
    if args.folds:
        folds = kfold_tables(table, args.folds, args.val_fraction, args.stratify, args.group, args.seed, args.manifest)
        for number, parts in enumerate(folds, start=1):
            write_split(parts, out / f"fold_{number}")
            print(f"fold_{number}: " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
        return
    parts = split_table(table, args.test_fraction, args.val_fraction, args.stratify, args.group, args.seed,
                        args.test_subjects, args.val_subjects, args.manifest)
    write_split(parts, args.out)
    for name, part in parts.items():
        print(f"{name}: {len(part)} rows, {group_values(part, args.group, name).nunique()} {args.group} groups")


COMMAND = Command("split", "subject-disjoint, stratified train/val/test CSVs (or k folds)", arguments, run)
