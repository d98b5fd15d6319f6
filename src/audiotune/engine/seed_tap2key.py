"""tap2key's trained model (``Wav2vec2_tap2key.py``: the Hugging Face Trainer's folder of a
``Wav2Vec2ForSequenceClassification``) as the run ``train --config seeds/tap2key -c FOLDER`` builds, whose
predictions are the seed model's.

The seed's model: the encoder's last hidden state → ``projector`` Linear(hidden, 256) on every frame → mean over
the frames → ``classifier`` Linear(256, classes). The recipe's head is the mean of the frames → ``dense``
(256, no activation, no dropout) → ``outproj``: the projector is linear, so projecting every frame and then
averaging is averaging and then projecting, and the scores are the seed's. The classes are ``config.json``'s
``id2label`` in its order; the waveform is read as the folder's ``preprocessor_config.json`` says (without one,
as the seed's wav2vec2-base extractor did: each clip normalised).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from audiotune.engine.seed_import import (
    HF_WEIGHT_NORM,
    SeedImportError,
    SeedLayout,
    read_seed_weights,
    recipe_config,
    write_seed_run,
)
from audiotune.models.backbones.hf_checkpoint import CLASSIFICATION
from audiotune.models.state_dict import CheckpointReadError, load_safetensors
from audiotune.outputs import IMPORTED_WEIGHTS, LOG_DIR, LOG_FILE, LR_COLUMN

SEED = "tap2key"
TAP2KEY_RECIPE = "seeds/tap2key"
CONFIG_JSON = "config.json"
TRAINER_STATE = "trainer_state.json"  # the Trainer's record in each checkpoint-N folder (best_model_checkpoint)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what the Trainer saved: safetensors first
# the head's two linear layers → the recipe's head (ClassificationHead: dense → outproj)
HEAD_RENAMES = (("projector.", "classifiers.0.head.dense."), ("classifier.", "classifiers.0.head.outproj."))
LAYOUT = SeedLayout(SEED, "hf", "projector.weight", HEAD_RENAMES, aliases=HF_WEIGHT_NORM,
                    # SpecAugment's mask embedding only acts in training; a model saved without it starts as built
                    fresh=("backbone.model.masked_spec_embed",), encoder="save_pretrained",
                    described_by=f"its {CONFIG_JSON}",
                    # without a preprocessor_config.json: wav2vec2-base's extractor, which the seed's features used
                    extractor={"feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, "do_normalize": True,
                               "return_attention_mask": False})


@dataclass
class SeedClassifier:
    """A Hugging Face audio sequence-classification folder, checked: its config, classes and weights."""

    folder: Path
    architecture: str  # Wav2Vec2ForSequenceClassification, HubertForSequenceClassification, ...
    encoder_prefix: str  # where its encoder's weights are (wav2vec2., hubert., ...)
    classes: list[str]
    weights_file: Path
    state: dict[str, torch.Tensor]

    @property
    def bottleneck(self) -> int:
        """The projector's width (the seed's 256, ``classifier_proj_size``)."""
        return int(self.state["projector.weight"].shape[0])


def best_checkpoint(folder: Path) -> Path | None:
    """In the Trainer's output_dir (no model of its own: the seed never called save_model), the checkpoint-N folder
    its last trainer_state.json names best (``load_best_model_at_end``: the model the seed ended with); None for
    a folder without checkpoint-N folders."""
    steps = {int(path.name.split("-")[1]): path for path in folder.glob("checkpoint-*")
             if path.is_dir() and path.name.split("-")[1].isdigit()}
    if not steps:
        return None
    state_file = steps[max(steps)] / TRAINER_STATE
    try:
        best = json.loads(state_file.read_text()).get("best_model_checkpoint")
    except (OSError, ValueError) as err:
        raise SeedImportError(f"{state_file}: not readable ({err}); give one of {folder}'s checkpoint folders "
                              f"({', '.join(p.name for _, p in sorted(steps.items()))})") from None
    chosen = folder / Path(str(best)).name if best else None  # recorded where the seed trained: its name here
    if chosen is None or not chosen.is_dir():
        raise SeedImportError(f"{state_file}: best_model_checkpoint {best} is not in {folder}; give one of its "
                              f"checkpoint folders ({', '.join(p.name for _, p in sorted(steps.items()))})")
    return chosen


# a Trainer log_history key -> the column of a run's logs/metrics.csv (eval_X -> val_X otherwise; the seed's
# compute_metrics "f1" was weighted); the keys of its throughput and totals are not carried
LOG_COLUMNS = {"loss": "train_loss_step", "learning_rate": LR_COLUMN, "eval_f1": "val_weighted_f1"}
LOG_LEFT_OUT = ("grad_norm", "total_flos", "train_loss", "train_runtime", "train_samples_per_second",
                "train_steps_per_second", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def trainer_log(folder: Path, chosen: Path) -> bytes | None:
    """The seed's training log as a run's ``logs/metrics.csv``: the ``log_history`` of the longest
    trainer_state.json of ``folder``'s checkpoints (or of ``chosen``'s), a row per entry, its epoch counted from 0
    (the Trainer's 1.0 ends the first), ``step`` the optimiser step; None without one."""
    import math

    import pandas as pd

    histories = []
    for state in {*folder.glob(f"checkpoint-*/{TRAINER_STATE}"), chosen / TRAINER_STATE}:
        try:
            histories.append(json.loads(state.read_text()).get("log_history") or [])
        except (OSError, ValueError):
            continue
    history = max(histories, key=len, default=[])
    rows = []
    for entry in history:
        row: dict[str, float] = {"epoch": max(math.ceil(float(entry.get("epoch", 0))) - 1, 0),
                                 "step": int(entry.get("step", 0))}
        for key, value in entry.items():
            if key in ("epoch", "step") or key in LOG_LEFT_OUT or not isinstance(value, (int, float)):
                continue
            row[LOG_COLUMNS.get(key, f"val_{key[5:]}" if key.startswith("eval_") else key)] = value
        rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False).encode() if rows else None


