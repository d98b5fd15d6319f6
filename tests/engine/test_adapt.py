"""--adapt_bn (BatchNorm statistics re-estimated on the scored split) and --group_batches (one group per
training batch)."""
from __future__ import annotations

import copy
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import OnDevice, sigterm_dropped, small_train_args
from safetensors.torch import load_file

from audiotune.cli import main
from audiotune.config import ClassifierConfig, HeadSpec
from audiotune.data.loading import adaptation_loader, make_dataset
from audiotune.data.prepare import prepare_eval_data
from audiotune.data.samplers import GroupBatchSampler
from audiotune.engine.adapt import adapted_batchnorm, batch_norms, check_adaptable, estimate_batchnorm
from audiotune.interrupts import Terminated, sigterm_raises
from audiotune.models.backbones import input_spec
from audiotune.models.backbones.ecapa import EcapaBackbone, EcapaOptions
from audiotune.models.checkpoint import load_run
from audiotune.models.classifier import Classifier


@pytest.mark.slow
def test_adapted_statistics_are_the_mean_of_the_split_batch_statistics(trained_run: dict) -> None:
    config, model = load_run(str(trained_run["run"]))
    config.data.prefix = str(trained_run["prefix"])
    config.train.batch_size = 2  # several batches: the statistics are the mean over them
    inputs = input_spec(config)
    prepared = prepare_eval_data(config, inputs, str(trained_run["split"]))
    table = prepared.tables["train"]
    dataset = make_dataset(config, inputs, table, prepared.targets["train"])
    batches = adaptation_loader(config, dataset, config.train.batch_size, device=torch.device("cpu"))
    first = batch_norms(model)[0]
    before = {k: v.clone() for k, v in first.state_dict().items()}
    momentum = first.momentum
    seen: list[torch.Tensor] = []
    hook = first.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    with adapted_batchnorm(model, batches, torch.device("cpu")) as clips:
        hook.remove()
        assert clips == len(table) == 16 and len(seen) == 8
        # per batch: the mean and unbiased variance over clips and frames of each channel
        means = torch.stack([x.mean(dim=(0, 2)) for x in seen])
        variances = torch.stack([x.var(dim=(0, 2), unbiased=True) for x in seen])
        torch.testing.assert_close(first.running_mean, means.mean(0))
        torch.testing.assert_close(first.running_var, variances.mean(0))
        assert not torch.allclose(first.running_mean, before["running_mean"])
    # the training statistics and momentum are back, and every module in eval mode as before
    for key, value in before.items():
        assert torch.equal(first.state_dict()[key], value)
    assert first.momentum == momentum
    assert not any(m.training for m in model.modules())


def test_the_statistics_are_torch_s_cumulative_mean_counted_without_reading_the_device() -> None:
    """Each batch's statistics weigh the same, as BatchNorm's momentum None weighs them, without reading a layer's
    batch count back from the device at every batch."""
    torch.manual_seed(0)
    backbone = EcapaBackbone(EcapaOptions(12, lin_neurons=8, channels=(16, 16, 48), kernel_sizes=(5, 3, 1),
                                          dilations=(1, 2, 1), attention_channels=8, res2net_scale=2, se_channels=8))
    model = Classifier(backbone, [HeadSpec("word", "categorical", ["word"], ["a", "b"])], ClassifierConfig())
    batches = [{"uid": [f"{n}a", f"{n}b"], "inputs": torch.randn(2, 20, 12), "lengths": torch.tensor([20, 15])}
               for n in range(3)]
    torch_s = copy.deepcopy(model).eval()
    with torch.no_grad():
        for m in batch_norms(torch_s):
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for batch in batches:
            torch_s.forward_batch(batch)

    def counted_on_the_device(module: torch.nn.Module, args: tuple) -> None:
        module.num_batches_tracked = module.num_batches_tracked.as_subclass(OnDevice)

    hooks = [m.register_forward_pre_hook(counted_on_the_device) for m in batch_norms(model)]
    assert estimate_batchnorm(model, batches, torch.device("cpu")) == 6
    for hook in hooks:
        hook.remove()
    with OnDevice.read_back():
        assert all(torch.equal(value, torch_s.state_dict()[key]) for key, value in model.state_dict().items())
    assert all(m.momentum is None for m in batch_norms(model))


