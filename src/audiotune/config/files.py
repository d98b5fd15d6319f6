"""Config files: a ``RunConfig`` to and from plain dicts and YAML (``config.yaml`` of a run directory, recipes),
and the upgrade of sections written by an earlier release."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from audiotune import storage
from audiotune.config.options import as_flags_read, check_types, option_choices
from audiotune.config.retired import RETIRED_VALUES
from audiotune.config.run import (
    CONFIG_VERSION,
    FEATURES_OWN_VERSION,
    INPUT_RESOLVED_VERSION,
    OWN_MEANINGS_VERSION,
    SECTIONS,
    WAVEFORM_NORM_VERSION,
    HeadSpec,
    RunConfig,
)
from audiotune.config.sections import AudioConfig, RuntimeConfig
from audiotune.outputs import CONFIG_FILE


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain dict of the whole config (YAML-safe types only); the backbone's options flat in the model section;
    each path by the remote URL it stands for (:func:`audiotune.storage.remote_name`), not a cache or staging
    folder of this machine."""
    raw = dataclasses.asdict(config)
    raw["model"].update(raw["model"].pop("options"))  # one copy of each: flat, as ModelConfig.options says
    return {key: {name: _recorded(value) for name, value in part.items()} if isinstance(part, dict) else
            _recorded(part) for key, part in raw.items()}


def _recorded(value: Any) -> Any:
    if isinstance(value, str):
        return storage.remote_name(value)
    if isinstance(value, list):
        return [_recorded(item) for item in value]
    return value


