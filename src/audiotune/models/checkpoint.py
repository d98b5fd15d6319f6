"""Weights on disk: safetensors for models, and rebuilding a trained classifier from its run directory."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from audiotune.atomic import atomic_path
from audiotune.config import MASK_EMBEDDING_KEPT_VERSION, WEIGHTED_STATES_VERSION, RunConfig, load_config
from audiotune.config.sections import RESUME_HINT
from audiotune.models.backbones import (
    SupportsExportConfig,
    SupportsFeatureEncoderFreeze,
    SupportsFeatureProjectionFreeze,
    build_backbone,
    lacks_ability,
)
from audiotune.models.backbones.hf_checkpoint import weights_loaded_next
from audiotune.models.classifier import Classifier
from audiotune.models.state_dict import load_safetensors
from audiotune.outputs import (
    CHECKPOINT_DIR,
    COMMAND_FILE,
    CONFIG_FILE,
    ENCODER_DIR,
    LAST_CHECKPOINT,
    METRICS_FILE,
    MODEL_FILE,
    PRETRAIN_OBJECTIVE,
    PRETRAIN_OUTPUTS,
    PROBE_SUMMARY_FILE,
    command_history,
    from_training_dir,
    run_dir_of,
)


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """All parameters and buffers as safetensors (contiguous CPU copies)."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as partial:
        save_file(state, str(partial))


def build_classifier(config: RunConfig, pretrained: bool = True) -> Classifier:
    """A classifier as the config describes; backbone weights from ``--checkpoint`` only if ``pretrained``.

    ``--freeze`` stops gradients to the whole backbone (and keeps it in eval mode);
    ``--freeze_feature_encoder`` to its convolutional front end only, ``--freeze_feature_projection`` to the
    projection after it.
    """
    backbone = build_backbone(config, pretrained)
    if config.model.freeze_feature_encoder:
        if not isinstance(backbone, SupportsFeatureEncoderFreeze):
            raise ValueError(lacks_ability("model.freeze_feature_encoder", config.model.model))
        backbone.freeze_feature_encoder()
    if config.model.freeze_feature_projection:
        if not isinstance(backbone, SupportsFeatureProjectionFreeze):
            raise ValueError(lacks_ability("model.freeze_feature_projection", config.model.model))
        backbone.freeze_feature_projection(mask_embedding=config.version >= MASK_EMBEDDING_KEPT_VERSION)
    summed = backbone.weighted_states if config.version >= WEIGHTED_STATES_VERSION else backbone.num_hidden_states
    return Classifier(backbone, config.heads, config.classifier, freeze_backbone=bool(config.model.freeze),
                      weighted_states=summed, frozen_train_mode=config.model.frozen_train_mode)


def classifier_to_load(config: RunConfig) -> Classifier:
    """The classifier the config describes, for a caller that loads every weight into it next (strictly): no
    ``--checkpoint`` weights, and a transformers encoder's random initialisation skipped
    (:func:`~audiotune.models.backbones.hf_checkpoint.weights_loaded_next`)."""
    with weights_loaded_next():
        return build_classifier(config, pretrained=False)


def export_backbone(model: Classifier, run_dir: str | Path) -> None:
    """Store what the backbone needs to be rebuilt without its original source (if it needs anything)."""
    if isinstance(model.backbone, SupportsExportConfig):
        model.backbone.export_config(Path(run_dir) / ENCODER_DIR)


SEED_MODEL_SUFFIX = "_mdl.pt"  # how the clinical-speech seeds named a trained model (beside their args.pkl)


def resolve_run_dir(path: str | Path) -> Path:
    """A run directory, or the model file inside one (the seeds' ``--trained_mdl_path``)."""
    run_dir = Path(run_dir_of(path))
    if not (run_dir / CONFIG_FILE).is_file():
        seed_models = [Path(path)] if str(path).endswith(SEED_MODEL_SUFFIX) else \
            sorted(run_dir.glob(f"*{SEED_MODEL_SUFFIX}")) if run_dir.is_dir() else []
        hint = f"; a seed model becomes one with `audiotune import naip {seed_models[0]} -o RUN`" if seed_models else ""
        raise FileNotFoundError(f"{path}: not a run directory (no {CONFIG_FILE}); pass the --exp_dir of a training "
                                f"run{hint}")
    return run_dir


