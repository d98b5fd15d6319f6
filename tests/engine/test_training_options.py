"""Training options, metrics and the train-only data transforms."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import SMALL_ECAPA, SMALL_ECAPA_SIZES, small_train_args

from audiotune.cli import build_parser, config_from_args, main
from audiotune.config import HeadSpec, RunConfig, TrainConfig
from audiotune.data.checked_audio import scan_audio
from audiotune.data.input_spec import InputSpec
from audiotune.data.layout import attach_paths
from audiotune.data.loading import make_dataset
from audiotune.engine.losses import classification_loss, resolve_loss
from audiotune.engine.metrics import compute_metrics, scores_from_logits
from audiotune.engine.module import optimizers

HEADS = [HeadSpec("word", "categorical", ["word"], ["a", "b", "c"]), HeadSpec("x+y", "binary", ["x", "y"])]


def run_train(ds: dict, out, *extra: str, sizes: list[str] = SMALL_ECAPA) -> dict:
    args = ["train", "-i", str(ds["prefix"]), "-d", str(ds["split"]), "-l", str(ds["labels"]), "-o", str(out),
            *sizes, "-e", "1", "-bs", "4", *extra]
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def test_loss_per_head_type() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0, 3.0, -3.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(logits[:, :3], targets[:, :3])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 3:], targets[:, 3:])
    mse = torch.nn.functional.mse_loss(logits[:, 3:], targets[:, 3:])
    assert torch.isclose(classification_loss(logits, targets, HEADS, "BCE"), ce + bce)
    assert torch.isclose(classification_loss(logits, targets, HEADS, "MSE"), ce + mse)
    soft = torch.tensor([[0.7, 0.3, 0.0, 0.5, 0.5]])  # mixup targets
    assert torch.isfinite(classification_loss(logits, soft, HEADS))
    assert resolve_loss("auto", HEADS) == "BCE" and resolve_loss("MSE", HEADS) == "MSE"
    with pytest.raises(ValueError, match="CE"):
        resolve_loss("CE", HEADS)
    assert resolve_loss("CE", HEADS[:1]) == "BCE"
    # the seeds' MSE regressed scores; with categorical heads alone it would do nothing
    with pytest.raises(ValueError, match=r"--loss MSE applies to binary and regression heads.*word \(categorical\)"):
        resolve_loss("MSE", HEADS[:1])
    assert resolve_loss("MSE", [HeadSpec("score", "regression", ["score"])]) == "MSE"


def test_the_optimiser_updates_in_one_fused_kernel_on_cuda_only() -> None:
    from types import SimpleNamespace

    from audiotune.engine.module import fused_update

    on = [SimpleNamespace(device=torch.device(kind)) for kind in ("cuda", "cuda:1", "cpu")]
    assert fused_update(on[:2]) and not fused_update(on) and not fused_update(on[2:]) and not fused_update([])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for optim in ("adam", "adamw"):
            model = torch.nn.Linear(2, 2).to(device)
            optimizer = optimizers(model.parameters(), TrainConfig(optim=optim), steps_per_epoch=1)["optimizer"]
            assert bool(optimizer.param_groups[0]["fused"]) is (device == "cuda")


@pytest.mark.parametrize("optim, scheduler", [("adam", "none"), ("adamw", "onecycle"), ("adamw", "cosine")])
def test_optimizers_and_schedules(optim: str, scheduler: str) -> None:
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(optim=optim, scheduler=scheduler, epochs=2, learning_rate=0.1, max_lr=0.5, warmup_steps=3,
                         weight_decay=0.2)
    setup = optimizers(model.parameters(), config, steps_per_epoch=10)
    optimizer = setup["optimizer"]
    assert type(optimizer).__name__ == {"adam": "Adam", "adamw": "AdamW"}[optim]
    if optim == "adamw":
        assert optimizer.param_groups[0]["weight_decay"] == 0.2
    if scheduler == "none":
        assert "lr_scheduler" not in setup
        return
    sched = setup["lr_scheduler"]["scheduler"]
    assert setup["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    if scheduler == "onecycle":
        assert max(rates) == pytest.approx(0.5, rel=0.05) and rates[0] < 0.1
    else:
        assert rates[0] < rates[3] == pytest.approx(0.1) and rates[-1] < 0.01


def test_the_onecycle_schedule_sets_the_rate_whatever_the_learning_rate_says() -> None:
    """Why -lr is refused with --scheduler onecycle (config.sections): OneCycleLR starts at --max_lr / 25."""
    rates = []
    for learning_rate in (1e-5, 0.1):
        model = torch.nn.Linear(2, 2)
        setup = optimizers(model.parameters(), TrainConfig(scheduler="onecycle", learning_rate=learning_rate,
                                                           max_lr=0.5), steps_per_epoch=10)
        optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
        rates.append([])
        for _ in range(10):
            rates[-1].append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
    assert rates[0] == rates[1] and rates[0][0] == pytest.approx(0.5 / 25)


def test_the_tap2key_recipe_schedules_as_the_trainer_it_replaces() -> None:
    """The Hugging Face Trainer's linear schedule (warm-up over ``warmup_ratio`` of the optimiser steps, rounded up,
    then straight down to 0) from ``--warmup_ratio`` and ``--flat_ratio 0``; only its warm-up's first step differs
    (``step / warmup`` there: a rate of 0)."""
    from transformers import get_linear_schedule_with_warmup

    recipe = config_from_args(build_parser("hf").parse_args(["train", "--config", "seeds/tap2key", "-d", "x", "-o",
                                                             "o"]), read_inputs=False).train
    assert (recipe.scheduler, recipe.warmup_ratio, recipe.flat_ratio, recipe.warmup_steps) == ("linear", 0.1, 0.0, 0)

    def rates(config: TrainConfig | None) -> list[float]:
        model = torch.nn.Linear(2, 2)
        if config is None:  # the Trainer's: 12 epochs of 10 optimiser steps, warm-up ceil(0.1 x 120) = 12 steps
            optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
            schedule = get_linear_schedule_with_warmup(optimizer, 12, 120)
        else:
            setup = optimizers(model.parameters(), config, steps_per_epoch=40)  # 4 batches an optimiser step
            optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
        out = []
        for _ in range(120):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return out

    settings = {"scheduler": "linear", "learning_rate": 0.1, "epochs": 12, "accumulate_grad_batches": 4}
    ours = rates(TrainConfig(**settings, warmup_ratio=recipe.warmup_ratio, flat_ratio=recipe.flat_ratio))
    trainer = rates(None)
    assert ours[12:] == pytest.approx(trainer[12:]) and ours[12] == pytest.approx(0.1) and ours[13] < ours[12]
    assert ours[:12] == pytest.approx([0.1 * (step + 1) / 13 for step in range(12)]) and trainer[0] == 0.0
    held = rates(TrainConfig(**settings, warmup_ratio=0.1))  # the default --flat_ratio: the peak 6 steps longer
    assert held[:12] == ours[:12] and held[12:19] == pytest.approx([0.1] * 7) and held[19] < 0.1
    assert rates(TrainConfig(**settings, warmup_steps=12, flat_ratio=0.0)) == ours


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "linear"])
def test_a_run_of_no_training_step_builds_its_schedule(scheduler: str) -> None:
    """`train -e 0` (the untrained model's metrics) configures the optimiser as any run does, onecycle included."""
    model = torch.nn.Linear(2, 2)
    setup = optimizers(model.parameters(), TrainConfig(scheduler=scheduler, epochs=0), steps_per_epoch=10)
    assert setup["lr_scheduler"]["interval"] == "step"


@pytest.mark.slow
def test_bf16_workers_and_onecycle_train(uid_dataset: dict, tmp_path) -> None:
    metrics = run_train(uid_dataset, tmp_path, "--precision", "bf16", "-nw", "2", "--scheduler", "onecycle",
                        "--optim", "adam")
    assert metrics["test"]["n"] == 4
    config = (tmp_path / "config.yaml").read_text()
    assert "precision: bf16" in config and "num_workers: 2" in config


@pytest.mark.slow
def test_early_stopping_stops_when_validation_stalls_and_says_so(uid_dataset: dict, tmp_path, caplog) -> None:
    metrics = run_train(uid_dataset, tmp_path, "-e", "8", "--patience", "1", "-lr", "0", "--final_dropout", "0")
    assert metrics["epochs_run"] < 8
    said = f"stopped early after epoch {metrics['epochs_run']} of 8: val_loss not better for 1 epochs (--patience); " \
           f"the best epoch was {metrics['selection']['epoch']}"
    assert said in caplog.text


@pytest.mark.slow
def test_mse_loss_scores_are_raw_outputs(uid_dataset: dict, tmp_path) -> None:
    run_train(uid_dataset, tmp_path, "--loss", "MSE")
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert "score:loud" in predictions


def test_metrics_are_nan_safe() -> None:
    targets = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 1, 1], [0, 0, 1, 1, 0]], dtype=np.float32)
    scores = scores_from_logits(np.random.default_rng(0).normal(size=(3, 5)), HEADS)
    metrics = compute_metrics(scores, targets, HEADS)
    assert metrics["auc"]["x"] is None and any("'x'" in note for note in metrics["notes"])
    assert metrics["auc"]["y"] is not None
    json.dumps(metrics, allow_nan=False)
    empty = compute_metrics(scores[:0], targets[:0], HEADS)
    assert empty["accuracy"] is None and empty["n"] == 0


