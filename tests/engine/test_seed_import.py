"""Seed arguments and weights onto audiotune's names: what each seed meant, declared once per seed."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiotune.cli.import_ import seed_config
from audiotune.config import RunConfig, config_from_dict, read_config_file, resolve_recipe
from audiotune.engine.seed_import import (
    LAYOUTS,
    SeedImportError,
    check_heads,
    detect_layout,
    read_seed_weights,
    seed_flags,
    seed_heads,
)

ECAPA, SSAST = (next(layout for layout in LAYOUTS if layout.model == name) for name in ("ecapa_tdnn", "ssast"))
LABELS = {"label_groups": [["slow rate"]]}


def test_seed_arguments_that_meant_something_else_are_translated_and_noted() -> None:
    flags, notes = seed_flags(ECAPA, {**LABELS, "fbank": True, "n_mels": 64, "n_fft": 300, "n_mfcc": 80,
                                      "pshift": 0.0, "pshiftn": 0.0, "dataset_mean": 0, "dataset_std": 0,
                                      "mode": "train", "exp_dir": "./experiments", "seed": None}, "args.pkl")
    assert (flags["num_mel_bins"], flags["target_length"], flags["model"]) == (64, 300, "ecapa_tdnn")
    left_out = {"n_mels", "n_fft", "n_mfcc", "pshiftn", "dataset_mean", "dataset_std", "mode", "exp_dir", "seed"}
    assert not left_out & set(flags)
    assert any("std 0" in note for note in notes) and any("--n_fft became --target_length" in n for n in notes)
    mfcc, _ = seed_flags(ECAPA, {**LABELS, "fbank": False, "n_mels": 64, "n_fft": 300}, "args.pkl")
    assert (mfcc["n_mels"], mfcc["n_fft"]) == (64, 300)  # MFCC mode: the same meaning as today's flags


def test_the_ecapa_seed_s_mfcc_mode_leaves_out_its_fbank_only_arguments() -> None:
    """Its --fbank False built the MFCC alone: normalisation, masks and noise did nothing (seed-notes 4.2)."""
    args = {**LABELS, "fbank": False, "dataset_mean": -4.27, "dataset_std": 4.57, "freqm": 5, "timem": 0,
            "noise": True}
    flags, notes = seed_flags(ECAPA, args, "args.pkl")
    assert "dataset_mean" not in flags and "dataset_std" not in flags
    assert (flags["fbank"], flags["freqm"], flags["timem"], flags["noise"]) == (False, 0, 0, False)
    unused = "fbank only in the ECAPA seed, unused by its MFCC mode (--fbank False); imported"
    assert notes == [f"--dataset_mean -4.27: {unused} without it", f"--dataset_std 4.57: {unused} without it",
                     f"--freqm 5: {unused} as --freqm 0", f"--noise True: {unused} as --noise False"]
    fbank, _ = seed_flags(ECAPA, {**args, "fbank": True}, "args.pkl")  # fbank mode: each acted
    assert (fbank["dataset_mean"], fbank["dataset_std"], fbank["freqm"], fbank["noise"]) == (-4.27, 4.57, 5, True)
    older, notes = seed_flags(ECAPA, {**LABELS, "dataset_mean": 0, "dataset_std": 0}, "args.pkl")
    assert older["fbank"] is False and "dataset_std" not in older and not notes  # MFCC: nothing divided by 0


def imported_config(layout, **args: object) -> RunConfig:
    """The config `import naip` writes for a seed run of ``layout`` with these arguments (its heads aside)."""
    flags, _ = seed_flags(layout, {**LABELS, **args}, "args.pkl")
    return seed_config(flags, "args.pkl", layout.recipe)[0]


def test_every_naip_seed_centres_its_clips() -> None:
    """Their mixup stage ran on every clip and, without a second one, subtracted its mean."""
    for layout in LAYOUTS:
        assert imported_config(layout).audio.remove_dc is True, layout.seed


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.seed)
def test_an_imported_run_starts_from_its_seed_s_recipe(layout) -> None:
    """What the seed did without an argument for it is its recipe's (said once there, not restated by the import);
    the seed's own arguments go on top, and the recipe's runtime and encoder files are not the imported run's."""
    recipe = config_from_dict(read_config_file(resolve_recipe(layout.recipe)))
    config = imported_config(layout, epochs=3, num_workers=2, weighted=True)
    assert (config.train.keep, config.classifier.layer_weights) == ("last", recipe.classifier.layer_weights)
    assert (config.audio.remove_dc, config.data.complete_rows) == (True, True)
    assert (config.features.pad, config.features.features) == (recipe.features.pad, recipe.features.features)
    assert not set(layout.fixed) & {"remove_dc", "complete_rows", "layer_weights", "pad", "pad_clips"}
    assert (config.train.epochs, config.runtime.num_workers) == (3, 2)  # the seed's arguments over the recipe's
    assert imported_config(layout).runtime == RunConfig().runtime  # the recipe's workers are not where it runs
    assert config.model.checkpoint == "" and not config.model.options.get("pretrained_mdl_path")  # the seed's own


