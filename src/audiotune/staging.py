"""Remote paths on the command line: a command takes ``gs://...`` (any fsspec URL) wherever it takes a path.

Every path argument declares its :class:`~audiotune.storage.Role` where the command declares the argument
(:func:`audiotune.cli.flags.add_path`); before the command runs, :func:`staged` handles each remote path by
that role:

- tables and audio (``TABLE``, ``AUDIO``) stay URLs: tables are read in place and audio by range, through
  the read-through cache (:mod:`audiotune.storage`);
- other inputs (``INPUT``, ``RUN``: configs, label files, checkpoints and Hugging Face folders, run
  directories, pseudo-labels) become local copies in the cache, downloaded again only when they changed;
- outputs become local staging folders: the command writes there as it does on a local disk (locks, atomic
  files, ``--resume``), and only a command that finished uploads them, run markers last (a stopped one its
  experiment folder too, whose finished runs its rerun goes on from). A remote run
  directory or experiment folder is locked for the command (:class:`~audiotune.remote_lock.RemoteLock`: one writer
  across machines, as a local folder's ``flock`` is on one). A remote run
  directory (``RUN_OUTPUT``) that already holds a run is refused, resumed (``--resume``: downloaded first) or
  replaced (``--overwrite``) as a local one is; an experiment folder (``EXPERIMENT``), a cache (``CACHE``) and
  an output folder (``OUTPUT_DIR``) are downloaded first, and an output folder is sent back as the command left it
  (what it removed is deleted), so that it ends as a local folder would; an output file brings its skip list;
- ``LOCAL`` paths are refused when remote, naming the argument.

The seed systems' flags keep their meaning: ``--cloud`` with ``-b/--bucket_name`` and ``--cloud_dir`` also
uploads the command's outputs when it finishes: a run directory's contents to ``gs://BUCKET/CLOUD_DIR``, any
other output folder or file to ``gs://BUCKET/CLOUD_DIR/NAME``; ``-p/--project_name`` is the Google Cloud
project of the bucket.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from audiotune import remote_lock, storage
from audiotune.launch import launched_rank_zero
from audiotune.outputs import (
    RUN_MARKERS,
    check_folder_kind,
    command_history,
    found_entries,
    holds_run_error,
    skip_list,
)
from audiotune.storage import Role
from audiotune.uploads import remove_remote, sync_down, upload

FOLDERS = (Role.OUTPUT_DIR, Role.RUN_OUTPUT, Role.EXPERIMENT, Role.CACHE)  # the other outputs are files


LOCKED = (Role.RUN_OUTPUT, Role.EXPERIMENT)  # folders of runs: one writing command at a time, across machines


@dataclass
class Upload:
    """A local output and where it goes; ``replace``: remote objects under ``url`` that ``local`` lacks are deleted
    (see :func:`~audiotune.uploads.upload`), but for those the folder held before any command wrote there;
    ``mirror``: ``local`` was brought down whole before the command ran, and every remote object it lacks now is
    deleted; ``only_new``: files the remote place holds at their size are not sent again; ``pulled``: remote files
    brought into ``local`` before the command ran, each deleted from ``url`` when the command removed it (as it
    would have removed it there)."""

    local: Path
    url: str
    replace: bool = False
    mirror: bool = False
    only_new: bool = False
    pulled: tuple[str, ...] = ()


@dataclass
class Staging:
    uploads: list[Upload] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    locks: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    experiments: list[tuple[Path, str]] = field(default_factory=list)  # (local, url): sent up when stopped too


# the command namespace's record of the remote place of each staged output ({key: url}; a name without a dot, which
# no option has), for what the command says once its staging folder is gone (how a stopped remote run goes on)
STAGED_FROM = "staged_from"


def remote_place(args: argparse.Namespace, key: str) -> str | None:
    """The remote URL that output ``key`` of ``args`` was given as, when it was staged; else None."""
    value = (vars(args).get(STAGED_FROM) or {}).get(key)
    return str(value) if value else None


def _get(args: argparse.Namespace, key: str) -> object:
    return vars(args).get(key)


def _flag(key: str) -> str:
    return f"--{key.rpartition('.')[2]}"


def _check_remote_run(url: str, args: argparse.Namespace, resumable: bool) -> bool:
    """Whether remote run directory ``url`` holds a run; refused like a local one without --resume/--overwrite
    (``resumable``: the command takes --resume)."""
    def holds(name: str) -> bool:
        return storage.isfile(storage.join(url, name))

    check_folder_kind(url, str(args.command), holds=holds)
    holds_run = any(holds(marker) for marker in RUN_MARKERS)
    if holds_run and not _get(args, "train.resume") and not _get(args, "train.overwrite"):
        raise holds_run_error(url, str(args.command), resumable)
    return holds_run


def staging_folder(url: str) -> Path:
    """A fresh local folder in which a remote output is written before it is uploaded; the note in it names the
    remote place (:data:`~audiotune.storage.NOTE`, read by :func:`~audiotune.storage.final_place`)."""
    root = storage.cache_folder() / "staging"
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.blake2b(url.encode(), digest_size=6).hexdigest()
    folder = Path(tempfile.mkdtemp(prefix=f"{storage.name(url) or 'output'}-{digest}-", dir=root))
    (folder / storage.NOTE).write_text(json.dumps({"url": url}))  # hidden: never uploaded; see final_place
    return folder


def _stage_output(args: argparse.Namespace, key: str, role: Role, staging: Staging, resumable: bool) -> None:
    url = str(_get(args, key))
    is_folder = role in FOLDERS
    destination = url if is_folder else storage.parent(url)  # a file goes with its sidecars (OUT.skipped.csv)
    folder = staging_folder(destination)
    staging.folders.append(folder)
    if role in LOCKED and remote_lock.locks_remotely(url) and _uploads():  # rank 0 writes; the others only read
        staging.locks.enter_context(remote_lock.RemoteLock(url, str(args.command)))
    holds_run = _check_remote_run(url, args, resumable) if role is Role.RUN_OUTPUT else False
    # an output folder is brought down whole and sent back as the command left it (an evaluation replacing the
    # last one, a split its files), so that the remote folder ends as a local one would; an output file brings its
    # skip list, which the command removes when it skipped nothing
    pulled = () if is_folder else _pull(storage.join(destination, skip_list(storage.name(url)).name), folder)
    if role in (Role.EXPERIMENT, Role.CACHE, Role.OUTPUT_DIR) or (holds_run and _get(args, "train.resume")):
        sync_down(url, folder)
    staging.uploads.append(Upload(folder, destination, replace=bool(holds_run and _get(args, "train.overwrite")),
                                  mirror=role is Role.OUTPUT_DIR, only_new=role is Role.CACHE, pulled=pulled))
    if role is Role.EXPERIMENT:
        staging.experiments.append((folder, destination))
    vars(args).setdefault(STAGED_FROM, {})[key] = url
    vars(args)[key] = str(folder) if is_folder else str(folder / storage.name(url))


def _refuse_remote(args: argparse.Namespace, roles: dict[str, Role]) -> None:
    for key, role in roles.items():
        values = _get(args, key)
        for value in values if isinstance(values, list) else [values]:
            if role is Role.LOCAL and storage.is_remote(value):
                raise storage.StorageError(f"{value}: {_flag(key)} of `audiotune {args.command}` is read or written "
                                           "on a local disk only; copy it to a local folder first")


@contextlib.contextmanager
def staged(args: argparse.Namespace, roles: dict[str, Role], *, resumable: bool) -> Iterator[None]:
    """Run the block with the remote paths of ``args`` (``roles``: ``{dest: Role}``) replaced by local ones;
    upload the outputs if it finishes. ``resumable``: the command takes --resume (a remote run directory holding a
    run is refused naming what the command takes).

    Local paths are left exactly as they are, so a command without remote paths runs unchanged. A failed
    upload keeps the staging folder (the error names it); a failed command leaves nothing behind."""
    storage.configure(_get(args, "project_name"))  # type: ignore[arg-type]
    _refuse_remote(args, roles)
    cloud = cloud_url(args, roles)
    plan = _cloud_plan(args, roles, cloud) if cloud else []  # named before staging renames the outputs
    staging = Staging()
    keep = False
    try:
        for key, role in roles.items():
            value = _get(args, key)
            local = storage.local_inputs(value, role)
            if local != value:
                vars(args)[key] = local
        for key, role in roles.items():
            if role.is_output and role is not Role.LOCAL and storage.is_remote(_get(args, key)):
                _stage_output(args, key, role, staging, resumable)
        try:
            yield
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: an experiment's finished runs go up, which its rerun goes on from
            for local, url in staging.experiments:
                if local.exists() and _uploads():
                    try:
                        upload(local, url)
                    except storage.StorageError as err:  # the stop is what ends the command: the runs stay here
                        keep = True
                        print(f"audiotune: {err}", file=sys.stderr)
            raise
        keep = True  # from here on the outputs are complete: an upload that fails keeps them
        staging.uploads.extend(Upload(local, url) for local, url in _cloud_uploads(args, plan))
        # mirrored folders first: a file another output sends into one is not deleted as one the folder lacks
        for each in sorted(staging.uploads, key=lambda upload: not upload.mirror):
            if each.local.exists() and _uploads():
                found = tuple(found_entries(each.local, command_history(each.local))) \
                    if each.replace and not each.mirror else ()
                upload(each.local, each.url, replace=each.replace or each.mirror, only_new=each.only_new, keep=found)
                remove_remote([storage.join(each.url, name) for name in each.pulled
                               if not (each.local / name).exists()])
        keep = False
    finally:
        staging.locks.close()  # after the upload: another command may write the folder from now on
        if not keep:
            for folder in staging.folders:
                shutil.rmtree(folder, ignore_errors=True)


def _pull(url: str, folder: Path) -> tuple[str, ...]:
    """Remote file ``url`` copied into ``folder`` if it exists: its name, else nothing."""
    if not storage.isfile(url):
        return ()
    fs, inner = storage.filesystem(url)
    try:
        fs.get_file(inner, str(folder / storage.name(url)))
    except Exception as err:
        raise storage.storage_error(url, "be downloaded", err) from err
    return (storage.name(url),)


def _uploads() -> bool:
    """False in the processes of a multi-process (DDP) run other than rank 0: they write nothing of the run,
    and an upload of their empty staging folder must not race rank 0's (or, with --overwrite, replace it)."""
    return launched_rank_zero()


