"""ECAPA-TDNN backbone: SpeechBrain key layout, checkpoint loading, padding behaviour, gradients."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path, small_train_args

from audiotune.cli import build_parser, config_from_args, main
from audiotune.config import HeadSpec, RunConfig
from audiotune.models.backbones import build_backbone, input_spec, resolve_config
from audiotune.models.backbones.ecapa import EcapaBackbone, EcapaOptions
from audiotune.models.backbones.ecapa_model import (
    ECAPA_TDNN,
    AttentiveStatisticsPooling,
    Conv1d,
    SEBlock,
    clip_reflect_index,
    frames_to_relative_lengths,
    length_to_mask,
    load_speechbrain_state_dict,
)
from audiotune.models.classifier import Classifier
from audiotune.models.option_checks import refuse_inactive, without_idle_options
from audiotune.models.state_dict import CheckpointMismatchError

SMALL = dict(
    channels=[32, 32, 32, 96],
    kernel_sizes=[5, 3, 3, 1],
    dilations=[1, 2, 3, 1],
    attention_channels=16,
    res2net_scale=4,
    se_channels=16,
)
# Config of the shared SpeechBrain checkpoint (C=512, one SE-Res2Net block, 3x3-dilated MFA).
C512 = dict(
    input_size=80,
    lin_neurons=192,
    channels=[512, 512, 512],
    kernel_sizes=[5, 3, 3],
    dilations=[1, 2, 3],
    attention_channels=128,
    res2net_scale=8,
    se_channels=128,
    global_context=True,
)


def small_model(seed: int = 0, input_size: int = 20, lin_neurons: int = 24) -> ECAPA_TDNN:
    """Randomly initialised small ECAPA in eval mode, with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = ECAPA_TDNN(input_size, lin_neurons=lin_neurons, **SMALL)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):  # make running stats differ from identity
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


# --------------------------------------------------------------------------- layout


def test_parameter_names_follow_speechbrain_layout() -> None:
    sd = small_model().state_dict()
    expected = {
        "blocks.0.conv.conv.weight": (32, 20, 5),
        "blocks.0.norm.norm.weight": (32,),
        "blocks.0.norm.norm.running_mean": (32,),
        "blocks.0.norm.norm.num_batches_tracked": (),
        "blocks.1.tdnn1.conv.conv.weight": (32, 32, 1),
        "blocks.1.res2net_block.blocks.0.conv.conv.weight": (8, 8, 3),
        "blocks.1.res2net_block.blocks.2.norm.norm.running_var": (8,),
        "blocks.1.tdnn2.conv.conv.bias": (32,),
        "blocks.1.se_block.conv1.conv.weight": (16, 32, 1),
        "blocks.2.se_block.conv2.conv.weight": (32, 16, 1),
        "mfa.conv.conv.weight": (96, 64, 1),  # concatenation of the two SE-Res2Net outputs
        "asp.tdnn.conv.conv.weight": (16, 96 * 3, 1),  # global context: x, mean, std
        "asp.tdnn.norm.norm.weight": (16,),
        "asp.conv.conv.weight": (96, 16, 1),
        "asp_bn.norm.running_mean": (192,),
        "fc.conv.weight": (24, 192, 1),
        "fc.conv.bias": (24,),
    }
    for key, shape in expected.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("blocks.3") for k in sd)  # TDNN + SE-Res2Net for channels[1:-1] only
    assert not any("shortcut" in k for k in sd)  # equal in/out channels: identity residual
    assert len(small_model().blocks[1].res2net_block.blocks) == SMALL["res2net_scale"] - 1