def _raw_config(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise SeedImportError(f"{folder}: not a folder; give the folder the seed's Trainer saved ({CONFIG_JSON} and "
                              f"{' or '.join(WEIGHT_FILES)})")
    path = folder / CONFIG_JSON
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SeedImportError(f"{path}: not found; not a Hugging Face model folder") from None
    except (OSError, ValueError) as err:
        raise SeedImportError(f"{path}: not readable as JSON ({err})") from None
    if not isinstance(raw, dict):
        raise SeedImportError(f"{path}: not a model config (a JSON object)")
    return raw


def _architecture(raw: dict[str, Any], path: Path) -> tuple[str, str]:
    """The model's class and the prefix of its encoder's weights; only an audio sequence classifier is one."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    names = raw.get("architectures") or []
    audio = MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES.get(str(raw.get("model_type"))) or ""
    if audio not in names or not audio.endswith(CLASSIFICATION):
        raise SeedImportError(f"{path}: architectures {names} (model_type {raw.get('model_type')}): not an audio "
                              f"sequence classifier (Wav2Vec2{CLASSIFICATION}, as the tap2key seed trained); a bare "
                              "encoder is read as it is with `train -c FOLDER`")
    model_class = getattr(transformers, audio, None)
    if not (isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)):
        raise SeedImportError(f"{path}: {audio} is not a model class of this transformers version")
    if raw.get("use_weighted_layer_sum"):
        raise SeedImportError(f"{path}: use_weighted_layer_sum is true: the model sums every hidden state with its "
                              "own softmax weights, which the tap2key run does not; only a model of the last hidden "
                              "state (the seed's) imports")
    return audio, f"{model_class.base_model_prefix}."


def _classes(raw: dict[str, Any], path: Path) -> list[str]:
    """``id2label`` as a list: the class of each output, in the model's order."""
    id2label = raw.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise SeedImportError(f"{path}: no id2label: the classes of the model's outputs are not named (the seed "
                              "passed id2label and label2id to from_pretrained)")
    try:
        by_id = {int(key): str(label) for key, label in id2label.items()}
    except ValueError:
        raise SeedImportError(f"{path}: id2label keys {sorted(id2label)} are not output numbers") from None
    classes = [by_id.get(i, "") for i in range(len(by_id))]
    if sorted(by_id) != list(range(len(by_id))) or len(set(classes)) != len(classes) or "" in classes:
        raise SeedImportError(f"{path}: id2label {id2label} does not name each output 0..{len(by_id) - 1} once, "
                              "with distinct classes")
    return classes


def _weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The folder's weights, read without running anything: safetensors, or ``torch.load(weights_only=True)``."""
    found = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not found:
        present = sorted(p.name for p in folder.iterdir())
        raise SeedImportError(f"{folder}: no {' or '.join(WEIGHT_FILES)} (found: {', '.join(present) or 'nothing'})")
    path = found[0]
    if path.suffix == ".safetensors":
        try:
            return path, load_safetensors(path)
        except CheckpointReadError as err:
            raise SeedImportError(str(err)) from None
    return path, read_seed_weights(path)


def read_seed_classifier(folder: str | Path) -> SeedClassifier:
    """Check a sequence-classification folder before anything is written; each problem names its file."""
    folder = Path(folder)
    if folder.is_dir() and not (folder / CONFIG_JSON).is_file():
        folder = best_checkpoint(folder) or folder
    raw = _raw_config(folder)
    config_path = folder / CONFIG_JSON
    architecture, prefix = _architecture(raw, config_path)
    classes = _classes(raw, config_path)
    weights_file, state = _weights(folder)
    for key in ("projector.weight", "classifier.weight"):
        if key not in state:
            raise SeedImportError(f"{weights_file}: no {key}: not the weights of a {architecture} (first keys: "
                                  f"{list(state)[:3]})")
    outputs = int(state["classifier.weight"].shape[0])
    if outputs != len(classes):
        raise SeedImportError(f"{weights_file}: the classifier has {outputs} outputs; id2label in {config_path} "
                              f"names {len(classes)} classes")
    return SeedClassifier(folder, architecture, prefix, classes, weights_file, state)


def import_tap2key_run(folder: str | Path, exp_dir: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write the model of a tap2key training folder as a run directory (config.yaml, model.safetensors,
    import.json, encoder/); returns what import.json records and how many tensors were carried."""
    seed = read_seed_classifier(folder)
    config = recipe_config(TAP2KEY_RECIPE, str(seed.folder.resolve()), seed.classes)
    notes = []
    if seed.bottleneck != config.classifier.clf_bottleneck:
        notes.append(f"--clf_bottleneck {seed.bottleneck}: the width of its projector (the recipe's: "
                     f"{config.classifier.clf_bottleneck})")
        config.classifier.clf_bottleneck = seed.bottleneck
    if seed.folder != Path(folder):
        notes.append(f"{seed.folder.name}: the checkpoint its {TRAINER_STATE} names best (the seed's "
                     "load_best_model_at_end)")
    layout = replace(LAYOUT, renames=((seed.encoder_prefix, "backbone.model."), *HEAD_RENAMES))
    record = {IMPORTED_WEIGHTS: str(seed.weights_file), "config": str(seed.folder / CONFIG_JSON),
              "architecture": seed.architecture, "classes": seed.classes, "recipe": TAP2KEY_RECIPE,
              "mapped": {seed.encoder_prefix: f"{LAYOUT.encoder} folder (encoder/) and backbone.model.",
                         **dict(HEAD_RENAMES)},
              "notes": notes}
    log = trainer_log(Path(folder), seed.folder)
    written = write_seed_run(layout, config, seed.state, exp_dir, record, overwrite=overwrite,
                             files={f"{LOG_DIR}/{LOG_FILE}": log} if log else None)
    return {**written, "tensors": len(seed.state) - len(written["dropped"]), "folder": str(seed.folder)}