def test_an_adaptation_whose_sigterm_python_dropped_stops_before_its_next_batch(dropped: list) -> None:
    """The statistics' pass is its own (in a fit's validation no batch of the fit starts meanwhile): SIGTERM's
    exception dropped while one batch ran stops it before the next, and the model's modes come back."""
    backbone = EcapaBackbone(EcapaOptions(12, lin_neurons=8, channels=(16, 16, 48), kernel_sizes=(5, 3, 1),
                                          dilations=(1, 2, 1), attention_channels=8, res2net_scale=2, se_channels=8))
    model = Classifier(backbone, [HeadSpec("word", "categorical", ["word"], ["a", "b"])], ClassifierConfig())
    seen: list[str] = []

    def batches() -> Iterator[dict]:
        for n in range(4):
            seen.append(f"{n}a")
            yield {"uid": [f"{n}a", f"{n}b"], "inputs": torch.randn(2, 20, 12), "lengths": torch.tensor([20, 15])}
            if n == 1:
                sigterm_dropped(dropped)

    model.train()
    with sigterm_raises(), pytest.raises(Terminated):
        estimate_batchnorm(model, batches(), torch.device("cpu"))
    assert seen == ["0a", "1a", "2a"] and all(m.training for m in model.modules())


def test_one_clip_cannot_be_adapted_on(trained_run: dict) -> None:
    config, model = load_run(str(trained_run["run"]))
    config.data.prefix = str(trained_run["prefix"])
    inputs = input_spec(config)
    prepared = prepare_eval_data(config, inputs, str(trained_run["split"]))
    table = prepared.tables["test"].iloc[:1]
    dataset = make_dataset(config, inputs, table, prepared.targets["test"][:1])
    batches = adaptation_loader(config, dataset, config.train.batch_size, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"at least 2 clips; the scored split has 1 \({table.index[0]}\)"):
        with adapted_batchnorm(model, batches, torch.device("cpu")):
            pass
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_statistics_from_features_computed_on_the_device_are_the_workers(trained_run: dict) -> None:
    config, model = load_run(str(trained_run["run"]))
    config.data.prefix = str(trained_run["prefix"])
    inputs = input_spec(config)
    prepared = prepare_eval_data(config, inputs, str(trained_run["split"]))
    table, targets = prepared.tables["train"], prepared.targets["train"]
    statistics = {}
    for on_device in (False, True):
        batches = adaptation_loader(config, make_dataset(config, inputs, table, targets, on_device=on_device),
                                    config.train.batch_size, device=torch.device("cpu"))
        assert ("waveforms" in next(iter(batches))) == on_device
        with adapted_batchnorm(model, batches, torch.device("cpu")):
            statistics[on_device] = {k: v.clone() for k, v in batch_norms(model)[0].state_dict().items()}
    for key, value in statistics[False].items():
        torch.testing.assert_close(statistics[True][key], value, atol=1e-4, rtol=1e-4)


def test_a_model_without_batchnorm_is_refused() -> None:
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        check_adaptable(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3)))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _test_scores(folder: Path) -> np.ndarray:
    """Scores of the test clips (all clips of an evaluation of test.csv), by uid."""
    table = pd.read_parquet(folder / "predictions.parquet")
    table = table[table["split"] == "test"] if (table["split"] == "test").any() else table
    table = table.sort_values("uid")
    assert len(table) == 4
    return table[[c for c in table.columns if c.startswith("score:")]].to_numpy()


