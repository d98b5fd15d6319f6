"""``audiotune train``: data → model → Lightning Trainer → run directory."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader

from audiotune import storage
from audiotune.config import (
    CLASSIFIER_STAGES,
    WEIGHTED_MEAN_VERSION,
    RunConfig,
    check_config,
    save_config,
)
from audiotune.config.sections import monitor_key
from audiotune.data.balance import class_head
from audiotune.data.loader_plan import training_passes
from audiotune.data.loading import adaptation_loader, balanced_sampler, check_sampler_options, make_dataset, make_loader
from audiotune.data.prepare import PreparedData, head_options_at_defaults, prepare_training_data
from audiotune.data.samplers import BalancedSampler
from audiotune.data.spec_augment import oversized_masks
from audiotune.engine.adapt import OFF, WHOLE_SPLIT, adaptation_groups, check_adaptable, check_adaptation
from audiotune.engine.aggregate import check_recording_targets
from audiotune.engine.averaging import QueuedEMA
from audiotune.engine.cache import CachedDataset, cache_blocker, cached_datasets, cached_loader
from audiotune.engine.checkpoint_io import read_checkpoint
from audiotune.engine.clips_read import write_clips_read
from audiotune.engine.cv_encoders import encoder_paths
from audiotune.engine.distributed import check_launch, ending_process_group, trainer_devices, unused_parameter_hint
from audiotune.engine.evaluate import evaluate_prepared
from audiotune.engine.inference import features_on_device, inference_device
from audiotune.engine.losses import training_class_weights
from audiotune.engine.module import ClassifierModule, DeviceFeatures, trains
from audiotune.engine.pace import pace_summary
from audiotune.engine.records import recorded_paths
from audiotune.engine.resume import checkpoint_to_resume, keep_resumed_version, record_changes, resumed_changes
from audiotune.engine.seed_resume import STARTED_FROM, imported_start, load_imported
from audiotune.engine.selection import check_monitor, monitor_mode
from audiotune.engine.trainer import build_trainer, earlier_log, epochs_run, merge_logs
from audiotune.launch import launched_rank_zero
from audiotune.models.backbones import input_spec, resolve_config
from audiotune.models.checkpoint import build_classifier, classifier_to_load, export_backbone, save_weights
from audiotune.models.classifier import Classifier
from audiotune.models.option_checks import idle_at_defaults, refuse_inactive
from audiotune.outputs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EPOCHS_RUN,
    INPUT_SPEC_FILE,
    KEPT_WEIGHTS,
    LAST_CHECKPOINT,
    LAYER_WEIGHTS_PLOT,
    LOG_DIR,
    LOG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PLOT_DIR,
    SCORED_SPLITS,
    TRAIN_CLIPS,
    TRAINING_CURVES_PLOT,
    VALIDATION,
    OwnedRunDir,
    own_run_dir,
    write_json,
)
from audiotune.report.plots import plot_layer_weights, plot_training_curves

log = logging.getLogger(__name__)


def _trainer(config: RunConfig, exp_dir: Path, has_val: bool,
             extra: list[pl.Callback]) -> tuple[pl.Trainer, ModelCheckpoint | None]:
    callbacks: list[pl.Callback] = []
    best_by = None
    if config.train.ema:
        # parameters and BatchNorm statistics are averaged; validation and checkpoints see the average
        callbacks.append(QueuedEMA(decay=config.train.ema))
    if has_val:
        key, mode = monitor_key(config.train.monitor), monitor_mode(config.train.monitor)
        best_by = (key, mode)
        if config.train.patience > 0:
            # an undefined metric (one class in validation) is logged as the worst value, not a reason to stop
            callbacks.append(EarlyStopping(monitor=key, patience=config.train.patience, mode=mode,
                                           check_finite=config.train.monitor == "loss"))
    return build_trainer(config.train, config.runtime, exp_dir, best_by=best_by, callbacks=[*callbacks, *extra],
                         default_root_dir=exp_dir, deterministic=False)


def _epochs_logged(log_csv: Path) -> dict:
    """The training clips of every epoch logged (all processes together), resumed epochs included, and the
    epochs' pace (:func:`~audiotune.engine.pace.pace_summary`)."""
    if not log_csv.is_file():
        return {"train_clips_per_epoch": []}
    logged = pd.read_csv(log_csv)
    clips = logged[TRAIN_CLIPS].dropna().astype(int).tolist() if TRAIN_CLIPS in logged else []
    return {"train_clips_per_epoch": clips, **pace_summary(logged, TRAIN_CLIPS)}