def test_default_config_layout() -> None:
    model = ECAPA_TDNN(80)
    sd = model.state_dict()
    assert len(model.blocks) == 4
    assert tuple(sd["mfa.conv.conv.weight"].shape) == (1536, 1536, 1)
    assert tuple(sd["blocks.3.res2net_block.blocks.6.conv.conv.weight"].shape) == (64, 64, 3)
    assert tuple(sd["fc.conv.weight"].shape) == (192, 3072, 1)
    assert model.blocks[3].res2net_block.blocks[0].conv.conv.dilation == (4,)
    # ECAPA-TDNN (C=512) has ~6.2M parameters (Desplanques et al., 2020, Table 1).
    assert 6.1e6 < sum(p.numel() for p in model.parameters()) < 6.3e6
    no_gc = ECAPA_TDNN(80, channels=[64, 64, 64], kernel_sizes=[5, 3, 1], dilations=[1, 2, 1], global_context=False)
    assert tuple(no_gc.state_dict()["asp.tdnn.conv.conv.weight"].shape) == (128, 64, 1)


def test_shortcut_when_channels_change() -> None:
    model = ECAPA_TDNN(10, lin_neurons=8, channels=[16, 32, 32, 48], kernel_sizes=[5, 3, 3, 1],
                       dilations=[1, 2, 3, 1], attention_channels=8, res2net_scale=4, se_channels=8)
    sd = model.state_dict()
    assert tuple(sd["blocks.1.shortcut.conv.weight"].shape) == (32, 16, 1)
    assert "blocks.2.shortcut.conv.weight" not in sd
    assert model(torch.randn(2, 30, 10)).shape == (2, 1, 8)


def test_conv_same_reflect_padding() -> None:
    torch.manual_seed(0)
    conv = Conv1d(4, 6, kernel_size=3, dilation=3)
    x = torch.randn(2, 4, 17)
    expected = F.conv1d(F.pad(x, (3, 3), mode="reflect"), conv.conv.weight, conv.conv.bias, dilation=3)
    torch.testing.assert_close(conv(x), expected)
    assert Conv1d(4, 6, kernel_size=1).pad == 0
    with pytest.raises(ValueError, match="too short"):
        conv(torch.randn(1, 4, 3))


def test_output_shape_and_length_mask() -> None:
    out = small_model()(torch.randn(3, 40, 20), torch.tensor([1.0, 0.5, 0.8]))
    assert out.shape == (3, 1, 24) and torch.isfinite(out).all()
    mask = length_to_mask(torch.tensor([1.0, 2.5, 3.0]), max_len=4)
    assert mask.dtype == torch.float32
    assert mask.tolist() == [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]


