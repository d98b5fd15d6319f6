"""The sampler options that exclude each other, checked from the config alone; the scoring batches."""
from __future__ import annotations

import pandas as pd
import pytest

from audiotune.config import RunConfig
from audiotune.data.loading import check_sampler_options, scoring_batches
from audiotune.data.samplers import PaddingRule


def config_with(**train: object) -> RunConfig:
    config = RunConfig()
    for name, value in train.items():
        setattr(config.train, name, value)
    return config


@pytest.mark.parametrize("options", [{}, {"balance": "oversample"}, {"bucket_sampler": True},
                                     {"dynamic_batch": 20.0}, {"group_batches": "subject"}])
def test_each_sampler_option_alone_is_accepted(options: dict) -> None:
    check_sampler_options(config_with(**options))


@pytest.mark.parametrize(("options", "message"), [
    ({"balance": "undersample", "bucket_sampler": True}, "--balance undersample draws its own epochs"),
    ({"balance": "oversample", "dynamic_batch": 20.0}, "--balance oversample draws its own epochs"),
    ({"group_batches": "subject", "balance": "oversample"}, "--group_batches subject draws its own batches"),
    ({"group_batches": "subject", "bucket_sampler": True}, "--group_batches subject draws its own batches"),
    ({"group_batches": "subject", "dynamic_batch": 20.0}, "--group_batches subject draws its own batches"),
])
def test_sampler_options_that_exclude_each_other_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_sampler_options(config_with(**options))


def test_scoring_batches_mix_lengths_only_where_padding_is_exact(caplog: pytest.LogCaptureFixture) -> None:
    config = config_with(batch_size=4)
    table = pd.DataFrame({"num_samples": [16000, 8000, 12000, 8100, 16000, 9000]})
    exact = list(scoring_batches(config, table, len(table)))
    assert exact == [[1, 3, 5, 2], [0, 4]]  # sorted by length, any mix of lengths
    assert not caplog.records
    inexact = list(scoring_batches(config, table, len(table), PaddingRule(False, 0.02, "group norm")))
    assert inexact == [[1, 3], [5], [2], [0, 4]]
    assert "at most 2% longer than the shortest: group norm" in caplog.text
