"""Declared option checks: a config file's values meet the same ranges and choices as the command line."""
from __future__ import annotations

import pytest

from audiotune.config import RunConfig
from audiotune.config.files import load_config, save_config
from audiotune.config.options import INF, describe_range
from audiotune.config.run import check_config


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


def test_an_option_acts_everywhere_unless_it_names_its_stages():
    import dataclasses

    from audiotune.config import (
        CLASSIFIER_STAGES,
        ENCODING,
        EVERYWHERE,
        FINE_TUNING,
        PRETRAINING,
        WHILE_TRAINING,
        Stage,
        acts_of,
        describe_acts,
        inactive_options,
        option,
    )

    @dataclasses.dataclass
    class Settings:
        size: int = option(3, "everywhere")
        masks: float = option(0.0, "while the encoder trains", acts=WHILE_TRAINING)
        labels: list[int] = option([1, 2], "in pretraining", acts=PRETRAINING)

    size, masks, labels = dataclasses.fields(Settings)
    assert (acts_of(size), acts_of(masks), acts_of(labels)) == (EVERYWHERE, WHILE_TRAINING, PRETRAINING)
    assert inactive_options(Settings(), ENCODING) == []  # at their defaults: nothing to refuse
    changed = Settings(size=5, masks=0.1, labels=[1, 2, 3])
    assert [(spec.name, value) for spec, value in inactive_options(changed, ENCODING)] == [("masks", 0.1),
                                                                                           ("labels", [1, 2, 3])]
    assert [spec.name for spec, _ in inactive_options(changed, CLASSIFIER_STAGES)] == ["labels"]
    assert inactive_options(changed, frozenset({Stage.PRETRAIN})) == []
    texts = {stages: describe_acts(stages) for stages in (WHILE_TRAINING, FINE_TUNING, PRETRAINING,
                                                          CLASSIFIER_STAGES)}
    assert len(set(texts.values())) == 4 and texts[PRETRAINING] == "acts only in audiotune pretrain"
    assert texts[WHILE_TRAINING] == "acts only while the encoder trains"
