"""HFBackbone on tiny offline checkpoints of wav2vec2 (group and layer norm), HuBERT, WavLM and data2vec-audio."""
from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import HF_KINDS as KINDS
from conftest import HF_RATE as RATE
from conftest import HF_TINY as TINY
from conftest import recorded_attention_masks, save_hf_checkpoint
from torch.utils._python_dispatch import TorchDispatchMode

from audiotune.config import RunConfig
from audiotune.models.backbones import build_backbone, input_spec, resolve_config
from audiotune.models.backbones.hf_checkpoint import extractor_settings
from audiotune.models.backbones.hf_own_frames import ClipGroupNorm, ClipPositionalConvs, install_clip_norm, own_frames
from audiotune.models.backbones.huggingface import HFBackbone, HFOptions
from audiotune.models.classifier import masked_pool

PAD_INDEPENDENT = [k for k, spec in KINDS.items() if not spec[2]]
# a torch deprecation warning raised inside HF's WavLM attention, not ours
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")


@pytest.fixture(scope="module")
def checkpoints(hf_checkpoints: dict[str, Path]) -> dict[str, Path]:
    return hf_checkpoints


@pytest.fixture(scope="module")
def backbones(checkpoints: dict[str, Path]) -> dict[str, HFBackbone]:
    """Each checkpoint loaded through the hub-id path (``from_pretrained`` on the directory), in eval mode."""
    return {name: HFBackbone(HFOptions(str(path))).eval() for name, path in checkpoints.items()}


def clip(seconds: float, seed: int) -> torch.Tensor:
    """A deterministic noisy waveform."""
    return 0.1 * torch.randn(int(seconds * RATE), generator=torch.Generator().manual_seed(seed))