def run_config(path: str | Path) -> RunConfig:
    """The config of the run directory ``path`` (its ``config.yaml``), read without building its model."""
    return load_config(resolve_run_dir(path) / CONFIG_FILE)


def rebuild_config(path: str | Path) -> RunConfig:
    """The config that rebuilds the model of run directory ``path``, read without building it: its ``config.yaml``
    with the architecture it exported (:data:`ENCODER_DIR`) as the checkpoint."""
    run_dir = resolve_run_dir(path)
    config = run_config(run_dir)
    config.data.prefix = from_training_dir(config.data.prefix, run_dir)  # its audio, from any folder
    if (run_dir / ENCODER_DIR).is_dir():  # rebuild offline: the weights come from the run's own files anyway
        config.model.checkpoint = str(run_dir / ENCODER_DIR)
    return config


def _refuse_runs_without_a_classifier(run_dir: Path, config: RunConfig) -> None:
    """A pretraining run keeps an encoder and a probe folder only its layers' scores: an error naming what to do."""
    if (run_dir / PROBE_SUMMARY_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: a probe folder keeps no classifier (its heads scored each layer and were "
                                f"not kept); train one on the layer its report chose: `audiotune train --layer N ...`")
    metrics = run_dir / METRICS_FILE
    facts = json.loads(metrics.read_text()) if metrics.is_file() else None
    if isinstance(facts, dict) and PRETRAIN_OBJECTIVE in facts:
        kept = [str(run_dir / name) for name in facts.get(PRETRAIN_OUTPUTS) or [ENCODER_DIR]]
        raise FileNotFoundError(f"{run_dir}: a pretraining run ({facts[PRETRAIN_OBJECTIVE]}) keeps an encoder, not a "
                                f"classifier: fine-tune one from it with `audiotune train --model {config.model.model} "
                                f"-c {kept[0]} ...`, or read it with `audiotune extract --model {config.model.model} "
                                f"-c {kept[0]} ...`")


def resume_advice(run_dir: str | Path) -> str:
    """What goes on with a run stopped before it finished training, said to a command that did not train it: its
    training command again with --resume, named as the run recorded it, or the cv or sweep that made it again."""
    history = command_history(run_dir)
    commands = [entry.get("command_line") for entry in history]
    last = f" (it was: `{commands[-1]}`)" if commands and isinstance(commands[-1], str) else ""
    argv = history[-1].get("argv") if history else None
    within = argv[1] if isinstance(argv, list) and len(argv) > 1 and argv[1] in ("cv", "sweep") else ""
    return (f"the same `{within}` command again resumes it" if within else RESUME_HINT) + last


def load_run(path: str | Path) -> tuple[RunConfig, Classifier]:
    """Rebuild a trained classifier from ``config.yaml`` and ``model.safetensors`` (strict)."""
    run_dir = resolve_run_dir(path)
    config = rebuild_config(run_dir)
    weights = run_dir / MODEL_FILE
    _refuse_runs_without_a_classifier(run_dir, config)
    if not weights.is_file():
        stopped = (f"; its training was stopped before it finished ({CHECKPOINT_DIR}/{LAST_CHECKPOINT}): "
                   f"{resume_advice(run_dir)}") if (run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file() else \
            "; its training was stopped before its first checkpoint: train it again with --overwrite" \
            if (run_dir / COMMAND_FILE).is_file() else ""
        raise FileNotFoundError(f"{weights}: no trained weights in this run directory{stopped}")
    try:
        model = classifier_to_load(config)
    except ValueError as err:  # a value of the run's config the model cannot be built with: name the file
        raise ValueError(f"{run_dir / CONFIG_FILE}: {err}") from err
    state = load_safetensors(weights)
    expected = model.state_dict()
    reshaped = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if reshaped:
        raise ValueError(f"{weights}: does not match {run_dir / CONFIG_FILE}: {len(reshaped)} tensor(s) of other "
                         f"shapes, e.g. {reshaped[0]} {tuple(state[reshaped[0]].shape)} where the config builds "
                         f"{tuple(expected[reshaped[0]].shape)}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: does not match {run_dir / CONFIG_FILE} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return config, model.eval()