def test_an_imported_w2v2_run_trains_as_the_seed_trained() -> None:
    """The w2v2 seed's frozen encoder ran in training mode with its checkpoint's SpecAugment and LayerDrop, and kept
    its last epoch: a run continued from the import (train --resume) trains so too."""
    w2v2 = next(layout for layout in LAYOUTS if layout.model == "hf")
    config = imported_config(w2v2, checkpoint="wav2vec2-base-960h", freeze=True)
    assert (config.model.frozen_train_mode, config.train.keep, config.model.checkpoint) == \
        (True, "last", "wav2vec2-base-960h")
    assert config.model.options == {"mask_time_prob": 0.05, "mask_time_length": 10, "layerdrop": "checkpoint"}
    assert imported_config(w2v2, freeze=False).model.frozen_train_mode is False  # fine-tuned: nothing frozen


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.seed)
def test_the_seeds_silent_waveform_augmentations_are_imported_off(layout) -> None:
    """The NAIP seeds' --tshift --speed --gauss --pshift --gain --stretch never changed a clip (seed-notes 1.5):
    a run continued from an import (train --resume) must not start augmenting."""
    given = {"tshift": 0.5, "speed": 0.2, "gauss": 0.0, "pshift": 0.3, "pshiftn": 2.0, "gain": 0.1, "stretch": 1.0}
    flags, notes = seed_flags(layout, {**LABELS, **given}, "args.pkl")
    assert {name: flags[name] for name in given if name != "pshiftn"} == dict.fromkeys(
        ("tshift", "speed", "gauss", "pshift", "gain", "stretch"), 0.0)
    assert "pshiftn" not in flags
    assert "--tshift 0.5 was a silent no-op in the seed (its waveform augmentations never changed a clip): imported " \
           "as --tshift 0.0" in notes
    assert not any("--gauss" in note for note in notes)  # 0 in the seed too: nothing to say


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.seed)
def test_every_naip_seed_pads_its_short_clips_to_clip_length(layout) -> None:
    """Their Truncate stage padded a clip shorter than --clip_length with its mean (seed-notes 1.4); --clip_length 0
    kept whole clips."""
    assert imported_config(layout, clip_length=2.0).audio.pad_clips is True
    assert imported_config(layout, clip_length=0.0).audio.pad_clips is False


def test_ssast_pools_as_the_seed_whatever_its_pooling_mode() -> None:
    flags, notes = seed_flags(SSAST, {**LABELS, "pooling_mode": "sum"}, "args.pkl")
    assert flags["pooling_mode"] == "mean" and notes == ["--pooling_mode sum only merged the seed's ft embeddings; "
                                                         "its tokens were averaged: imported as --pooling_mode mean"]


