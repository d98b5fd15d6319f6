"""What a run or a folder recorded, as this release reads it (:func:`as_made`: the options added since as the run
went without them), and the settings records of experiment folders (a cross-validation, a sweep): a rerun that asks
for other settings than the folder was made with is refused, naming the settings that differ."""
from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from audiotune import storage
from audiotune.config import SECTIONS, RunConfig, config_from_dict, config_to_dict, default_of, upgrade_sections
from audiotune.config.files import parse_config_file
from audiotune.data.prepare import head_options_at_defaults
from audiotune.models.backbones import options_classes, resolve_config
from audiotune.models.option_checks import idle_at_defaults, own_features_unset
from audiotune.outputs import RunDirError, made_in

# where and how fast the runs run: free between the processes and reruns of one folder (as a resumed run's)
FREE_SECTIONS = ("runtime", "version")


def as_made(sections: dict, source: str, resolved: bool = False) -> RunConfig:
    """The config recorded in ``sections`` (a run's config.yaml, a folder record's ``config``) as this release reads
    a config of its version (the meanings its version had: :func:`~audiotune.config.config_from_dict`), with every
    option added since it was written as the run went without it: the sections' at their defaults, its backbone's
    at their declared defaults, or as they resolve when nothing is said of them (``resolved``: to compare with a
    resolved config; one that holds an option refused since, one that did nothing, takes the declared defaults).
    Raises ValueError for sections this release cannot read."""
    earlier = config_from_dict(sections, source=source)
    recorded = dict(earlier.model.options)
    added: dict[str, Any] | None = None
    if resolved:
        try:
            added = resolve_config(copy.deepcopy(earlier)).model.options
        except (ValueError, OSError):
            added = None
    if added is None:
        options = options_classes().get(earlier.model.model)
        added = {spec.name: default_of(spec) for spec in dataclasses.fields(options)} if options is not None else {}
    earlier.model.options = {**added, **recorded}
    return earlier


def _placed(value: Any, base: str | Path) -> Any:
    """A relative local path as the place it names from folder ``base`` where that place exists (a hub id, or a
    place gone, stays as written), any existing place written one way (resolved)."""
    if not isinstance(value, str) or not value or storage.is_remote(value):
        return value
    place = Path(base) / value
    return str(place.resolve()) if place.exists() else value


def placed_paths(config: RunConfig, base: str | Path) -> RunConfig:
    """``config`` with each path among its options (those with a path role: tables, audio, label files,
    checkpoints, the backbone's) as the place it names from folder ``base`` (:func:`_placed`): two configs name the
    same files the same way wherever their commands ran."""
    return _each_path(config, lambda value: _placed(value, base))


def _each_path(config: RunConfig, change: Callable[[Any], Any]) -> RunConfig:
    """``config`` with ``change`` applied to each of its path options (the backbone's among the model's)."""
    for name, kind in SECTIONS.items():
        section = getattr(config, name)
        for option in _paths_of(kind):
            setattr(section, option, change(getattr(section, option)))
    for option in _paths_of(options_classes().get(config.model.model)):
        if option in config.model.options:
            config.model.options[option] = change(config.model.options[option])
    return config


def recorded_paths(config: RunConfig, run_dir: str | Path) -> RunConfig:
    """A copy of ``config`` as run ``run_dir`` records it: its relative local paths (from this command's folder)
    made relative to the folder of the command that made the run, from which a run's relative paths are read
    (:func:`~audiotune.outputs.from_training_dir`), so a run resumed from another folder still names its files;
    ``config`` itself where this command made the run."""
    made = made_in(run_dir)
    if not made or Path(made).resolve() == Path.cwd().resolve():
        return config

    def moved(value: Any) -> Any:
        if not isinstance(value, str) or not value or storage.is_remote(value) or Path(value).is_absolute():
            return value
        place = Path.cwd() / value
        return os.path.relpath(place, made) if place.exists() else value  # (a hub id stays as written)

    recorded = _each_path(copy.deepcopy(config), moved)
    recorded.exp_dir = moved(recorded.exp_dir)  # the run itself, named from there too
    return recorded


def _paths_of(options: Any) -> list[str]:
    """The options of dataclass ``options`` (None: none) that name a path (declared with a role)."""
    return [spec.name for spec in dataclasses.fields(options) if spec.metadata.get("role") is not None] \
        if options else []


def _placed_record(record: dict, base: str | Path) -> dict:
    """A folder's settings record with its paths as :func:`placed_paths` writes a config's: its table (``source``),
    the JSON folds' audio folder and the path options of its ``config`` sections (a backbone's among the model's)."""
    record = copy.deepcopy(record)
    if "source" in record:
        record["source"] = _placed(record["source"], base)
    if isinstance(record.get("folds"), dict) and "audio_dir" in record["folds"]:
        record["folds"]["audio_dir"] = _placed(record["folds"]["audio_dir"], base)
    config = record.get("config")
    if not isinstance(config, dict):
        return record
    model = config.get("model")
    backbone = options_classes().get(str(model.get("model"))) if isinstance(model, dict) else None
    for name, kind in SECTIONS.items():
        part = config.get(name)
        if not isinstance(part, dict):
            continue
        for option in [*_paths_of(kind), *(_paths_of(backbone) if name == "model" else [])]:  # (and its backbone's)
            if option in part:
                part[option] = _placed(part[option], base)
    return record


