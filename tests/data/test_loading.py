"""The sampler options that exclude each other, checked from the config alone."""
from __future__ import annotations

import pytest

from audiotune.config import RunConfig
from audiotune.data.loading import check_sampler_options


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