def _say_early_stop(trainer: pl.Trainer, config: RunConfig, best_epoch: dict) -> None:
    """One line when --patience ended the training before --epochs, with the epoch kept (both counted from 1)."""
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)  # type: ignore[attr-defined]
    if stopper is None or not stopper.stopped_epoch:
        return
    selection = best_epoch.get("selection") or best_epoch.get("best_checkpoint") or {}
    log.warning("stopped early after epoch %d of %d: %s not better for %d epochs (--patience); the best epoch was %s",
                stopper.stopped_epoch + 1, config.train.epochs, stopper.monitor, config.train.patience,
                selection.get("epoch", "unknown"))


def _keep_weights(module: ClassifierModule, checkpoint: ModelCheckpoint | None, keep: str) -> tuple[str, dict]:
    """Put the kept weights into the module: the best validation epoch's (``--keep best``) or, with ``--keep last``
    or without validation, the last epoch's as training left them (with ``--ema``, their average). Returns which
    weights are kept and what metrics.json records of the best validation epoch (the monitored metric, its best
    value, that epoch counted from 1, and every ``--save_top_k`` checkpoint with its value): ``selection`` when it
    is the saved model, ``best_checkpoint`` when --keep last saved the last epoch instead."""
    if checkpoint is None or not checkpoint.best_model_path or not Path(checkpoint.best_model_path).is_file():
        return "last epoch", {}
    score = checkpoint.best_model_score
    assert checkpoint.monitor is not None and score is not None  # the monitored checkpoint wrote a best file
    metric = checkpoint.monitor.removeprefix("val_")
    if not math.isfinite(float(score)):  # (constant validation targets of --monitor ccc): no epoch is better
        return f"last epoch (validation {metric} undefined in every epoch)", {}
    saved = read_checkpoint(checkpoint.best_model_path)
    best = {"monitor": checkpoint.monitor, "value": float(score), "epoch": int(saved["epoch"]) + 1}
    if checkpoint.save_top_k > 1:  # every checkpoint kept, with its monitored value
        best["kept"] = {Path(path).name: float(value) for path, value in checkpoint.best_k_models.items()}
    if keep == "last":
        return "last epoch (--keep last)", {"best_checkpoint": {**best, "path": Path(checkpoint.best_model_path).name}}
    module.load_state_dict(saved["state_dict"])
    # where the run's folder is (gs://...), not the staging folder it was written in
    return f"best validation {metric} {float(score):.4f} ({storage.remote_name(checkpoint.best_model_path)})", \
        {"selection": best}


def _loaders(model: Classifier, config: RunConfig, prepared: PreparedData, cache_stats: dict,
             sampler: BalancedSampler | None, trainer: pl.Trainer,
             ) -> tuple[DataLoader, DataLoader | None, dict[str, CachedDataset] | None]:
    """Training and validation loaders of this process: from the feature cache (every split encoded once) or
    from audio; under DDP each process's share of the batches."""
    replicas, rank = trainer.world_size, trainer.global_rank
    if cache_stats["used"]:
        cached = cached_datasets(model, config, prepared.tables, prepared.targets, cache_stats)
        val = cached_loader(config, cached["val"], False, None, replicas, rank) if "val" in cached else None
        return cached_loader(config, cached["train"], True, sampler, replicas, rank), val, cached
    train_table, val_table = prepared.tables["train"], prepared.tables.get("val")
    device, passes = inference_device(config), training_passes(config, len(train_table))
    inputs = input_spec(config)
    on_device = features_on_device(config, inputs)
    train_loader = make_loader(config, make_dataset(config, inputs, train_table, prepared.targets["train"], train=True,
                                                    passes=passes, on_device=on_device),
                               train_table, train=True, device=device, passes=passes, sampler=sampler,
                               num_replicas=replicas, rank=rank)
    val_loader = None
    if val_table is not None:
        groups = None  # --adapt_bn COLUMN: every validation batch within one group, scored with its statistics
        if config.train.adapt_bn not in (OFF, WHOLE_SPLIT):
            groups = [rows for _, rows in adaptation_groups(val_table, config.train.adapt_bn, "val")]
        val_set = make_dataset(config, inputs, val_table, prepared.targets["val"], passes=passes, on_device=on_device)
        val_loader = make_loader(config, val_set, val_table, train=False, padding=model.backbone.padding,
                                 device=device, passes=passes, num_replicas=replicas, rank=rank, groups=groups)
    return train_loader, val_loader, None


def validation_adaptation(config: RunConfig, prepared: PreparedData) -> dict:
    """``--adapt_bn``: the batches each validation group's BatchNorm statistics are estimated on, and each
    validation uid's group (None: the whole split is one group)."""
    if config.train.adapt_bn == OFF or "val" not in prepared.tables:
        return {}
    table, targets = prepared.tables["val"], prepared.targets["val"]
    groups = adaptation_groups(table, config.train.adapt_bn, "val")
    device = inference_device(config)
    inputs = input_spec(config)
    on_device = features_on_device(config, inputs)
    adapt_groups = [(name, adaptation_loader(config, make_dataset(config, inputs, table.iloc[rows], targets[rows],
                                                                  on_device=on_device),
                                             config.train.batch_size, device=device)) for name, rows in groups]
    uid_groups = None
    if config.train.adapt_bn != WHOLE_SPLIT:
        uid_groups = {str(uid): str(name) for name, rows in groups for uid in table.index[rows]}
    return {"adapt_groups": adapt_groups, "uid_groups": uid_groups}