def test_metrics_values() -> None:
    heads = HEADS[:1]
    targets = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]]
    scores = np.eye(3)[[0, 1, 1, 2]]
    metrics = compute_metrics(scores, targets, heads)
    assert metrics["accuracy"] == 0.75
    assert metrics["uar"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert metrics["heads"]["word"]["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def _dataset(ds: dict, train: bool, **changes) -> object:
    config = RunConfig()
    config.features.features = "fbank"
    config.features.num_mel_bins = 24
    for key, value in changes.items():
        section, name = key.split("__")
        setattr(getattr(config, section), name, value)
    table, _ = attach_paths(ds["table"].head(4), str(ds["prefix"]))
    inputs = InputSpec.from_sections(config.audio, config.features)
    table, _ = scan_audio(table, inputs.audio(train=True), "t")
    targets = np.eye(4, dtype=np.float32)
    return make_dataset(config, inputs, table, targets, train=train)


@pytest.mark.parametrize("option", ["augment__gauss", "augment__gain", "augment__tshift", "augment__speed",
                                    "augment__stretch", "augment__pshift", "features__noise"])
def test_augmentation_changes_training_inputs_only(uid_dataset: dict, option: str) -> None:
    torch.manual_seed(0)
    plain = _dataset(uid_dataset, train=False, **{option: 1.0 if "augment" in option else True})
    augmented = _dataset(uid_dataset, train=True, **{option: 1.0 if "augment" in option else True})
    baseline = _dataset(uid_dataset, train=False)
    assert torch.equal(plain[0]["inputs"], baseline[0]["inputs"])  # off outside training
    assert not torch.equal(augmented[0]["inputs"], baseline[0]["inputs"])


def test_spec_masks_change_training_inputs(uid_dataset: dict) -> None:
    torch.manual_seed(0)
    augmented = _dataset(uid_dataset, train=True, features__freqm=8, features__timem=10)
    baseline = _dataset(uid_dataset, train=False, features__freqm=8, features__timem=10)
    assert (augmented[0]["inputs"] == 0).sum() > (baseline[0]["inputs"] == 0).sum()


def test_mixup_mixes_targets(uid_dataset: dict) -> None:
    torch.manual_seed(0)
    mixed = _dataset(uid_dataset, train=True, data__mixup=1.0)
    target = mixed[0]["targets"]
    assert 0.0 < target.max() < 1.0 and target.sum() == pytest.approx(1.0)
    assert torch.equal(_dataset(uid_dataset, train=False, data__mixup=1.0)[0]["targets"], torch.eye(4)[0])


def test_normalisation_uses_dataset_statistics(uid_dataset: dict) -> None:
    raw = _dataset(uid_dataset, train=False)[0]["inputs"]
    normed = _dataset(uid_dataset, train=False, features__dataset_mean=-4.0, features__dataset_std=2.5)[0]["inputs"]
    torch.testing.assert_close(normed, (raw + 4.0) / 5.0)
    with pytest.raises(ValueError, match="std"):
        _dataset(uid_dataset, train=False, features__dataset_std=0.0)


def test_target_length_pads_and_crops_feature_frames() -> None:
    from audiotune.data.batch_features import HOST_LENGTHS
    from audiotune.data.dataset import Collator

    items = [{"uid": "a", "inputs": torch.ones(7, 3), "length": 7, "targets": torch.zeros(1)},
             {"uid": "b", "inputs": torch.ones(3, 3), "length": 3, "targets": torch.zeros(1)}]
    batch = Collator(target_length=5)(items)
    assert batch["inputs"].shape == (2, 5, 3) and batch["lengths"].tolist() == [5, 3]
    assert batch[HOST_LENGTHS] == [5, 3]  # plain numbers: they stay on the host when the batch moves
    assert batch["inputs"][1, 3:].abs().sum() == 0
    free = Collator()(items)
    assert free["inputs"].shape == (2, 7, 3) and free["lengths"].tolist() == [7, 3]


@pytest.mark.slow
def test_silence_padding_pads_with_the_features_of_a_silent_clip(uid_dataset: dict, tmp_path) -> None:
    """--pad silence: a batch's shorter clips are padded with the fbank of silence (the log floor in every
    bin, no louder than any real frame) instead of the value 0; their real frames and lengths are the same
    either way, and training a model that reads padded frames (SSAST) sees the difference."""
    from audiotune.data.loading import collator

    def batch(pad: str, **features: float) -> tuple[dict, object]:
        config = RunConfig()
        config.features.features, config.features.num_mel_bins, config.features.pad = "fbank", 24, pad
        for name, value in features.items():
            setattr(config.features, name, value)
        table, _ = attach_paths(uid_dataset["table"].head(4), str(uid_dataset["prefix"]))
        inputs = InputSpec.from_sections(config.audio, config.features)
        table, _ = scan_audio(table, inputs.audio(train=True), "t")
        dataset = make_dataset(config, inputs, table, np.eye(4, dtype=np.float32))
        return collator(dataset)([dataset[i] for i in range(4)]), dataset

    (silent, dataset), (zero, _) = batch("silence"), batch("zero")
    lengths = silent["lengths"].tolist()
    assert lengths == zero["lengths"].tolist() and min(lengths) < max(lengths)  # the table has short clips
    floor = float(np.log(np.finfo(np.float32).eps))
    for row, n in enumerate(lengths):
        assert torch.equal(silent["inputs"][row, :n], zero["inputs"][row, :n])
        assert torch.allclose(silent["inputs"][row, n:], torch.tensor(floor))
        assert zero["inputs"][row, n:].abs().sum() == 0
        assert silent["inputs"][row, :n].min() >= floor - 1e-4  # no real frame is quieter than silence
    normed, _ = batch("silence", dataset_mean=-4.0, dataset_std=2.5)  # silence is normalised as speech is
    short = lengths.index(min(lengths))
    torch.testing.assert_close(normed["inputs"][short, -1], torch.full((24,), (floor + 4.0) / 5.0))
    assert dataset.extract.pad_frame() is not None and RunConfig().features.pad == "zero"
    # the NAIP seeds' padding: 0 in the fbank before the dataset normalisation, (0 - mean) / (2 std) after it
    seeded, _ = batch("zero_before_norm", dataset_mean=-4.0, dataset_std=2.5)
    torch.testing.assert_close(seeded["inputs"][short, -1], torch.full((24,), 0.8))
    torch.testing.assert_close(seeded["inputs"][short, :min(lengths)], normed["inputs"][short, :min(lengths)])

    from safetensors.torch import load_file

    # ECAPA-TDNN never reads a padded frame (its padding is exact): --pad would change nothing, so it is refused
    assert main(small_train_args(uid_dataset, tmp_path / "silence", "--pad", "silence")) == 2
    assert not (tmp_path / "silence").exists()
    # SSAST reads target_length frames, the padding included: training sees the difference
    ssast = ["--model", "ssast", "--model_size", "tiny", "--num_mel_bins", "32", "--target_length", "96", "--fshape",
             "16", "--tshape", "16", "--fstride", "16", "--tstride", "16", "--freeze", "False", "--clf_bottleneck",
             "8", "-e", "1", "-bs", "4", "--seed", "1"]
    for pad in ("zero", "silence"):
        assert main(["train", "-i", str(uid_dataset["prefix"]), "-d", str(uid_dataset["split"]), "-l",
                     str(uid_dataset["labels"]), "-o", str(tmp_path / f"ssast_{pad}"), *ssast, "--pad", pad]) == 0
    a, b = (load_file(str(tmp_path / f"ssast_{pad}" / "model.safetensors")) for pad in ("zero", "silence"))
    assert a.keys() == b.keys() and any(not torch.equal(a[key], b[key]) for key in a)


@pytest.mark.slow
def test_mfcc_features_train_and_debug_limits_rows(uid_dataset: dict, tmp_path) -> None:
    metrics = run_train(uid_dataset, tmp_path, "--features", "mfcc", "--n_mfcc", "13", "--n_mels", "24",
                        "--n_fft", "256", "--debug", sizes=SMALL_ECAPA_SIZES)
    config = (tmp_path / "config.yaml").read_text()
    assert "features: mfcc" in config and "n_mfcc: 13" in config
    assert metrics["val"]["n"] == 4 and metrics["test"]["n"] == 4  # val/test have 4 rows; --debug keeps <= 8
    steps = pd.read_csv(tmp_path / "logs" / "metrics.csv")["train_loss_step"].notna().sum()
    assert steps == 2  # 8 of the 16 training rows in batches of 4
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "model.safetensors"))["backbone.ecapa.blocks.0.conv.conv.weight"].shape[1] == 13