def test_heads_come_from_label_groups_or_target_labels_split_by_n_class() -> None:
    heads = seed_heads({"target_labels": ["a", "b", "c"], "n_class": [2, 1]}, "args.pkl")
    assert [(h.name, h.kind, h.columns) for h in heads] == [("a+b", "binary", ["a", "b"]), ("c", "binary", ["c"])]
    with pytest.raises(SeedImportError, match="args.pkl: n_class \\[2\\] does not add up to the 3 target_labels"):
        seed_heads({"target_labels": ["a", "b", "c"], "n_class": 2}, "args.pkl")
    with pytest.raises(SeedImportError, match="neither label_groups nor target_labels"):
        seed_flags(ECAPA, {"fbank": True}, "args.pkl")


def test_weights_of_no_seed_and_files_of_no_weights_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "x_mdl.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(SeedImportError, match="not a model of naip-w2v2, naip-ssast, naip-ecapa-tdnn"):
        detect_layout(read_seed_weights(path), path)
    torch.save({"v.patch_embed.proj.weight": torch.zeros(2)}, path)
    assert detect_layout(read_seed_weights(path), path) is SSAST
    torch.save([1, 2], path)
    with pytest.raises(SeedImportError, match="expected a state dict"):
        read_seed_weights(path)
    path.write_text("not torch")
    with pytest.raises(SeedImportError, match=rf"^{path}: not a torch checkpoint \(damaged, or a file of another "
                                              r"format; torch: Unsupported operand 110\)$"):
        read_seed_weights(path)


def test_the_seeds_optimiser_and_prediction_files_are_named_with_the_file_to_import(tmp_path: Path) -> None:
    """naip-w2v2 and naip-ssast saved *_optim_epoch{e}.pt beside their weights, and every NAIP seed its test logits
    and targets as *_predictions.pt / *_targets.pt: each is named, with the *_mdl.pt to import instead."""
    model = torch.nn.Linear(2, 1)
    optimiser = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimiser.step()
    path = tmp_path / "w2v2_ft_optim_epoch10.pt"
    torch.save(optimiser.state_dict(), path)
    with pytest.raises(SeedImportError, match=rf"^{path}: an optimiser state .*import the \*_mdl.pt beside it"):
        read_seed_weights(path)
    path = tmp_path / "split_predictions.pt"
    torch.save(torch.zeros(4, 3), path)
    with pytest.raises(SeedImportError, match=rf"^{path}: one tensor .*predictions.parquet$"):
        read_seed_weights(path)


def test_a_seed_file_without_heads_says_what_it_is() -> None:
    pretrained = {"v.patch_embed.proj.weight": torch.zeros(1), "cpredlayer.0.weight": torch.zeros(1)}
    with pytest.raises(SeedImportError, match="x.pt: a naip-ssast pretraining checkpoint .*--pretrained_mdl_path"):
        check_heads(SSAST, pretrained, "x.pt")
    with pytest.raises(SeedImportError, match="x.pt: a naip-ecapa-tdnn model without classifier heads"):
        check_heads(ECAPA, {"model.blocks.0.conv.conv.weight": torch.zeros(1)}, "x.pt")
    check_heads(SSAST, {**pretrained, "mlp_heads.0.head.dense.weight": torch.zeros(1)}, "x.pt")


def test_a_seed_head_without_relu_had_no_activation() -> None:
    flags, notes = seed_flags(SSAST, {**LABELS, "activation": "gelu"}, "args.pkl")
    assert flags["activation"] == "none" and any("--activation gelu" in note for note in notes)
    relu, notes = seed_flags(ECAPA, {**LABELS, "activation": "relu"}, "args.pkl")
    assert relu["activation"] == "relu" and not notes


def test_the_seeds_scheduler_none_stays_a_constant_learning_rate() -> None:
    assert seed_flags(ECAPA, {**LABELS, "scheduler": None}, "args.pkl")[0]["scheduler"] == "none"
    assert seed_flags(SSAST, {**LABELS, "scheduler": "onecycle"}, "args.pkl")[0]["scheduler"] == "onecycle"
    assert "scheduler" not in seed_flags(ECAPA, LABELS, "args.pkl")[0]  # an older seed without the argument


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.seed)
def test_every_naip_seed_keeps_only_rows_labelled_in_every_target_column(layout) -> None:
    assert imported_config(layout).data.complete_rows is True
