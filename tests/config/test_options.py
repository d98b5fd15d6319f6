"""Declared option checks: a config file's values meet the same ranges and choices as the command line."""
from __future__ import annotations

import pytest

from audiotune.config import RunConfig
from audiotune.config.sections import check_config


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
