"""``audiotune probe``: one cached encoding pass, then the same head trained on every hidden state and on
their learned weighted sum; a table and a plot of the metrics per layer."""
from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from audiotune.config import RunConfig, check_config, save_config
from audiotune.data.balance import class_head
from audiotune.data.loading import balanced_sampler, check_sampler_options
from audiotune.data.prepare import prepare_training_data
from audiotune.engine.averaging import QueuedEMA
from audiotune.engine.cache import cache_blocker, cached_datasets, cached_loader
from audiotune.engine.device import check_one_process
from audiotune.engine.inference import inference_device, predict
from audiotune.engine.losses import training_class_weights
from audiotune.engine.metrics import compute_metrics, scores_from_logits
from audiotune.engine.module import ClassifierModule, trains
from audiotune.engine.selection import monitor_value
from audiotune.engine.trainer import build_trainer
from audiotune.models.backbones import build_backbone, input_spec, resolve_config
from audiotune.models.classifier import Classifier
from audiotune.models.option_checks import pooled_refusal
from audiotune.outputs import (
    CONFIG_FILE,
    INPUT_SPEC_FILE,
    PLOT_DIR,
    PROBE_FILE,
    PROBE_PLOT,
    PROBE_SUMMARY_FILE,
    SCORED_SPLITS,
    OwnedRunDir,
    own_run_dir,
    write_csv,
    write_json,
)
from audiotune.report.plots import plot_probe

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RandomState:
    """The states of the random generators that initialise and train heads (torch's, numpy's, Python's)."""

    torch_state: torch.Tensor
    numpy_state: Any
    python_state: tuple

    @classmethod
    def now(cls) -> RandomState:
        return cls(torch.random.get_rng_state(), np.random.get_state(), random.getstate())

    def restore(self) -> None:
        torch.random.set_rng_state(self.torch_state)
        np.random.set_state(self.numpy_state)
        random.setstate(self.python_state)


def _summary(metrics: dict) -> dict:
    # (None without a classification head); mean_auc as the other values: the mean over heads
    summary = {"accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"), "uar": metrics.get("uar"),
               "mean_auc": monitor_value(metrics, "auc")}
    if "ccc" in metrics:  # regression heads
        summary.update(ccc=metrics["ccc"], mae=metrics["mae"])
    return summary


def check_probe(config: RunConfig) -> None:
    """What probe refuses of its options alone, before anything is read, written or asked of a device."""
    check_config(config)
    check_sampler_options(config)
    # its heads train on cached pooled states in seconds: several processes would only add start-up
    runtime = config.runtime
    check_one_process(runtime.devices, runtime.strategy, runtime.num_nodes, "probe")
    if config.model.freeze is False:
        raise ValueError("probe trains heads on a frozen encoder's hidden states: drop --freeze False")


def probe(config: RunConfig) -> pd.DataFrame:
    """Train one head per hidden state (and one on the weighted sum) from the feature cache.

    Encoding, training and predictions run on ``config.runtime.accelerator``/``devices``.
    """
    check_probe(config)
    device = inference_device(config)  # a missing accelerator is an error before anything is written
    with own_run_dir(config.exp_dir, overwrite=config.train.overwrite, command="probe", resumable=False) as owned:
        # the device the cache encodes on; "auto" on a machine of several GPUs must not start DDP
        return _probe(config, owned, [device.index] if device.type == "cuda" else 1)


