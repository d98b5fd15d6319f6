"""Task-adaptive pretraining of a wav2vec2 encoder (``audiotune pretrain --model hf --objective tapt``)."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import HF_TINY, OnDevice, make_uid_dataset, outputs_on_meta, recorded_attention_masks
from safetensors.torch import load_file

from audiotune.cli import main
from audiotune.config import RunConfig
from audiotune.engine.module import warmup_flat_linear
from audiotune.models.backbones.hf_masks import host_time_mask
from audiotune.models.backbones.hf_pretraining import (
    Wav2Vec2Tapt,
    gumbel_temperature,
    random_crop,
    sample_negatives,
    sample_negatives_anywhere,
)

transformers = pytest.importorskip("transformers")

# a tiny wav2vec2 with its pretraining parts: 2 codebooks of 8 entries, 5 distractors, 2-frame spans
PRETRAINING = {**HF_TINY, "feat_extract_norm": "layer", "do_stable_layer_norm": True, "num_codevector_groups": 2,
               "num_codevectors_per_group": 8, "codevector_dim": 16, "proj_codevector_dim": 16, "num_negatives": 5,
               "mask_time_prob": 0.2, "mask_time_length": 2, "layerdrop": 0.0}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A pretraining checkpoint (quantizer included), the same encoder without its quantizer, and a HuBERT."""
    root = tmp_path_factory.mktemp("tapt")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(**PRETRAINING)
    full = transformers.Wav2Vec2ForPreTraining(config)
    extractor = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                                      do_normalize=True, return_attention_mask=True)
    paths = {"pretraining": root / "pretraining", "bare": root / "bare", "hubert": root / "hubert"}
    full.save_pretrained(paths["pretraining"])
    full.wav2vec2.save_pretrained(paths["bare"])
    hubert = transformers.HubertConfig(**{**HF_TINY, "feat_extract_norm": "layer", "do_stable_layer_norm": True})
    transformers.HubertModel(hubert).save_pretrained(paths["hubert"])
    for path in paths.values():
        extractor.save_pretrained(path)
    return paths


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_uid_dataset(tmp_path_factory.mktemp("data"))


def pretrain_args(ds: dict, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--model", "hf", "-c", str(checkpoint), "--objective", "tapt", "-i", str(ds["prefix"]),
            "-d", str(ds["split"]), "-o", str(out), "-bs", "4", "-lr", "2e-3", "--seed", "0", "--clip_length", "0",
            *extra]


# ------------------------------------------------------------------ masks, distractors, crops, schedules


def test_distractors_are_other_masked_frames_of_the_same_clip() -> None:
    rng = np.random.default_rng(1)
    mask = host_time_mask("clip", [40, 40], total=40, prob=0.3, length=3, rng=rng, at_least=2)
    negatives = sample_negatives(mask, 7, rng)
    for row in range(2):
        for frame in np.flatnonzero(mask[row]):
            drawn = negatives[row, frame] - row * 40
            assert (drawn != frame).all() and mask[row, drawn].all()


def test_distractors_anywhere_are_other_frames_of_the_clip_masked_or_not() -> None:
    """transformers 4.10's draw (--tapt_loss batch): any other frame of the clip's first frames[b]."""
    rng = np.random.default_rng(2)
    mask = host_time_mask("clip", [40, 30], total=40, prob=0.3, length=3, rng=rng, at_least=2)
    negatives = sample_negatives_anywhere(mask, [40, 30], 50, rng)
    drawn_unmasked = False
    for row, frames in enumerate((40, 30)):
        for frame in np.flatnonzero(mask[row]):
            drawn = negatives[row, frame] - row * 40
            assert (drawn != frame).all() and (drawn >= 0).all() and (drawn < frames).all()
            drawn_unmasked |= bool((~mask[row][drawn]).any())
    assert drawn_unmasked  # unmasked frames are distractors too, unlike sample_negatives


