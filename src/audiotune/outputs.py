"""Whole output files, written atomically, and run directories that one command owns at a time.

The writers here (:func:`write_bytes`, :func:`write_json`, :func:`write_csv`, :func:`write_parquet`) write through
:func:`audiotune.atomic.atomic_path`: a file appears complete or not at all, a refusal of the file system is an
:class:`~audiotune.atomic.OutputError` naming it.

:func:`own_run_dir` takes an exclusive lock on a run directory for the life of the command, so two commands never
write one at once, and refuses a new run in a directory holding one unless it is resumed or overwritten on purpose.

The names of the files and folders inside run and experiment directories are declared here, once: every
command that writes or reads one of them takes its name from this module.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import math
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from audiotune import __version__, partials, storage
from audiotune.atomic import OutputError, atomic_path, refused, written_together
from audiotune.storage import CONFIG_FILE, METRICS_FILE, MODEL_FILE  # noqa: F401 -- the run markers, named in storage

LOCK_FILE = ".audiotune.lock"  # held by the command that writes the directory; see own_run_dir

# the splits of a data set (a split directory's SPLIT.csv files), in the order they are listed, and those a run
# scores (metrics.json's entries, the split column of predictions)
SPLITS = ("train", "val", "test")
SCORED_SPLITS = SPLITS[1:]
# the split name of the rows of one CSV, or of a folder of audio without tables; an evaluation of one CSV names its
# section after the file and keeps a copy under this name, as earlier releases named it
ONE_TABLE = "data"

# a run's METRICS_FILE: what the run was, beside each scored split's section (the report's overview lists them):
# the weights kept, its validation, the epochs it ran, the clips it trained on, its training pace and the most
# device memory it held
KEPT_WEIGHTS, VALIDATION, EPOCHS_RUN, TRAIN_CLIPS = "weights", "validation", "epochs_run", "train_clips"
TRAIN_CLIPS_PER_S, DEVICE_PEAK_MIB = "train_clips_per_s", "device_peak_mib"
RUN_FACTS = (KEPT_WEIGHTS, VALIDATION, EPOCHS_RUN, TRAIN_CLIPS, TRAIN_CLIPS_PER_S, DEVICE_PEAK_MIB)
# a pretraining run's METRICS_FILE scores no split: its objective, steps, best validation loss and what it wrote
PRETRAIN_OBJECTIVE, STEPS_RUN, BEST_VAL_LOSS, PRETRAIN_OUTPUTS = "objective", "steps_run", "best_val_loss", "outputs"
PRETRAIN_FACTS = (PRETRAIN_OBJECTIVE, STEPS_RUN, BEST_VAL_LOSS, PRETRAIN_OUTPUTS)


# the columns of a predictions table (PREDICTIONS_FILE) beside uid and split: per model output (a head's
# output_names) its score and target, per categorical or soft head its predicted and true class
def score_column(output: str) -> str:
    return f"score:{output}"


def target_column(output: str) -> str:
    return f"target:{output}"


def predicted_column(head: str) -> str:
    return f"predicted:{head}"


def true_column(head: str) -> str:
    return f"true:{head}"

# a run directory (train, pretrain, probe; evaluate writes the same metrics, predictions and reports)
CONFIG_HISTORY_FILE = "config_history.yaml"  # options changed when the run was resumed (--allow_changes)
INPUT_SPEC_FILE = "input_spec.json"  # what the model read (rate, front end, crops...), derived from config.yaml
ENCODER_DIR = "encoder"  # the architecture of a pretrained encoder, when the backbone exports one
ORIGINAL_SSAST_FILE = "ssast_original.pth"  # pretrained SSAST weights under the original code's key names
PREDICTIONS_FILE = "predictions.parquet"
# in the schema of a parquet file of embeddings or pseudo-labels: how its rows were made (JSON: encoder, layer, ...)
PARQUET_METADATA_KEY = b"audiotune"
REPORT_FILE = "report.html"  # the self-contained HTML report of a run, an evaluation or a cross-validation
RECORDING_PREDICTIONS_FILE = "predictions_recording.parquet"  # window scores aggregated per recording
SKIPPED_FILE = "skipped.csv"  # bad audio skipped with --on_error skip
SKIPPED_SUFFIX = ".skipped.csv"  # beside a table or parquet file a command wrote (see sidecar): rows left out, why
DROPPED_FILE = "dropped_rows.csv"  # rows that reach no model, and why
VALIDATION_FILE = "validation.csv"  # validation rows drawn from the training split
CLIPS_READ_FILE = "clips_read.csv"  # the clips a train or pretrain run learnt from, and its inputs' runs did
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"  # in CHECKPOINT_DIR: what a resumed run continues from
BEST_CHECKPOINT = "best.ckpt"  # in CHECKPOINT_DIR: the best validation epoch
BEST_CHECKPOINTS = "best-{epoch:02d}"  # in CHECKPOINT_DIR with --save_top_k K > 1: best-epoch=NN.ckpt, K of them
FROZEN_WEIGHTS_FILE = "frozen.safetensors"  # in CHECKPOINT_DIR: the weights that do not train, named by checkpoints
LOG_DIR = "logs"
LOG_FILE = "metrics.csv"  # in LOG_DIR: the file Lightning's CSV logger writes
# columns of LOG_FILE: an epoch's mean training loss, the validation loss, the epoch's mean learning rate
TRAIN_LOSS_COLUMN, VAL_LOSS_COLUMN, LR_COLUMN = "train_loss_epoch", "val_loss", "lr"
EARLIER_LOG_FILE = "metrics_before_resume.csv"  # in LOG_DIR while a resumed run trains: the epochs logged before
TENSORBOARD_DIR = "tensorboard"  # in LOG_DIR with --logger tensorboard: TensorBoard's event files
COMMAND_FILE = "command.json"  # every command that wrote the directory (argv, working directory, version, start)
EVALUATION_FILE = "evaluation.json"  # in an evaluation folder: the run and the table it scored
PLOT_DIR = "plots"
TRAINING_CURVES_PLOT = "training_curves.png"
LAYER_WEIGHTS_PLOT = "layer_weights.png"
MASKED_ACCURACY_PLOT = "masked_accuracy.png"
PROBE_FILE = "probe.csv"
PROBE_SUMMARY_FILE = "probe.json"
PROBE_PLOT = "probe.png"
EVALUATE_DIR = "evaluate"  # in a run directory: where `audiotune evaluate` writes without -o
ATTENTION_DIR = "attention"  # in a run directory: where `audiotune attention` writes without --out
ATTENTION_ROLLOUT_PLOT = "attention_rollout.png"
IMPORT_RECORD_FILE = "import.json"  # a run made by `audiotune import`: its seed files and how they were mapped
IMPORTED_WEIGHTS = "weights"  # in IMPORT_RECORD_FILE: the seed's file the weights were read from
TAPS_REPORT_SUFFIX = ".report.html"  # beside the table of `taps detect` / `taps align`: its report page
UNMATCHED_SUFFIX = ".unmatched.csv"  # beside the table of `taps align`: taps and touches without a partner
TAPS_PLOT_SUFFIX = "_taps.png"  # in `taps detect --plot DIR`: one per recording, after its file name
ALIGN_PLOT_SUFFIX = "_align.png"  # in `taps align --plot DIR`: one per recording, after its file name
TAPS_SUMMARY_SUFFIX = ".report.json"  # beside the table of `taps detect` / `taps align`: its summary (report reads it)
EXPORT_DESCRIPTION_KEY = "audiotune.json"  # the description inside the graph: ONNX metadata, TorchScript extra file
EXPORT_DESCRIPTION_SUFFIX = ".json"  # after the whole name of `audiotune export --out FILE`: what the graph expects

# beside `audiotune cluster --out LABELS.parquet` (see sidecar)
CLUSTER_STATS_SUFFIX = ".clusters.json"  # how the frames were made, cluster usage per K
CLUSTER_FIT_ROWS_SUFFIX = ".fit_rows.csv"  # the clips whose frames k-means was fitted on (clips_read.csv's columns)

# a cross-validation's experiment directory (fold_K/ folders are the split layout of audiotune.data.folds)
CV_CONFIG_FILE = "cv_config.yaml"
CV_FOLDS_FILE = "folds.json"
CV_LABELS_FILE = "labels.txt"  # the head of JSON split files given without --label_txt
CV_RUNS_TABLE = "cv_runs.csv"
CV_SUMMARY_FILE = "cv_summary.json"
CV_SUMMARY_TABLE = "cv_summary.csv"
ENSEMBLE_PREDICTIONS_FILE = "ensemble_predictions.parquet"  # in fold_K/: the repeats' scores averaged

SWEEP_SPACE_FILE = "sweep.yaml"  # in a sweep's experiment directory, with the files below
SWEEP_STUDY_FILE = "study.db"
SWEEP_TRIALS_TABLE = "sweep_trials.csv"
SWEEP_SUMMARY_FILE = "sweep_summary.json"
SWEEP_BEST_CONFIG_FILE = "best_config.yaml"
SWEEP_LOCK_FILE = ".sweep.lock"  # held while one process sets the sweep up
TRIAL_DIR_PREFIX = "trial_"


def safe_name(name: str) -> str:
    """A head or column name as part of a file name: ``/`` and spaces become ``_``."""
    return name.replace("/", "_").replace(" ", "_")


def confusion_plot(split: str, head: str) -> str:
    """The confusion matrix of ``head`` on ``split`` in PLOT_DIR."""
    return f"confusion_{split}_{safe_name(head)}.png"


def roc_plot(split: str, head: str) -> str:
    """The ROC curves of binary ``head`` on ``split`` in PLOT_DIR."""
    return f"roc_{split}_{safe_name(head)}.png"


def scatter_plot(split: str, column: str) -> str:
    """The predicted-against-true scatter of regression ``column`` on ``split`` in PLOT_DIR."""
    return f"scatter_{split}_{safe_name(column)}.png"


def attention_layer_plot(layer: int) -> str:
    """The attention map of encoder layer ``layer`` (counted from 1) in ATTENTION_DIR."""
    return f"attention_layer{layer:02d}.png"


def is_attention_map(name: str) -> bool:
    """Whether file ``name`` of ATTENTION_DIR is one of the maps `audiotune attention` writes."""
    return name == ATTENTION_ROLLOUT_PLOT or re.fullmatch(r"attention_layer\d{2,}\.png", name) is not None


def embeddings_file(embedding_type: str) -> str:
    """In a run directory: the embeddings of one type (pt, wt, st, ft) when `audiotune extract` has no --out."""
    return f"embeddings_{embedding_type}.parquet"


def sidecar(path: str | Path, suffix: str) -> Path:
    """A file that belongs to output ``path``, beside it: ``labels.parquet`` -> ``labels.clusters.json``."""
    return Path(path).with_name(Path(path).stem + suffix)


def skip_list(out: str | Path) -> Path:
    """Where a command that wrote output file ``out`` lists the inputs ``--on_error skip`` left out of it, with
    why: beside it (a run's or an evaluation's folder holds a ``SKIPPED_FILE`` instead)."""
    return sidecar(out, SKIPPED_SUFFIX)


def frame_label_sidecars(out: str | Path) -> tuple[Path, ...]:
    """The files beside frame labels ``out`` (a parquet) that describe them: the cluster statistics, the clips
    k-means was fitted on, the clips left out; labels written anew (by ``cluster`` or ``import clusters``) take
    them away with the earlier labels."""
    return sidecar(out, CLUSTER_STATS_SUFFIX), sidecar(out, CLUSTER_FIT_ROWS_SUFFIX), skip_list(out)


def run_dir_of(path: str | Path) -> str:
    """The run directory that a ``--run`` value names: the directory itself, or a model file inside it (the
    seeds' ``--trained_mdl_path RUN/model.safetensors``), local or remote."""
    text = str(path).rstrip("/")
    if text.endswith(".safetensors") or (not storage.is_remote(text) and Path(text).is_file()):
        return storage.parent(text)
    return text


def repeat_dir(repeat: int) -> str:
    """In a cross-validation's fold_K/ folder: the run directory of repeat ``repeat`` (counted from 1)."""
    return f"run_{repeat}"


def trial_dir(number: int) -> str:
    """In a sweep's experiment directory: the run directory of Optuna trial ``number``."""
    return f"{TRIAL_DIR_PREFIX}{number}"


_invocation: tuple[list[str], str] | None = None  # the command line being run and its start, while it runs


def _now() -> str: return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")  # UTC, to the second


@contextlib.contextmanager
def invoked(argv: list[str]) -> Iterator[None]:
    """While the block runs, ``audiotune ARGV`` (the words as typed) is what :func:`record_command` records."""
    global _invocation
    earlier, _invocation = _invocation, (["audiotune", *argv], _now())
    try:
        yield
    finally:
        _invocation = earlier


def invocation() -> dict[str, Any]:
    """The command being run (from Python: this process's ``sys.argv``), working directory, version, start."""
    words, started = _invocation or ([sys.executable, *sys.argv], _now())
    return {"command_line": shlex.join(words), "argv": words, "cwd": os.getcwd(), "version": __version__,
            "started": started}


def command_history(folder: str | Path) -> list[dict[str, Any]]:
    """The commands recorded in ``folder``'s COMMAND_FILE (local or remote), oldest first (none when it is missing
    or unreadable)."""
    try:
        if storage.is_remote(folder):
            with storage.open_input(storage.join(folder, COMMAND_FILE)) as stream:
                value = json.loads(stream.read())
        else:
            value = json.loads((Path(folder) / COMMAND_FILE).read_text())
    except (OSError, ValueError):  # (a StorageError is an OSError)
        return []
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def record_command(folder: str | Path, found: list[str] | None = None) -> Path:
    """Add the command being run to ``folder``'s COMMAND_FILE, atomically: the first entry is the command that
    made the directory, the later ones those that resumed or added to it. ``found``: the entries the folder held
    before any command wrote there (:data:`FOUND`), recorded with the command."""
    entry = {**invocation(), **({FOUND: found} if found else {})}
    return write_json(Path(folder) / COMMAND_FILE, [*command_history(folder), entry])


def made_in(folder: str | Path) -> str:
    """The working directory of the command that made ``folder`` (the first entry of its COMMAND_FILE); empty
    without that record."""
    history = command_history(folder)
    cwd = history[0].get("cwd") if history else ""
    return cwd if isinstance(cwd, str) else ""


def from_training_dir(path: str, run_dir: str | Path) -> str:
    """A local path of a run's config as it was given: a relative one is relative to the working directory of the
    command that made the run (the first entry of its COMMAND_FILE), so the run's tables and audio are found from
    any folder; absolute paths, URLs and runs without that record as they are."""
    if not path or storage.is_remote(path) or Path(path).is_absolute():
        return path
    cwd = made_in(run_dir)
    if not cwd:
        return path
    anchored = Path(cwd) / path  # (gone, on another machine, where the path is found from here: as it is)
    return str(anchored) if anchored.exists() or not Path(path).exists() else path


# in a COMMAND_FILE entry: what the folder held before a command first wrote there, which no later command deletes
FOUND = "found"


def found_entries(folder: Path, history: list[dict[str, Any]]) -> list[str]:
    """The entries of ``folder`` that no command wrote: those its COMMAND_FILE records as found, or, for a folder no
    command has written yet that holds no run, all it holds now (but the lock, a staging folder's note and partial
    files). A staging folder stands for its remote folder (:func:`~audiotune.storage.final_place`): that folder's
    record, or its entries (but hidden ones: locks and partial writes, never uploaded)."""
    if history:
        return sorted({name for entry in history for name in entry.get(FOUND, []) if isinstance(name, str)})
    remote = storage.final_place(folder)
    if storage.is_remote(remote):
        if recorded := command_history(remote):
            return found_entries(folder, recorded)
        if any(storage.isfile(storage.join(remote, marker)) for marker in RUN_MARKERS) or not storage.isdir(remote):
            return []
        return [name for name in storage.listdir(remote) if not name.startswith(".")]
    if _is_run_dir(folder):  # a run of a release that kept no record of its commands: all of it is the run's
        return []
    return sorted(entry.name for entry in folder.iterdir() if entry.name not in (LOCK_FILE, storage.NOTE)
                  and not entry.name.endswith(partials.PARTIAL_SUFFIX))


def check_output_path(path: str | Path) -> Path:
    """Fail before any work if ``path`` cannot be written: a file in the way of its folder, or no permission."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file path")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise refused(path, NotADirectoryError())
    if not os.access(folder, os.W_OK | os.X_OK):
        raise refused(path, PermissionError(13, "no permission to write in " + str(folder)))
    return path


def write_bytes(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as partial:
        partial.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_json(path: str | Path, value: Any) -> Path:
    """Indented JSON, NaN and infinities written as null (they are not JSON: strict readers reject them)."""
    return write_bytes(path, json.dumps(_finite(value), indent=2, allow_nan=False))


def write_csv(table: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """``table.to_csv(path, **kwargs)``, atomically."""
    with atomic_path(path) as partial:
        table.to_csv(partial, **kwargs)
    return Path(path)


def write_with_skip_list(out: str | Path, skipped: pd.DataFrame, write: Callable[[Path], Any]) -> Path | None:
    """Output file ``out``, which ``write(out)`` writes (atomically), and beside it the inputs ``--on_error skip``
    left out of it (:func:`skip_list`), as one set (:func:`~audiotune.atomic.written_together`): the list first,
    the output last, so that a command stopped between them leaves no output (the list alone, which nothing reads
    as an output), never an output beside an earlier one's list; with nothing skipped, the output's arrival
    removes an earlier list. Returns the list written, if any."""
    listed = skip_list(out)
    with written_together([out, listed]):
        if len(skipped):
            write_csv(skipped, listed, index=False)
        write(Path(out))
    return listed if len(skipped) else None


def write_parquet(table: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """``table.to_parquet(path, **kwargs)``, atomically."""
    with atomic_path(path) as partial:
        table.to_parquet(partial, **kwargs)
    return Path(path)


class RunDirError(ValueError):
    """A run directory that this command may not write (held by another command, or holding another run)."""


RUN_MARKERS = storage.LAST  # what makes a directory a run directory


def holds_run_error(exp_dir: str | Path, command: str, resumable: bool) -> RunDirError:
    """The refusal of run directory ``exp_dir`` (local or remote) that already holds a run, naming what ``command``
    takes to go on: --resume too where it is ``resumable``, else only --overwrite or another directory."""
    goes_on = "pass --resume to continue it, --overwrite to replace it," if resumable else \
        f"pass --overwrite to replace it ({command} cannot continue a run)"
    return RunDirError(f"{exp_dir}: already holds a run; {goes_on} or choose another -o/--exp_dir")


class OwnedRunDir:
    """A run directory locked for one command; see :func:`own_run_dir`. ``writes`` is False in the other
    processes of a multi-process run, which leave the directory to rank 0."""

    def __init__(self, path: Path, created: bool, clear: bool, writes: bool = True):
        self.path, self.created, self._clear, self.started, self.writes = path, created, clear, False, writes

    def start(self) -> Path:
        """Call once the inputs are validated, before the first write: an overwritten run is deleted now, but what
        the folder held before any command wrote there (:func:`found_entries`)."""
        if self.writes:
            found = found_entries(self.path, command_history(self.path))
            for entry in self.path.iterdir() if self._clear else ():
                # the lock, and a staging folder's note of its remote place (what names the outputs' URLs)
                if entry.name in (LOCK_FILE, storage.NOTE) or entry.name in found:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            record_command(self.path, found)
        self.started = True
        return self.path


def _is_run_dir(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


# what makes a directory an experiment folder, whose runs are its subfolders
EXPERIMENT_RECORDS = {CV_CONFIG_FILE: "a cross-validation", SWEEP_SPACE_FILE: "a sweep"}


def check_folder_kind(folder: str | Path, command: str, experiment: str | None = None,
                      holds: Callable[[str], bool] | None = None) -> None:
    """Refuse ``folder`` where it holds another kind of output than ``command`` writes: for a command that writes
    one run (``experiment`` None), any experiment folder (with --overwrite too: its finished runs are kept); for an
    experiment command (``experiment``: its record file), a run directory or another kind of experiment.
    ``holds(name)``: whether the folder holds that file (default: on the local disk)."""
    holds = holds or (lambda name: (Path(folder) / name).exists())
    held = next((what for record, what in EXPERIMENT_RECORDS.items() if record != experiment and holds(record)), None)
    if held is None and experiment is not None and any(holds(marker) for marker in RUN_MARKERS):
        held = "a run"
    if held is not None:
        raise RunDirError(f"{folder}: holds {held}, which {command} does not write; choose another -o/--exp_dir")
    inner = _run_within(folder) if experiment is None else None
    if inner is not None:
        raise RunDirError(f"{folder}: holds a run in {inner} (a fold's or a trial's, or another run), which "
                          f"{command} would mix its own outputs with, or delete replacing them; choose another "
                          "-o/--exp_dir")


def _run_within(folder: str | Path) -> str | None:
    """The first folder below ``folder`` (local or remote) that holds a run's config, relative to it, if any."""
    top = str(folder).rstrip("/")
    if not storage.isdir(top):
        return None
    if not storage.is_remote(top):  # walked until the first one
        for place, _, files in os.walk(top):
            if CONFIG_FILE in files and os.path.normpath(place) != os.path.normpath(top):
                return os.path.relpath(place, top)
        return None
    return next((storage.parent(path)[len(top) + 1:] for path in storage.find(top)
                 if storage.name(path) == CONFIG_FILE and storage.parent(path) != top), None)


# what of a run another command reads back: its model or scores, or the checkpoint it resumes from
READ_BACK = (MODEL_FILE, METRICS_FILE, LAST_CHECKPOINT)


def holds_read_back(path: Path) -> bool:
    """Whether ``path`` holds, at any depth, something a command reads back (:data:`READ_BACK`): a directory a
    failed command made without any is of no use to anyone (its config alone neither scores nor resumes)."""
    return any(any(path.rglob(name)) for name in READ_BACK)


def holds_runs(path: Path) -> bool:
    """Whether ``path`` is a run directory or holds one at any depth (an experiment folder: cv folds, sweep
    trials) -- a folder with anything finished in it is never removed."""
    return _is_run_dir(path) or any(any(path.rglob(marker)) for marker in RUN_MARKERS)


@contextlib.contextmanager
def own_run_dir(exp_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
                command: str = "train", follower: bool = False, resumable: bool = True,
                experiment: str | None = None) -> Iterator[OwnedRunDir]:
    """Lock ``exp_dir`` for this command and check that it may write there.

    ``follower``: a process of a multi-process (DDP) run other than rank 0, which writes nothing. It neither
    locks, checks, creates nor deletes the directory (rank 0, which owns it, may be writing it already); its
    :class:`OwnedRunDir` has ``writes`` False.

    - another audiotune command writing the directory: an error (an exclusive ``flock`` on a lock file);
    - a directory holding another kind of output is refused (:func:`check_folder_kind`; ``experiment``: the record
      file of the experiment ``command`` writes, whose runs are its subfolders);
    - a directory holding a run needs ``resume`` (continue it) or ``overwrite`` (delete its contents first,
      at :meth:`OwnedRunDir.start`); a directory that holds other files but no run is written into, never
      deleted; ``resumable``: the command takes --resume, so the error suggests it (else only --overwrite and
      another directory);
    - a directory created here and left without anything read back at any depth (:func:`holds_read_back`: the
      inputs failed validation, or the command failed before its first checkpoint) is removed again; one holding
      a model, scores or a checkpoint to resume, or an experiment folder holding any (a finished fold), is kept
      whatever ended the command.
    The lock is released when the block ends.
    """
    exp_dir = Path(exp_dir)
    if resume and overwrite:
        raise RunDirError("--resume continues the run in --exp_dir and --overwrite deletes it: choose one")
    if follower:
        yield OwnedRunDir(exp_dir, created=False, clear=False, writes=False)
        return
    if exp_dir.exists() and not exp_dir.is_dir():
        raise RunDirError(f"{exp_dir}: exists and is not a directory")
    created = not exp_dir.exists()
    made_above = [parent for parent in exp_dir.parents if not parent.exists()]  # the folders made for it, lowest first
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
        handle = os.open(exp_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunDirError(f"{exp_dir}: cannot create or lock this directory ({err.strerror or err}); "
                          "choose another -o/--exp_dir") from err
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise RunDirError(f"{exp_dir}: another audiotune command is writing this directory; wait for it to "
                          "finish or choose another -o/--exp_dir") from None
    owned = None
    try:
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()} {command}\n".encode())
        check_folder_kind(exp_dir, command, experiment)
        is_run = _is_run_dir(exp_dir)
        if is_run and not resume and not overwrite:
            raise holds_run_error(exp_dir, command, resumable)
        # a folder a command of ours wrote before (its record) is cleared too: a stopped evaluation left no run
        owned = OwnedRunDir(exp_dir, created, clear=overwrite and (is_run or (exp_dir / COMMAND_FILE).is_file()))
        yield owned
    except BaseException:
        # a directory created here that the failed command left without a model, scores or a checkpoint goes again
        if created and owned is not None and not holds_read_back(exp_dir):
            owned.started = False
        raise
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)
        if created and (owned is None or not owned.started):
            shutil.rmtree(exp_dir, ignore_errors=True)
            for parent in made_above:  # and the folders made to hold it, while nothing else is in them
                with contextlib.suppress(OSError):
                    parent.rmdir()