@pytest.mark.slow
def test_adapt_bn_changes_validation_and_scores_but_not_training(uid_dataset: dict, tmp_path: Path) -> None:
    plain, adapted = tmp_path / "plain", tmp_path / "adapted"
    assert main(small_train_args(uid_dataset, plain)) == 0
    assert main(small_train_args(uid_dataset, adapted, "--adapt_bn", "split")) == 0
    # training is the same (the validation model is a copy; no random draw is added): same weights and
    # training statistics saved, same training losses
    a, b = load_file(plain / "model.safetensors"), load_file(adapted / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a, log_b = pd.read_csv(plain / "logs" / "metrics.csv"), pd.read_csv(adapted / "logs" / "metrics.csv")
    np.testing.assert_allclose(log_a["train_loss_epoch"].dropna(), log_b["train_loss_epoch"].dropna())
    # validation and scoring see the split's own statistics
    assert not np.allclose(log_a["val_loss"].dropna(), log_b["val_loss"].dropna())
    metrics = pd.read_json(adapted / "metrics.json", typ="series")
    for split in ("val", "test"):
        assert metrics[split]["batchnorm_adapted"] == {"on": "split", "groups": 1, "clips": 4}
    assert "batchnorm_adapted" not in pd.read_json(plain / "metrics.json", typ="series")["test"]
    assert not np.allclose(_test_scores(plain), _test_scores(adapted))

    # evaluate follows the run's setting and reproduces its scores; --adapt_bn none gives the plain run's;
    # neither touches the saved model
    digest = _digest(adapted / "model.safetensors")
    args = ["evaluate", "--run", str(adapted), "-d", str(uid_dataset["split"] / "test.csv")]
    assert main([*args, "-o", str(tmp_path / "ev_on")]) == 0
    np.testing.assert_allclose(_test_scores(tmp_path / "ev_on"), _test_scores(adapted), rtol=1e-5, atol=1e-6)
    assert main([*args, "-o", str(tmp_path / "ev_off"), "--adapt_bn", "none"]) == 0
    np.testing.assert_allclose(_test_scores(tmp_path / "ev_off"), _test_scores(plain), rtol=1e-5, atol=1e-6)
    assert _digest(adapted / "model.safetensors") == digest


def test_group_batches_hold_one_group_each() -> None:
    groups = ["a"] * 9 + ["b"] * 4 + ["c"] * 1 + ["d"] * 5
    sampler = GroupBatchSampler(groups, 4, seed=3)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(groups)))  # every clip once
        assert all(len({groups[i] for i in b}) == 1 for b in batches)  # one group per batch
        # a group's lone last clip joins its previous batch (a: 4 + 5, d: 5); a group of one stays one
        assert sorted(len(b) for b in batches) == [1, 4, 4, 5, 5]
        orders.append(batches)
    assert orders[0] != orders[1]
    sampler.set_epoch(1)
    assert list(sampler) == orders[1]


