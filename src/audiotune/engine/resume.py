"""A run resumed with ``--resume`` (train, pretrain): which options it may change, which it must keep unless
``--allow_changes``, and the record of what it changed (``CONFIG_HISTORY_FILE``)."""
from __future__ import annotations

import copy
import dataclasses
import datetime
from pathlib import Path

import yaml

from audiotune.config import (
    EVERYWHERE,
    INPUT_RESOLVED_VERSION,
    RunConfig,
    Stage,
    TrainConfig,
    config_changes,
    load_config,
    option_default,
    read_config_file,
)
from audiotune.data.prepare import check_head_options, idle_head_options, training_label_groups
from audiotune.engine.records import as_made, placed_paths
from audiotune.models.backbones import input_spec, resolve_config
from audiotune.models.option_checks import refuse_inactive, without_idle_options
from audiotune.outputs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CONFIG_HISTORY_FILE,
    LAST_CHECKPOINT,
    PROBE_SUMMARY_FILE,
    made_in,
    write_bytes,
)

# what a resumed run may change without --allow_changes: how long it trains, and where and how fast it runs
RESUME_FREE = ("train.epochs", "train.training_steps", "train.resume", "train.overwrite", "train.allow_changes",
               "runtime", "exp_dir", "version")


def checkpoint_to_resume(exp_dir: Path) -> Path:
    """The last checkpoint of the run in ``exp_dir`` that ``--resume`` goes on from; an error saying why there is
    none (a run stopped before it wrote one, a probe folder)."""
    last = exp_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    if last.is_file():
        return last
    why = ("; it is a probe folder: its heads scored each layer and were not kept, so there is no run to go on with"
           if (exp_dir / PROBE_SUMMARY_FILE).is_file() else
           "; this run stopped before writing one: start it again with --overwrite"
           if (exp_dir / CONFIG_FILE).is_file() else "")
    raise FileNotFoundError(f"{last}: --resume needs the last checkpoint of an earlier run in --exp_dir{why}")


def keep_resumed_version(exp_dir: Path, config: RunConfig) -> None:
    """A resumed run goes on with the meanings of the config version it was written with (its weights have the
    shapes they gave); one written before its audio and features sections held the user's options (their input
    resolved) with those of INPUT_RESOLVED_VERSION, which changed nothing else: the command's options are read as
    options (its input is the run's, or :func:`resumed_changes` says how it differs)."""
    if config.train.resume and (exp_dir / CONFIG_FILE).is_file():
        config.version = max(load_config(exp_dir / CONFIG_FILE).version, INPUT_RESOLVED_VERSION)


