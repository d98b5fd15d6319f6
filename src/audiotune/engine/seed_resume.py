"""``train --resume`` in a run directory that ``audiotune import`` wrote: no seed system saved its optimiser, so
there is no training state to continue; training continues from the imported weights with a fresh optimiser and
learning-rate schedule (said in one log line and recorded in the run's config history)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from audiotune.config import HeadSpec, RunConfig, config_changes, load_config
from audiotune.models.classifier import Classifier
from audiotune.outputs import CHECKPOINT_DIR, CONFIG_FILE, ENCODER_DIR, IMPORT_RECORD_FILE, LAST_CHECKPOINT, MODEL_FILE

log = logging.getLogger(__name__)

STARTED_FROM = "the imported weights (model.safetensors), fresh optimiser and learning-rate schedule: no seed " \
               "system saved its optimiser state"


def imported_start(exp_dir: Path, config: RunConfig) -> Path | None:
    """With ``--resume`` in an imported run that has no training checkpoint yet: the weights training starts
    from (its ``model.safetensors``); the model is then built from the run's own encoder folder. None for any
    other run."""
    if not config.train.resume or (exp_dir / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file() \
            or not (exp_dir / IMPORT_RECORD_FILE).is_file():
        return None
    weights = exp_dir / MODEL_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: the imported run has no weights to continue from; import it again")
    if (exp_dir / ENCODER_DIR).is_dir():  # the architecture offline; the weights come from model.safetensors
        config.model.checkpoint = str(exp_dir / ENCODER_DIR)
    log.warning("%s: imported from a seed system (%s); training continues from %s", exp_dir, IMPORT_RECORD_FILE,
                STARTED_FROM)
    return weights


def _describe(heads: list[HeadSpec]) -> str:
    return "; ".join(f"{h.name} ({h.kind}: {' '.join(h.classes or h.columns)})" for h in heads)


def in_class_order(state: dict[str, torch.Tensor], imported: list[HeadSpec], heads: list[HeadSpec],
                   exp_dir: Path) -> dict[str, torch.Tensor]:
    """The imported heads' output rows in the class order the training data gives (the seed's order may be any);
    heads that are not the same (other columns, classes or kinds) are an error naming both."""
    same = len(imported) == len(heads) and all(
        (old.name, old.kind, old.columns, sorted(old.classes)) == (new.name, new.kind, new.columns, sorted(new.classes))
        for old, new in zip(imported, heads))
    if not same:
        encoder = exp_dir / ENCODER_DIR  # a Hugging Face folder, or the weights file the backbone's -c reads
        weights = encoder if (encoder / "config.json").is_file() else encoder / MODEL_FILE
        raise ValueError(f"{exp_dir}: --resume of an imported run needs its heads ({_describe(imported)}), but the "
                         f"data gives {_describe(heads)}; give the data it was made for, or start a new run from its "
                         f"encoder (--config {exp_dir / CONFIG_FILE} -c {weights} -o NEW_RUN)")
    state = dict(state)
    for index, (old, new) in enumerate(zip(imported, heads)):
        if old.classes != new.classes:
            order = torch.tensor([old.classes.index(name) for name in new.classes])
            for part in ("weight", "bias"):
                key = f"classifiers.{index}.head.outproj.{part}"
                state[key] = state[key][order]
    return state


def load_imported(model: Classifier, weights: Path, config: RunConfig) -> dict[str, list]:
    """Load the imported weights into ``model`` (built for ``config``'s heads, strictly); returns the options that
    differ from the imported config.yaml (recorded, not refused: training starts afresh from these weights)."""
    exp_dir = weights.parent
    imported = load_config(exp_dir / CONFIG_FILE)
    state = in_class_order(load_file(str(weights)), imported.heads, config.heads, exp_dir)
    expected = model.state_dict()
    reshaped = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if reshaped or missing or unexpected:
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}" for what, keys in
                           (("other shapes", reshaped), ("not imported", missing), ("only imported", unexpected))
                           if keys)
        raise ValueError(f"{weights}: --resume with options that do not fit the imported model ({detail}); resume "
                         f"with its own options (--config {exp_dir / CONFIG_FILE}), or start a new run")
    model.load_state_dict(state, strict=True)
    return config_changes(imported, config, ("train.resume", "runtime", "exp_dir", "version", "heads",
                                             "model.checkpoint"))
