"""Settings records of experiment folders: a rerun asking for other settings is refused naming them; a setting
recorded only since a folder was made does not stop that folder from going on."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audiotune.engine.records import check_settings_record
from audiotune.outputs import RunDirError


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
