"""Local paths and remote URLs (``gs://bucket/...``) through one interface, fsspec.

A local path is handled by the operating system as always; a URL with a scheme (``gs://``, or any other
protocol fsspec knows) by the matching fsspec file system (``gcsfs`` for Google Cloud Storage). The rest of
audiotune asks this module, never ``path.startswith("gs://")``:

- :func:`open_input` reads a file by range (audio segments of long recordings) through a local
  read-through block cache; :func:`local_copy` brings a whole file or folder (a label file, a checkpoint,
  a run directory) into the cache once and returns its local path, downloaded again only when the remote
  object changed;
- :func:`audiotune.uploads.upload` sends a finished local file or folder to its remote place. Every remote
  object appears complete or not at all (an upload that fails leaves no object), and a folder's
  ``config.yaml`` is sent last: a remote run directory without it is not a run, so an interrupted upload
  never leaves one that reads as complete.

Google Cloud Storage: the newest gcsfs first probes each bucket's type over gRPC for zonal and
hierarchical-namespace buckets, which emulators do not speak (and which costs a 60 s timeout per probe
there). audiotune selects gcsfs's classic JSON-API file system, which reads and writes every bucket type,
by setting ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` unless the environment already sets it.
``STORAGE_EMULATOR_HOST`` (e.g. ``http://127.0.0.1:9023``) points gcsfs at an emulator with anonymous
access; credentials otherwise come from the usual Google sources (``gcloud auth application-default
login``, ``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server of a cloud machine).
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from audiotune import partials

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # read when gcsfs is imported: see above

URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
# the files that make a folder a run directory (outputs.py names them with the others); an upload sends them last
MODEL_FILE, METRICS_FILE = "model.safetensors", "metrics.json"
CONFIG_FILE = "config.yaml"  # the user's options, the model section resolved: enough to rebuild the model
LAST = (MODEL_FILE, METRICS_FILE, CONFIG_FILE)  # in the order sent: config last of all
PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "az": "adlfs", "abfs": "adlfs"}
_OPTIONS: dict[str, dict[str, Any]] = {}


class Role(StrEnum):
    """What a path argument is to a command, which decides how a remote (``gs://``) one is handled.

    Read in place: ``TABLE`` (a CSV or split folder) and ``AUDIO`` (an audio root, read by range).
    Read whole: ``INPUT`` and ``RUN`` (a run directory, or the model.safetensors inside it) become local copies.
    Written: ``OUTPUT_FILE`` (with sidecar files beside it) and ``OUTPUT_DIR`` (downloaded first, and replaced
    by what the command left) are written in a local staging folder and uploaded once the command finished;
    ``RUN_OUTPUT`` (a run directory) is also refused when it holds
    a run, unless resumed (downloaded first) or replaced; ``EXPERIMENT`` (a folder of runs that the command
    resumes itself) and ``CACHE`` (only new entries are uploaded) are downloaded first.
    ``LOCAL``: the command reads or writes it on a local disk only.
    """

    TABLE = "table"
    AUDIO = "audio"
    INPUT = "input"
    RUN = "run to read"
    OUTPUT_FILE = "output file"
    OUTPUT_DIR = "output folder"
    RUN_OUTPUT = "run directory to write"
    EXPERIMENT = "experiment folder"
    CACHE = "cache folder"
    LOCAL = "local path"

    @property
    def is_output(self) -> bool:
        return self in (Role.OUTPUT_FILE, Role.OUTPUT_DIR, Role.RUN_OUTPUT, Role.EXPERIMENT, Role.CACHE)

    @property
    def is_copied(self) -> bool:
        """Read whole, from a local copy of a remote path."""
        return self in (Role.INPUT, Role.RUN)


def local_inputs(value: Any, role: Role | None) -> Any:
    """``value`` (a path or a list of them) as the command reads it: the local copy of a remote path of a role
    read whole (:func:`local_copy`), else unchanged; a path holding a placeholder (cv's ``{fold}``) names several
    places, each copied by the command that fills it in."""
    if role is None or not role.is_copied:
        return value
    if isinstance(value, list):
        return [local_inputs(item, role) for item in value]
    return local_copy(str(value)) if is_remote(value) and not re.search(r"\{\w+\}", str(value)) else value


class StorageError(OSError):
    """A remote path that could not be read or written; the message names it and the reason."""


def configure(project: str | None = None) -> None:
    """Options of later remote file systems: the Google Cloud project (``-p/--project_name``)."""
    if project:
        _OPTIONS.setdefault("gs", {})["project"] = project


def is_remote(path: object) -> bool:
    """Whether ``path`` is a URL of a remote file system (``file://`` is local)."""
    match = URL.match(str(path)) if isinstance(path, str) else None
    return bool(match) and match.group(1).lower() != "file"  # type: ignore[union-attr]


def file_version(path: str | Path) -> tuple[str, int, int, int]:
    """A local file's absolute path, size, modification time (ns) and inode: what changes when it is written
    again (the keys of what is kept about a file's content); OSError when it cannot be read."""
    absolute = os.path.abspath(path)
    found = os.stat(absolute)
    return absolute, found.st_size, found.st_mtime_ns, found.st_ino


def _protocol(url: str) -> str:
    match = URL.match(url)
    return match.group(1).lower() if match else "file"


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path inside it."""
    import fsspec

    protocol = _protocol(url)
    options = dict(_OPTIONS.get("gs" if protocol == "gcs" else protocol, {}))
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if protocol in ("gs", "gcs") and emulator:
        options.setdefault("endpoint_url", emulator if "://" in emulator else f"http://{emulator}")
        options.setdefault("token", "anon")
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as err:
        package = PACKAGES.get(protocol, f"the fsspec package for {protocol}://")
        raise StorageError(f"{url}: reading {protocol}:// paths needs {package} (pip install {package})") from err
    except ValueError as err:
        raise StorageError(f"{url}: not a path audiotune can read ({err})") from err


def browser_url(path: str | Path) -> str:
    """Where a browser opens file ``path``: a Cloud Storage object's authenticated download page (the emulator's
    download URL when ``STORAGE_EMULATOR_HOST`` is set), another URL as it is, a local file as ``file://``."""
    from urllib.parse import quote

    text = str(path)
    if _protocol(text) in ("gs", "gcs"):
        bucket, _, key = text.split("://", 1)[1].partition("/")
        emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
        if emulator:
            host = (emulator if "://" in emulator else f"http://{emulator}").rstrip("/")
            return f"{host}/download/storage/v1/b/{bucket}/o/{quote(key, safe='')}?alt=media"
        return f"https://storage.cloud.google.com/{bucket}/{quote(key)}"
    return text if is_remote(text) or text.startswith("file://") else Path(text).resolve().as_uri()


def storage_error(url: str, action: str, err: BaseException) -> StorageError:
    """``err`` as a :class:`StorageError` that names ``url`` and what could not be done to it."""
    if isinstance(err, StorageError):
        return err
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return StorageError(f"{url}: could not {action} ({type(err).__name__}: {reason})")


def join(base: str | Path, *parts: str) -> str:
    """``base/part/...`` for a folder path or URL."""
    if is_remote(base):
        joined = str(base).rstrip("/")
        for part in parts:
            joined = f"{joined}/{part.strip('/')}" if part else joined
        return joined
    return str(Path(base, *parts))


def parent(path: str | Path) -> str:
    """The folder of a file path or URL."""
    if is_remote(path):
        scheme, rest = str(path).split("://", 1)
        head = posixpath.dirname(rest.rstrip("/"))
        return f"{scheme}://{head}" if head else f"{scheme}://{rest}"
    return str(Path(path).parent)


def name(path: str | Path) -> str:
    """The last part of a path or URL."""
    return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else Path(path).name


def resolve(value: str, base: str | Path) -> str:
    """A table cell as an absolute path or URL: a relative one is relative to the folder ``base``."""
    if is_remote(value):
        return value
    if is_remote(base):
        if value.startswith("/"):
            return value  # an absolute local path in a remote table stays local
        scheme, rest = str(base).rstrip("/").split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, value))}"
    # ``..`` taken out by name, links kept: a link's name is the row's file (its uid, its messages), and no
    # row pays a walk of the file system
    return value if os.path.isabs(value) else os.path.abspath(os.path.join(base, value))