def config_changes(old: RunConfig, new: RunConfig, free: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """``{"section.option": [old, new]}`` of every option that differs, except those named in ``free`` (an
    option ``section.name`` or a whole ``section``)."""
    before, after = config_to_dict(old), config_to_dict(new)
    changes = {}
    for section in sorted(set(before) | set(after)):
        if section in free:
            continue
        a, b = before.get(section), after.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                if f"{section}.{name}" not in free and a.get(name) != b.get(name):
                    changes[f"{section}.{name}"] = [a.get(name), b.get(name)]
        elif a != b:
            changes[section] = [a, b]
    return changes


def written_version(raw: dict[str, Any]) -> int:
    """The config version a file's sections were written with: its ``version``, the current one without it (a
    file a user wrote means what the flags mean today)."""
    version = raw.get("version", CONFIG_VERSION)
    return version if isinstance(version, int) and not isinstance(version, bool) else CONFIG_VERSION


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    section = raw.get(name)
    return section if isinstance(section, dict) else {}


def refuse_earlier_spellings(raw: dict[str, Any], source: str) -> None:
    """A file of :data:`~audiotune.config.run.OWN_MEANINGS_VERSION` or later holding what only an earlier release
    wrote, or a value its flag refuses: an error naming it and what to write (read as a flag, it would mean
    another thing)."""
    problems = []
    audio, train, model = (_section(raw, name) for name in ("audio", "train", "model"))
    modes = ", ".join(option_choices(AudioConfig, "channel_mode"))
    for name in ("reduce", "mono"):
        if name in audio:
            problems.append(f"audio: {name}: an earlier release's channel option (the flag --{name} is the seeds' "
                            f"switch); write channel_mode: one of {modes}")
    runtime_names = {spec.name for spec in dataclasses.fields(RuntimeConfig)}
    moved = sorted(set(train) & runtime_names)
    if moved:
        problems.append(f"train: {', '.join(moved)}: options of the runtime section; write them under runtime:")
    if "options" in model:
        problems.append("model: options: write the backbone's options in the model section itself")
    for section, values in raw.items():
        for name, value in values.items() if isinstance(values, dict) else ():
            why = RETIRED_VALUES.get((f"--{name}", str(value)))
            if why:
                problems.append(f"{section}: {name}: {value}: {why}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))


def upgrade_sections(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Sections as an earlier release wrote them, in today's layout (a file of an earlier version only: later ones
    are checked by :func:`refuse_earlier_spellings`): the audio section said ``reduce`` (mix down or not) and
    ``mono`` (mean or sum) before channel modes; the runtime options (device, precision, workers, caches) were in
    the train section; ``labeling_method: soft`` (the vote distribution) is now ``distribution``; the backbone's
    options were written twice, flat and under ``options:`` (:func:`_one_copy`)."""
    if written_version(raw) >= OWN_MEANINGS_VERSION:
        refuse_earlier_spellings(raw, source)
        return raw
    raw = dict(raw)
    if isinstance(raw.get("model"), dict) and "options" in raw["model"]:
        raw["model"] = _one_copy(raw["model"], source)
    audio = raw.get("audio")
    if isinstance(audio, dict):
        audio = dict(audio)
        reduce, mono = audio.pop("reduce", None), audio.pop("mono", None)
        if "channel_mode" not in audio and (reduce is not None or mono is not None):
            audio["channel_mode"] = (mono or "mean") if reduce in (None, True) else "none"
        raw["audio"] = audio
    train = raw.get("train")
    if isinstance(train, dict) and train.get("labeling_method") == "soft":  # renamed: 'sample' was the seed's soft
        train = raw["train"] = {**train, "labeling_method": "distribution"}
    if isinstance(train, dict):
        runtime_names = {spec.name for spec in dataclasses.fields(RuntimeConfig)}
        moved = {k: v for k, v in train.items() if k in runtime_names}
        if moved:
            raw["train"] = {k: v for k, v in train.items() if k not in runtime_names}
            raw["runtime"] = {**moved, **(raw.get("runtime") or {})}
    return raw


def _one_copy(model: dict[str, Any], source: str) -> dict[str, Any]:
    """The model section with the backbone's options flat: a copy under ``options:`` (as earlier releases wrote
    beside the flat one) is taken where it agrees with the flat one or stands alone; where the two differ, which
    one was meant is unknown, so that is an error naming the option."""
    model = dict(model)
    nested = model.pop("options")
    if not isinstance(nested, dict):
        raise ValueError(f"{source}: model section: 'options' must hold the backbone's options (name: value), "
                         f"found {nested!r}")
    for name, value in nested.items():
        if name in model and model[name] != value:
            raise ValueError(f"{source}: model option '{name}' is written twice and the copies differ ({name}: "
                             f"{model[name]!r} in the model section, {value!r} under its 'options:'); keep one, "
                             "in the model section")
        model[name] = value
    return model


def _heads(value: Any, source: str) -> list[HeadSpec]:
    """The ``heads`` of a config file: a list of heads, each with the fields of :class:`HeadSpec`."""
    fields = {spec.name for spec in dataclasses.fields(HeadSpec)}
    required = {spec.name for spec in dataclasses.fields(HeadSpec)
                if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING}
    if not isinstance(value, list) or not all(isinstance(head, dict) for head in value):
        raise ValueError(f"{source}: heads: a list of heads (each {', '.join(sorted(required))}, ...), found {value!r}")
    for head in value:
        if set(head) - fields or required - set(head):
            raise ValueError(f"{source}: heads: {head!r}: each head holds {', '.join(sorted(required))} and may hold "
                             f"{', '.join(sorted(fields - required))}")
    return [HeadSpec(**head) for head in value]


def config_from_dict(raw: dict[str, Any], source: str = "config", base: RunConfig | None = None) -> RunConfig:
    """Rebuild a RunConfig; unknown keys are an error naming the key, missing keys take ``base``'s values
    (default: the defaults)."""
    config = copy.deepcopy(base) if base is not None else RunConfig()
    for key, value in upgrade_sections(raw, source).items():
        if key in SECTIONS:
            section_cls = SECTIONS[key]
            names = {f.name for f in dataclasses.fields(section_cls)}
            if not isinstance(value, dict):
                raise ValueError(f"{source}: section '{key}' must hold options (name: value), found {value!r}")
            if key == "model":  # the rest are the backbone's own options, checked by the backbone that reads them
                own = {k: v for k, v in value.items() if k not in names}
                value = {k: v for k, v in value.items() if k in names}
                value["options"] = {**getattr(config, key).options, **own}
            unknown = set(value) - names
            if unknown:
                raise ValueError(f"{source}: unknown option(s) in section '{key}': {sorted(unknown)}")
            value = as_flags_read(section_cls, value)
            check_types(section_cls, value, f"{source}: section '{key}'")
            setattr(config, key, section_cls(**{**vars(getattr(config, key)), **value}))
        elif key == "heads":
            config.heads = _heads(value, source)
        elif key == "exp_dir":
            if not isinstance(value, str):
                raise ValueError(f"{source}: exp_dir: {value!r} is not a path")
            config.exp_dir = value
        elif key == "version":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{source}: version: {value!r} is not a config version (a whole number)")
            config.version = value
        else:
            raise ValueError(f"{source}: unknown section '{key}'")
    if config.version > CONFIG_VERSION:
        raise ValueError(f"{source}: written by a newer audiotune (config version {config.version})")
    if config.version < WAVEFORM_NORM_VERSION and config.features.waveform_norm is False:
        config.features.waveform_norm = None  # the saved default then: the model's own normalisation
    if INPUT_RESOLVED_VERSION <= config.version < FEATURES_OWN_VERSION and config.features.features == "fbank":
        config.features.features = None  # the saved default then: the backbone's own input
    return config


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the config as YAML (the options as given, the model section resolved; actions such as ``--resume``
    at their defaults)."""
    from audiotune.outputs import write_bytes

    raw = config_to_dict(config)
    for section, section_cls in SECTIONS.items():
        for spec in dataclasses.fields(section_cls):
            if spec.metadata.get("action"):
                raw[section][spec.name] = spec.default
    write_bytes(path, yaml.safe_dump(raw, sort_keys=False))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The sections of a YAML config file (a run's config.yaml or a recipe), unchecked."""
    path = Path(path)
    if not path.is_file():
        if path.name == CONFIG_FILE:  # a run's own config
            raise FileNotFoundError(f"{path}: no {CONFIG_FILE} (is this a run directory written by `audiotune "
                                    "train`?)")
        raise FileNotFoundError(f"{path}: config file not found")
    return parse_config_file(path.read_bytes(), path)


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, but a key written twice in one mapping is an error (YAML itself keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key!r} is written twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, path: str | Path) -> Any:
    """The YAML document ``text`` of file ``path`` (safe types only); one that is not YAML, or writes a key twice in
    one mapping, is an error naming the file and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{at}: {problem}") from None


def parse_config_file(content: bytes, path: str | Path) -> dict[str, Any]:
    """The sections of the YAML config file ``path`` whose bytes are ``content``, unchecked; one that is not UTF-8,
    not YAML or not sections is an error naming the file (and the line)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a YAML config file (not UTF-8 text)") from None
    raw = parse_yaml(text, path) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected sections (data:, train:, ...), found a {type(raw).__name__}")
    return raw


def load_config(path: str | Path) -> RunConfig:
    """Read a config.yaml written by :func:`save_config`."""
    return config_from_dict(read_config_file(path), source=str(path))
