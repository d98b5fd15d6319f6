"""Config files: the backbone's options are written once, flat in the model section, and read back as written;
files of earlier releases, which wrote them twice (flat and under ``options:``), still read, and two copies that
differ are an error naming the file and the option."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from audiotune.config import OWN_MEANINGS_VERSION, RunConfig
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
    raw["version"] = OWN_MEANINGS_VERSION - 1
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
    earlier = OWN_MEANINGS_VERSION - 1
    path.write_text(yaml.safe_dump({"model": {"model": "ecapa_tdnn", "options": {"lin_neurons": 16}},
                                    "version": earlier}))
    assert load_config(path).model.options == {"lin_neurons": 16}
    path.write_text(yaml.safe_dump({"model": {"model": "ecapa_tdnn", "options": {"lin_neurons": 16}}}))
    with pytest.raises(ValueError, match=re.escape(f"{path}: model: options: write the backbone's options in the "
                                                   "model section itself")):
        load_config(path)  # a file of today's version (or none) means what the flags mean
    path.write_text(yaml.safe_dump({"model": {"model": "ecapa_tdnn", "options": [16]}, "version": earlier}))
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


@pytest.mark.parametrize("sections, refused", [
    ({"train": {"labeling_method": "soft"}}, "train: labeling_method: soft: the seed's soft drew a class"),
    ({"audio": {"reduce": True}}, "audio: reduce: an earlier release's channel option"),
    ({"audio": {"mono": "sum"}}, "audio: mono: an earlier release's channel option"),
])
def test_an_earlier_releases_spelling_means_it_in_its_version_and_is_refused_in_todays(
        tmp_path: Path, sections: dict, refused: str) -> None:
    """An earlier release wrote labeling_method soft for the vote distribution and reduce: true for the mean of
    the channels, where the flags mean the seeds' (a drawn class, the sum): read so in files of those versions,
    refused with the replacement in today's (and in a file without a version, a user's)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**sections, "version": OWN_MEANINGS_VERSION - 1}))
    config = load_config(path)
    assert config.train.labeling_method == "distribution"
    assert config.audio.channel_mode == sections.get("audio", {}).get("mono", "mean")
    for written in ({**sections, "version": OWN_MEANINGS_VERSION}, sections):
        path.write_text(yaml.safe_dump(written))
        with pytest.raises(ValueError, match=re.escape(f"{path}: {refused}")):
            load_config(path)


def test_a_value_yaml_reads_as_another_type_than_its_flag_is_read_as_the_flag_reads_it(tmp_path: Path) -> None:
    """YAML 1.1 reads 1e-4 as a string and 32 as a number: a config file's value means what the flag given the
    same text means (--learning_rate 1e-4, --precision 32, --devices 1)."""
    path = tmp_path / "recipe.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\nruntime:\n  precision: 32\n  devices: 1\nmodel:\n  freeze: 'no'\n")
    config = load_config(path)
    assert (config.train.learning_rate, config.runtime.precision, config.runtime.devices) == (1e-4, "32", "1")
    assert config.model.freeze is False  # as --freeze no
    path.write_text("train:\n  learning_rate: fast\n")
    with pytest.raises(ValueError, match=re.escape("learning_rate: 'fast' is not float")):
        load_config(path)


@pytest.mark.parametrize("text, message", [
    ("heads: 3\n", "heads: a list of heads (each columns, kind, name, ...), found 3"),
    ("heads:\n- {name: x, knd: binary}\n", "heads: {'name': 'x', 'knd': 'binary'}: each head holds columns, kind"),
    ("version: '6'\n", "version: '6' is not a config version (a whole number)"),
    ("exp_dir: [a, b]\n", "exp_dir: ['a', 'b'] is not a path"),
])
def test_a_malformed_heads_version_or_run_directory_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        load_config(path)