def batch(*clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (B, N) waveforms and their lengths."""
    lengths = torch.tensor([len(c) for c in clips])
    out = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        out[i, : len(c)] = c
    return out, lengths


def pooled(backbone: HFBackbone, waves: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """Masked-mean embedding of every hidden state."""
    with torch.no_grad():
        states, mask = backbone.hidden_states(waves, lengths)
    return [masked_pool(s, mask, "mean") for s in states]


@pytest.mark.parametrize("name", list(KINDS))
def test_bare_encoder_and_counts(backbones: dict[str, HFBackbone], name: str) -> None:
    backbone = backbones[name]
    assert type(backbone.model).__name__.endswith("Model")  # bare encoder, no CTC head
    assert (backbone.embedding_dim, backbone.num_layers, backbone.num_hidden_states) == (32, 2, 3)
    assert backbone.padding.exact is not KINDS[name][2]
    assert backbone.padding.tolerance == 0.0
    config = backbone.model.config
    assert config.mask_time_prob == config.mask_feature_prob == config.layerdrop == 0.0
    assert not hasattr(backbone.model, "masked_spec_embed")
    assert backbone.receptive_field == 20  # 10 + (3 - 1) * 5
    waves, lengths = batch(clip(0.5, 1), clip(0.5, 2))
    states, mask = backbone.hidden_states(waves, lengths)
    assert len(states) == 3 and all(s.shape == (2, mask.shape[1], 32) for s in states)


@pytest.mark.parametrize("name", list(KINDS))
def test_numbering_matches_hf(backbones: dict[str, HFBackbone], name: str) -> None:
    """0 = HF's hidden_states[0], 1..N-1 = HF's layers, -1 = HF's last_hidden_state (final LayerNorm included)."""
    backbone = backbones[name]
    waves, lengths = batch(clip(0.5, 3), clip(0.5, 4))
    extra = {} if backbone.group_norm else {"attention_mask": torch.ones_like(waves, dtype=torch.long)}
    with torch.no_grad():
        states, _ = backbone.hidden_states(waves, lengths)
        out = backbone.model(waves, output_hidden_states=True, **extra)
    assert len(out.hidden_states) == len(states)
    for mine, theirs in zip(states[:-1], out.hidden_states[:-1]):
        torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(states[-1], out.last_hidden_state)
    if not getattr(backbone.model.config, "do_stable_layer_norm", False):  # no final LayerNorm: HF's last agrees
        torch.testing.assert_close(states[-1], out.hidden_states[-1])


@pytest.mark.parametrize("name", list(KINDS))
def test_frame_mask_counts(backbones: dict[str, HFBackbone], name: str) -> None:
    backbone = backbones[name]
    waves, lengths = batch(clip(1.0, 5), clip(0.6, 6), clip(0.3, 7))
    with torch.no_grad():
        states, mask = backbone.hidden_states(waves, lengths)
    expected = backbone.model._get_feat_extract_output_lengths(lengths)
    assert mask.sum(1).tolist() == expected.tolist()
    assert mask.shape[1] == states[0].shape[1] == int(expected.max())
    assert mask[:, :1].all()  # every clip has frames, and they come first


@pytest.mark.parametrize("name", PAD_INDEPENDENT)
def test_scored_clips_are_padding_independent(backbones: dict[str, HFBackbone], name: str) -> None:
    backbone = backbones[name]
    short, long = clip(0.45, 8), clip(1.0, 9)
    alone = pooled(backbone, *batch(short))
    in_batch = pooled(backbone, *batch(long, short))
    for a, b in zip(alone, in_batch):
        torch.testing.assert_close(b[1:], a, atol=1e-4, rtol=0)


def test_group_norm_encoders_keep_the_padding_out_of_the_transformer(backbones: dict[str, HFBackbone]) -> None:
    """wav2vec2-base style: the feature encoder and projection, then the transformer given the frames' mask (as
    the emotion seed's V-FT and P-TAPT ran it), the first GroupNorm over each clip's own frames."""
    backbone = backbones["w2v_group"]
    waves, lengths = batch(clip(1.0, 21), clip(0.45, 22))
    model = backbone.model
    with torch.no_grad():
        states, mask = backbone.hidden_states(waves, lengths)
        first = torch.div(lengths - TINY["conv_kernel"][0], TINY["conv_stride"][0], rounding_mode="floor") + 1
        with own_frames((backbone.clip_norm, first)):
            projected = model.feature_projection(model.feature_extractor(waves).transpose(1, 2))[0]
        frames = model._get_feat_extract_output_lengths(lengths)
        real = torch.arange(projected.shape[1])[None, :] < frames[:, None]
        seed = model.encoder(projected, attention_mask=real)[0]
    assert torch.equal(mask, real)
    torch.testing.assert_close(states[-1][mask], seed[real])


@pytest.mark.parametrize("name", ["w2v_group", "w2v_layer"])
def test_max_window(checkpoints: dict[str, Path], backbones: dict[str, HFBackbone], name: str) -> None:
    whole = backbones[name]
    waves, lengths = batch(clip(1.0, 13))
    with torch.no_grad():
        reference, ref_mask = whole.hidden_states(waves, lengths)
        windowed = HFBackbone(HFOptions(str(checkpoints[name]), max_window=0.25)).eval()
        states, mask = windowed.hidden_states(waves, lengths)
        assert len(states) == 3 and mask.all()
        # each of the 4 windows loses under one frame per conv layer at its edge
        assert ref_mask.shape[1] - 4 * len(TINY["conv_stride"]) <= mask.shape[1] < ref_mask.shape[1]
        assert all(torch.isfinite(s).all() for s in states)
        larger = HFBackbone(HFOptions(str(checkpoints[name]), max_window=2.0)).eval()
        same, same_mask = larger.hidden_states(waves, lengths)
    assert torch.equal(same_mask, ref_mask)
    for a, b in zip(same, reference):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("window", [0.0, 0.25])
def test_a_batch_without_padding_is_encoded_without_a_mask_as_with_one_of_full_lengths(
        checkpoints: dict[str, Path], name: str, window: float) -> None:
    """``lengths`` None: no attention mask (transformers reads a mask back from the device to see whether it masks
    anything); the states and frame mask are those of full lengths, bit for bit (but for the group norm's
    rounding), whole or window by window."""
    backbone = HFBackbone(HFOptions(str(checkpoints[name]), max_window=window)).eval()
    masks = recorded_attention_masks(backbone.model)
    waves, lengths = batch(clip(1.0, 16), clip(1.0, 17))
    with torch.no_grad():
        states, mask = backbone.hidden_states(waves, lengths)
        assert masks and all(m is not None for m in masks)
        masks.clear()
        unpadded, every = backbone.hidden_states(waves, None)
    assert masks and all(m is None for m in masks)
    assert torch.equal(every, mask) and every.all()
    for a, b in zip(unpadded, states, strict=True):
        if name == "w2v_group":  # transformers' GroupNorm, or the clip norm over every frame: float rounding apart
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        else:
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["w2v_layer", "w2v_group"])
def test_max_window_short_tail_and_short_clip(checkpoints: dict[str, Path], name: str) -> None:
    """A tail shorter than one frame is not read; a clip ending early adds no later frames; a clip's windows are
    its own, whatever longer clips share its batch."""
    backbone = HFBackbone(HFOptions(str(checkpoints[name]), max_window=0.25)).eval()
    tailed = clip(1.0 + 10 / RATE, 14)  # four windows of 4000 samples and 10 more
    waves, lengths = batch(tailed, clip(0.3, 15), clip(1.6, 16))
    with torch.no_grad():
        states, mask = backbone.hidden_states(waves, lengths)
        alone, alone_mask = backbone.hidden_states(tailed[None], None)
    assert backbone._windows(len(tailed)) == [(0, 4000), (4000, 8000), (8000, 12000), (12000, 16000)]
    per_window = backbone.frame_lengths(torch.tensor([4000, 800]))
    assert mask[1].sum().item() == int(per_window[0] + per_window[1])  # 0.3 s = one full window + 800 samples
    assert mask[0].sum().item() == alone_mask[0].sum().item() == int(4 * per_window[0])
    for batched, single in zip(states, alone, strict=True):
        torch.testing.assert_close(batched[0][mask[0]], single[0][alone_mask[0]], atol=1e-5, rtol=0)
    assert all(torch.isfinite(s).all() for s in states)