def _probe(config: RunConfig, owned: OwnedRunDir, one_device: int | list[int]) -> pd.DataFrame:
    exp_dir = owned.path
    resolve_config(config)
    config.model.freeze = True
    blocker = cache_blocker(config)
    if blocker:
        raise ValueError(f"probe reads every layer from the feature cache, which cannot be used: {blocker}")
    pl.seed_everything(config.data.seed, workers=True, verbose=False)
    inputs = input_spec(config)
    prepared = prepare_training_data(config, inputs, exp_dir)
    config.heads = prepared.heads
    # the heads start from the random state a training run's heads start from: just after its backbone is built
    # (its checkpoint read before anything is written)
    backbone = build_backbone(config)
    heads_start = RandomState.now()
    encoder = Classifier(backbone, config.heads, config.classifier, freeze_backbone=True)
    owned.start()
    prepared.write_reports(exp_dir)
    save_config(config, exp_dir / CONFIG_FILE)
    write_json(exp_dir / INPUT_SPEC_FILE, inputs.to_dict())
    stats: dict = {}
    cached = cached_datasets(encoder, config, prepared.tables, prepared.targets, stats)
    sampler = balanced_sampler(config, prepared)  # --balance: class-balanced epochs of cached states
    train_loader = cached_loader(config, cached["train"], True, sampler)
    val_loader = cached_loader(config, cached["val"], False) if "val" in cached else None

    rows, layer_weights = [], None
    class_weights = training_class_weights(config.heads, prepared.targets["train"], config.train.class_weights)
    # the weighted sum's row, unless train refuses it (one state, pooled by the model) or its pooled states are not
    # what the cache holds (max pooling)
    weighted_config = dataclasses.replace(config, classifier=dataclasses.replace(config.classifier, weighted=True))
    no_weighted_sum = pooled_refusal(config.model.model, "weighted") or cache_blocker(weighted_config)
    if no_weighted_sum:
        log.warning("probe: no row for the learned weighted sum: %s", no_weighted_sum)
    targets = list(range(encoder.backbone.num_hidden_states)) + ([] if no_weighted_sum else ["weighted"])
    if not trains(config.train):
        log.warning("--epochs 0: no training step; every head is scored as initialised (untrained heads)")
    for target in targets:
        heads_start.restore()  # every probe starts from the same head, the one `train --layer` starts from
        head_config = dataclasses.replace(config.classifier, weighted=target == "weighted",
                                          layer=-1 if target == "weighted" else int(target))
        model = Classifier(encoder.backbone, config.heads, head_config, freeze_backbone=True)
        module = ClassifierModule(model, config.heads, config.train, steps_per_epoch=len(train_loader),
                                  class_weights=class_weights, seed=config.data.seed)
        # --ema: the head scored is the average of its weights, as train's saved model is
        averaging = [QueuedEMA(decay=config.train.ema)] if config.train.ema else []
        trainer, _ = build_trainer(config.train, config.runtime, None, devices=one_device, callbacks=averaging)
        trainer.fit(module, train_loader, val_loader)
        row: dict = {"layer": str(target)}
        # val's columns, then test's: a validation drawn from train.csv comes after test.csv in the tables
        for split in (name for name in SCORED_SPLITS if name in cached):
            dataset = cached[split]
            _, logits, truth = predict(model, cached_loader(config, dataset, False), config, f"probe {target} {split}")
            summary = _summary(compute_metrics(scores_from_logits(logits, config.heads, config.train.loss), truth,
                                               config.heads))
            row.update({f"{split}_{key}": value for key, value in summary.items()})
        rows.append(row)
        if target == "weighted":
            weights = model.state_weights()
            assert weights is not None  # a weighted classifier has layer weights
            layer_weights = weights.detach().float().cpu().tolist()
    table = pd.DataFrame(rows)
    write_csv(table, exp_dir / PROBE_FILE, index=False)
    summary = {"layers": rows, "layer_weights": layer_weights, "feature_cache": stats,
               "trained": trains(config.train)}
    if no_weighted_sum:
        summary["weighted_sum"] = f"not probed: {no_weighted_sum}"
    if sampler is not None:
        found = class_head(config.heads)
        assert found is not None  # the sampler was built on it
        summary["balance"] = sampler.summary(found[1])
    write_json(exp_dir / PROBE_SUMMARY_FILE, summary)
    plot_probe(table, exp_dir / PLOT_DIR / PROBE_PLOT)
    return table
