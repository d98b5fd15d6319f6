"""Remote paths on the command line: every command takes ``gs://...`` (any fsspec URL) wherever it takes a path.

Before a command runs, :func:`staged` rewrites its parsed arguments:

- tables and audio (``-d``, ``--prefix``) stay URLs: tables are read in place and audio by range, through
  the read-through cache (:mod:`audiotune.storage`);
- other inputs (``--config``, label files, ``-c`` checkpoints and Hugging Face folders, ``--run``
  directories, pseudo-labels) become local copies in the cache, downloaded again only when they changed;
- outputs (``-o/--exp_dir``, ``--out``) become local staging folders: the command writes there as it does
  on a local disk (locks, atomic files, ``--resume``), and only a command that finished uploads them, run
  markers last. A remote run directory that already holds a run is refused, resumed (``--resume``:
  downloaded first) or replaced (``--overwrite``) as a local one is.

The seed systems' flags keep their meaning: ``--cloud`` with ``-b/--bucket_name`` and ``--cloud_dir`` also
uploads the run directory to ``gs://BUCKET/CLOUD_DIR`` when the command finishes; ``-p/--project_name`` is
the Google Cloud project of the bucket.
"""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from audiotune import storage
from audiotune.outputs import RUN_MARKERS, RunDirError

COPIED = ("config", "data.label_txt", "model.pretrained_mdl_path", "model.pseudo_labels", "run", "audio",
          "model.checkpoint", "space")
READ_IN_PLACE = ("data.data_split_root", "data_split_root", "data.prefix", "manifest")
# commands whose --out is a folder; every other --out is a file (with sidecar files beside it)
FOLDER_OUT = ("split",)
RESUMING = ("cv",)  # an experiment folder that the command itself resumes: always downloaded first
UNSUPPORTED = {"segment": ("table", "out"), "taps": ("files", "taps", "touch_log", "keys", "out", "plot"),
               "manifest": ("audio_dir", "out"),
               "sweep": ("exp_dir",)}  # its study database is shared by the processes of a sweep while it runs


@dataclass
class Staging:
    uploads: list[tuple[Path, str, bool, bool]] = field(default_factory=list)  # (local, url, replace, only_new)
    folders: list[Path] = field(default_factory=list)


def _get(args: argparse.Namespace, key: str) -> object:
    return vars(args).get(key)


def _remote_run_defaults(args: argparse.Namespace) -> None:
    """Outputs whose default lies in a remote --run directory get that remote default now, before --run is
    replaced by its local copy."""
    run = _get(args, "run")
    if not storage.is_remote(run) or args.command not in ("evaluate", "extract", "attention"):
        return
    folder = storage.parent(str(run)) if str(run).endswith(".safetensors") else str(run)
    if args.command == "extract" and not args.out:
        args.out = storage.join(folder, f"embeddings_{args.embedding_type}.parquet")
    if args.command in ("evaluate", "attention") and not args.exp_dir:
        args.exp_dir = storage.join(folder, args.command)


def _check_remote_run(url: str, args: argparse.Namespace) -> bool:
    """Whether remote output folder ``url`` holds a run; refused like a local one without --resume/--overwrite."""
    holds_run = any(storage.isfile(storage.join(url, marker)) for marker in RUN_MARKERS)
    resume, overwrite = _get(args, "train.resume"), _get(args, "train.overwrite")
    if holds_run and args.command not in RESUMING and args.command in ("train", "pretrain", "probe") \
            and not resume and not overwrite:
        raise RunDirError(f"{url}: already holds a run; pass --resume to continue it, --overwrite to replace it, "
                          "or choose another -o/--exp_dir")
    return holds_run


def _stage_output(args: argparse.Namespace, key: str, staging: Staging) -> None:
    url = str(_get(args, key))
    is_folder = key in ("exp_dir", "train.cache_dir") or args.command in FOLDER_OUT
    destination = url if is_folder else storage.parent(url)  # a file goes with its sidecars (OUT.skipped.csv)
    folder = storage.staging_folder(destination)
    staging.folders.append(folder)
    holds_run = _check_remote_run(url, args) if key == "exp_dir" else False
    if key == "train.cache_dir" or args.command in RESUMING or (holds_run and _get(args, "train.resume")):
        storage.sync_down(url, folder)
    staging.uploads.append((folder, destination, bool(holds_run and _get(args, "train.overwrite")),
                            key == "train.cache_dir"))
    vars(args)[key] = str(folder) if is_folder else str(folder / storage.name(url))


@contextlib.contextmanager
def staged(args: argparse.Namespace) -> Iterator[None]:
    """Run the block with remote paths of ``args`` replaced by local ones; upload the outputs if it finishes.

    Local paths are left exactly as they are, so a command without remote paths runs unchanged. A failed
    upload keeps the staging folder (the error names it); a failed command leaves nothing behind."""
    storage.configure(_get(args, "project_name"))  # type: ignore[arg-type]
    for key in UNSUPPORTED.get(args.command, ()):
        values = _get(args, key)
        for value in values if isinstance(values, list) else [values]:
            if storage.is_remote(value):
                raise storage.StorageError(f"{value}: `audiotune {args.command}` reads and writes local files "
                                           "only; copy it to a local folder first")
    cloud = _cloud_url(args)
    _remote_run_defaults(args)
    staging = Staging()
    keep = False
    try:
        for key in COPIED:
            value = _get(args, key)
            if storage.is_remote(value):
                vars(args)[key] = storage.local_copy(str(value))
        for key in ("exp_dir", "out", "train.cache_dir"):
            if storage.is_remote(_get(args, key)):
                _stage_output(args, key, staging)
        if cloud:
            staging.uploads.append((Path(str(_get(args, "exp_dir"))), cloud, False, False))
        yield
        keep = True  # from here on the outputs are complete: an upload that fails keeps them
        for local, url, replace, only_new in staging.uploads:
            if local.exists() and _uploads():
                storage.upload(local, url, replace=replace, only_new=only_new)
        keep = False
    finally:
        if not keep:
            for folder in staging.folders:
                storage.remove_local(folder)


def _uploads() -> bool:
    """False in the processes of a multi-process (DDP) run other than rank 0: they write nothing of the run,
    and an upload of their empty staging folder must not race rank 0's (or, with --overwrite, replace it)."""
    from audiotune.engine.distributed import launched_rank_zero  # torch: only once a command has finished

    return launched_rank_zero()


def _cloud_url(args: argparse.Namespace) -> str | None:
    """The seed systems' ``--cloud -b BUCKET --cloud_dir DIR``: the run directory is uploaded there too."""
    if not _get(args, "cloud"):
        return None
    bucket, cloud_dir = _get(args, "bucket_name"), _get(args, "cloud_dir")
    if not bucket or not cloud_dir:
        raise ValueError("--cloud uploads the outputs to gs://BUCKET/CLOUD_DIR: give -b/--bucket_name and --cloud_dir")
    if not _get(args, "exp_dir"):
        raise ValueError(f"--cloud: `audiotune {args.command}` writes no output folder to upload")
    return f"gs://{str(bucket).removeprefix('gs://').strip('/')}/{str(cloud_dir).strip('/')}"
