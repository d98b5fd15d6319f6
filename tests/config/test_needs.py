"""Options that act only while a switch is on (``--speed_range`` with ``--speed``): set while the switch is off
they are refused naming the switch, accepted with it on, and no change of a resumed run either way."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from conftest import HF_TINY, SMALL_ECAPA, save_hf_checkpoint

from audiotune.cli import build_parser, config_from_args
from audiotune.config import RunConfig, save_config
from audiotune.engine.resume import resumed_changes
from audiotune.models.backbones import resolve_config
from audiotune.models.option_checks import refuse_inactive, without_idle_options

# each option with a switch: a value away from its default, and the flags that turn its switch on
CASES = {
    "--vtlp_range": (["0.8", "1.2"], ["--vtlp", "0.5"]),
    "--pshiftn": (["5"], ["--pshift", "0.5"]),
    "--speed_range": (["0.8", "0.9"], ["--speed", "0.5"]),
    "--speed_crop": (["false"], ["--speed", "0.5"]),
    "--cut_max": (["0.2"], ["--cut_edges", "0.5"]),
    "--sd_bottleneck": (["32"], ["--shared_dense", "true"]),
    "--layernorm": (["true"], ["--clf_bottleneck", "8"]),
    "--num_buckets": (["2"], ["--bucket_sampler", "true"]),
    "--max_lr": (["0.1"], ["--scheduler", "onecycle"]),
    "--warmup_steps": (["3"], ["--scheduler", "linear"]),
    "--warmup_ratio": (["0.1"], ["--scheduler", "linear"]),
    "--flat_ratio": (["0"], ["--scheduler", "linear"]),
    "--weight_decay": (["0.5"], ["--optim", "adamw"]),
    "--num_mel_bins": (["32"], ["--features", "fbank"]),
    "--dataset_mean": (["-5"], ["--dataset_std", "4"]),
    "--allow_changes": (["true"], ["--resume"]),
    "--layer": (["0"], ["--weighted", "false"]),
    "--frozen_train_mode": (["true"], ["--freeze", "true"]),  # a trained encoder runs in training mode anyway
}
SWITCHES_OFF = ["--clf_bottleneck", "0", "--scheduler", "none", "--optim", "adam", "--features", "mfcc", "--weighted",
                "true"]


def config(*flags: str) -> RunConfig:
    args = build_parser("ecapa_tdnn").parse_args(["train", "-d", "x", "-o", "o", *SMALL_ECAPA, *flags])
    return resolve_config(config_from_args(args, read_inputs=False))


@pytest.mark.parametrize("flag", CASES)
def test_an_option_whose_switch_is_off_is_refused_naming_the_switch(flag: str) -> None:
    value, switch_on = CASES[flag]
    with pytest.raises(ValueError, match=rf"--{flag[2:]} [^:]+: acts only with {switch_on[0]}"):
        refuse_inactive(config(*_switches_off(switch_on[0]), flag, *value))
    refuse_inactive(config(flag, *value, *switch_on))  # with its switch on it acts


def _switches_off(switch: str) -> list[str]:
    """The flags that turn ``switch`` off where it is on by default."""
    pairs = dict(zip(SWITCHES_OFF[::2], SWITCHES_OFF[1::2]))
    return [switch, pairs[switch]] if switch in pairs else []


def test_a_warm_up_is_given_in_steps_or_as_a_share_of_them_not_both() -> None:
    refuse_inactive(config("--scheduler", "cosine", "--warmup_ratio", "0.1"))
    with pytest.raises(ValueError, match=r"--warmup_ratio 0.1: acts only with --scheduler cosine or linear, "
                                         r"without --warmup_steps"):
        refuse_inactive(config("--scheduler", "cosine", "--warmup_ratio", "0.1", "--warmup_steps", "5"))


def test_dynamic_batch_turns_the_length_buckets_on() -> None:
    refuse_inactive(config("--num_buckets", "2", "--dynamic_batch", "20"))


def test_an_idle_option_is_no_change_of_a_resumed_run() -> None:
    """A run made with an option that did nothing resumes without it (and with it) as the same run."""
    made = config("--speed_range", "0.8", "0.9", "--num_buckets", "2")
    assert made.augment.speed_range == [0.8, 0.9]
    cleared = without_idle_options(made, made)
    assert cleared.augment.speed_range == RunConfig().augment.speed_range
    assert cleared.train.num_buckets == RunConfig().train.num_buckets
    assert made.augment.speed_range == [0.8, 0.9]  # a copy: the config itself is kept
    acting = config("--speed_range", "0.8", "0.9", "--speed", "0.5")
    assert without_idle_options(copy.deepcopy(acting), acting).augment.speed_range == [0.8, 0.9]


def test_a_resumed_waveform_run_made_with_an_option_of_spectrogram_frames_is_no_change_without_it(
        tmp_path: Path) -> None:
    """A wav2vec2 run made with --dataset_mean (which it never read, and is refused now) resumes without it as the
    same run; --target_length, which cropped its waveforms, still counts."""
    transformers = pytest.importorskip("transformers")
    encoder = save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)),
                                 tmp_path / "encoder")
    made = RunConfig()
    made.model.model, made.model.checkpoint = "hf", str(encoder)
    made.features.dataset_mean, made.features.dataset_std, made.features.target_length = -3.0, 2.0, 400
    cleared = without_idle_options(made, made)
    assert (cleared.features.dataset_mean, cleared.features.dataset_std) == (None, None)
    assert cleared.features.target_length == 400
    made.features.target_length = 0
    with pytest.raises(ValueError, match="--dataset_mean -3.0 --dataset_std 2.0: act on spectrogram frames"):
        resolve_config(copy.deepcopy(made))
    made.train.resume = True  # its config.yaml given again (--config RUN/config.yaml --resume) goes on
    resolve_config(copy.deepcopy(made))


def test_the_layer_of_a_weighted_sum_is_refused_and_no_change_of_a_resumed_run(tmp_path: Path) -> None:
    """With --weighted true the heads read the weighted sum whatever --layer says (the same logits either way)."""
    import torch

    from audiotune.config import HeadSpec
    from audiotune.models.backbones import build_backbone
    from audiotune.models.classifier import Classifier

    transformers = pytest.importorskip("transformers")
    encoder = save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)),
                                 tmp_path / "encoder")
    made = RunConfig()
    made.model.model, made.model.checkpoint, made.classifier.weighted = "hf", str(encoder), True
    resolve_config(made)
    backbone, heads = build_backbone(made, pretrained=True).eval(), [HeadSpec("y", "categorical", ["y"], ["a", "b"])]
    torch.manual_seed(0)
    weighted = Classifier(backbone, heads, made.classifier, freeze_backbone=True).eval()
    made.classifier.layer = 1
    torch.manual_seed(0)
    with_layer = Classifier(backbone, heads, made.classifier, freeze_backbone=True).eval()
    waves, lengths = torch.randn(2, 4000), torch.tensor([4000, 3000])
    assert torch.equal(weighted(waves, lengths), with_layer(waves, lengths))
    with pytest.raises(ValueError, match="--layer 1: acts only with --weighted false"):
        refuse_inactive(made)
    assert without_idle_options(made, made).classifier.layer == -1  # resumed with it or without: the same run
    made.train.resume = True
    refuse_inactive(made)


def test_the_learning_rate_is_refused_with_the_onecycle_schedule_which_sets_the_rate_itself() -> None:
    with pytest.raises(ValueError, match=r"--learning_rate 0\.1: acts only with --scheduler none, cosine or linear "
                                         r"\(onecycle sets the rate itself: from --max_lr / 25"):
        refuse_inactive(config("--scheduler", "onecycle", "-lr", "0.1"))
    refuse_inactive(config("--scheduler", "onecycle", "--max_lr", "0.1"))  # its rate: --max_lr
    for scheduler in ("none", "cosine", "linear"):
        refuse_inactive(config("--scheduler", scheduler, "-lr", "0.1"))


def test_raw_layer_weights_need_the_weighted_sum(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    encoder = save_hf_checkpoint(transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**HF_TINY)),
                                 tmp_path / "encoder")

    def hf(*flags: str) -> RunConfig:
        args = build_parser("hf").parse_args(["train", "-d", "x", "-o", "o", "--model", "hf", "-c", str(encoder),
                                              *flags])
        return resolve_config(config_from_args(args, read_inputs=False))

    with pytest.raises(ValueError, match=r"^--layer_weights raw: acts only with --weighted true$"):
        refuse_inactive(hf("--layer_weights", "raw"))
    refuse_inactive(hf("--layer_weights", "raw", "--weighted", "true"))


def test_a_run_made_with_the_learning_rate_of_a_onecycle_schedule_resumes_with_or_without_it(
        tmp_path: Path) -> None:
    """Its config.yaml (the NAIP SSAST recipe's learning_rate: 0.0001 beside scheduler: onecycle) resumes as the
    same run: with the flag, without it, and from the file itself (--config RUN/config.yaml)."""
    made = config("--scheduler", "onecycle")
    made.train.learning_rate = 1e-4  # accepted before the rate of onecycle was refused
    run = tmp_path / "run"
    run.mkdir()
    save_config(made, run / "config.yaml")
    for flags in (["-lr", "0.0001"], [], ["--config", str(run / "config.yaml")]):
        resumed = config("--scheduler", "onecycle", "--resume", *flags)
        refuse_inactive(resumed)
        assert resumed_changes(run, resumed) == {}, flags