def isfile(path: str | Path) -> bool:
    if not is_remote(path):
        return os.path.isfile(path)
    fs, inner = filesystem(str(path))
    try:
        return bool(fs.isfile(inner))
    except Exception as err:
        raise storage_error(str(path), "be checked", err) from err


def isdir(path: str | Path) -> bool:
    if not is_remote(path):
        return os.path.isdir(path)
    fs, inner = filesystem(str(path))
    try:
        return bool(fs.isdir(inner))
    except Exception as err:
        raise storage_error(str(path), "be checked", err) from err


def listdir(path: str | Path) -> list[str]:
    """Names of the entries of a folder (files and folders)."""
    if not is_remote(path):
        return sorted(os.listdir(path))
    fs, inner = filesystem(str(path))
    try:
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(inner, detail=False))
    except Exception as err:
        raise storage_error(str(path), "be listed", err) from err


def find(folder: str | Path) -> list[str]:
    """Every file under ``folder``, recursively, as full paths or URLs, sorted part by part."""
    if not is_remote(folder):
        found = [os.path.join(top, file) for top, _, files in os.walk(folder) for file in files]
    else:
        url = str(folder).rstrip("/")
        fs, inner = filesystem(url)
        try:
            found = [join(url, posixpath.relpath(p, inner.rstrip("/"))) for p in fs.find(inner)]
        except Exception as err:
            raise storage_error(url, "be listed", err) from err
    return sorted(found, key=lambda path: path.split("/"))