def test_tapt_loss_batch_sums_the_contrastive_loss_and_weighs_the_diversity_once(
        checkpoints: dict[str, Path]) -> None:
    def losses(kind: str) -> dict[str, torch.Tensor]:
        config = RunConfig()
        config.audio.resample_rate, config.model.model = 16000, "hf"
        config.model.options["tapt_loss"] = kind
        torch.manual_seed(0)
        return Wav2Vec2Tapt(str(checkpoints["pretraining"]), config).loss(
            torch.randn(2, 8000), torch.tensor([8000, 6000]), 0, random.Random(0))

    frame, batch = losses("frame"), losses("batch")
    weight = transformers.Wav2Vec2Config(**PRETRAINING).diversity_loss_weight
    for out in (frame, batch):
        assert out["masked"] > 0 and torch.isfinite(out["loss"])
    assert frame["loss"].item() == pytest.approx((frame["contrastive"] + weight * frame["diversity"]).item(), rel=1e-5)
    assert batch["loss"].item() == pytest.approx(
        (batch["contrastive"] * batch["masked"] + weight * batch["diversity"]).item(), rel=1e-5)


def test_random_crop_keeps_a_window_of_each_longer_clip() -> None:
    waves = torch.arange(20, dtype=torch.float32).repeat(2, 1)
    cropped, lengths = random_crop(waves, torch.tensor([20, 5]), 8, np.random.default_rng(0))
    assert cropped.shape == (2, 8) and lengths.tolist() == [8, 5]
    start = int(cropped[0, 0])
    assert cropped[0].tolist() == list(range(start, start + 8)) and cropped[1, :5].tolist() == [0, 1, 2, 3, 4]


def test_gumbel_temperature_and_the_linear_schedule() -> None:
    assert gumbel_temperature(0) == 2.0 and gumbel_temperature(10**7) == 0.5
    assert gumbel_temperature(10_000) == pytest.approx(2.0 * 0.999995 ** 10_000)
    assert gumbel_temperature(10**7, anneal=False) == 2.0
    factor = warmup_flat_linear(warmup=10, total_steps=100, flat_ratio=0.05)
    assert factor(0) < factor(5) < factor(10) == 1.0 == factor(14)  # 5 flat steps after the warm-up
    assert factor(0) == pytest.approx(1 / 11) and factor(9) == pytest.approx(10 / 11)  # the first step trains
    assert factor(15) > factor(60) > factor(99) > 0 and factor(100) == 0.0


def test_a_batch_with_a_clip_too_short_for_a_span_trains(checkpoints: dict[str, Path]) -> None:
    config = RunConfig()
    config.audio.resample_rate = 16000
    config.model.model = "hf"
    tapt = Wav2Vec2Tapt(str(checkpoints["pretraining"]), config)
    encoder = tapt.model.wav2vec2  # applies the drawn spans with torch.where, not a boolean index (hf_masks)
    assert encoder._mask_hidden_states.__self__ is encoder
    waves = torch.randn(2, 4000)
    losses = tapt.loss(waves, torch.tensor([4000, 25]), step=0, rng=random.Random(0))  # 25 samples: 2 frames
    assert torch.isfinite(losses["loss"]) and losses["masked"] > 0
    losses["loss"].backward()
    nothing = tapt.loss(waves[:, :25], torch.tensor([25, 25]), step=0, rng=random.Random(0))
    assert nothing["masked"] == 0 and nothing["loss"].item() == 0.0 and nothing["loss"].requires_grad


def test_every_value_of_a_tapt_step_is_on_the_device_of_its_audio(checkpoints: dict[str, Path]) -> None:
    """The step's values are logged with ``sync_dist``: in a multi-GPU run Lightning reduces each where it lies, and
    NCCL reduces no tensor on the CPU (the masked frames' count and the temperature were made there)."""
    config = RunConfig()
    config.audio.resample_rate, config.model.model = 16000, "hf"
    tapt = Wav2Vec2Tapt(str(checkpoints["pretraining"]), config)
    tapt.model.forward = outputs_on_meta(tapt.model.forward)  # the encoder stands for one on a GPU
    losses = tapt.loss(torch.randn(2, 4000, device="meta"), [4000, 3000], step=0, rng=random.Random(0))
    assert {name: value.device.type for name, value in losses.items()} == dict.fromkeys(losses, "meta")

