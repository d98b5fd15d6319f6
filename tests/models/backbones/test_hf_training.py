"""What builds the bare Hugging Face encoder (HFOptions) takes its defaults from the options of ``--model hf``
(HFSettings): built directly or from a run config, the same encoder options."""
from __future__ import annotations

import json
import shutil
from dataclasses import fields, replace
from pathlib import Path

from conftest import HF_RATE as RATE

from audiotune.config import RunConfig
from audiotune.models.backbones import resolve_config
from audiotune.models.backbones.hf_training import (
    FINE_TUNING_MASK_LENGTH,
    FINE_TUNING_MASK_PROB,
    HFOptions,
    HFSettings,
)
from audiotune.models.backbones.huggingface import HFBackbone


def test_options_built_directly_are_those_of_a_config_left_at_its_defaults(hf_checkpoints: dict[str, Path]) -> None:
    path = str(hf_checkpoints["w2v_layer"])
    direct = HFOptions(path)
    settings = HFSettings()
    shared = {spec.name for spec in fields(HFOptions)} & {spec.name for spec in fields(HFSettings)}
    unset = {"mask_time_prob", "mask_time_length"}  # None in the options: fine-tuning's then
    assert shared - unset and all(getattr(direct, name) == getattr(settings, name) for name in shared - unset)
    assert (direct.mask_time_prob, direct.mask_time_length) == (FINE_TUNING_MASK_PROB, FINE_TUNING_MASK_LENGTH)
    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", path
    resolve_config(config)
    assert HFOptions.from_config(config) == replace(direct, sample_rate=RATE)
    config.model.options.update(mask_time_prob=0.3, mask_time_length=3, layerdrop="checkpoint")
    assert HFOptions.from_config(config) == replace(direct, sample_rate=RATE, mask_time_prob=0.3, mask_time_length=3,
                                                    layerdrop=None)


def test_windows_are_counted_at_the_checkpoints_rate_unless_given(hf_checkpoints: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    slower = tmp_path / "slower"
    shutil.copytree(hf_checkpoints["w2v_layer"], slower)
    extractor = slower / "preprocessor_config.json"
    extractor.write_text(json.dumps({**json.loads(extractor.read_text()), "sampling_rate": RATE // 2}))
    assert HFBackbone(HFOptions(str(hf_checkpoints["w2v_layer"]))).sample_rate == RATE
    assert HFBackbone(HFOptions(str(slower))).sample_rate == RATE // 2
    assert HFBackbone(HFOptions(str(slower), sample_rate=RATE)).sample_rate == RATE