def _version(info: dict) -> str:
    """What changes when a remote object's content does: its generation, checksum or etag, with its size."""
    for key in ("generation", "md5Hash", "crc32c", "ETag", "etag", "mtime", "LastModified"):
        if info.get(key) is not None:
            return f"{info.get('size')}:{key}={info[key]}"
    return f"{info.get('size')}"


def content_id(path: str) -> str:
    """A short digest that changes with a remote object's content (from its metadata, nothing downloaded)."""
    fs, inner = filesystem(path)
    try:
        info = fs.info(inner)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise storage_error(path, "be read", err) from err
    return hashlib.blake2b(f"{path}|{_version(info)}".encode(), digest_size=16).hexdigest()


CACHE_ENV = "AUDIOTUNE_CACHE"


def cache_root(cache_dir: str = "") -> Path:
    """The cache folder of audio, features and remote copies: ``cache_dir``, else $AUDIOTUNE_CACHE, else
    ~/.cache/audiotune."""
    if cache_dir:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "audiotune"))


def cache_folder() -> Path:
    """Local copies of remote files: $AUDIOTUNE_CACHE/remote (default ~/.cache/audiotune/remote)."""
    return cache_root() / "remote"


_BLOCK_CACHES: dict[str, Any] = {}


def open_input(path: str | Path) -> IO[bytes]:
    """A binary file opened for reading; a remote one is read by range through a local block cache."""
    if not is_remote(path):
        return open(path, "rb")
    url = str(path)
    fs, inner = filesystem(url)
    blocks = str(cache_folder() / "blocks")
    key = f"{id(fs)}:{blocks}"
    if key not in _BLOCK_CACHES:
        from fsspec.implementations.cached import CachingFileSystem

        # blocks read once stay on local disk; an object whose generation changed is read again
        _BLOCK_CACHES[key] = CachingFileSystem(fs=fs, cache_storage=blocks, check_files=True, same_names=False)
    cache = _BLOCK_CACHES[key]
    try:
        _blocks_of_this_version(cache, fs, inner, Path(blocks))
        try:
            return cache.open(inner, "rb")
        except ValueError:  # a changed object grown past its earlier blocks' file (fsspec keeps that file's name)
            cache.pop_from_cache(inner)
            return cache.open(inner, "rb")
    except FileNotFoundError:
        raise
    except Exception as err:
        raise storage_error(url, "be opened", err) from err


_BLOCKS_CHECKED: set[str] = set()  # the objects whose cached blocks this process found of their version


def _blocks_of_this_version(cache: Any, fs: Any, inner: str, blocks: Path) -> None:
    """Drop the cached blocks of ``inner`` when the object changed since they were read: fsspec keeps a changed
    object's block file under its name, and once that file is whole it is read as it is, so an object replaced by a
    shorter one was read with the earlier one's tail (by every process after the one that saw the change)."""
    if inner in _BLOCKS_CHECKED:  # once per process: later changes are seen by the cache's own check in it
        return
    version = _version(fs.info(inner))  # FileNotFoundError for a missing object, as opening it would raise
    stamp = blocks / "versions" / hashlib.sha256(inner.encode()).hexdigest()
    _BLOCKS_CHECKED.add(inner)
    if stamp.is_file() and stamp.read_text() == version:
        return
    cache.pop_from_cache(inner)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    with partials.partial_place(stamp, crowded=True) as partial:
        partial.write_text(version)
        os.replace(partial, stamp)