@pytest.mark.slow
def test_group_batches_change_training_and_check_their_column(uid_dataset: dict, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert main(small_train_args(uid_dataset, tmp_path / "plain")) == 0
    assert main(small_train_args(uid_dataset, tmp_path / "grouped", "--group_batches", "subject")) == 0
    a = load_file(tmp_path / "plain" / "model.safetensors")
    b = load_file(tmp_path / "grouped" / "model.safetensors")
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert main(small_train_args(uid_dataset, tmp_path / "bad", "--group_batches", "speaker")) == 2
    assert "--group_batches speaker: the training table has no such column" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(small_train_args(uid_dataset, tmp_path / "bad2", "--group_batches", "subject",
                                 "--balance", "oversample")) == 2
    assert "cannot be combined with --balance" in capsys.readouterr().err
    holes = tmp_path / "holes"
    shutil.copytree(uid_dataset["split"], holes)
    train = pd.read_csv(holes / "train.csv", index_col=0)
    train.loc[train.index[2], "subject"] = None
    train.to_csv(holes / "train.csv")
    args = small_train_args({**uid_dataset, "split": holes}, tmp_path / "bad3", "--group_batches", "subject")
    assert main(args) == 2
    assert f"--group_batches subject: 1 training rows have no subject (e.g. uid {train.index[2]})" \
        in capsys.readouterr().err
    assert not (tmp_path / "bad3").exists()


def _scores_by_uid(folder: Path) -> pd.DataFrame:
    table = pd.read_parquet(folder / "predictions.parquet").set_index("uid").sort_index()
    return table[[c for c in table.columns if c.startswith("score:")]]


@pytest.mark.slow
def test_adapt_bn_by_column_scores_each_group_with_its_own_statistics(trained_run: dict, tmp_path: Path) -> None:
    table = trained_run["table"]
    both = tmp_path / "two_speakers.csv"
    table[table.subject.isin(["eve", "fay"])].to_csv(both)
    args = ["evaluate", "--run", str(trained_run["run"])]
    assert main([*args, "-d", str(both), "-o", str(tmp_path / "by_subject"), "--adapt_bn", "subject"]) == 0
    assert main([*args, "-d", str(both), "-o", str(tmp_path / "whole"), "--adapt_bn", "split"]) == 0
    alone = []
    for subject in ("eve", "fay"):
        one = tmp_path / f"{subject}.csv"
        table[table.subject == subject].to_csv(one)
        assert main([*args, "-d", str(one), "-o", str(tmp_path / subject), "--adapt_bn", "split"]) == 0
        alone.append(_scores_by_uid(tmp_path / subject))
    by_subject = _scores_by_uid(tmp_path / "by_subject")
    # per group = each speaker scored as its own adapted split; the whole split's statistics differ
    pd.testing.assert_frame_equal(by_subject, pd.concat(alone).sort_index(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(by_subject.to_numpy(), _scores_by_uid(tmp_path / "whole").to_numpy())
    metrics = pd.read_json(tmp_path / "by_subject" / "metrics.json", typ="series")
    assert next(iter(metrics.values))["batchnorm_adapted"] == {"on": "subject", "groups": 2, "clips": 8}


@pytest.mark.slow
def test_validation_adapts_per_group_as_scoring_does(uid_dataset: dict, tmp_path: Path) -> None:
    table = uid_dataset["table"]
    split = tmp_path / "split2"
    split.mkdir()
    table[table.subject.isin(["ann", "bob", "cat"])].to_csv(split / "train.csv")
    table[table.subject.isin(["dan", "eve"])].to_csv(split / "val.csv")
    table[table.subject == "fay"].to_csv(split / "test.csv")
    run = tmp_path / "run"
    args = small_train_args(uid_dataset, run, "--adapt_bn", "subject", "--monitor", "uar")
    args[args.index("-d") + 1] = str(split)
    assert main(args) == 0
    log = pd.read_csv(run / "logs" / "metrics.csv")
    metrics = pd.read_json(run / "metrics.json", typ="series")
    # the one epoch's validation UAR, computed in training with each speaker's statistics, is the UAR of
    # the final scoring of the kept weights, group by group
    logged = log["val_uar"].dropna().to_numpy()
    assert len(logged) == 1 and logged[0] == pytest.approx(metrics["val"]["uar"])
    assert metrics["val"]["batchnorm_adapted"] == {"on": "subject", "groups": 2, "clips": 8}


def test_adapt_bn_checks_its_column_before_writing(uid_dataset: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert main(small_train_args(uid_dataset, tmp_path / "bad", "--adapt_bn", "speaker")) == 2
    assert "--adapt_bn speaker: the val table has no such column" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_evaluate_adapts_in_the_runs_training_batches_whatever_batch_size_scores(trained_run: dict,
                                                                                 tmp_path: Path) -> None:
    """The statistics were averaged over batches of evaluate's -bs: -bs 4 gave other scores than the run's own
    batch size, and -bs 1 was refused as a split of one clip."""
    from audiotune.cli import main

    scores = {}
    for size in ("1", "3", None):
        out = tmp_path / f"bs{size}"
        assert main(["evaluate", "--run", str(trained_run["run"]), "-d", str(trained_run["split"] / "test.csv"),
                     "-i", str(trained_run["prefix"]), "--adapt_bn", "split", "-o", str(out), "--report", "False",
                     *(["-bs", size] if size else [])]) == 0
        scores[size] = pd.read_parquet(out / "predictions.parquet").filter(like="score").to_numpy()
    assert scores[None].shape[1] >= 2
    assert np.allclose(scores["1"], scores[None], atol=1e-6) and np.allclose(scores["3"], scores[None], atol=1e-6)