@pytest.mark.slow
def test_frozen_backbone_weights_and_statistics_do_not_change(uid_dataset: dict, tmp_path) -> None:
    import pytorch_lightning as pl
    from safetensors.torch import load_file

    from audiotune.config import load_config
    from audiotune.models.checkpoint import build_classifier

    run_train(uid_dataset, tmp_path, "--freeze", "--cache", "False", "-e", "2", "--seed", "4")
    pl.seed_everything(4, verbose=False)
    initial = build_classifier(load_config(tmp_path / "config.yaml")).state_dict()
    trained = load_file(str(tmp_path / "model.safetensors"))
    backbone = [k for k in trained if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)
    for key in backbone:
        torch.testing.assert_close(trained[key], initial[key], msg=key)
    heads = [k for k in trained if k.startswith("classifiers.")]
    assert any(not torch.equal(trained[k], initial[k]) for k in heads)  # the heads did train


@pytest.mark.slow
def test_compile_runs_the_training_steps_through_torch_compile_as_eager_to_rounding(
        uid_dataset: dict, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """reduce-overhead compiles as default does; on the CPU, without CUDA graphs, which the run's log says."""
    from safetensors.torch import load_file

    torch._dynamo.reset()
    losses, weights = {}, {}
    for mode in ("none", "reduce-overhead"):
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        run_train(uid_dataset, tmp_path / mode, "-e", "2", "--final_dropout", "0", "--compile", mode)
        compiled = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
        assert (compiled > 0) == (mode != "none")
        losses[mode] = pd.read_csv(tmp_path / mode / "logs" / "metrics.csv")["train_loss_step"].dropna().to_numpy()
        weights[mode] = load_file(str(tmp_path / mode / "model.safetensors"))
    assert len(losses["reduce-overhead"]) == 8
    np.testing.assert_allclose(losses["reduce-overhead"], losses["none"], rtol=1e-4)
    assert weights["reduce-overhead"].keys() == weights["none"].keys()  # the model's own names, no wrapper's
    assert "compile: reduce-overhead" in (tmp_path / "reduce-overhead" / "config.yaml").read_text()
    assert caplog.text.count("--compile reduce-overhead: ") == 1  # once: at the end of the epoch that compiled
    assert "run without CUDA graphs (the model is on the CPU: CUDA graphs need a GPU)" in caplog.text


def test_a_run_made_with_a_pooling_of_ecapas_one_pooled_state_resumes(uid_dataset: dict, tmp_path) -> None:
    """-pm max did nothing to ECAPA-TDNN's pooled embedding and is refused now; a run whose config.yaml holds it
    resumes with it or without it, as the same run."""
    run = tmp_path / "run"
    assert main(small_train_args(uid_dataset, run)) == 0
    saved = (run / "config.yaml").read_text()
    assert "pooling_mode: mean" in saved
    (run / "config.yaml").write_text(saved.replace("pooling_mode: mean", "pooling_mode: max"))
    assert main(small_train_args(uid_dataset, run, "-pm", "max", "--resume", "-e", "2")) == 0
    assert main(small_train_args(uid_dataset, run, "--resume", "-e", "3")) == 0


def test_a_onecycle_run_is_not_resumed_past_the_length_its_schedule_was_made_for(tmp_path: Path) -> None:
    """torch's OneCycleLR has no step past its last: a longer resumed run failed mid-epoch ("Tried to step 5
    times"); it is refused before anything is written, naming the length to resume with. Other schedules go on."""
    from audiotune.config import save_config
    from audiotune.engine.resume import resumed_changes
    from audiotune.models.backbones import resolve_config

    made = RunConfig()
    made.train.scheduler, made.train.epochs = "onecycle", 2
    resolve_config(made)
    save_config(made, tmp_path / "config.yaml")
    longer = copy.deepcopy(made)
    longer.train.epochs, longer.train.resume = 3, True
    with pytest.raises(ValueError, match=r"--resume with -e 3: the run's --scheduler onecycle spans the -e 2 it "
                                         r"was made with.*resume with -e 2 \(or less\)"):
        resumed_changes(tmp_path, longer)
    steps = copy.deepcopy(longer)
    steps.train.epochs, steps.train.training_steps = 2, 10
    with pytest.raises(ValueError, match=r"--resume with --training_steps 10: .* spans the -e 2"):
        resumed_changes(tmp_path, steps)
    for epochs in (1, 2):  # as long or shorter: the schedule's own steps
        same = copy.deepcopy(longer)
        same.train.epochs = epochs
        assert resumed_changes(tmp_path, same) == {}
    made.train.scheduler = longer.train.scheduler = "cosine"
    save_config(made, tmp_path / "config.yaml")
    assert resumed_changes(tmp_path, longer) == {}


def test_a_head_option_the_runs_heads_lack_is_no_change_of_a_resumed_run(tmp_path: Path) -> None:
    """--labeling_method acts on soft heads only: for a run without one (a cv or sweep folder made before it was
    refused, whose runs that start read it at its default), the value recorded and another given on --resume are
    the same settings; for a run with a soft head they differ."""
    from audiotune.config import HeadSpec, save_config
    from audiotune.engine.resume import resumed_changes
    from audiotune.models.backbones import resolve_config

    made = RunConfig()
    made.train.labeling_method = "hard"
    made.heads = [HeadSpec(name="pitch", kind="categorical", columns=["pitch"], classes=["high", "low"])]
    resolve_config(made)
    save_config(made, tmp_path / "config.yaml")
    resumed = copy.deepcopy(made)
    resumed.train.labeling_method, resumed.train.resume = "distribution", True
    assert resumed_changes(tmp_path, resumed) == {}
    resumed.heads = made.heads = [HeadSpec(name="a+b", kind="soft", columns=["a", "b"], classes=["a", "b"])]
    save_config(made, tmp_path / "config.yaml")
    with pytest.raises(ValueError, match="labeling_method 'hard' -> 'distribution'"):
        resumed_changes(tmp_path, resumed)


def test_a_new_run_from_a_config_holding_options_refused_since_reads_them_at_their_defaults(
        uid_dataset: dict, tmp_path, capsys: pytest.CaptureFixture) -> None:
    """A config.yaml written before ECAPA-TDNN's pooling and weighted sum were refused (they did nothing) starts a
    new run as if they were left out, and says so; the same options given as flags are still refused."""
    run = tmp_path / "run"
    assert main(small_train_args(uid_dataset, run)) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["classifier"].update(pooling_mode="max", weighted=True, pool_drop_last=True)
    earlier = tmp_path / "earlier.yaml"
    earlier.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    again = tmp_path / "again"
    assert main(["train", "--config", str(earlier), "-o", str(again)]) == 0
    said = next(line for line in capsys.readouterr().err.splitlines() if line.startswith(f"--config {earlier}:"))
    assert said.startswith(f"--config {earlier}: left at their defaults, as they do nothing with the options given: ")
    for flag in ("--weighted true", "--pooling_mode max", "--pool_drop_last true"):
        assert f"{flag}: does nothing with --model ecapa_tdnn" in said
    written = yaml.safe_load((again / "config.yaml").read_text())["classifier"]
    assert (written["pooling_mode"], written["weighted"], written["pool_drop_last"]) == ("mean", False, False)
    made, remade = (pd.read_parquet(path / "predictions.parquet") for path in (run, again))
    scores = [column for column in made if column.startswith("score:")]
    np.testing.assert_allclose(remade[scores].to_numpy(), made[scores].to_numpy(), atol=1e-5)  # the same run
    refused = tmp_path / "refused"
    assert main(["train", "--config", str(earlier), "-o", str(refused), "-pm", "max"]) == 2
    assert "error: --pooling_mode max: --model ecapa_tdnn's hidden state" in capsys.readouterr().err
    assert not refused.exists()