def test_frames_to_relative_lengths_gives_exact_masks() -> None:
    # Plain float32 n/T can give n/T*T > n (e.g. 7/13), and so one frame too many.
    for total in range(1, 400):
        n = torch.arange(1, total + 1)
        rel = frames_to_relative_lengths(n, total)
        assert rel.max() <= 1.0 and rel[-1] == 1.0
        assert torch.equal(length_to_mask(rel * total, total).sum(1).long(), n)


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.shared
def test_shared_checkpoint_loads_strictly() -> None:
    path = shared_path("weights/ecapa_tdnn_c512.ckpt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    backbone = EcapaBackbone(EcapaOptions(**C512))
    assert set(raw) == set(backbone.ecapa.state_dict())  # plain SpeechBrain state dict, no prefix
    backbone.load_pretrained(str(path))
    torch.testing.assert_close(backbone.ecapa.mfa.conv.conv.weight, raw["mfa.conv.conv.weight"])
    backbone.eval()
    torch.manual_seed(0)
    feats = torch.randn(3, 120, 80)
    with torch.no_grad():
        states, mask = backbone.hidden_states(feats, torch.tensor([120, 120, 120]))
    emb = states[0].squeeze(1)
    assert emb.shape == (3, 192) and torch.isfinite(emb).all()
    assert mask.shape == (3, 1) and mask.dtype == torch.bool and mask.all()
    assert emb.std(0).abs().sum() > 0  # distinct inputs give distinct embeddings


def test_load_handles_prefixes_nesting_and_safetensors(tmp_path) -> None:
    from safetensors.torch import save_file

    source = small_model(seed=1)
    sd = source.state_dict()
    x = torch.randn(2, 30, 20)
    expected = source(x)
    variants = {
        "prefixed.ckpt": {f"embedding_model.{k}": v for k, v in sd.items()},
        "dataparallel.pt": {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    for name in [*variants, "model.safetensors"]:
        target = small_model(seed=2)
        load_speechbrain_state_dict(target, tmp_path / name)
        torch.testing.assert_close(target(x), expected, msg=name)
    backbone = EcapaBackbone(EcapaOptions(20, lin_neurons=24, **SMALL))
    load_speechbrain_state_dict(backbone, sd)  # a wrapper holding .ecapa is accepted too
    torch.testing.assert_close(backbone.eval().ecapa(x), expected)


def test_wrong_keys_raise_error_naming_file(tmp_path) -> None:
    sd = small_model().state_dict()
    sd.pop("fc.conv.bias")
    sd["fc.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken_embedding.ckpt"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError) as info:
        EcapaBackbone(EcapaOptions(20, lin_neurons=24, **SMALL)).load_pretrained(str(path))
    message = str(info.value)
    assert "broken_embedding.ckpt" in message
    assert "fc.conv.bias" in message and "fc.extra.weight" in message
    # Right keys, wrong shapes (another lin_neurons) fail too, even non-strict.
    path2 = tmp_path / "other_dim.ckpt"
    torch.save(small_model(lin_neurons=16).state_dict(), path2)
    with pytest.raises(CheckpointMismatchError, match="other_dim.ckpt.*\n.*shape"):
        load_speechbrain_state_dict(small_model(), path2, strict=False)


# --------------------------------------------------------------------------- padding


def test_equal_length_batch_matches_single_clips() -> None:
    """(a) With equal-length clips, batching does not change any clip's embedding."""
    model = small_model()
    torch.manual_seed(3)
    clips = torch.randn(4, 50, 20)
    with torch.no_grad():
        alone = torch.cat([model(c[None]) for c in clips])
        batched = model(clips)
        batched_with_lengths = model(clips, torch.ones(4))
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(batched_with_lengths, alone, atol=1e-4, rtol=0)


def test_pooling_and_se_honour_lengths() -> None:
    """(b) The SE squeeze and attentive pooling use only valid frames when lengths are given."""
    torch.manual_seed(4)
    n, total = 23, 40
    x = torch.randn(1, 8, n)
    padded = F.pad(x, (0, total - n))
    rel = frames_to_relative_lengths(torch.tensor([n]), total)

    asp = AttentiveStatisticsPooling(8, attention_channels=4).eval()
    with torch.no_grad():
        torch.testing.assert_close(asp(padded, rel), asp(x), atol=1e-5, rtol=0)
        assert (asp(padded) - asp(x)).abs().max() > 1e-2  # without lengths the zeros are pooled

    se = SEBlock(8, 4, 8).eval()
    with torch.no_grad():
        torch.testing.assert_close(se(padded, rel)[..., :n], se(x, torch.ones(1)), atol=1e-6, rtol=0)
        assert (se(padded)[..., :n] - se(x)).abs().max() > 1e-3

    # Whole model: lengths change the padded clip's embedding and bring it closer to the clip alone.
    model = small_model()
    feats = torch.randn(1, n, 20)
    batch = F.pad(feats, (0, 0, 0, total - n))
    with torch.no_grad():
        alone, masked, unmasked = model(feats), model(batch, rel), model(batch)
    assert (masked - unmasked).abs().max() > 1e-3
    assert (masked - alone).abs().max() < (unmasked - alone).abs().max()


@pytest.mark.parametrize("lengths", [[60, 100], [9, 10, 11, 200], [13, 13, 40, 41, 77], [120, 30, 120]])
def test_each_clip_of_a_padded_batch_gets_its_embedding_alone(lengths: list[int]) -> None:
    """(c) With lengths, a zero-padded clip's embedding is the clip's alone, whatever the mix of lengths: every
    convolution reflects at the clip's own edge; without them the padding reaches the short clips."""
    model = small_model()
    torch.manual_seed(5)
    clips = [torch.randn(1, n, 20) for n in lengths]
    total = max(lengths)
    batch = torch.cat([F.pad(c, (0, 0, 0, total - c.shape[1])) for c in clips])
    with torch.no_grad():
        mixed = model(batch, frames_to_relative_lengths(torch.tensor(lengths), total))
        alone = torch.cat([model(c) for c in clips])
        unmasked = model(batch)
    torch.testing.assert_close(mixed, alone, atol=1e-5, rtol=0)
    short = torch.tensor(lengths) < total
    assert (unmasked[short] - alone[short]).abs().amax(dim=(1, 2)).min() > 1e-3  # the comparison can fail


def test_clip_reflect_index_reflects_at_each_clip_edge() -> None:
    x = torch.arange(6.0).repeat(2, 1)[:, None, :]  # two clips of 6 frames, the second with 4 valid
    index = clip_reflect_index(frames_to_relative_lengths(torch.tensor([6, 4]), 6), 6, 2)
    gathered = torch.gather(x, 2, index[:, None, :])[:, 0]
    torch.testing.assert_close(gathered[0], F.pad(x[:1], (2, 2), mode="reflect")[0, 0])
    torch.testing.assert_close(gathered[1, :8], F.pad(x[1:, :, :4], (2, 2), mode="reflect")[0, 0])
    assert int(index.min()) >= 0 and int(index[1].max()) <= 3  # only a clip's own frames are read


def test_one_forward_computes_each_paddings_positions_once_and_the_same_outputs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two dozen convolutions of a forward pass pad alike three ways: their positions are computed once per padding
    (for the lengths of that pass), not a dozen small kernels per convolution; the outputs are the same."""
    import contextlib

    from audiotune.models.backbones import ecapa_model

    model = small_model().train()  # training mode: batch statistics, as a training step runs
    feats = torch.randn(3, 50, 20)
    rel = frames_to_relative_lengths(torch.tensor([50, 31, 44]), 50)
    computed: list[int] = []
    compute = ecapa_model._reflect_index

    def counted(lengths: torch.Tensor, total: int, pad: int) -> torch.Tensor:
        computed.append(pad)
        return compute(lengths, total, pad)

    monkeypatch.setattr(ecapa_model, "_reflect_index", counted)
    shared = model(feats, rel)
    padded = [m.pad for m in model.modules() if isinstance(m, Conv1d) and m.pad > 0]
    assert sorted(computed) == sorted(set(padded)) and len(padded) > 2 * len(set(padded))
    computed.clear()
    monkeypatch.setattr(ecapa_model, "reflect_indices_shared", contextlib.nullcontext)
    alone = model(feats, rel)
    assert sorted(computed) == sorted(padded)  # each convolution its own
    torch.testing.assert_close(shared, alone, atol=0, rtol=0)
    assert not any(isinstance(m, torch.nn.Dropout1d) for m in model.modules())  # dropout 0: no module to run


# --------------------------------------------------------------------------- backbone wrapper


def test_backbone_hidden_states_and_gradients() -> None:
    backbone = EcapaBackbone(EcapaOptions(20, lin_neurons=24, **SMALL))
    assert backbone.embedding_dim == 24 and backbone.num_layers == 1
    backbone.train()
    feats = torch.randn(3, 45, 20, requires_grad=True)
    lengths = torch.tensor([45, 30, 12])
    states, mask = backbone.hidden_states(feats, lengths)
    assert len(states) == backbone.num_layers and states[0].shape == (3, 1, 24)
    assert mask.shape == (3, 1) and mask.dtype == torch.bool and mask.all()
    states[0].pow(2).sum().backward()
    for name, param in backbone.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert torch.isfinite(feats.grad).all() and feats.grad[:, :12].abs().sum() > 0
    assert backbone.padding.exact  # scoring batches take any mix of lengths

    backbone.eval()
    with torch.no_grad():
        full, _ = backbone.hidden_states(feats, torch.tensor([45, 45, 45]))
        torch.testing.assert_close(full[0], backbone.ecapa(feats), atol=1e-5, rtol=0)
        part, _ = backbone.hidden_states(feats, lengths)
        torch.testing.assert_close(part[0][0], full[0][0], atol=1e-5, rtol=0)
        assert (part[0][1:] - full[0][1:]).abs().amax(dim=(1, 2)).min() > 1e-4  # lengths reach the model


def test_input_defaults_follow_training_and_leave_the_config_as_given() -> None:
    config = RunConfig()  # --model ecapa_tdnn
    config.model.options.update(channels=[16, 16, 48], kernel_sizes=[5, 3, 1], dilations=[1, 2, 1])
    resolve_config(config)
    inputs = input_spec(config)
    # 80 mel bins, light SpecAugment while the encoder trains, and enough frames for the widest padding (2)
    assert (inputs.num_mel_bins, inputs.freqm, inputs.timem, inputs.min_samples) == (80, 8, 10, 400 + 2 * 160)
    assert (config.features.num_mel_bins, config.features.freqm, config.audio.min_samples) == (None, None, 0)
    config.model.freeze = True  # a frozen encoder's inputs stay fixed (the feature cache): no masks unless asked
    assert (input_spec(config).freqm, input_spec(config).timem) == (0, 0)
    config.features.freqm, config.features.num_mel_bins = 4, 24
    assert (input_spec(config).freqm, input_spec(config).num_mel_bins) == (4, 24)
    assert EcapaBackbone(EcapaOptions.from_config(config)).ecapa.blocks[0].conv.conv.in_channels == 24
    config.features.features = "waveform"
    with pytest.raises(ValueError, match="fbank or mfcc"):
        input_spec(config)


def test_options_built_directly_are_those_of_a_config_left_at_its_defaults() -> None:
    """EcapaOptions' defaults are the options' (EcapaSettings): a run left at its defaults builds the same model."""
    config = resolve_config(RunConfig())
    width = input_spec(config).num_mel_bins
    assert width is not None and EcapaOptions.from_config(config) == EcapaOptions(width)
    config.model.options["channels"] = [16, 16, 48]
    assert EcapaOptions.from_config(config).channels == (16, 16, 48) != EcapaOptions(width).channels


def test_read_padding_reads_each_clip_as_its_target_length_frames_as_the_ecapa_seed() -> None:
    """Left off, a clip's padding is masked (whatever it holds); ``read_padding`` (set by `import naip` for the ECAPA
    seed's fbank mode) reads every clip as --target_length frames, those past its own the seed's normalised zeros."""
    config = RunConfig()
    config.model.options.update(channels=[16, 16, 48], kernel_sizes=[5, 3, 1], dilations=[1, 2, 1], lin_neurons=8)
    config.features.num_mel_bins, config.features.target_length = 12, 30
    config.features.dataset_mean, config.features.dataset_std = -6.0, 3.0
    resolve_config(config)
    assert EcapaOptions.from_config(config).read_frames == 0  # runs made before keep their masks
    torch.manual_seed(0)
    backbone = EcapaBackbone(EcapaOptions.from_config(config)).eval()
    config.model.options["read_padding"] = True
    options = EcapaOptions.from_config(config)
    assert (options.read_frames, options.padding_value) == (30, 1.0)  # (0 - -6) / (2 * 3)
    reading = EcapaBackbone(options).eval()
    reading.load_state_dict(backbone.state_dict())
    feats = torch.randn(2, 30, 12)
    feats[0, 18:] = 7.0  # what --pad filled
    lengths = torch.tensor([18, 30])
    seed_input = feats.clone()
    seed_input[0, 18:] = 1.0
    with torch.no_grad():
        masked, _ = backbone.hidden_states(feats, lengths)
        torch.testing.assert_close(masked[0][0], backbone.ecapa(feats[:1, :18])[0], atol=1e-5, rtol=0)
        read, _ = reading.hidden_states(feats, lengths)
        torch.testing.assert_close(read[0], backbone.ecapa(seed_input), atol=1e-5, rtol=0)
        torch.testing.assert_close(read[0][1], masked[0][1], atol=1e-5, rtol=0)  # a full clip: the same
        assert (read[0][0] - masked[0][0]).abs().max() > 1e-4


def test_block_sizes_of_different_counts_are_refused_naming_each_flag() -> None:
    config = RunConfig()
    config.model.model = "ecapa_tdnn"
    config.model.options = {"channels": [32, 32, 32, 96]}  # the default kernel sizes and dilations have 5 blocks
    with pytest.raises(ValueError, match=r"^--channels 4 \(32 32 32 96\), --kernel_sizes 5 \(5 3 3 3 1\), "
                                         r"--dilations 5 \(1 2 3 4 1\): give each one value per block"):
        resolve_config(config)


@pytest.mark.parametrize("flags", [["-pm", "max"], ["-pm", "sum"], ["--pool_drop_last", "true"],
                                   ["--weighted", "true"]])
def test_the_poolings_and_weighted_sum_of_its_one_pooled_state_are_refused(uid_dataset: dict, tmp_path: Path,
                                                                           flags: list[str]) -> None:
    """ECAPA-TDNN's one hidden state is its pooled embedding: each pooling, the last frame left out and the weighted
    sum of that one state give it back (the same logits), so they are refused before anything is written; a run
    resumed with them goes on, the poolings no change of it."""
    args = small_train_args(uid_dataset, tmp_path / "run", *flags)
    assert main(args) == 2
    assert not (tmp_path / "run").exists()
    config = resolve_config(config_from_args(build_parser("ecapa_tdnn").parse_args(args), read_inputs=False))
    with pytest.raises(ValueError, match=f"--{config_flag(flags)} [^:]+: --model ecapa_tdnn's hidden state is one "
                                         "vector per clip, pooled by the model: .*; leave --"):
        refuse_inactive(config)
    default = copy.deepcopy(config)
    default.classifier = RunConfig().classifier
    default.classifier.clf_bottleneck = config.classifier.clf_bottleneck
    backbone, heads = build_backbone(config).eval(), [HeadSpec("y", "categorical", ["y"], ["a", "b"])]
    features, lengths = torch.randn(3, 60, 24), torch.tensor([60, 41, 30])
    logits = []
    for classifier_options in (default.classifier, config.classifier):
        torch.manual_seed(0)
        logits.append(Classifier(backbone, heads, classifier_options).eval()(features, lengths))
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=1e-6)
    if flags[0] != "--weighted":  # the weighted sum has weights of its own, which its checkpoint holds
        assert without_idle_options(config, config).classifier == default.classifier
    config.train.resume = True
    refuse_inactive(config)


def config_flag(flags: list[str]) -> str:
    return {"-pm": "pooling_mode"}.get(flags[0], flags[0][2:])


def test_a_run_made_with_pad_before_it_was_refused_resumes_as_the_same_run(tmp_path: Path) -> None:
    """--pad never reached ECAPA-TDNN's layers (it masks the padded frames): refused for a new run, while a run whose
    config.yaml records one resumes with the command that made it, or without the flag, as the same run."""
    from audiotune.config import save_config
    from audiotune.engine.resume import resumed_changes

    made = RunConfig()
    made.model.model = "ecapa_tdnn"
    resolve_config(made)
    made.features.pad = "silence"  # as a run made before the refusal recorded it
    save_config(made, tmp_path / "config.yaml")
    with pytest.raises(ValueError, match=r"^--pad silence: --model ecapa_tdnn masks the padded frames"):
        resolve_config(copy.deepcopy(made))
    for pad in ("silence", "zero"):
        again = copy.deepcopy(made)
        again.features.pad, again.train.resume = pad, True
        assert resumed_changes(tmp_path, resolve_config(again)) == {}, pad
