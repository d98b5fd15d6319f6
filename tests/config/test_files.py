"""Config files: the backbone's options are written once, flat in the model section, and read back as written;
files of earlier releases, which wrote them twice (flat and under ``options:``), still read, and two copies that
differ are an error naming the file and the option."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from audiotune.config import RunConfig
from audiotune.config.files import config_to_dict, load_config, save_config
from audiotune.models.backbones import resolve_config


def ecapa_config() -> RunConfig:
    """The default backbone's config, its options complete as a run writes them."""
    config = resolve_config(RunConfig())
    config.model.options["res2net_scale"] = 2
    return config


def written(tmp_path: Path, config: RunConfig) -> tuple[Path, dict]:
    path = tmp_path / "config.yaml"
    save_config(config, path)
    return path, yaml.safe_load(path.read_text())


def test_the_backbones_options_are_written_once_flat_and_read_back(tmp_path: Path) -> None:
    config = ecapa_config()
    path, raw = written(tmp_path, config)
    assert "options" not in raw["model"]
    assert {name: raw["model"][name] for name in config.model.options} == config.model.options
    assert path.read_text().count("res2net_scale:") == 1
    assert load_config(path).model.options == config.model.options
    # an edit of the one copy is what loads
    path.write_text(path.read_text().replace("res2net_scale: 2", "res2net_scale: 4"))
    assert load_config(path).model.options["res2net_scale"] == 4


def earlier_release_file(tmp_path: Path, nested: dict) -> Path:
    """A config.yaml as earlier releases wrote it: the options flat and again under ``options:``."""
    raw = config_to_dict(ecapa_config())
    raw["model"]["options"] = {**{k: raw["model"][k] for k in ecapa_config().model.options}, **nested}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_file_with_both_copies_alike_reads_as_written(tmp_path: Path) -> None:
    path = earlier_release_file(tmp_path, {})
    assert path.read_text().count("res2net_scale: 2") == 2
    config = load_config(path)
    assert config.model.options == ecapa_config().model.options
    save_config(config, tmp_path / "again.yaml")  # written again: one copy
    assert (tmp_path / "again.yaml").read_text().count("res2net_scale:") == 1


def test_copies_that_differ_are_an_error_naming_the_file_and_the_option(tmp_path: Path) -> None:
    path = earlier_release_file(tmp_path, {"res2net_scale": 4})
    expected = (f"{path}: model option 'res2net_scale' is written twice and the copies differ (res2net_scale: 2 in "
                "the model section, 4 under its 'options:')")
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_config(path)


def test_options_given_only_under_options_read(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": {"model": "ecapa_tdnn", "options": {"lin_neurons": 16}}}))
    assert load_config(path).model.options == {"lin_neurons": 16}
    path.write_text(yaml.safe_dump({"model": {"model": "ecapa_tdnn", "options": [16]}}))
    with pytest.raises(ValueError, match=re.escape(f"{path}: model section: 'options' must hold the backbone's")):
        load_config(path)


def test_a_config_file_writing_an_option_twice_is_refused_naming_the_line(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys; a config file whose two values of one option disagree is an error."""
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 5\n  batch_size: 4\n  epochs: 50\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not valid YAML at line 4, column 3: 'epochs' is "
                                         "written twice in one mapping"):
        load_config(path)
    path.write_text("train:\n  epochs: 5\ndata:\n  seed: 3\n")  # one key in each of two mappings
    assert (load_config(path).train.epochs, load_config(path).data.seed) == (5, 3)