def _local_place(url: str) -> Path:
    scheme, rest = url.split("://", 1)
    return cache_folder() / "files" / scheme / rest.strip("/")


def remote_name(path: str) -> str:
    """The remote URL a local path stands for in this process: the source of a local copy (:func:`local_copy`), or
    the destination of a staging folder (:func:`final_place`); any other value unchanged. A run records these, not
    the cache or staging folders, which another machine (or a later day) does not have."""
    if not path.startswith(os.sep):
        return path
    copies = cache_folder() / "files"
    if Path(path).is_relative_to(copies):
        scheme, *rest = Path(path).relative_to(copies).parts
        return f"{scheme}://{'/'.join(rest)}"
    return final_place(path) if Path(path).is_relative_to(cache_folder()) else path


def _download_file(fs: Any, inner: str, info: dict, target: Path) -> None:
    """``target`` holds the remote object afterwards; it is downloaded only when the object changed."""
    stamp = target.parent / f".{target.name}.version"
    version = _version(info)
    if target.is_file() and stamp.is_file() and stamp.read_text() == version:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with partials.partial_place(target) as partial:
        fs.get_file(inner, str(partial))
        os.replace(partial, target)
        stamp.write_text(version)


def _remove_unlisted(target: Path, listed: set[Path]) -> None:
    """Remove the files of the local copy ``target`` that its remote folder no longer holds (``listed``: the files
    it holds now), with their version stamps: a checkpoint rewritten in other files (sharded weights in place of
    one file) must not be read with its old ones. Files being written (partials) are left to their writers."""
    for path in [path for path in target.rglob("*") if path.is_file() or path.is_symlink()]:
        name = path.name
        if name.endswith(partials.PARTIAL_SUFFIX):
            continue
        stamped = path.with_name(name[1:-len(".version")]) if name.startswith(".") and name.endswith(".version") \
            else None
        if path not in listed and stamped not in listed:
            path.unlink(missing_ok=True)


def local_copy(path: str | Path) -> str:
    """A local path holding the file or folder ``path``: the path itself when local, else a cached copy."""
    if not is_remote(path):
        return str(path)
    url = str(path).rstrip("/")
    fs, inner = filesystem(url)
    target = _local_place(url)
    try:
        if fs.isfile(inner):
            _download_file(fs, inner, fs.info(inner), target)
            return str(target)
        found = fs.find(inner, detail=True)
        if not found:
            raise FileNotFoundError(url)
        listed = set()
        for remote, info in found.items():
            relative = posixpath.relpath(remote, inner.rstrip("/"))
            _download_file(fs, remote, info, target / relative)
            listed.add(target / relative)
        _remove_unlisted(target, listed)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{url}: not found") from err
    except Exception as err:
        raise storage_error(url, "be downloaded", err) from err
    return str(target)


# in a staging folder (audiotune.staging.staging_folder): the remote place its contents are uploaded to
NOTE = ".audiotune-remote.json"


def final_place(folder: str | Path) -> str:
    """Where a local folder's contents end up: the remote URL of a staging folder (and its subfolders),
    else the folder itself."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        note = candidate / NOTE
        if note.is_file():
            return join(json.loads(note.read_text())["url"], *folder.relative_to(candidate).parts)
    return str(folder)


def final_path(path: str | Path) -> str:
    """Where a written file ends up: its remote URL when it was written in a staging folder, else the file."""
    return join(final_place(Path(path).parent), Path(path).name)


def relative(path: str, folder: str | Path) -> str:
    """``path`` written relative to ``folder`` when both are in one place (one local disk, one bucket), so
    data and tables move together; otherwise ``path`` unchanged."""
    return relative_to(folder)(path)


def relative_to(folder: str | Path) -> Callable[[str], str]:
    """:func:`relative` for many paths and one ``folder``, whose place (:func:`final_place`: a walk up its parents)
    is found once."""
    place = final_place(folder) if not is_remote(folder) else str(folder)
    place_scheme, place_rest = place.rstrip("/").split("://", 1) if is_remote(place) else ("", place)

    def written(path: str) -> str:
        if is_remote(path) != is_remote(place):
            return path
        if not is_remote(path):
            return os.path.relpath(path, place)
        scheme, rest = path.split("://", 1)
        if scheme != place_scheme or rest.split("/", 1)[0] != place_rest.split("/", 1)[0]:
            return path
        return posixpath.relpath(rest, place_rest)

    return written