CLOUD_CONTENTS = (Role.RUN_OUTPUT, Role.EXPERIMENT)  # --cloud sends these folders' contents to CLOUD_DIR itself


def _cloud_plan(args: argparse.Namespace, roles: dict[str, Role], cloud: str) -> list[tuple[str, Role, str]]:
    """(argument, role, url) of each output that ``--cloud`` uploads, named by the paths as given (before
    staging): a run directory's (or experiment folder's) contents go to CLOUD_DIR, as the seeds uploaded each
    file of a run there; any other output folder or file goes to CLOUD_DIR/ITS_NAME (the seeds'
    CLOUD_DIR/basename). A cache is not uploaded; a local-only ``-o`` folder (a sweep's) is an experiment
    folder."""
    plan: list[tuple[str, Role, str]] = []
    for key, declared in roles.items():
        role = Role.EXPERIMENT if key == "exp_dir" and declared is Role.LOCAL else declared
        value = _get(args, key)
        if role.is_output and role is not Role.CACHE and value:
            plan.append((key, role, cloud if role in CLOUD_CONTENTS else storage.join(cloud, storage.name(str(value)))))
    return plan


def _cloud_uploads(args: argparse.Namespace, plan: list[tuple[str, Role, str]]) -> list[tuple[Path, str]]:
    """(local, url) of each finished output of ``plan``; a file brings the sidecars written beside it
    (``OUT.skipped.csv``)."""
    uploads = []
    for key, role, url in plan:
        local = Path(str(_get(args, key)))
        uploads.append((local, url))
        if role not in FOLDERS and role not in CLOUD_CONTENTS:
            sidecars = [f for f in sorted(local.parent.glob(f"{local.stem}.*")) if f.is_file() and f != local]
            uploads += [(file, storage.join(storage.parent(url), file.name)) for file in sidecars]
    return uploads


