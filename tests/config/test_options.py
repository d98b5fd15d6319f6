"""Declared option checks: a config file's values meet the same ranges and choices as the command line."""
from __future__ import annotations

import pytest

from audiotune.config import RunConfig
from audiotune.config.files import load_config, save_config
from audiotune.config.options import INF, describe_range
from audiotune.config.sections import check_config


def test_ranges_read_as_written():
    assert describe_range(0, 2**32 - 1, True, True) == "[0, 4294967295]"
    assert describe_range(0, 0.5, False, True) == "(0, 0.5]"
    assert describe_range(-INF, INF, False, False) == "(-inf, inf)"


def test_a_config_files_value_outside_an_options_choices_is_refused_with_the_flag_and_the_choices():
    config = RunConfig()
    check_config(config)
    config.train.scheduler = "exponential"
    config.classifier.pooling_mode = "median"
    with pytest.raises(ValueError) as err:
        check_config(config)
    message = str(err.value)
    assert "--scheduler exponential: choose one of" in message and "cosine" in message
    assert "--pooling_mode median: choose one of" in message


def test_an_unset_optional_choice_is_not_a_problem():
    config = RunConfig()
    check_config(config)


def test_a_saved_config_holds_no_action_so_reusing_it_neither_resumes_nor_overwrites(tmp_path):
    config = RunConfig()
    config.train.resume = config.train.overwrite = config.train.allow_changes = True
    config.train.epochs = 7
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert (again.train.resume, again.train.overwrite, again.train.allow_changes) == (False, False, False)
    assert again.train.epochs == 7 and config.train.resume  # the options kept; the caller's config untouched
