"""Settings records of experiment folders: a rerun asking for other settings is refused naming them; a setting
recorded only since a folder was made does not stop that folder from going on."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from audiotune.config import OWN_MEANINGS_VERSION, RunConfig, config_to_dict
from audiotune.engine.records import check_settings_record
from audiotune.outputs import RunDirError


def _cv_record(config: RunConfig) -> dict:
    sections = config_to_dict(config)
    sections.pop("exp_dir")
    sections.pop("heads")
    return {"folds": {"folds": 3}, "config": sections}


def test_a_setting_that_differs_is_named_and_one_recorded_only_since_is_taken_as_given(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    record = {"space": {"metric": "val_loss"}, "pruning": {"pruner": "median", "prune_after": 2}}
    path.write_text(yaml.safe_dump(record))
    check_settings_record(path, record, "a sweep", "continue it")  # the same settings: goes on
    with pytest.raises(RunDirError, match=r"differs in pruning\.pruner\)"):
        check_settings_record(path, {**record, "pruning": {"pruner": "none", "prune_after": 2}}, "a sweep",
                              "continue it")
    path.write_text(yaml.safe_dump({"space": record["space"]}))  # written before pruning was recorded
    check_settings_record(path, record, "a sweep", "continue it")
    with pytest.raises(RunDirError, match=r"differs in space\.metric\)"):
        check_settings_record(path, {**record, "space": {"metric": "val_uar"}}, "a sweep", "continue it")


def test_a_record_of_an_earlier_release_is_read_with_the_meanings_of_its_version(tmp_path: Path) -> None:
    """A folder made by an earlier release records its config as that release wrote it: its version's meanings
    (``waveform_norm: false`` was the default then: the model's own normalisation) and the defaults it had where
    the runs run (``num_workers: 0``) are not other settings; another learning rate is."""
    record = _cv_record(RunConfig())
    earlier = copy.deepcopy(record)
    earlier["config"].update(version=1)
    earlier["config"]["features"]["waveform_norm"] = False
    earlier["config"]["runtime"].update(num_workers=0, audio_cache=False)
    del earlier["config"]["train"]["val_share"]  # added since: at its default
    path = tmp_path / "cv_config.yaml"
    path.write_text(yaml.safe_dump(earlier))
    check_settings_record(path, record, "a cross-validation", "resume it")
    folded = copy.deepcopy(earlier)  # written when the worker count and precision were train options
    folded["config"]["train"].update(folded["config"].pop("runtime"))
    path.write_text(yaml.safe_dump(folded))
    check_settings_record(path, record, "a cross-validation", "resume it")
    earlier["config"]["train"]["learning_rate"] = 0.5
    path.write_text(yaml.safe_dump(earlier))
    with pytest.raises(RunDirError, match=r"differs in config\.train\.learning_rate\)"):
        check_settings_record(path, record, "a cross-validation", "resume it")


def test_a_value_that_did_nothing_is_the_same_settings_as_none(tmp_path: Path) -> None:
    """A folder made before -lr was refused with --scheduler onecycle records its rate; a rerun without it (or a
    sweep whose base holds a recipe's raw layer weights without --weighted) asks for the same settings. Where the
    switch is on, the value is a setting."""
    record = _cv_record(RunConfig())
    config = record["config"]
    config["train"]["scheduler"] = "onecycle"
    earlier = copy.deepcopy(record)
    earlier["config"]["train"]["learning_rate"] = 1e-4
    earlier["config"]["classifier"]["layer_weights"] = "raw"
    path = tmp_path / "cv_config.yaml"
    path.write_text(yaml.safe_dump(earlier))
    check_settings_record(path, record, "a cross-validation", "resume it")
    check_settings_record(path, earlier, "a cross-validation", "resume it")
    weighted = copy.deepcopy(record)
    weighted["config"]["classifier"]["weighted"] = True
    earlier["config"]["classifier"]["weighted"] = True
    path.write_text(yaml.safe_dump(earlier))
    # (and in --weighted: with ECAPA-TDNN, the default model, a softmax-weighted sum of its one state does nothing)
    with pytest.raises(RunDirError, match=r"differs in config\.classifier\.layer_weights[,)]"):
        check_settings_record(path, weighted, "a cross-validation", "resume it")


def test_a_backbone_option_added_since_a_folder_was_made_counts_as_its_default(tmp_path: Path) -> None:
    """A folder made before ECAPA-TDNN had read_padding records its model section without it; a rerun whose settings
    hold it at its default (a recipe's value read at its default) asks for the same settings; where it acts, on, it
    is another setting."""
    made = RunConfig()
    made.model.model, made.features.features, made.features.target_length = "ecapa_tdnn", "fbank", 100
    record = _cv_record(made)
    config = record["config"]
    config["model"]["read_padding"] = False
    earlier = copy.deepcopy(record)
    del earlier["config"]["model"]["read_padding"]  # as the folder's record was written
    path = tmp_path / "cv_config.yaml"
    path.write_text(yaml.safe_dump(earlier))
    check_settings_record(path, record, "a cross-validation", "resume it")
    config["model"]["read_padding"] = True
    with pytest.raises(RunDirError, match=r"differs in config\.model\.read_padding\)"):
        check_settings_record(path, record, "a cross-validation", "resume it")


def test_a_record_written_with_the_backbone_options_nested_is_the_same_settings(tmp_path: Path) -> None:
    """An earlier release wrote the backbone's options both flat and nested under ``options``: the same settings;
    a value written twice that differs is an error naming the record."""
    config = RunConfig()
    config.model.model, config.model.options = "ecapa_tdnn", {"lin_neurons": 16, "res2net_scale": 8}
    record = _cv_record(config)
    earlier = copy.deepcopy(record)
    earlier["config"]["model"]["options"] = dict(config.model.options)
    earlier["config"]["version"] = OWN_MEANINGS_VERSION - 1
    path = tmp_path / "cv_config.yaml"
    path.write_text(yaml.safe_dump(earlier))
    check_settings_record(path, record, "a cross-validation", "resume it")
    earlier["config"]["model"]["options"]["res2net_scale"] = 4
    path.write_text(yaml.safe_dump(earlier))
    with pytest.raises(ValueError, match="cv_config.yaml: model option 'res2net_scale' is written twice"):
        check_settings_record(path, record, "a cross-validation", "resume it")


def test_a_folder_of_version_3_asked_for_its_features_by_name_goes_on(tmp_path: Path) -> None:
    """Versions 2 and 3 saved --features fbank for "the model's own" (read back as unset); the command that made
    the folder, typed again with --features fbank (ECAPA-TDNN's own input), asks for the same settings; another
    front end does not."""
    record = _cv_record(RunConfig())
    earlier = copy.deepcopy(record)
    earlier["config"].update(version=3)
    earlier["config"]["features"]["features"] = "fbank"
    path = tmp_path / "cv_config.yaml"
    path.write_text(yaml.safe_dump(earlier))
    typed = copy.deepcopy(record)
    typed["config"]["features"]["features"] = "fbank"
    check_settings_record(path, typed, "a cross-validation", "resume it")
    check_settings_record(path, record, "a cross-validation", "resume it")
    typed["config"]["features"]["features"] = "mfcc"
    with pytest.raises(RunDirError, match=r"differs in config\.features\.features\)"):
        check_settings_record(path, typed, "a cross-validation", "resume it")


def test_the_same_files_named_from_another_folder_are_the_same_settings(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cross-validation made from one folder, run again from another with the same table, labels and audio spelt
    by other relative paths (or absolute ones), goes on; another table is another setting."""
    import json

    made, other = tmp_path / "made", tmp_path / "other"
    for folder in (made / "data" / "audio", other):
        folder.mkdir(parents=True)
    for name in ("table.csv", "labels.txt", "another.csv"):
        (made / "data" / name).write_text("uid\n")
    exp = made / "cv"
    exp.mkdir()
    (exp / "command.json").write_text(json.dumps([{"argv": ["audiotune", "cv"], "cwd": str(made)}]))

    def record(source: str, labels: str, audio: str) -> dict:
        config = RunConfig()
        config.data.label_txt, config.data.prefix = labels, audio
        return {**_cv_record(config), "source": source}

    (exp / "cv_config.yaml").write_text(yaml.safe_dump(record("data/table.csv", "data/labels.txt", "data/audio")))
    monkeypatch.chdir(other)
    check_settings_record(exp / "cv_config.yaml", record("../made/data/table.csv", str(made / "data/labels.txt"),
                                                         "../made/data/audio"), "a cross-validation", "resume it")
    with pytest.raises(RunDirError, match=r"differs in source\)"):
        check_settings_record(exp / "cv_config.yaml", record("../made/data/another.csv", "../made/data/labels.txt",
                                                             "../made/data/audio"), "a cross-validation", "resume it")