def test_tapt_skips_layers_with_the_checkpoints_layerdrop(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """TAPT trains with the checkpoint config's LayerDrop (transformers' own, as the seed's TAPT): at 1.0 no layer
    runs in a training pass, so no layer gets a gradient; at 0.0 every layer does. A probability of --layerdrop's
    own is an error naming what TAPT does."""
    config = RunConfig()
    config.audio.resample_rate = 16000
    config.model.model = "hf"
    dropping = tmp_path / "dropping"
    shutil.copytree(checkpoints["pretraining"], dropping)
    settings = json.loads((dropping / "config.json").read_text())
    (dropping / "config.json").write_text(json.dumps({**settings, "layerdrop": 1.0}))
    for folder, skipped in ((dropping, True), (checkpoints["pretraining"], False)):
        for layerdrop in (0.0, None):  # the default and `checkpoint` read the same
            tapt = Wav2Vec2Tapt(str(folder), config, layerdrop=layerdrop).train()
            losses = tapt.loss(torch.randn(2, 4000), torch.tensor([4000, 4000]), step=0, rng=random.Random(0))
            losses["loss"].backward()
            grads = [p.grad for p in tapt.encoder.encoder.layers.parameters()]
            assert all(g is None for g in grads) is skipped and any(g is None for g in grads) is skipped
    with pytest.raises(ValueError, match=r"--layerdrop 0.5: --objective tapt skips layers with the checkpoint's own "
                                         r"LayerDrop \(.*layerdrop 1.0\)"):
        Wav2Vec2Tapt(str(dropping), config, layerdrop=0.5)


# ------------------------------------------------------------------ through the CLI


@pytest.mark.slow
def test_tapt_learns_and_its_encoder_fine_tunes_as_a_checkpoint(checkpoints: dict[str, Path], dataset: dict,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "tapt"
    assert main(pretrain_args(dataset, checkpoints["pretraining"], out, "--training_steps", "40",
                              "--scheduler", "linear", "--warmup_steps", "4", "--max_seconds", "0.3")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["objective"] == "tapt" and metrics["steps_run"] == 40 and metrics["outputs"] == ["encoder"]
    steps = pd.read_csv(out / "logs" / "metrics.csv")["train_loss_step"].dropna().to_numpy()
    assert len(steps) == 40 and steps[-10:].mean() < 0.8 * steps[:10].mean()  # the same clips, seen again
    temperature = pd.read_csv(out / "logs" / "metrics.csv")["train_temperature_step"].dropna()
    assert temperature.iloc[0] == 2.0 and temperature.is_monotonic_decreasing and temperature.iloc[-1] < 2.0
    encoder = out / "encoder"
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in encoder.iterdir()}
    saved = load_file(encoder / "model.safetensors")
    before = load_file(checkpoints["pretraining"] / "model.safetensors")
    assert any(k.startswith("quantizer.") for k in saved)  # TAPT can continue from it
    changed = [k for k in before if not torch.equal(before[k], saved[k])]
    assert any("encoder.layers" in k for k in changed) and any("feature_extractor" in k for k in changed)
    assert json.loads((encoder / "config.json").read_text())["mask_time_prob"] == 0.2  # the checkpoint's own
    run = tmp_path / "run"
    assert main(["train", "--model", "hf", "-c", str(encoder), "-i", str(dataset["prefix"]), "-d",
                 str(dataset["split"]), "-l", str(dataset["labels"]), "-o", str(run), "-e", "1", "-bs", "4"]) == 0
    assert (run / "model.safetensors").is_file()


@pytest.mark.slow
def test_frozen_feature_encoder_no_annealing_and_a_folder_of_audio(checkpoints: dict[str, Path], dataset: dict,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "tapt"
    args = pretrain_args(dataset, checkpoints["pretraining"], out, "--training_steps", "3",
                         "--freeze_feature_encoder", "--gumbel_anneal", "False", "--waveform_norm", "False")
    args[args.index("-d") + 1] = str(tmp_path / "missing")
    assert main([*args, "--unlabelled_dir", str(dataset["prefix"])]) == 0  # every wav under it, no table
    # the encoder's extractor reads clips as it was pretrained on them: raw, not normalised (the checkpoint's would)
    from transformers import AutoFeatureExtractor

    assert AutoFeatureExtractor.from_pretrained(checkpoints["pretraining"]).do_normalize is True
    assert AutoFeatureExtractor.from_pretrained(out / "encoder").do_normalize is False
    assert len(pd.read_csv(out / "validation.csv")) == 2  # 10 % of the 24 clips validate
    saved = load_file(out / "encoder" / "model.safetensors")
    before = load_file(checkpoints["pretraining"] / "model.safetensors")
    frozen = [k for k in before if "feature_extractor" in k]
    assert frozen and all(torch.equal(before[k], saved[k]) for k in frozen)
    assert not torch.equal(before["project_q.weight"], saved["project_q.weight"])
    log = pd.read_csv(out / "logs" / "metrics.csv")
    assert set(log["train_temperature_step"].dropna()) == {2.0}


@pytest.mark.slow
def test_a_checkpoint_without_a_quantizer_is_an_error_or_a_fresh_one(checkpoints: dict[str, Path], dataset: dict,
                                                                     tmp_path: Path, capsys) -> None:
    assert main(pretrain_args(dataset, checkpoints["bare"], tmp_path / "a", "--training_steps", "2")) == 2
    err = capsys.readouterr().err
    assert "no quantizer weights" in err and "--fresh_quantizer" in err and not (tmp_path / "a").exists()
    # the first missing names in their order, the same every run
    assert "(['project_hid.bias', 'project_hid.weight', 'project_q.bias'] ...)" in err
    assert main(pretrain_args(dataset, checkpoints["bare"], tmp_path / "b", "--training_steps", "2",
                              "--fresh_quantizer")) == 0
    assert main(pretrain_args(dataset, checkpoints["hubert"], tmp_path / "c", "--training_steps", "2")) == 2
    assert "contrastive pretraining needs a wav2vec2 checkpoint" in capsys.readouterr().err
    assert main(pretrain_args(dataset, checkpoints["pretraining"], tmp_path / "d", "--objective",
                              "pretrain_mpc")) == 2
    assert "--objective pretrain_mpc: --model hf pretrains with ['tapt', 'ptapt']" in capsys.readouterr().err


def test_tapt_refuses_a_layerdrop_of_its_own_before_any_output(checkpoints: dict[str, Path], dataset: dict,
                                                               tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "tapt"
    assert main(pretrain_args(dataset, checkpoints["pretraining"], out, "--layerdrop", "0.3")) == 2
    err = capsys.readouterr().err
    assert "--layerdrop 0.3: --objective tapt skips layers with the checkpoint's own LayerDrop" in err
    assert "in --objective ptapt" in err and not out.exists()


def test_mask_options_and_the_crop_change_what_is_masked(checkpoints: dict[str, Path]) -> None:
    def tapt(**options: float) -> Wav2Vec2Tapt:
        config = RunConfig()
        config.audio.resample_rate = 16000
        config.model.model = "hf"
        for name, value in options.items():
            if name == "max_seconds":
                config.train.max_seconds = value
            else:
                config.model.options[name] = value
        return Wav2Vec2Tapt(str(checkpoints["pretraining"]), config)

    def masked(model: Wav2Vec2Tapt) -> float:
        torch.manual_seed(0)
        return float(model.loss(torch.randn(2, 8000), torch.tensor([8000, 8000]), 0, random.Random(0))["masked"])

    default = masked(tapt())  # the checkpoint's 0.2 / 2 frames over 800 frames per clip
    assert masked(tapt(mask_time_prob=0.5)) > 1.5 * default
    assert masked(tapt(max_seconds=0.1)) < 0.3 * default  # 160 of 800 frames per clip left to mask
    longer = tapt(mask_time_length=6)  # about the same share masked, in spans of 6 (span_mask's test)
    assert (longer.prob, longer.length) == (0.2, 6) and masked(longer) > 0.5 * default


@pytest.mark.slow
def test_training_steps_stop_a_fine_tuning_run_too(dataset: dict, tmp_path: Path) -> None:
    from conftest import small_train_args

    assert main(small_train_args(dataset, tmp_path / "run", "-e", "5", "--training_steps", "3")) == 0
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    assert log["step"].max() <= 3 and json.loads((tmp_path / "run" / "metrics.json").read_text())["trained"]


@pytest.mark.slow
def test_grad_clip_bounds_each_step_in_pretraining_and_fine_tuning(checkpoints: dict[str, Path], dataset: dict,
                                                                   tmp_path: Path) -> None:
    """A gradient clipped to a norm of 1e-9 is below Adam's epsilon: the weights barely move."""
    from conftest import small_train_args

    before = load_file(checkpoints["pretraining"] / "model.safetensors")

    def pretrain_change(name: str, *extra: str) -> float:
        assert main(pretrain_args(dataset, checkpoints["pretraining"], tmp_path / name, "--training_steps", "2",
                                  *extra)) == 0
        saved = load_file(tmp_path / name / "encoder" / "model.safetensors")
        return max(float((saved[k] - before[k]).abs().max()) for k in saved if "encoder.layers" in k)

    assert pretrain_change("clipped", "--grad_clip", "1e-9") < 0.01 * pretrain_change("free")

    def trained(name: str, *extra: str) -> dict[str, torch.Tensor]:
        assert main(small_train_args(dataset, tmp_path / name, "--training_steps", "2", *extra)) == 0
        weights = load_file(tmp_path / name / "model.safetensors")
        return {k: v for k, v in weights.items() if v.is_floating_point() and "running" not in k}

    start = trained("start", "-lr", "0")  # the same seed: the weights every run starts from

    def change(weights: dict[str, torch.Tensor]) -> float:
        return max(float((weights[k] - start[k]).abs().max()) for k in start)

    assert change(trained("tuned_clipped", "--grad_clip", "1e-9")) < 0.05 * change(trained("tuned_free"))


def test_tapt_draws_its_crops_and_masks_from_lengths_on_the_host_and_reads_nothing_back(
        checkpoints: dict[str, Path]) -> None:
    """With the batch's lengths on the host (as the loader gives them), a TAPT step queues its work on the device
    without waiting for it: nothing is read back from the waveforms or anything computed from them (transformers'
    own forward pass checks its distractors once, ``neg_is_pos.any()``: it runs on plain tensors here)."""
    config = RunConfig()
    config.audio.resample_rate, config.model.model, config.train.max_seconds = 16000, "hf", 0.4  # crops 8000 to 6400
    tapt = Wav2Vec2Tapt(str(checkpoints["pretraining"]), config)
    forward = tapt.model.forward

    def plain_forward(*args: object, **kwargs: object) -> object:
        def plain(value: object) -> object:
            return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value
        out = forward(*map(plain, args), **{key: plain(value) for key, value in kwargs.items()})
        for key, value in out.items():
            out[key] = value.as_subclass(OnDevice)
        return out

    tapt.model.forward = plain_forward
    waves = torch.randn(2, 8000)
    torch.manual_seed(0)
    on_device = tapt.loss(waves.as_subclass(OnDevice), [8000, 6000], 0, random.Random(0))
    torch.manual_seed(0)
    read_back = tapt.loss(waves, torch.tensor([8000, 6000]), 0, random.Random(0))  # the same draws either way
    assert on_device["masked"] > 0
    for name, value in read_back.items():
        assert torch.equal(value, on_device[name].as_subclass(torch.Tensor)), name


def test_a_tapt_batch_whose_crops_fill_it_runs_without_an_attention_mask_and_the_same_loss(
        checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every clip cropped to the batch's width: no attention mask (transformers reads one back from the device to
    look at it), the same losses as with a mask of ones; a batch with a shorter clip keeps its mask."""
    from audiotune.models.backbones import hf_pretraining

    config = RunConfig()
    config.audio.resample_rate, config.model.model, config.train.max_seconds = 16000, "hf", 0.4  # crops to 6400
    tapt = Wav2Vec2Tapt(str(checkpoints["pretraining"]), config)
    masks = recorded_attention_masks(tapt.model)
    waves = torch.randn(2, 8000)

    def loss(lengths: list[int]) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        return tapt.loss(waves, lengths, 0, random.Random(0))

    unmasked = loss([8000, 7000])  # both longer than the crop
    assert masks == [None]
    ones = hf_pretraining.padding_attention

    def always(counts: torch.Tensor, width: int, device: torch.device) -> torch.Tensor:
        return ones(counts, width + 1, device)[:, :width]  # as if a clip were shorter: the mask, of ones here

    monkeypatch.setattr(hf_pretraining, "padding_attention", always)
    masked = loss([8000, 7000])
    assert masks[-1] is not None and bool(masks[-1].all())
    for name, value in unmasked.items():
        assert torch.equal(value, masked[name]), name
    monkeypatch.undo()
    loss([8000, 6000])
    assert masks[-1] is not None and not bool(masks[-1].all())