def test_freeze_feature_encoder(checkpoints: dict[str, Path]) -> None:
    backbone = HFBackbone(HFOptions(str(checkpoints["w2v_group"])))
    backbone.freeze_feature_encoder()
    cnn = {id(p) for p in backbone.model.feature_extractor.parameters()}
    assert cnn
    for param in backbone.parameters():
        assert param.requires_grad is (id(param) not in cnn)


def test_feature_extractor_settings(checkpoints: dict[str, Path], backbones: dict[str, HFBackbone],
                                    tmp_path: Path) -> None:
    for name, spec in KINDS.items():
        normalize, attention = spec[3]
        assert extractor_settings(backbones[name].checkpoint) == {
            "sampling_rate": RATE, "do_normalize": normalize, "return_attention_mask": attention}
    for name, expected in [("w2v_group", False), ("hubert", True)]:  # no preprocessor_config.json: fallback
        bare = tmp_path / name
        shutil.copytree(checkpoints[name], bare)
        (bare / "preprocessor_config.json").unlink()
        settings = extractor_settings(str(bare))
        # normalisation is what the released extractors of all four families mostly do
        assert settings == {"sampling_rate": RATE, "do_normalize": True, "return_attention_mask": expected}


def test_eval_is_deterministic_and_train_keeps_every_layer(checkpoints: dict[str, Path]) -> None:
    backbone = HFBackbone(HFOptions(str(checkpoints["wavlm"])))
    waves, lengths = batch(clip(0.5, 16), clip(0.4, 17))
    backbone.eval()
    with torch.no_grad():
        first, _ = backbone.hidden_states(waves, lengths)
        second, _ = backbone.hidden_states(waves, lengths)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    backbone.train()
    states, _ = backbone.hidden_states(waves, lengths)
    assert len(states) == 3 and states[-1].requires_grad  # no LayerDrop in training


def test_load_pretrained_and_registered_factory(checkpoints: dict[str, Path],
                                                backbones: dict[str, HFBackbone]) -> None:
    path = str(checkpoints["hubert"])
    reference = backbones["hubert"].state_dict()
    fresh = HFBackbone(HFOptions(path), pretrained=False)
    assert not torch.equal(fresh.state_dict()["model.encoder.layers.0.attention.q_proj.weight"],
                           reference["model.encoder.layers.0.attention.q_proj.weight"])
    fresh.load_pretrained(path)
    assert all(torch.equal(v, reference[k]) for k, v in fresh.state_dict().items())
    config = RunConfig()
    config.model.model, config.model.checkpoint, config.audio.resample_rate = "hf", path, 0
    resolve_config(config)
    assert config.model.freeze is True and input_spec(config).resample_rate == RATE and config.audio.resample_rate == 0
    built = build_backbone(config)  # registered as "hf": from_pretrained on --checkpoint
    assert isinstance(built, HFBackbone) and built.checkpoint == path
    assert all(torch.equal(v, reference[k]) for k, v in built.state_dict().items())
    skeleton = build_backbone(config, pretrained=False)  # config only: weights come from a run afterwards
    assert skeleton.state_dict().keys() == reference.keys()


def checkpointing(backbone: HFBackbone) -> bool:
    """Whether the encoder's layers recompute their activations in backward (any transformers version)."""
    return any(getattr(module, "gradient_checkpointing", False) for module in backbone.model.modules())


def _loss_and_gradients(backbone: HFBackbone, waves: torch.Tensor,
                        lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(3)  # the same dropout masks in both runs
    states, mask = backbone.train().hidden_states(waves, lengths)
    loss = sum(masked_pool(s, mask, "mean").pow(2).sum() for s in states)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in backbone.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["w2v_group", "w2v_layer"])
