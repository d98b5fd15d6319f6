"""Fine-tuning a Hugging Face encoder as the speech-emotion seed did (V-FT): SpecAugment on the projected
features while training, frozen CNN and projection, a linear head, whole clips when scoring."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HF_TINY, make_uid_dataset, save_hf_checkpoint
from safetensors.torch import load_file

from audiotune.cli import main
from audiotune.config import RunConfig
from audiotune.data.input_spec import InputSpec
from audiotune.data.loading import make_dataset
from audiotune.data.prepare import prepare_eval_data, prepare_training_data
from audiotune.models.backbones.huggingface import HFBackbone, HFOptions
from audiotune.models.heads import ClassificationHead

transformers = pytest.importorskip("transformers")

NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
              "final_dropout": 0.0, "layerdrop": 0.0}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vft") / "encoder"
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(**HF_TINY, **NO_DROPOUT, feat_extract_norm="layer", do_stable_layer_norm=True)
    return save_hf_checkpoint(transformers.Wav2Vec2Model(config), path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_uid_dataset(tmp_path_factory.mktemp("data"))


def states(backbone: HFBackbone, train: bool) -> torch.Tensor:
    backbone.train(train)
    torch.manual_seed(0)
    np.random.seed(0)  # transformers draws its masks with numpy
    with torch.no_grad():
        return backbone.hidden_states(0.1 * torch.randn(2, 8000), torch.tensor([8000, 6000]))[0][-1]


def test_masks_change_training_passes_only(checkpoint: Path) -> None:
    plain = HFBackbone(HFOptions(str(checkpoint)))
    timed = HFBackbone(HFOptions(str(checkpoint), mask_time_prob=0.3, mask_time_length=3))
    channels = HFBackbone(HFOptions(str(checkpoint), mask_feature_prob=0.3, mask_feature_length=4))
    assert not hasattr(plain.model, "masked_spec_embed") and not hasattr(channels.model, "masked_spec_embed")
    assert isinstance(timed.model.masked_spec_embed, torch.nn.Parameter)
    reference = states(plain, train=True)
    assert torch.allclose(states(plain, train=False), reference, atol=1e-5)  # no dropout in this checkpoint
    for masked in (timed, channels):
        assert not torch.allclose(states(masked, train=True), reference, atol=1e-3)
        assert torch.allclose(states(masked, train=False), reference, atol=1e-5)


def test_a_linear_head_is_one_projection_of_the_pooled_frames() -> None:
    head = ClassificationHead(12, 0, 3, "relu", 0.0)
    assert [name for name, _ in head.named_parameters()] == ["head.outproj.weight", "head.outproj.bias"]
    x = torch.randn(5, 12)
    assert torch.equal(head.first_dense(x), x)
    assert torch.allclose(head(x), head.head.outproj(torch.relu(x)))


def test_scored_clips_keep_their_own_crop(dataset: dict) -> None:
    config = RunConfig()
    config.data.prefix = str(dataset["prefix"])
    config.audio.clip_length = 0.2
    config.features.features = "waveform"
    table = dataset["table"].head(2).copy()
    table["path"] = [str(dataset["prefix"] / uid / "waveform.wav") for uid in table.index]
    targets = np.zeros((2, 0), np.float32)
    lengths = {}
    for eval_clip in (-1.0, 0.0, 0.5):
        config.audio.eval_clip_length = eval_clip
        inputs = InputSpec.from_sections(config.audio, config.features)
        lengths[eval_clip] = (len(make_dataset(config, inputs, table, targets, train=True)[0]["inputs"]),
                              len(make_dataset(config, inputs, table, targets)[0]["inputs"]))
    assert lengths[-1.0] == (3200, 3200)  # the same crop as training
    assert lengths[0.0][0] == 3200 and lengths[0.0][1] == round(0.6 * 16000)  # the whole 0.6 s clip
    assert lengths[0.5] == (3200, 8000)


def test_scored_splits_are_measured_with_their_own_crop(dataset: dict, tmp_path: Path) -> None:
    config = RunConfig()
    config.data.prefix, config.data.data_split_root = str(dataset["prefix"]), str(dataset["split"])
    config.data.label_txt = str(dataset["labels"])
    config.features.features = "waveform"
    config.audio.clip_length, config.audio.eval_clip_length = 0.2, 0.0
    inputs = InputSpec.from_sections(config.audio, config.features)
    prepared = prepare_training_data(config, inputs, tmp_path)
    assert set(prepared.tables["train"]["num_samples"]) == {3200}  # equal-length batching relies on these
    assert prepared.tables["val"]["num_samples"].min() > 3200 and prepared.tables["test"]["num_samples"].min() > 3200
    scored = prepare_eval_data(config, inputs, str(dataset["split"]))
    assert scored.tables["train"]["num_samples"].min() > 3200  # evaluate scores every split whole


def test_masks_on_a_frozen_encoder_are_an_error(checkpoint: Path, dataset: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--model", "hf", "-c", str(checkpoint), "-i", str(dataset["prefix"]), "-d",
                 str(dataset["split"]), "-l", str(dataset["labels"]), "-o", str(tmp_path / "run"),
                 "--mask_time_prob", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--mask_time_prob 0.1: acts only while the encoder trains" in err and "add --freeze false" in err
    assert "--frozen_train_mode" in err


@pytest.mark.parametrize("freeze_projection", [True, False])
def test_freezing_the_feature_projection_keeps_the_mask_embedding(checkpoint: Path, freeze_projection: bool) -> None:
    """--freeze_feature_projection: the mask embedding that replaces masked frames stays as loaded through a training
    step (the seed emotion system never trained it); without the option it trains with the encoder."""
    backbone = HFBackbone(HFOptions(str(checkpoint), mask_time_prob=0.5, mask_time_length=2))
    backbone.freeze_feature_encoder()
    if freeze_projection:
        backbone.freeze_feature_projection()
    embedding = backbone.model.masked_spec_embed
    before = embedding.detach().clone()
    optimiser = torch.optim.Adam([p for p in backbone.parameters() if p.requires_grad], lr=1e-2)
    np.random.seed(0)  # transformers draws its masks with numpy
    found, mask = backbone.train().hidden_states(0.1 * torch.randn(2, 8000), torch.tensor([8000, 6000]))
    found[-1][mask].pow(2).mean().backward()
    optimiser.step()
    assert embedding.requires_grad is not freeze_projection
    assert torch.equal(embedding, before) is freeze_projection
    assert any(not torch.equal(p, q) for p, q in zip(backbone.model.encoder.parameters(),
                                                     HFBackbone(HFOptions(str(checkpoint))).model.encoder.parameters()))


def test_runs_written_before_the_mask_embedding_was_kept_still_train_it(checkpoint: Path) -> None:
    """A run of config version 4 (resumed: its optimiser state holds the embedding) keeps training it."""
    from audiotune.config import HeadSpec
    from audiotune.models.backbones import resolve_config
    from audiotune.models.checkpoint import build_classifier

    def embedding(version: int) -> torch.nn.Parameter:
        config = RunConfig()
        config.model.model, config.model.checkpoint, config.model.freeze = "hf", str(checkpoint), False
        config.model.freeze_feature_encoder = config.model.freeze_feature_projection = True
        config.model.options["mask_time_prob"] = 0.1
        config.heads = [HeadSpec("pitch", "binary", ["high"])]
        config = resolve_config(config)
        config.version = version
        return build_classifier(config).backbone.model.masked_spec_embed

    assert not embedding(5).requires_grad and embedding(4).requires_grad


@pytest.mark.slow
def test_a_frozen_encoder_in_training_mode_masks_its_features_and_learns_nothing(
        checkpoint: Path, dataset: dict, tmp_path: Path) -> None:
    """--frozen_train_mode: the NAIP seeds' frozen encoder, in training mode while the heads trained (masks and
    dropout on its features); no weight of it changes and the feature cache, which would hold fixed features,
    is not used."""
    run = tmp_path / "run"
    assert main(["train", "--model", "hf", "-c", str(checkpoint), "-i", str(dataset["prefix"]), "-d",
                 str(dataset["split"]), "-l", str(dataset["labels"]), "-o", str(run), "-e", "1", "-bs", "4",
                 "--frozen_train_mode", "--mask_time_prob", "0.5", "--mask_time_length", "2", "--layerdrop",
                 "checkpoint", "--clf_bottleneck", "8"]) == 0
    cache = json.loads((run / "metrics.json").read_text())["feature_cache"]
    assert not cache["used"] and "--frozen_train_mode" in cache["why_not"]
    saved, before = load_file(run / "model.safetensors"), load_file(checkpoint / "model.safetensors")
    assert all(torch.equal(saved["backbone.model." + k], before[k]) for k in before if k != "masked_spec_embed")


@pytest.mark.slow
def test_the_seed_fine_tuning_recipe_runs_and_reads_back(checkpoint: Path, dataset: dict, tmp_path: Path) -> None:
    run = tmp_path / "vft"
    assert main(["train", "--model", "hf", "-c", str(checkpoint), "-i", str(dataset["prefix"]), "-d",
                 str(dataset["split"]), "-l", str(dataset["labels"]), "-o", str(run), "-e", "2", "-bs", "4",
                 "--freeze", "false", "--freeze_feature_encoder", "--freeze_feature_projection",
                 "--mask_time_prob", "0.08", "--mask_time_length", "3", "--mask_feature_prob", "0.05",
                 "--mask_feature_length", "4", "--class_weights", "balanced", "--monitor", "uar",
                 "--eval_clip_length", "0", "--clf_bottleneck", "0", "--optim", "adam", "-lr", "1e-4",
                 "--scheduler", "none"]) == 0
    saved = load_file(run / "model.safetensors")
    before = load_file(checkpoint / "model.safetensors")
    frozen = [k for k in before if k.startswith(("feature_extractor.", "feature_projection.", "masked_spec_embed"))]
    assert frozen and all(torch.equal(saved["backbone.model." + k], before[k]) for k in frozen)
    assert any(not torch.equal(saved["backbone.model." + k], before[k]) for k in before if "encoder.layers" in k)
    assert torch.equal(saved["backbone.model.masked_spec_embed"], before["masked_spec_embed"])  # masks, not trained
    assert not any(".dense." in k for k in saved if k.startswith("heads."))  # linear heads
    assert main(["evaluate", "--run", str(run), "-d", str(dataset["split"] / "test.csv")]) == 0  # rebuilds the same
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["weights"].startswith("best validation uar") and metrics["class_weights"]