def check_resume_fits(module: pl.LightningModule, checkpoint: Path) -> None:
    """A clear error when the checkpoint to resume was trained with other model or head flags."""
    state = read_checkpoint(checkpoint).get("state_dict", {})
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or reshaped:
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for what, keys in (("other shapes", reshaped), ("not in the checkpoint", missing),
                                              ("only in the checkpoint", unexpected)) if keys)
        raise ValueError(f"{checkpoint}: --resume with flags that do not fit this run's checkpoint ({detail}); "
                         "resume with the run's own model and head options (its config.yaml), or start a new run")


def continue_or_start(config: RunConfig) -> RunConfig:
    """Set ``--resume`` / ``--overwrite`` for a run that a driver (cv, sweep) starts again in the same directory:
    resume from its last checkpoint, or start over when it stopped before writing one."""
    exp_dir = Path(config.exp_dir)
    config.train.resume = (exp_dir / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file()
    config.train.overwrite = not config.train.resume and (exp_dir / CONFIG_FILE).is_file()
    if config.train.resume:
        log.warning("%s: resuming from its last checkpoint", exp_dir)
    else:  # options that do nothing (a folder made before they were refused holds them): read at their defaults
        said = [*idle_at_defaults(config), *head_options_at_defaults(config)]
        if said:
            log.warning("%s starts with what does nothing here at its default: %s", exp_dir, " / ".join(said))
    return config


def check_training(config: RunConfig) -> None:
    """What training refuses of its options' values alone, before anything is read, written or asked of a device:
    values out of range or contradicting one another."""
    check_config(config)
    check_sampler_options(config)


def train(config: RunConfig, callbacks: list[pl.Callback] | None = None) -> dict:
    """Train, keep the best-validation weights (``--keep last``: the last epoch's), score val and test; returns
    the metrics written.

    The run directory is locked for the whole command; nothing is written into it before the data, the
    flags and (with ``--resume``) the checkpoint are checked. Lightning trains on
    ``config.runtime.accelerator``/``devices`` and hands the model back on the CPU; the feature cache and the
    final evaluation run on the same device.

    Under DDP (several devices or nodes) every process trains on its share of the batches; rank 0 alone owns
    the run directory, evaluates the best weights once and writes every output. The other processes write
    nothing and return an empty dict.
    """
    check_training(config)
    trainer_devices(config.runtime)  # a strategy audiotune cannot run is an error before anything is read
    inference_device(config)  # a missing accelerator is an error before anything is written
    exp_dir = Path(config.exp_dir)
    with own_run_dir(exp_dir, resume=config.train.resume, overwrite=config.train.overwrite,
                     follower=not launched_rank_zero()) as run_dir:
        return _train(config, run_dir, callbacks or [])


def _train(config: RunConfig, run_dir: OwnedRunDir, callbacks: list[pl.Callback]) -> dict:
    exp_dir = run_dir.path
    keep_resumed_version(exp_dir, config)
    imported = imported_start(exp_dir, config)  # an imported run: its weights, with a fresh optimiser
    resume = checkpoint_to_resume(exp_dir) if config.train.resume and imported is None else None
    pl.seed_everything(config.data.seed, workers=True, verbose=False)
    resolve_config(config)
    refuse_inactive(config)  # an option that would do nothing with this encoder (frozen or trained)
    inputs = input_spec(config)
    log.info("--model %s reads %s (%s)", config.model.model, inputs.to_dict(), INPUT_SPEC_FILE)
    for said in oversized_masks(inputs.freqm, inputs.timem, inputs.n_mfcc if inputs.features == "mfcc" else
                                inputs.num_mel_bins, inputs.target_length):
        log.warning(said)
    prepared = prepare_training_data(config, inputs, exp_dir)
    check_recording_targets(prepared.tables, prepared.targets, prepared.heads)
    check_monitor(config.train.monitor, prepared.heads)
    config.heads = prepared.heads

    sampler = balanced_sampler(config, prepared)

    model = build_classifier(config) if imported is None else classifier_to_load(config)
    if imported is not None:
        changes = load_imported(model, imported, config)
    if config.train.adapt_bn != OFF:
        check_adaptable(model)
        check_adaptation(config.train.adapt_bn, {s: t for s, t in prepared.tables.items() if s != "train"})
    trainer, best = _trainer(config, exp_dir, "val" in prepared.tables, callbacks)
    check_launch(trainer.is_global_zero, run_dir.writes)
    cache_stats: dict = {"used": cache_blocker(config) is None, "why_not": cache_blocker(config)}
    train_loader, val_loader, cached = _loaders(model, config, prepared, cache_stats, sampler, trainer)
    # Lightning keeps the modes modules have at fit start; encoding the cache left them in eval mode
    model.train()
    class_weights = training_class_weights(config.heads, prepared.targets["train"], config.train.class_weights)
    if cached and config.runtime.compile != "none":
        log.warning("--compile %s: the heads train on cached states; nothing is compiled", config.runtime.compile)
    module = ClassifierModule(model, config.heads, config.train, steps_per_epoch=len(train_loader),
                              class_weights=class_weights, seed=config.data.seed,
                              features=DeviceFeatures.of(train_loader, val_loader),
                              weighted_mean=config.version >= WEIGHTED_MEAN_VERSION,
                              compile_mode="none" if cached else config.runtime.compile,
                              **validation_adaptation(config, prepared))
    if resume is not None:
        check_resume_fits(module, resume)
        changes = resumed_changes(exp_dir, config, CLASSIFIER_STAGES)

    log_csv = exp_dir / LOG_DIR / LOG_FILE
    earlier = None
    if run_dir.writes:
        run_dir.start()  # everything is checked: from here on the run directory is written
        prepared.write_reports(exp_dir)
        write_clips_read(exp_dir, prepared.tables, "train", encoder_paths(config))
        if (resume is not None and changes) or imported is not None:
            record_changes(exp_dir, changes, STARTED_FROM if imported is not None else "")
        save_config(recorded_paths(config, exp_dir), exp_dir / CONFIG_FILE)
        write_json(exp_dir / INPUT_SPEC_FILE, inputs.to_dict())
        export_backbone(model, exp_dir)
        if not trains(config.train):
            log.warning("--epochs 0: no training step; the model is saved as initialised%s",
                        " (frozen pretrained backbone, untrained heads)" if config.model.freeze else "")
        earlier = earlier_log(exp_dir, resume is not None)
    # the machines meet, then the run's last collective calls; rank 0 goes on alone
    with unused_parameter_hint(), ending_process_group(config.runtime.num_nodes):
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
    if not run_dir.writes:
        return {}  # rank 0 scores the kept weights once and writes every output
    if earlier is not None:
        merge_logs(earlier, exp_dir)
    kept, best_epoch = (_keep_weights(module, best, config.train.keep) if trains(config.train)
                        else ("untrained (--epochs 0)", {}))
    _say_early_stop(trainer, config, best_epoch)
    save_weights(model, exp_dir / MODEL_FILE)
    if log_csv.is_file():
        plot_training_curves(log_csv, exp_dir / PLOT_DIR / TRAINING_CURVES_PLOT)

    metrics = evaluate_prepared(model, config, prepared, exp_dir,
                                splits=[s for s in SCORED_SPLITS if s in prepared.tables], cached=cached,
                                write_metrics=False)
    weights = model.state_weights()
    if weights is not None:
        metrics["layer_weights"] = weights.detach().float().cpu().tolist()
        plot_layer_weights(metrics["layer_weights"], exp_dir / PLOT_DIR / LAYER_WEIGHTS_PLOT)
    metrics[KEPT_WEIGHTS] = kept
    metrics[VALIDATION] = (f"{len(prepared.tables['val'])} rows" if "val" in prepared.tables
                             else "none: the last epoch is kept")
    metrics.update(best_epoch)  # the best validation epoch's monitored value, as training logged it
    metrics["trained"] = trains(config.train)
    if imported is not None:
        metrics["started_from"] = STARTED_FROM
    metrics["feature_cache"] = cache_stats
    metrics[EPOCHS_RUN] = epochs_run(trainer)
    # summed over all processes: the clips each epoch trained on, next to the split's clips
    metrics[TRAIN_CLIPS] = len(prepared.tables["train"])
    metrics.update(_epochs_logged(log_csv))  # and each epoch's seconds, clips/s and the device's peak memory
    metrics["processes"] = trainer.world_size
    if class_weights is not None:
        metrics["class_weights"] = class_weights
    if sampler is not None:
        found = class_head(config.heads)
        assert found is not None  # the sampler was built on it
        metrics["balance"] = sampler.summary(found[1])
    if config.data.train_fraction < 1:
        left_out = prepared.dropped["reason"].astype(str).str.startswith("left out by --train_fraction")
        metrics["train_fraction"] = {"fraction": config.data.train_fraction, "rows": len(prepared.tables["train"]),
                                     "left_out": int(left_out.sum())}
    write_json(exp_dir / METRICS_FILE, metrics)
    return metrics
