"""``audiotune cv``: cross-validation, every fold x --repeats seeds as run directories, then cv_summary.json."""
from __future__ import annotations

import argparse

from audiotune import storage
from audiotune.cli.command import Command
from audiotune.cli.config_args import config_from_args
from audiotune.cli.flags import add_audio_dir, add_config_flags, add_grouping_flags, declare_role
from audiotune.cli.seed_flags import refuse_declared
from audiotune.cli.show import quiet_lightning
from audiotune.cli.stages import config_file_sections, given_options, keep_what_the_record_predates
from audiotune.cli.values import options_of
from audiotune.config import RunConfig
from audiotune.data.folds import FOLD_PLACEHOLDER, VAL_GROUPS, FoldOptions
from audiotune.storage import Role

DEFAULTS = FoldOptions()  # the defaults the flags show
VAL_SHARE = "cv folds take their validation from --val_group (next, draw: --val_size groups, none); leave it out"


def arguments(parser: argparse.ArgumentParser, model: str | None) -> None:
    add_config_flags(parser, model=model, exp_dir="the experiment's folder: a run directory per fold and repeat, "
                                                  "and the summary")
    refuse_declared(parser, "train.val_share", VAL_SHARE)
    declare_role(parser, "exp_dir", Role.EXPERIMENT)  # the command resumes it: a remote one is downloaded first
    folds = parser.add_argument_group("folds")
    add_grouping_flags(folds, "table: column whose values are left out one at a time (or kept together in --folds)",
                       "table: K group-disjoint folds instead of one per group",
                       "table with --folds: label column to stratify the folds by")
    folds.add_argument("--val_group", "--val-group", dest="val_group", default=DEFAULTS.val_group, choices=VAL_GROUPS,
                       help="validation of a fold without one: next (the next fold's test rows), draw (--val_size "
                            "groups drawn from its training rows), or none (every other group trains; each run "
                            "keeps its last epoch). auto (the default): none for JSON split files, whose empty Val "
                            "means no validation as in the seed emotion recipe (every training speaker trains, the "
                            "last epoch is kept, so --monitor and --patience do not apply), next for the others")
    folds.add_argument("--repeats", type=int, default=1, help="runs per fold, with seeds --seed .. --seed+R-1")
    add_audio_dir(folds, "JSON split files: folder the utterance names are relative to (default: the JSON's)")
    folds.add_argument("--json_label", "--json-label", dest="json_label", default=DEFAULTS.json_label,
                       help=f"JSON split files: column that receives each utterance's label (default "
                            f"{DEFAULTS.json_label})")


def _refuse_val_share(config: RunConfig) -> None:
    if config.train.val_share:  # from a --config file (the flag is refused as it is parsed)
        raise ValueError(f"--val_share {config.train.val_share}: {VAL_SHARE}")


def check(args: argparse.Namespace) -> None:
    """Values out of range or contradicting one another, and what cv does itself (--resume, --overwrite)."""
    from audiotune.engine.cv import check_cv

    config = config_from_args(args, read_inputs=False)
    _refuse_val_share(config)
    check_cv(config, args.repeats)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from audiotune.engine.cv import cross_validate
    from audiotune.engine.cv_encoders import fold_paths
    from audiotune.engine.report import report_when_done
    from audiotune.engine.resume import refuse_inactive_of_runs
    from audiotune.outputs import CV_CONFIG_FILE

    quiet_lightning(args.verbose)
    config = config_from_args(args)
    keep_what_the_record_predates(config, *config_file_sections(args), given_options(args),
                                  storage.join(config.exp_dir, CV_CONFIG_FILE), "config")
    _refuse_val_share(config)
    if not fold_paths(config):  # an encoder per fold is checked per fold, once the folds are known
        # as each run would, before the folds are written; a rerun goes on with the options it was made with
        refuse_inactive_of_runs(config, storage.isfile(storage.join(config.exp_dir, CV_CONFIG_FILE)))
    options = options_of(FoldOptions, args)
    result = cross_validate(config, config.data.data_split_root, options, args.repeats)
    if not result:
        return  # another process of a multi-process (DDP) run: rank 0 reports
    print(cv_table(result))
    print(f"experiment directory: {storage.final_place(config.exp_dir)}")
    if config.runtime.report:
        print(report_when_done(config.exp_dir))


def cv_table(result: dict) -> str:
    """Mean ± fold std (and the 95 % interval) of each test (else validation) metric."""
    split = "test" if "test" in result["statistics"] else "val"
    lines = [f"{result['folds']} folds x {result['repeats']} repeat(s), {split}:"]
    for metric, values in result["statistics"].get(split, {}).items():
        if values["mean"] is None:
            continue
        spread = f" ± {values['fold_std']:.4f}" if values["fold_std"] is not None else ""
        interval = f"  (95% CI {values['ci95'][0]:.4f} .. {values['ci95'][1]:.4f})" if values["ci95"] else ""
        lines.append(f"  {metric:12s} {values['mean']:.4f}{spread}{interval}")
    if "error" in result.get("ensemble", {}):
        lines.append(f"  no ensemble scores: {result['ensemble']['error']}")
    ensemble = result.get("ensemble", {}).get("statistics", {}).get(split, {})
    if ensemble.get("accuracy", {}).get("mean") is not None:
        values = ensemble["accuracy"]
        spread = f" ± {values['fold_std']:.4f}" if values["fold_std"] is not None else ""
        lines.append(f"  each fold's {result['repeats']} runs averaged (ensemble): accuracy {values['mean']:.4f}"
                     f"{spread}")
    return "\n".join(lines)


COMMAND = Command(
    "cv", "cross-validation: every fold x --repeats seeds as run directories, then cv_summary.json", arguments, run,
    description="-d is a table (.csv; folds by --group, or --folds K), a folder of fold_N/ split folders, or a "
                "folder of JSON split files ({\"Train\": ..., \"Val\": ..., \"Test\": ...}). Every other flag is a "
                f"train flag. {FOLD_PLACEHOLDER} in -c (or --pretrained_mdl_path) is each fold's name (fold_1, fold_2, "
                "...): an encoder per fold; one that `audiotune pretrain` wrote must not have heard the fold's test "
                "clips (--allow_overlap: scored anyway). Run the same command again to resume.",
    examples="audiotune cv -d table.csv -l labels.txt -o cv --group subject    (leave one subject out)\n"
             "audiotune cv -d table.csv -l labels.txt -o cv --folds 5 --stratify label --repeats 3\n"
             "audiotune cv --config ecapa_new_speakers -d table.csv -l labels.txt -o cv --group subject\n"
             f"audiotune cv --model hf -c 'runs/tapt_{FOLD_PLACEHOLDER}/encoder' -d folds/ --audio_dir wavs/ -o cv    "
             "(the encoder pretrained on each fold's training part)",
    after_interrupt="finished runs are kept; run the same command again to go on", check=check)
