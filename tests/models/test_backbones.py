"""The registry's check of a resolved config against the stages its backbone's options act in
(:func:`~audiotune.models.option_checks.refuse_inactive`), walked over every option every backbone declares."""
from __future__ import annotations

import pytest
from conftest import backbone_option_cases, non_default_value

from audiotune.config import RESAMPLED_LENGTH_VERSION, RunConfig, Stage, acts_of, default_of, describe_acts
from audiotune.models.backbones import input_spec, reads_option
from audiotune.models.option_checks import refuse_inactive


def config_with(backbone: str, options: dict, freeze: bool | None = None) -> RunConfig:
    config = RunConfig()
    config.model.model, config.model.options, config.model.freeze = backbone, dict(options), freeze
    return config


@pytest.mark.parametrize("stage", list(Stage), ids=lambda stage: stage.value)
@pytest.mark.parametrize(("backbone", "spec"), backbone_option_cases(),
                         ids=[f"{name}-{spec.name}" for name, spec in backbone_option_cases()])
def test_an_option_set_where_it_does_nothing_is_refused_naming_where_it_acts(backbone: str, spec,
                                                                              stage: Stage) -> None:
    value = non_default_value(backbone, spec)
    options = {spec.name: value}
    needs = spec.metadata.get("needs")
    switched = {}  # a switch of another section (model.objective): a value that holds
    if needs is not None and "." in needs.switch:  # its switch on, so that only the stage decides
        section, name = needs.switch.split(".")
        switched[section, name] = next(on for on in ("tapt", "ptapt", True, 1) if needs.holds(on))
    elif needs is not None:
        switch = next(other for name, other in backbone_option_cases() if name == backbone and
                      other.name == needs.switch)
        options[switch.name] = non_default_value(backbone, switch)
        assert needs.holds(options[switch.name])
    config = config_with(backbone, options)
    for (section, name), on in switched.items():
        setattr(getattr(config, section), name, on)
    if stage in acts_of(spec, value):
        refuse_inactive(config, stage)
        return
    with pytest.raises(ValueError) as refused:
        refuse_inactive(config, stage)
    assert f"--{spec.name} {value}: {describe_acts(acts_of(spec, value))}" in str(refused.value)
    # the advice to train the encoder only where that would make the option act
    advised = stage is Stage.ENCODE and Stage.FINE_TUNE in acts_of(spec, value)
    assert ("add --freeze false" in str(refused.value)) == advised


@pytest.mark.parametrize("backbone", sorted({name for name, _ in backbone_option_cases()}))
def test_every_option_at_its_default_passes_in_every_stage(backbone: str) -> None:
    """A saved run's config.yaml lists every option of its backbone, most at their defaults."""
    defaults = {spec.name: default_of(spec) for name, spec in backbone_option_cases() if name == backbone}
    for stage in Stage:
        refuse_inactive(config_with(backbone, defaults), stage)


def test_without_a_stage_the_freezing_decides_whether_the_encoder_trains() -> None:
    masked = {"mask_time_prob": 0.2, "gradient_checkpointing": True}
    refuse_inactive(config_with("hf", masked, freeze=False))
    with pytest.raises(ValueError, match=r"--mask_time_prob 0.2: acts only while the encoder trains; the encoder is "
                                         r"frozen .*add --freeze false, or --frozen_train_mode .* / "
                                         r"--gradient_checkpointing True"):
        refuse_inactive(config_with("hf", masked, freeze=True))
    in_training_mode = config_with("hf", masked, freeze=True)
    in_training_mode.model.frozen_train_mode = True  # a frozen encoder in training mode: its masks act
    refuse_inactive(in_training_mode)
    with pytest.raises(ValueError, match=r"^--pseudo_labels l.parquet: acts only in audiotune pretrain$"):
        refuse_inactive(config_with("hf", {"pseudo_labels": "l.parquet"}, freeze=False))


def test_before_the_backbone_settles_freezing_only_what_acts_in_neither_train_stage_is_refused() -> None:
    """A config whose --freeze is not resolved yet (a job's command, checked where its checkpoint cannot be read)."""
    refuse_inactive(config_with("hf", {"mask_time_prob": 0.2, "gradient_checkpointing": True}))
    with pytest.raises(ValueError, match=r"^--pseudo_labels l.parquet: acts only in audiotune pretrain$"):
        refuse_inactive(config_with("hf", {"pseudo_labels": "l.parquet"}))
    with pytest.raises(ValueError, match=r"^--task pretrain_mpc: acts only in audiotune pretrain$"):
        refuse_inactive(config_with("ssast", {"task": "pretrain_mpc"}))


def test_an_option_whose_values_belong_to_stages_is_refused_by_value() -> None:
    """SSAST's --task names the tokens a classifier pools (ft_cls, ft_avgtok) or a pretraining objective: train
    with a pretraining task, or pretrain with a fine-tuning one, would quietly do the other thing."""
    refuse_inactive(config_with("ssast", {"task": "ft_avgtok"}), Stage.FINE_TUNE)
    refuse_inactive(config_with("ssast", {"task": "pretrain_mpg"}), Stage.PRETRAIN)
    with pytest.raises(ValueError, match=r"^--task pretrain_joint: acts only in audiotune pretrain$"):
        refuse_inactive(config_with("ssast", {"task": "pretrain_joint"}), Stage.FINE_TUNE)
    with pytest.raises(ValueError, match=r"^--task ft_avgtok: acts where the encoder encodes labelled clips"):
        refuse_inactive(config_with("ssast", {"task": "ft_avgtok"}), Stage.PRETRAIN)


def test_runs_of_an_earlier_config_version_read_soxr_s_count_of_resampled_samples() -> None:
    """From config version 6 a resampled clip has ceil(N * target / rate) samples (the seeds' count); a run written
    before it reads its clips with soxr's rounded count, as it was trained (audiotune.data.resample)."""
    config = RunConfig()
    config.model.model = "ecapa_tdnn"
    assert input_spec(config).audio(train=True).resampled_length == "ceil"
    config.version = RESAMPLED_LENGTH_VERSION - 1
    assert input_spec(config).audio().resampled_length == input_spec(config).resampled_length == "round"


def test_a_backbone_reads_the_model_options_of_the_abilities_it_has() -> None:
    """--freeze_feature_encoder / --freeze_feature_projection need a separate convolutional front end (the help of
    a backbone without one leaves them out); every other model-section option is read by every backbone."""
    encoder = "model.freeze_feature_encoder"
    assert reads_option("hf", encoder) and reads_option("whisper", encoder) and reads_option(None, encoder)
    assert not reads_option("ecapa_tdnn", "model.freeze_feature_projection") and not reads_option("ssast", encoder)
    assert reads_option("ecapa_tdnn", "model.frozen_train_mode")