def test_gradient_checkpointing_recomputes_layers_with_the_same_gradients(checkpoints: dict[str, Path],
                                                                          name: str) -> None:
    waves, lengths = batch(clip(0.5, 20), clip(0.35, 21))
    plain = HFBackbone(HFOptions(str(checkpoints[name])))
    checkpointed = HFBackbone(HFOptions(str(checkpoints[name]), gradient_checkpointing=True))
    assert checkpointing(checkpointed) and not checkpointing(plain)
    calls = {"plain": 0, "checkpointed": 0}
    for key, backbone in (("plain", plain), ("checkpointed", checkpointed)):
        backbone.model.encoder.layers[0].attention.register_forward_hook(
            lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    loss, gradients = _loss_and_gradients(plain, waves, lengths)
    loss_checkpointed, gradients_checkpointed = _loss_and_gradients(checkpointed, waves, lengths)
    assert calls == {"plain": 1, "checkpointed": 2}  # the layer ran again in the backward pass
    assert torch.allclose(loss, loss_checkpointed, atol=1e-5)
    assert gradients.keys() == gradients_checkpointed.keys() and len(gradients) > 10
    assert all(torch.allclose(gradients[k], gradients_checkpointed[k], atol=1e-5) for k in gradients)


def test_gradient_checkpointing_flag_is_an_hf_option(checkpoints: dict[str, Path]) -> None:
    from audiotune.cli import build_parser, config_from_args

    flags = ["train", "-d", "split", "-l", "labels.txt", "-o", "run", "--gradient_checkpointing"]
    hf = [*flags, "--model", "hf", "-c", str(checkpoints["hubert"])]
    config = config_from_args(build_parser("hf").parse_args(hf))
    assert config.model.options["gradient_checkpointing"] is True
    resolve_config(config)
    assert checkpointing(build_backbone(config))
    with pytest.raises(ValueError, match="gradient_checkpointing .--model hf"):
        config_from_args(build_parser().parse_args([*flags, "--model", "ecapa_tdnn"]))


def test_a_frame_count_for_waveform_inputs_is_refused_naming_the_crop_in_seconds(
        checkpoints: dict[str, Path]) -> None:
    """--target_length counts spectrogram frames; the collator would cut a waveform to that many samples."""
    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", str(checkpoints["hubert"])
    config.features.target_length = 400
    with pytest.raises(ValueError, match=r"^--target_length 400: act on spectrogram frames; --model hf reads "
                                         r"waveforms; crop waveforms with --clip_length SECONDS$"):
        resolve_config(config)


@pytest.mark.parametrize(("name", "value"), [("num_mel_bins", 32), ("utterance_norm", "meanvar"), ("pad", "silence"),
                                             ("dataset_mean", -3.0), ("vtlp", 1.0), ("n_mfcc", 20)])
def test_an_option_of_spectrogram_frames_is_refused_for_a_waveform_model(checkpoints: dict[str, Path], name: str,
                                                                         value: object) -> None:
    """Every features option but the waveform's own acts on spectrogram frames: a waveform model never reads it."""
    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", str(checkpoints["hubert"])
    setattr(config.features, name, value)
    with pytest.raises(ValueError, match=rf"^--{name} {value}: act on spectrogram frames; --model hf reads "
                                         r"waveforms$"):
        resolve_config(config)
    config.features = RunConfig().features
    config.features.waveform_norm = True  # the waveform's own: read
    resolve_config(config)


def test_the_input_is_the_extractors_and_the_config_keeps_the_users_options(checkpoints: dict[str, Path]) -> None:
    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", str(checkpoints["hubert"])  # an extractor without norm
    config.audio.resample_rate = 8000
    given = copy.deepcopy(config)
    resolve_config(config)
    inputs = input_spec(config)
    assert (inputs.features, inputs.waveform_norm, inputs.resample_rate) == ("waveform", False, RATE)
    given.features.waveform_norm = config.features.waveform_norm = True  # the user's choice over the extractor's
    assert inputs.min_samples == 10 + (3 - 1) * 5  # one frame of the tiny convolutions (kernels 10, 3; stride 5)
    assert input_spec(config).waveform_norm is True
    assert (config.audio, config.features) == (given.audio, given.features)  # what the user asked, unchanged
    config.model.objective = "ptapt"  # masked prediction of labels covering every frame: whole clips
    assert (input_spec(config).clip_length, input_spec(config).eval_clip_length) == (0.0, 0.0)
    # a config of an earlier release holds the input its backbone resolved then, and that stays its input
    earlier = copy.deepcopy(given)
    earlier.version, earlier.features.features, earlier.audio.min_samples = 1, "waveform", 400
    read = input_spec(earlier)
    assert (read.features, read.waveform_norm, read.resample_rate, read.min_samples) == ("waveform", True, 8000, 400)


def test_tensors_missing_from_a_checkpoint_are_named_without_verbose(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    import transformers
    from safetensors.torch import load_file, save_file

    from audiotune.cli.show import third_party_quiet

    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["encoder.layer_norm.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with third_party_quiet(False), caplog.at_level("WARNING", logger="audiotune"):
        HFBackbone(HFOptions(str(tmp_path)))
    assert "1 encoder tensor(s) not in the checkpoint start at random values, e.g. encoder.layer_norm.weight" \
        in caplog.text


@pytest.mark.parametrize("name", ["w2v_group", "data2vec"])
def test_a_scored_clip_reads_its_own_frames_and_a_trained_one_the_batchs_padding(
        backbones: dict[str, HFBackbone], name: str) -> None:
    """Scoring: a short clip batched with a long one has the states it has alone (transformers' group norm over
    the padding, or data2vec-audio's positional convolutions reading it, moved them); training passes run as
    transformers does, as the emotion seed fine-tuned."""
    backbone = backbones[name]
    module = backbone.clip_norm if name == "w2v_group" else backbone.clip_positions
    assert isinstance(module, ClipGroupNorm if name == "w2v_group" else ClipPositionalConvs)
    assert backbone.padding.exact
    short = clip(0.5, 20)
    alone = pooled(backbone, *batch(short))
    batched = pooled(backbone, *batch(clip(1.0, 21), short))
    try:
        module.train()  # the rest of the encoder stays in eval mode: no dropout
        as_trained = pooled(backbone, *batch(clip(1.0, 21), short))
    finally:
        module.eval()
    for a, b, t in zip(alone, batched, as_trained, strict=True):
        torch.testing.assert_close(b[1:], a, atol=1e-5, rtol=0)
    assert max((t[1:] - a).abs().max().item() for a, t in zip(alone, as_trained)) > 1e-3


def test_the_clip_positions_run_as_transformers_without_frames(checkpoints: dict[str, Path]) -> None:
    import transformers

    model = transformers.AutoModel.from_pretrained(checkpoints["data2vec"]).eval()
    hidden = torch.randn(2, 30, TINY["hidden_size"])
    with torch.no_grad():
        before = model.encoder.pos_conv_embed(hidden)
        backbone = HFBackbone(HFOptions(str(checkpoints["data2vec"]))).eval()
        assert backbone.clip_positions is not None and backbone.clip_norm is None
        assert torch.equal(backbone.clip_positions(hidden), before)
        assert list(backbone.clip_positions.state_dict()) == list(model.encoder.pos_conv_embed.state_dict())


def test_the_clip_norm_keeps_a_checkpoints_names_and_equals_group_norm_over_whole_clips() -> None:
    torch.manual_seed(0)
    plain = torch.nn.GroupNorm(4, 8)
    torch.nn.init.normal_(plain.weight), torch.nn.init.normal_(plain.bias)
    layer = torch.nn.Module()
    layer.layer_norm = copy.deepcopy(plain)
    holder = torch.nn.Module()
    holder.feature_extractor = torch.nn.Module()
    holder.feature_extractor.conv_layers = torch.nn.ModuleList([layer])
    norm = install_clip_norm(holder)
    assert isinstance(norm, ClipGroupNorm) and list(holder.state_dict()) == [
        "feature_extractor.conv_layers.0.layer_norm.weight", "feature_extractor.conv_layers.0.layer_norm.bias"]
    x = torch.randn(3, 8, 20)
    norm.eval()
    norm.frames = torch.tensor([20, 20, 20])
    torch.testing.assert_close(norm(x), plain(x), atol=1e-5, rtol=0)
    norm.frames = torch.tensor([20, 12, 5])
    out = norm(x)
    for row, frames in enumerate((20, 12, 5)):
        torch.testing.assert_close(out[row, :, :frames], plain(x[row:row + 1, :, :frames])[0], atol=1e-5, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # in float32, as CUDA's autocast runs GroupNorm
        low = norm(x.bfloat16())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low[2, :, :5], plain(x[2:, :, :5].bfloat16().float())[0], atol=1e-5, rtol=0)
    norm.frames = None
    assert torch.equal(norm(x), plain(x))


class NewTensors(TorchDispatchMode):
    """The operations of the block that make a new tensor of ``numel`` elements (not a view, not written into)."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.ops = numel, list[str]()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        schema = func._schema
        if isinstance(out, torch.Tensor) and out.numel() == self.numel and not schema.is_mutable \
                and schema.returns[0].alias_info is None:
            self.ops.append(str(func))
        return out


def test_the_clip_norm_scores_without_autograd_as_with_it_never_writing_its_input() -> None:
    """Scoring writes into the norm's own float32 tensor: the same output as a pass that autograd records, the
    caller's tensor left as it was (float32, or bfloat16 under autocast); a recorded pass gives the padded frames
    no gradient."""
    torch.manual_seed(1)
    norm = ClipGroupNorm(4, 8)
    torch.nn.init.normal_(norm.weight), torch.nn.init.normal_(norm.bias)
    norm.eval()
    norm.frames = torch.tensor([20, 12, 5])
    x = torch.randn(3, 8, 20) * 3 + 1
    recorded = norm(x)
    assert recorded.requires_grad
    for given in (x.clone(), x.bfloat16()):
        before = given.clone()
        with torch.no_grad(), NewTensors(given.numel()) as made:
            scored = norm(given)
        assert len(made.ops) == 1, made.ops  # the float32 tensor it writes into: the zeroed frames, or the copy
        assert torch.equal(given, before) and scored.data_ptr() != given.data_ptr()
        if given.dtype == torch.float32:
            assert torch.equal(scored, recorded.detach())
        else:
            with torch.enable_grad():
                assert torch.equal(scored, norm(before).detach())
    leaf = x.clone().requires_grad_()
    out = norm(leaf)
    own = torch.arange(20)[None, :] < norm.frames[:, None]
    out.transpose(1, 2)[own].square().sum().backward()
    assert leaf.grad is not None and torch.equal(leaf.grad.transpose(1, 2)[~own], torch.zeros(int((~own).sum()), 8))
    assert leaf.grad.transpose(1, 2)[own].abs().min() > 0


def test_waveform_norm_is_the_extractors_unless_given_and_an_earlier_configs_false_was_its_default(
        checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """--waveform_norm left unset follows the checkpoint's feature extractor; true or false is the user's. A config
    written before the option was the user's choice saved false as its default: read back, it is the model's own
    again, so an earlier run reads its clips as it was trained."""
    import yaml

    from audiotune.config import config_to_dict, load_config

    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", str(checkpoints["w2v_layer"])  # an extractor with norm
    resolve_config(config)
    assert input_spec(config).waveform_norm is True
    config.features.waveform_norm = False
    assert input_spec(config).waveform_norm is False  # the raw samples, as the emotion seed fed them
    path = tmp_path / "config.yaml"
    # (checkpoint, its extractor normalises, version, saved, read back)
    for kind, version, saved, read in (("w2v_layer", 2, False, True), ("hubert", 2, True, False),
                                       ("w2v_layer", 3, False, False), ("hubert", 3, True, True)):
        config.model.checkpoint = str(checkpoints[kind])
        raw = config_to_dict(config)
        raw["version"], raw["features"]["waveform_norm"] = version, saved
        path.write_text(yaml.safe_dump(raw))
        assert input_spec(load_config(path)).waveform_norm is read, (kind, version, saved)


def test_waveform_norm_where_a_model_decides_for_itself_is_an_error(checkpoints: dict[str, Path]) -> None:
    config = RunConfig()
    config.model.model, config.features.waveform_norm = "ecapa_tdnn", False
    with pytest.raises(ValueError, match="--waveform_norm false: --model ecapa_tdnn reads fbank features, not"):
        input_spec(config)
    config.features.waveform_norm = None
    assert input_spec(config).features == "fbank"


def test_features_other_than_a_waveform_encoder_reads_are_an_error(checkpoints: dict[str, Path]) -> None:
    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", str(checkpoints["w2v_layer"])
    config.features.features = "mfcc"  # e.g. the ECAPA seed's --fbank False
    with pytest.raises(ValueError, match="--features mfcc: --model hf reads waveforms"):
        input_spec(config)
    config.features.features = "fbank"  # given, not the default: an error too
    with pytest.raises(ValueError, match="--features fbank: --model hf reads waveforms"):
        input_spec(config)
    for given in (None, "waveform"):  # unset: the model's own
        config.features.features = given
        assert input_spec(config).features == "waveform"


def test_a_config_of_version_3_read_its_saved_fbank_as_the_models_own_input(checkpoints: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    from audiotune.config import config_from_dict, save_config

    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", str(checkpoints["w2v_layer"])
    save_config(config, tmp_path / "config.yaml")
    import yaml

    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["features"]["features"] is None  # unset: written as null
    for version, read in ((3, None), (4, "fbank")):
        earlier = config_from_dict({**saved, "version": version, "features": {**saved["features"],
                                                                              "features": "fbank"}})
        assert earlier.features.features == read
        if read is None:
            assert input_spec(earlier).features == "waveform"


@pytest.mark.parametrize("name", list(KINDS))
def test_layerdrop_skips_layers_in_training_passes_and_keeps_one_state_per_layer(
        checkpoints: dict[str, Path], tmp_path: Path, name: str) -> None:
    """--layerdrop checkpoint takes the checkpoint config's value (1.0 here: every layer that may be skipped is):
    a skipped layer passes its input on, so its state repeats the one before (WavLM's first layer always runs);
    evaluation never skips; --layerdrop 0 never skips."""
    import json

    folder = tmp_path / name
    shutil.copytree(checkpoints[name], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layerdrop": 1.0}))
    waves, lengths = batch(clip(0.5, 5), clip(0.4, 6))

    def states(layerdrop: float | None, training: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        backbone = HFBackbone(HFOptions(str(folder), layerdrop=layerdrop)).train(training)
        assert backbone.model.config.layerdrop == 0.0  # transformers' own LayerDrop stays off
        with torch.no_grad():
            found, _ = backbone.hidden_states(waves, lengths)
        assert len(found) == backbone.num_hidden_states == 3
        return found

    dropped = states(None, training=True)
    first_runs = name == "wavlm"
    assert torch.equal(dropped[1], dropped[0]) is not first_runs
    for layerdrop, training in ((None, False), (0.0, True)):
        assert not torch.equal(states(layerdrop, training)[1], states(layerdrop, training)[0])


@pytest.mark.parametrize("name", list(KINDS))
def test_a_training_batch_shorter_than_one_masked_span_is_not_time_masked(checkpoints: dict[str, Path],
                                                                            name: str) -> None:
    """transformers leaves a clip shorter than a --mask_time_length span unmasked within a longer batch and raises
    for a batch of such clips only; that batch runs unmasked, and a longer one is masked as before."""
    short, long = batch(clip(0.2, 1), clip(0.15, 2)), batch(clip(0.5, 3), clip(0.4, 4))

    def states(prob: float, span: int, waves: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        torch.manual_seed(0)
        backbone = HFBackbone(HFOptions(str(checkpoints[name]), mask_time_prob=prob, mask_time_length=span)).train()
        for module in backbone.modules():  # no dropout: only the masks can tell the passes apart
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        with torch.no_grad():
            return backbone.hidden_states(*waves)[0][0]

    probe = HFBackbone(HFOptions(str(checkpoints[name])))
    span = int(probe.frame_lengths(torch.tensor([short[0].shape[1]]))[0]) + 1
    assert int(probe.frame_lengths(torch.tensor([long[0].shape[1]]))[0]) >= 2 * span
    assert torch.equal(states(0.5, span, short), states(0.0, span, short))
    assert not torch.equal(states(0.5, span, long), states(0.0, span, long))


def test_mask_spans_batch_masks_by_the_batch_rule_in_training_passes(checkpoints: dict[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """--mask_spans batch: in a training pass the encoder's transformer reads the mask embedding at the spans the
    batch rule drew from each clip's real frames and the padded width (hf_masks); in evaluation nothing is drawn."""
    from audiotune.models.backbones import hf_masks

    waves, lengths = batch(clip(0.5, 3), clip(0.2, 4))
    backbone = HFBackbone(HFOptions(str(checkpoints["w2v_layer"]), mask_time_prob=0.3, mask_time_length=2,
                                    mask_spans="batch")).train()
    drawn: list[tuple] = []
    reached: list[torch.Tensor] = []
    draw = hf_masks.time_mask

    def spy(rule: str, frames: torch.Tensor, total: int, *args: object, **kwargs: object) -> torch.Tensor:
        mask = draw(rule, frames, total, *args, **kwargs)
        drawn.append((rule, frames.tolist(), total, mask))
        return mask

    monkeypatch.setattr(hf_masks, "time_mask", spy)
    backbone.model.encoder.register_forward_pre_hook(lambda module, args: reached.append(args[0].clone()))
    with torch.no_grad():
        backbone.hidden_states(waves, lengths)
    (rule, frames, total, mask), = drawn
    assert rule == "batch" and total == int(backbone.frame_lengths(torch.tensor([waves.shape[1]]))[0])
    assert frames == backbone.frame_lengths(lengths).tolist()
    assert mask.any() and not mask[1, frames[1]:].any()  # cut to each clip's frames
    embedding = backbone.model.masked_spec_embed
    assert torch.equal(reached[0][mask], embedding.expand(int(mask.sum()), -1))
    assert not (reached[0][~mask] == embedding).all(-1).any()
    with torch.no_grad():
        backbone.eval().hidden_states(waves, lengths)
    assert len(drawn) == 1  # scoring never masks




def test_a_resample_rate_other_than_the_extractors_is_refused_and_no_change_of_a_resumed_run(
        hf_checkpoints: dict[str, Path]) -> None:
    """The encoder reads audio at its feature extractor's rate whatever --resample_rate says: another one is refused
    (it was only a warning, and config.yaml recorded it); a resumed run made with it goes on, as the same run."""
    from audiotune.models.backbones import input_spec, resolve_config
    from audiotune.models.option_checks import refuse_inactive, without_idle_options

    config = RunConfig()
    config.model.model, config.model.checkpoint = "hf", str(hf_checkpoints["w2v_layer"])
    config.audio.resample_rate = 8000
    resolve_config(config)
    assert input_spec(config).resample_rate == RATE
    with pytest.raises(ValueError, match=f"--resample_rate 8000: --model hf reads audio at {RATE} Hz .*leave "
                                         "--resample_rate out"):
        refuse_inactive(config)
    plain = copy.deepcopy(config)
    plain.audio.resample_rate = RATE
    refuse_inactive(plain)
    assert without_idle_options(config, plain).audio == plain.audio
    config.train.resume = True
    refuse_inactive(config)


def test_the_feature_cache_keys_encoders_that_read_own_frames_apart_from_the_cache_of_earlier_releases(
        checkpoints: dict[str, Path]) -> None:
    """Features cached before scored clips were encoded on their own frames are not reused; other encoders keep
    their keys."""
    import transformers

    from audiotune.engine.cache import encoder_digest

    for name, changed in (("w2v_group", True), ("data2vec", True), ("w2v_layer", False)):
        backbone = HFBackbone(HFOptions(str(checkpoints[name])))
        before = HFBackbone(HFOptions(str(checkpoints[name])))
        if before.clip_norm is not None:
            before.clip_norm.__class__ = torch.nn.GroupNorm  # as earlier releases built it
        if before.clip_positions is not None:
            before.clip_positions.__class__ = transformers.models.data2vec.modeling_data2vec_audio.\
                Data2VecAudioPositionalConvEmbedding
        assert before.front_end_settings == {}
        assert (encoder_digest(backbone) != encoder_digest(before)) is changed


def test_the_feature_cache_keys_an_encoder_by_its_config_as_well_as_its_weights(checkpoints: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    """A checkpoint whose config.json was edited in place (same weights) computes other features when its
    activation changes: its features are keyed apart. What acts only while it trains, or what saved it, is not."""
    import json

    from audiotune.engine.cache import encoder_digest

    source = checkpoints["w2v_layer"]
    digest = encoder_digest(HFBackbone(HFOptions(str(source))))

    def edited(**changes: Any) -> tuple[str, torch.Tensor]:
        folder = tmp_path / "_".join(changes)
        shutil.copytree(source, folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        backbone = HFBackbone(HFOptions(str(folder))).eval()
        with torch.no_grad():
            states = backbone.hidden_states(clip(0.5, 3)[None], None)[0][-1]
        return encoder_digest(backbone), states

    relu, relu_states = edited(hidden_act="relu", feat_extract_activation="relu")
    same, same_states = edited(mask_time_prob=0.3, hidden_dropout=0.2, layerdrop=0.3, transformers_version="0.0.1")
    assert not torch.allclose(relu_states, same_states)  # the features differ, and so does the key
    assert relu != digest and same == digest


def test_a_group_norm_encoders_attention_over_a_clips_frames_is_its_own_in_a_padded_batch(
        checkpoints: dict[str, Path]) -> None:
    backbone = HFBackbone(HFOptions(str(checkpoints["w2v_group"]))).eval()
    short = clip(0.45, 23)
    with torch.no_grad():
        _, _, alone = backbone.hidden_states_with_attention(*batch(short))
        _, mask, batched = backbone.hidden_states_with_attention(*batch(clip(1.0, 24), short))
    frames = int(mask[1].sum())
    for a, b in zip(alone, batched, strict=True):
        torch.testing.assert_close(b[1, :, :frames, :frames], a[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("config_class, extra", [("HubertConfig", {}),
                                                 ("WavLMConfig", {"num_buckets": 32, "max_bucket_distance": 100})])
def test_hubert_and_wavlm_base_shapes_score_a_padded_clip_as_alone(tmp_path: Path, config_class: str,
                                                                    extra: dict) -> None:
    """HuBERT-base and WavLM-base have wav2vec2-base's group-norm feature encoder."""
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**TINY, feat_extract_norm="group", do_stable_layer_norm=False,
                                                 **extra)
    path = save_hf_checkpoint(transformers.AutoModel.from_config(config), tmp_path / config_class)
    backbone = HFBackbone(HFOptions(str(path))).eval()
    assert isinstance(backbone.clip_norm, ClipGroupNorm) and backbone.padding.exact
    short = clip(0.45, 25)
    alone = pooled(backbone, *batch(short))
    for a, b in zip(alone, pooled(backbone, *batch(clip(1.0, 26), short)), strict=True):
        torch.testing.assert_close(b[1:], a, atol=1e-5, rtol=0)


def test_a_checkpoint_hf_cannot_read_as_the_others_is_named_with_what_reads_it(tmp_path: Path,
                                                                              checkpoints: dict[str, Path]) -> None:
    """--model hf reads the wav2vec2 kind of encoder (a transformer over the conv frames, one for one): Whisper and
    AST checkpoints are named with their backbone, SEW (frames squeezed) and a text model with what hf reads."""
    import transformers

    from audiotune.models.backbones.hf_checkpoint import check_encoder_type

    for path in checkpoints.values():
        check_encoder_type(str(path))
    made = {"sew": transformers.SEWConfig(), "sew_d": transformers.SEWDConfig(),
            "whisper": transformers.WhisperConfig(), "ast": transformers.ASTConfig(), "bert": transformers.BertConfig()}
    for name, config in made.items():
        config.save_pretrained(tmp_path / name)
    expected = {"sew": "its model type is sew, its transformer reads its frames squeezed to fewer; --model hf reads "
                       "wav2vec2, hubert, wavlm, data2vec-audio",
                "sew_d": "its model type is sew-d, its transformer reads its frames squeezed to fewer",
                "whisper": "its model type is whisper, which --model whisper reads",
                "ast": "its model type is audio-spectrogram-transformer, which --model ast reads",
                "bert": "its model type is bert, not a speech encoder of the wav2vec2 kind; --model hf reads wav2vec2"}
    for name, message in expected.items():
        with pytest.raises(ValueError, match=re.escape(f"-c {tmp_path / name}: {message}")):
            check_encoder_type(str(tmp_path / name))


def test_a_conformer_whose_convolutions_read_the_padding_scores_clips_of_one_length_together(tmp_path: Path) -> None:
    """The conformer's depthwise convolutions read padded frames without a mask: a short clip beside a long one
    differs from itself alone, so its padding rule is not exact (scoring batches hold clips of one length)."""
    import transformers
    from conftest import HF_TINY, save_hf_checkpoint

    torch.manual_seed(0)
    config = transformers.Wav2Vec2ConformerConfig(**HF_TINY, conv_depthwise_kernel_size=7,
                                                  position_embeddings_type="rotary")
    path = save_hf_checkpoint(transformers.AutoModel.from_config(config), tmp_path / "conformer")
    backbone = HFBackbone(HFOptions(str(path))).eval()
    assert not backbone.padding.exact and backbone.padding.tolerance == 0.0
    assert "convolution modules read the padded frames" in backbone.padding.reason
    short = clip(0.45, 8)
    alone, in_batch = pooled(backbone, *batch(short)), pooled(backbone, *batch(clip(1.0, 9), short))
    assert max((b[1:] - a).abs().max().item() for a, b in zip(alone, in_batch)) > 1e-4


def test_train_refuses_a_checkpoint_hf_cannot_read_before_any_work(uid_dataset: dict, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    import transformers

    from audiotune.cli import main

    transformers.WhisperConfig().save_pretrained(tmp_path / "whisper")
    out = tmp_path / "run"
    assert main(["train", "--model", "hf", "-c", str(tmp_path / "whisper"), "-i", str(uid_dataset["prefix"]),
                 "-d", str(uid_dataset["split"]), "-l", str(uid_dataset["labels"]), "-o", str(out)]) == 2
    assert f"-c {tmp_path / 'whisper'}: its model type is whisper, which --model whisper reads" in \
        capsys.readouterr().err
    assert not out.exists()