def cloud_url(args: argparse.Namespace, roles: dict[str, Role]) -> str | None:
    """The seed systems' ``--cloud -b BUCKET --cloud_dir DIR``: the command's outputs are uploaded there too."""
    if not _get(args, "cloud"):
        # a seed flag that means something only beside another: refused before any write, but for a run resumed
        # with the command line that made it (where it did nothing too)
        if _get(args, "cloud_dir") and not _get(args, "train.resume"):
            raise ValueError(f"--cloud_dir {_get(args, 'cloud_dir')}: the folder that --cloud uploads the outputs to; "
                             "add --cloud (with -b BUCKET), or leave --cloud_dir out")
        return None
    bucket, cloud_dir = _get(args, "bucket_name"), _get(args, "cloud_dir")
    if not bucket:
        raise ValueError("--cloud uploads the outputs to gs://BUCKET/CLOUD_DIR: give -b/--bucket_name")
    if not cloud_dir:  # the seeds' default '' put every run's files side by side in the bucket's root
        raise ValueError("--cloud uploads the outputs to gs://BUCKET/CLOUD_DIR: give --cloud_dir, a folder of the "
                         "bucket for this run (the seeds' empty --cloud_dir put every run's files in the bucket's "
                         "root, where the next run replaced them)")
    url = f"gs://{str(bucket).removeprefix('gs://').strip('/')}/{str(cloud_dir).strip('/')}"
    if not _cloud_plan(args, roles, url):
        raise ValueError(f"--cloud: `audiotune {args.command}` writes no output to upload")
    return url
