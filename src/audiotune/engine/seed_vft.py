"""The speech-emotion seed's V-FT classifier (FT-w2v2-ser ``PretrainedRNNHead`` under ``DownstreamGeneral``) as an
audiotune run directory whose predictions are the seed model's.

The seed's model: wav2vec2 (CNN, projection, encoder) → ReLU on every frame → mean over the first ``out_len - 1``
frames (its mask left each clip's last frame out) → ReLU → ``Linear(768, n_classes)``; an ``nn.LSTM`` was built
and optimised but never called. Here that is the ``seeds/ser_vft`` recipe's classifier (a linear head,
``--clf_bottleneck 0 --activation relu``) with ``--frame_activation relu --pool_drop_last``, and the encoder folder
feeds the waveform as the seed read it (soundfile samples, no per-clip normalisation).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from audiotune.atomic import atomic_dir
from audiotune.config import RunConfig, save_config
from audiotune.engine.seed_import import SeedImportError, recipe_config
from audiotune.engine.seed_ser import read_lightning_state, save_seed_extractor, today_name
from audiotune.models.backbones import resolve_config
from audiotune.models.backbones.hf_checkpoint import check_available, weights_quietly
from audiotune.models.checkpoint import classifier_to_load, save_weights
from audiotune.outputs import (
    CONFIG_FILE,
    ENCODER_DIR,
    IMPORT_RECORD_FILE,
    IMPORTED_WEIGHTS,
    MODEL_FILE,
    own_run_dir,
    write_json,
)

VFT_RECIPE = "seeds/ser_vft"
DOWNSTREAM = "model."  # DownstreamGeneral.model: the PretrainedRNNHead
VFT_ENCODER = "model.wav2vec2.wav2vec2."  # DownstreamGeneral.model (PretrainedRNNHead).wav2vec2 (Wav2vec2Wrapper)
VFT_HEAD = "model.linear_head.1."  # Sequential(ReLU, Linear): the Linear
VFT_UNUSED = ("model.rnn_head.",)  # the LSTM the seed never called in forward
SEED_RATE = 16000


def downstream_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of ``DownstreamGeneral``: the seed's ``run_downstream_custom.py`` also saved its
    ``PretrainedRNNHead`` alone (``eager.pt``, ``model.model.state_dict()``), without the ``model.`` prefix."""
    if not has_vft_head(state) and f"{VFT_HEAD.removeprefix(DOWNSTREAM)}weight" in state:
        return {DOWNSTREAM + key: value for key, value in state.items()}
    return dict(state)


def has_vft_head(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a seed checkpoint holds V-FT's linear classifier (not only an encoder, as TAPT and P-TAPT)."""
    return f"{VFT_HEAD}weight" in state


def vft_config(architecture: str, classes: list[str]) -> RunConfig:
    """The ``seeds/ser_vft`` recipe (the seed's model and training options) with one categorical head of
    ``classes``; where it runs is left to the user (the recipe's workers are the seed's)."""
    return recipe_config(VFT_RECIPE, architecture, classes)


def _mapped(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                                          list[str], list[str]]:
    """The seed's tensors under audiotune's names, the seed keys dropped, and those that found no place."""
    mapped: dict[str, torch.Tensor] = {}
    dropped, unknown = [], []
    for key, value in state.items():
        if key.startswith(VFT_ENCODER):
            name = today_name("backbone.model." + key[len(VFT_ENCODER):], own)
        elif key.startswith(VFT_HEAD):
            name = "classifiers.0.head.outproj." + key[len(VFT_HEAD):]
        elif key.startswith(VFT_UNUSED):
            dropped.append(key)
            continue
        else:
            name = ""
        if name in own:
            mapped[name] = value.to(own[name].dtype)
        else:
            unknown.append(key)
    return mapped, dropped, unknown


def _write_encoder(model: Any, architecture: str, folder: Path) -> None:
    """The fine-tuned wav2vec2 as a ``save_pretrained`` folder whose feature extractor does not normalise."""
    with weights_quietly():
        model.save_pretrained(str(folder))
    save_seed_extractor(architecture, folder)


def import_vft_run(path: str | Path, architecture: str, classes: list[str], exp_dir: str | Path,
                   overwrite: bool = False) -> dict[str, Any]:
    """Write the V-FT model of a seed checkpoint as a run directory (config.yaml, model.safetensors, import.json,
    encoder/); ``classes``: the seed's class order (its head's outputs)."""
    exp_dir = Path(exp_dir)
    state, stand_ins = read_lightning_state(path)
    state = downstream_state(state)
    if not has_vft_head(state):
        raise SeedImportError(f"{path}: no V-FT classifier ({VFT_HEAD}weight): a TAPT or P-TAPT checkpoint imports "
                              "as an encoder folder, without --classes")
    outputs = int(state[f"{VFT_HEAD}weight"].shape[0])
    if len(classes) != outputs or len(set(classes)) != len(classes):
        raise SeedImportError(f"{path}: its classifier has {outputs} outputs; --classes names {len(classes)} "
                              f"({' '.join(classes)}): give its {outputs} distinct classes in the seed's order")
    check_available(architecture, "-c")  # no network and no local copy: one line at once
    config = vft_config(architecture, classes)
    with own_run_dir(exp_dir, overwrite=overwrite, command="import", resumable=False) as run_dir:
        config.exp_dir = str(exp_dir)
        try:
            resolve_config(config)
            model = classifier_to_load(config)
        except (OSError, ValueError) as err:
            raise SeedImportError(f"-c {architecture}: the encoder's architecture cannot be read "
                                  f"({str(err).splitlines()[0]}); give the folder or cached hub id the seed "
                                  "fine-tuned (facebook/wav2vec2-base)") from None
        own = model.state_dict()
        mapped, dropped, unknown = _mapped(state, own)
        missing = sorted(set(own) - set(mapped))
        reshaped = sorted(k for k in mapped if tuple(mapped[k].shape) != tuple(own[k].shape))
        if unknown or missing or reshaped:
            raise SeedImportError(f"{path}: its V-FT model does not fit the architecture of {architecture}: "
                                  + "; ".join(f"{what} {keys[:4]}" for what, keys in
                                              (("unknown", unknown), ("missing", missing),
                                               ("other shapes", reshaped)) if keys))
        model.load_state_dict(mapped, strict=True)
        run_dir.start()  # everything is checked: from here on the run directory is written
        with atomic_dir(exp_dir / ENCODER_DIR) as folder:
            _write_encoder(model.backbone.model, architecture, folder)
        save_weights(model, exp_dir / MODEL_FILE)
        record = {IMPORTED_WEIGHTS: str(path), "seed": "FT-w2v2-ser V-FT", "model": "hf", "architecture": architecture,
                  "classes": list(classes), "dropped": dropped, "stand_ins": stand_ins, "tensors": len(mapped),
                  "notes": ["frames: ReLU, then the mean of the first frames - 1 (--frame_activation relu "
                            "--pool_drop_last)", "input: waveforms as read, not normalised (encoder/"
                            "preprocessor_config.json)", "no optimiser state: --resume continues from these "
                            "weights with a fresh optimiser"]}
        write_json(exp_dir / IMPORT_RECORD_FILE, record)
        save_config(config, exp_dir / CONFIG_FILE)  # last: the run is complete once its config is there
    return record