def resumed_changes(exp_dir: Path, config: RunConfig, stages: frozenset[Stage] = EVERYWHERE) -> dict[str, list]:
    """The options a resumed run changes from its config.yaml: an error naming them without ``--allow_changes``;
    ``stages``: where the run trains its encoder (what an option whose switch is off does depends on it)."""
    # an option whose switch is off did nothing: given or left out, no change; the run's encoder reads them (the
    # recorded one may be a URL)
    recorded = exp_dir / CONFIG_FILE
    earlier = without_idle_options(as_made(read_config_file(recorded), str(recorded), resolved=True), config, stages)
    config = without_idle_options(config, config, stages)
    # the files they name, wherever the commands ran (relative paths: from where each command ran)
    earlier = placed_paths(earlier, made_in(exp_dir) or Path.cwd())
    config = placed_paths(config, Path.cwd())
    kinds = {head.kind for head in config.heads}  # and one of a kind of head the run lacks did nothing
    for part in (earlier, config):
        for name in idle_head_options(part.train, kinds):
            setattr(part.train, name, option_default(TrainConfig, name))
    if earlier.version < INPUT_RESOLVED_VERSION:  # its audio and features sections hold the resolved input
        changes = config_changes(earlier, config, (*RESUME_FREE, "audio", "features"))
        before, after = input_spec(earlier), input_spec(config)
        # (the count of resampled samples is the resumed version's: keep_resumed_version)
        before = dataclasses.replace(before, resampled_length=after.resampled_length)
        if before != after:
            changes["input"] = [str(before), str(after)]
    else:
        changes = config_changes(earlier, config, RESUME_FREE)
    _refuse_past_the_cycle(exp_dir, earlier, config)
    _refuse_other_state(exp_dir, earlier, changes)
    _refuse_other_outputs(exp_dir, earlier, config)
    if changes and not config.train.allow_changes:
        shown = "; ".join(f"{key.partition('.')[2] or key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
        raise ValueError(f"{exp_dir}: --resume with options that differ from the run's {CONFIG_FILE} ({shown}); "
                         f"resume with the run's own options (--config {exp_dir / CONFIG_FILE} gives them all; -e N "
                         f"trains longer), or add --allow_changes to go on and record the changes in "
                         f"{CONFIG_HISTORY_FILE}")
    return changes


# what the optimiser and schedule state of a run's checkpoint are made for: a resumed run goes on with them (its
# learning rate and weight decay are set anew: engine.module.rates_as_configured)
RESTORED_STATE = ("train.optim", "train.scheduler")


def _refuse_other_state(exp_dir: Path, earlier: RunConfig, changes: dict[str, list]) -> None:
    """Options that the checkpoint's optimiser and schedule state were made with, changed: an error even with
    --allow_changes, since the restored state would go on as it was (or not fit) while config.yaml said otherwise."""
    kept = [key for key in changes if key in RESTORED_STATE or key == "train.max_lr" and
            earlier.train.scheduler == "onecycle"]
    if kept:
        shown = "; ".join(f"--{key.partition('.')[2]} {changes[key][0]!r} -> {changes[key][1]!r}" for key in kept)
        raise ValueError(f"{exp_dir}: --resume with {shown}: the run's checkpoint holds the state of its optimiser and "
                         "schedule as made, which a resumed run goes on with (--allow_changes too); resume with the "
                         "run's own, or train a new run")


def _refuse_other_outputs(exp_dir: Path, earlier: RunConfig, config: RunConfig) -> None:
    """Heads whose outputs stand for other classes or columns than the run's (data with other classes): an error
    even with --allow_changes, since the checkpoint's outputs would go on under the names of others (a class both
    hold taken for another's output)."""
    def outputs(part: RunConfig) -> list[str]:
        return [f"{head.name} ({head.kind}): {', '.join(head.output_names)}" for head in part.heads]

    made, asked = outputs(earlier), outputs(config)
    if made != asked:
        raise ValueError(f"{exp_dir}: --resume with other heads than the run's (the run: {'; '.join(made)}; this "
                         f"data and label file: {'; '.join(asked)}): the checkpoint's outputs are the run's, and would "
                         "go on standing for other classes (--allow_changes too); resume on data with the run's "
                         "classes, or train a new run")


def _refuse_past_the_cycle(exp_dir: Path, earlier: RunConfig, config: RunConfig) -> None:
    """A onecycle schedule is made for the run's length: its rate has no step past the end (torch's OneCycleLR
    stops there), so a resumed run may not train longer than the one it continues."""
    if earlier.train.scheduler != "onecycle":
        return
    made, asked = earlier.train, config.train
    longer = (asked.training_steps > made.training_steps > 0 or (not made.training_steps and asked.training_steps)
              or (not made.training_steps and not asked.training_steps and asked.epochs > made.epochs))
    if longer:
        length = f"--training_steps {made.training_steps}" if made.training_steps else f"-e {made.epochs}"
        asked_for = f"--training_steps {asked.training_steps}" if asked.training_steps else f"-e {asked.epochs}"
        raise ValueError(f"{exp_dir}: --resume with {asked_for}: the run's --scheduler onecycle spans the {length} it "
                         "was made with, and its rate has no step past their end; resume with " + length +
                         " (or less), or train a new run")


def refuse_inactive_of_runs(config: RunConfig, made: bool) -> None:
    """:func:`~audiotune.models.backbones.refuse_inactive` for the runs a driver (cv, sweep) trains from ``config``,
    before anything is written. A rerun of a folder already ``made`` refuses only the options that act nowhere: one
    made with options refused since (they did nothing) goes on, its runs that start reading them at their defaults
    (:func:`~audiotune.models.option_checks.idle_at_defaults`, by ``continue_or_start``)."""
    checked = resolve_config(copy.deepcopy(config))
    checked.train.resume = made
    refuse_inactive(checked)


def refuse_head_options_of_runs(config: RunConfig, made: bool) -> None:
    """:func:`~audiotune.data.prepare.check_head_options` for the runs a sweep trains from ``config``, its labels read
    (:func:`~audiotune.data.prepare.training_label_groups`), before anything is written; not for a folder already
    ``made`` (its runs that start read them at their defaults, by ``continue_or_start``)."""
    if not made:
        check_head_options(config, *training_label_groups(config))


def record_changes(exp_dir: Path, changes: dict[str, list], started_from: str = "") -> None:
    """Append this resumption's changes (and, when it did not continue a checkpoint, what it started from) to the
    run's history (oldest first)."""
    path = exp_dir / CONFIG_HISTORY_FILE
    history = (yaml.safe_load(path.read_text()) or []) if path.is_file() else []
    history.append({"resumed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    **({"started_from": started_from} if started_from else {}),
                    "changes": {key: {"from": old, "to": new} for key, (old, new) in changes.items()}})
    write_bytes(path, yaml.safe_dump(history, sort_keys=False))
