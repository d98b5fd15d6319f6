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


def test_the_time_spans_options_without_a_masking_share_are_refused_in_fine_tuning(
        hf_checkpoints: dict[str, Path]) -> None:
    """Fine-tuning masks time spans only with --mask_time_prob above 0 (the checkpoint's share is not read): without
    it --mask_time_length and --mask_spans build the same encoder, and are refused; pretraining masks with the
    checkpoint's share, where they act; a resumed run made with them goes on, and they are no change of it."""
    import copy

    import pytest
    import torch

    from audiotune.config import CLASSIFIER_STAGES, Stage
    from audiotune.models.option_checks import refuse_inactive, without_idle_options

    config = RunConfig()
    config.model.model, config.model.checkpoint, config.model.freeze = "hf", str(hf_checkpoints["w2v_layer"]), False
    plain = resolve_config(config)
    idle = copy.deepcopy(plain)
    idle.model.options.update(mask_time_length=3, mask_spans="batch")
    built = [HFBackbone(HFOptions.from_config(c)).train() for c in (plain, idle)]
    waves, lengths = torch.randn(2, 4000), torch.tensor([4000, 3000])
    states = []
    for backbone in built:
        torch.manual_seed(0)
        states.append(backbone.hidden_states(waves, lengths)[0][-1])
    assert torch.equal(states[0], states[1])  # the same training pass: no span is masked either way
    with pytest.raises(ValueError, match=r"--mask_time_length 3: acts only with --mask_time_prob above 0 \(fine-"
                                         r"tuning masks no time spans without it\) / --mask_spans batch: acts only"):
        refuse_inactive(idle)
    refuse_inactive(idle, Stage.PRETRAIN)  # --objective tapt masks with the checkpoint's share
    acting = copy.deepcopy(idle)
    acting.model.options["mask_time_prob"] = 0.2
    refuse_inactive(acting)
    cleared = without_idle_options(idle, idle, CLASSIFIER_STAGES).model.options
    assert (cleared["mask_time_length"], cleared["mask_spans"]) == (None, "clip")
    assert without_idle_options(idle, idle).model.options["mask_spans"] == "batch"  # pretraining's: acting
    idle.train.resume = True
    refuse_inactive(idle)