def compared_settings(path: Path, record: dict) -> tuple[dict | None, dict]:
    """The settings recorded at ``path`` (None where there are none yet) and those ``record`` asks for, as a rerun
    compares them: options that do nothing at their defaults, paths as the files they name (the recorded ones
    from where the folder's first command ran, ``record``'s from here), so the same command from another folder
    asks for the same settings."""
    if isinstance(record.get("config"), dict):
        record = {**record, "config": without_idle(record["config"], str(path))}
    earlier = read_settings_record(path, record)
    if earlier is None:
        return None, record
    return _placed_record(earlier, made_in(path.parent) or Path.cwd()), _placed_record(record, Path.cwd())


def read_record_config(path: str, key: str = "") -> RunConfig | None:
    """The config recorded at ``path`` (a run's config.yaml; under ``key`` of a folder's record), local or remote, as
    :func:`as_made` reads it; None where there is none, or none this release reads (the check of the record names
    it)."""
    if not storage.isfile(path):
        return None
    with storage.open_input(path) as handle:
        written = parse_config_file(handle.read(), path)
    sections = written.get(key) if key else written
    if not isinstance(sections, dict):
        return None
    try:
        return as_made(sections, path)
    except ValueError:
        return None


def _as_read_now(earlier: dict, current: dict, source: str) -> dict:
    """A recorded config as :func:`as_made` reads it, the options it records and those ``current`` records (added
    since), and the free sections as ``current``'s."""
    recorded = upgrade_sections(earlier, source)
    try:
        read = config_to_dict(as_made(recorded, source))
    except ValueError:  # not a config this release reads: compared as recorded
        read = recorded

    def kept(section: str, options: dict) -> dict:
        now, got = current.get(section), read.get(section)
        got = got if isinstance(got, dict) else {}
        names = dict.fromkeys([*options, *(now if isinstance(now, dict) else ())])
        return {name: got.get(name, options.get(name)) for name in names if name in got or name in options}

    # only the sections it records (not the folder, nor the heads)
    as_read = {section: kept(section, options) if isinstance(options, dict) else read.get(section, options)
               for section, options in recorded.items()}
    return without_idle({**as_read, **{key: current[key] for key in FREE_SECTIONS if key in current}}, source)


def without_idle(sections: dict, source: str) -> dict:
    """A recorded config's sections with every option that does nothing where its runs train at its default (one
    whose switch is off, one the backbone reads past: :func:`~audiotune.models.option_checks.idle_at_defaults`; a
    head-kind option without a head of its kind: :func:`~audiotune.data.prepare.head_options_at_defaults`): a record
    that holds it (made before it was refused, or a recipe's value for when its switch is on) and one that leaves it
    out are the same settings (as for a resumed run: :func:`~audiotune.engine.resume.resumed_changes`)."""
    try:
        quiet = config_from_dict(sections, source=source)
    except ValueError:  # not a config this release reads: compared as recorded
        return sections
    idle_at_defaults(quiet)
    own_features_unset(quiet, quiet)
    head_options_at_defaults(quiet)
    read = config_to_dict(quiet)
    return {section: {name: read.get(section, {}).get(name, value) for name, value in options.items()}
            if isinstance(options, dict) and section in read else options for section, options in sections.items()}


def read_settings_record(path: Path, record: dict) -> dict | None:
    """The settings recorded at ``path`` (None when there are none yet), its ``config`` section read as this
    release reads a config of its version, the options added since at their defaults and the free sections
    (:data:`FREE_SECTIONS`) as ``record``'s. A setting recorded only since it was written (a key of ``record`` it
    lacks) is unknown there: taken as ``record``'s, so a folder made before goes on."""
    if not path.is_file():
        return None
    earlier = yaml.safe_load(path.read_text())
    if isinstance(earlier, dict):
        earlier = {**{key: value for key, value in record.items() if key not in earlier}, **earlier}
    if isinstance(earlier, dict) and isinstance(earlier.get("config"), dict) and isinstance(record.get("config"), dict):
        earlier = {**earlier, "config": _as_read_now(earlier["config"], record["config"], str(path))}
    return earlier


def differing_keys(earlier: Any, record: Any, prefix: str = "") -> list[str]:
    """Dotted paths (``config.train.epochs``) of the values that differ between two nested dicts."""
    if earlier == record:
        return []
    if not (isinstance(earlier, dict) and isinstance(record, dict)):
        return [prefix or "(all)"]
    return [path for key in sorted(set(earlier) | set(record), key=str)
            for path in differing_keys(earlier.get(key), record.get(key), f"{prefix}.{key}" if prefix else str(key))]


def check_settings_record(path: Path, record: dict, holds: str, again: str) -> None:
    """A directory made for one set of settings (a cross-validation, a sweep): ``path`` records them, and a
    rerun that asks for others is an error naming the settings that differ. Options added to audiotune since the
    record was written count as their defaults. The record is written by the caller."""
    earlier, record = compared_settings(path, record)
    if earlier is not None and earlier != record:
        changed = differing_keys(earlier, record)
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise RunDirError(f"{path}: this directory holds {holds} with other settings (differs in {shown}); "
                          f"{again} with the same arguments or use a new --exp_dir")
