"""Runs of the clinical-speech seed systems (naip-w2v2, naip-ssast, naip-ecapa-tdnn) as audiotune run directories.

A seed run left ``*_mdl.pt`` (the wrapper model's state dict, saved with ``torch.save``) and ``args.pkl`` (its
argparse Namespace). The weights are read with ``torch.load(weights_only=True)``, the arguments by
:func:`~audiotune.engine.seed_pickle.read_seed_args` (nothing in the pickle runs). The command line turns the
arguments into a config through the train command's own flags (:func:`seed_flags` says which seed arguments
meant something else than the flag of the same name today); this module maps the state-dict keys with one
declared :class:`SeedLayout` per seed and writes config.yaml, model.safetensors, the encoder and a record.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from audiotune.atomic import atomic_dir
from audiotune.config import (
    HeadSpec,
    RunConfig,
    RuntimeConfig,
    config_from_dict,
    read_config_file,
    resolve_recipe,
    save_config,
)
from audiotune.config.augmentation import AUGMENT_GATES
from audiotune.config.sections import ECAPA_FBANK_SIZES, ECAPA_MFCC_IGNORED
from audiotune.engine.cv_encoders import encoder_paths
from audiotune.models.backbones import resolve_config
from audiotune.models.backbones.hf_checkpoint import weights_quietly
from audiotune.models.checkpoint import classifier_to_load, save_weights
from audiotune.models.classifier import Classifier
from audiotune.models.state_dict import torch_refusal, torchscript_archive, torchscript_refusal
from audiotune.outputs import (
    CONFIG_FILE,
    ENCODER_DIR,
    IMPORT_RECORD_FILE,
    IMPORTED_WEIGHTS,
    MODEL_FILE,
    own_run_dir,
    write_bytes,
    write_json,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SeedLayout:
    """How one seed's wrapper model maps onto audiotune's classifier.

    ``signature``: a key prefix only this seed's state dicts have. ``renames``: seed key prefix → audiotune key prefix
    (the first that matches). ``dropped``: seed weights with no counterpart (dead heads of the base model).
    ``fresh``: audiotune weights the seed's model may lack (pretext heads; the mask embedding, there with masks on),
    kept as built, else the seed's (dropped where the model has none).
    ``aliases``: suffixes of older library versions → today's. ``encoder``: the backbone's attribute written to
    ENCODER_DIR (``save_pretrained``: a Hugging Face folder). ``recipe``: the seed's (``train --config seeds/...``),
    under the seed's arguments. ``fixed``: seed arguments whose meaning differs from today's flag of that name: the
    value that does what the seed did, and why (what the seed did without an argument is the recipe's).
    """

    seed: str
    model: str
    signature: str
    renames: tuple[tuple[str, str], ...]
    dropped: tuple[str, ...] = ()
    fresh: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()
    layer_weights: str = "weightsum"
    encoder: str = ""
    fixed: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    recipe: str = ""
    unheaded: str = ""  # what a state dict of this seed without heads is, and how to use it instead
    described_by: str = "its args.pkl"  # the seed file that says which model its weights are
    extractor: Mapping[str, Any] = field(default_factory=dict)  # the seed's feature extractor, where none was saved


HEADS = (("dense.", "dense."), ("classifiers.", "classifiers."))
# transformers 4.x's weight-norm names (the seeds saved with 4.26-4.28) → today's parametrization
HF_WEIGHT_NORM = ((".weight_g", ".parametrizations.weight.original0"),
                  (".weight_v", ".parametrizations.weight.original1"))
# every NAIP seed's waveform augmentations never changed a clip (albumentations was handed the sample under a key it
# does not transform); what else they all did (remove_dc, complete_rows, pad_clips) their recipes say
NAIP_FIXED = {name: (0.0, "was a silent no-op in the seed (its waveform augmentations never changed a clip)")
              for name in AUGMENT_GATES}
LAYOUTS = (
    SeedLayout("naip-w2v2", "hf", "model.wav2vec2.feature_extractor.",
               (("model.wav2vec2.", "backbone.model."), *HEADS),
               dropped=("model.projector.", "model.classifier."), fresh=("backbone.model.masked_spec_embed",),
               aliases=HF_WEIGHT_NORM, encoder="save_pretrained", fixed=NAIP_FIXED, recipe="seeds/naip_w2v2"),
    SeedLayout("naip-ssast", "ssast", "v.patch_embed.proj.weight",
               (("v.", "backbone.model.v."), ("mlp_heads.", "classifiers."), HEADS[0]),
               dropped=("v.head.", "v.head_dist."),
               fresh=("backbone.model.cpredlayer.", "backbone.model.gpredlayer.", "backbone.model.mask_embed",
                      "backbone.model.p_input_", "backbone.model.v.head.", "backbone.model.v.head_dist."),
               encoder="model",
               fixed={"pooling_mode": ("mean", "only merged the seed's ft embeddings; its tokens were averaged"),
                      **NAIP_FIXED}, recipe="seeds/naip_ssast",
               unheaded="a naip-ssast pretraining checkpoint (no mlp_heads): fine-tune from it as it is, "
                        "`audiotune train --model ssast --pretrained_mdl_path FILE`"),
    SeedLayout("naip-ecapa-tdnn", "ecapa_tdnn", "model.blocks.0.conv.conv.weight", (("model.", "backbone.ecapa."),
               *HEADS), encoder="ecapa", fixed=NAIP_FIXED, recipe="seeds/naip_ecapa"),
)
HEAD_COLUMN = "label"  # the column of a categorical seed head's class names (tap tables, JSON split files)
SKIPPED_ARGS = ("mode", "exp_dir", "dataset", "trained_mdl_path", "finetuned_mdl_path", "pretrained_mdl_path",
                "embedding_type", "hp_tuning", "new_checkpoint", "debug", "lib", "cloud", "cloud_dir", "bucket_name",
                "project_name")  # how the seed run was started, not what it trained


class SeedImportError(ValueError):
    """A seed file that cannot become an audiotune run (the message names the file and the problem)."""


def read_seed_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a seed ``*_mdl.pt`` (``torch.load(weights_only=True)``; nothing else is unpickled)."""
    path = Path(path)
    if torchscript_archive(path):
        raise SeedImportError(torchscript_refusal(path))
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SeedImportError(f"{path}: not found") from None
    except Exception as err:  # torch raises UnpicklingError / RuntimeError for damaged or non-weight files
        raise SeedImportError(torch_refusal(path, err)) from None
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if isinstance(loaded, Mapping) and {"state", "param_groups"} <= set(loaded):
        raise SeedImportError(f"{path}: an optimiser state (the seed's *_optim_epoch*.pt), not a model: import the "
                              "*_mdl.pt beside it; `train --resume` of the run starts a fresh optimiser")
    if torch.is_tensor(loaded):
        raise SeedImportError(f"{path}: one tensor (the seed's *_predictions.pt logits or *_targets.pt), not a model: "
                              "import its *_mdl.pt; `evaluate --run RUN` writes both as predictions.parquet")
    if not isinstance(loaded, Mapping) or not loaded:
        raise SeedImportError(f"{path}: expected a state dict (the seed's torch.save(model.state_dict())), "
                              f"found {type(loaded).__name__}")
    state = {str(k).removeprefix("module."): v for k, v in loaded.items() if torch.is_tensor(v)}
    if not state:
        raise SeedImportError(f"{path}: holds no tensors")
    return state


def detect_layout(state: Mapping[str, torch.Tensor], path: str | Path) -> SeedLayout:
    """The seed whose signature key the state dict has."""
    for layout in LAYOUTS:
        if any(key.startswith(layout.signature) for key in state):
            return layout
    raise SeedImportError(f"{path}: not a model of {', '.join(lay.seed for lay in LAYOUTS)} (none of the keys "
                          f"{[lay.signature for lay in LAYOUTS]}; first keys: {list(state)[:3]})")


def check_heads(layout: SeedLayout, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """A seed file without classifier heads is no trained classifier: an error saying what it is."""
    prefixes = [old for old, new in layout.renames if new == "classifiers."]
    if not any(key.startswith(tuple(prefixes)) for key in state):
        raise SeedImportError(f"{path}: " + (layout.unheaded or f"a {layout.seed} model without classifier heads "
                                             f"(no {', '.join(prefixes)} keys): not a trained classifier"))


def seed_flags(layout: SeedLayout, args: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The seed's arguments as train flags ``{name: value}`` (those the train command then knows are applied) and
    notes on every argument whose seed meaning differs from today's flag of that name."""
    flags = {k: v for k, v in args.items() if v is not None and k not in SKIPPED_ARGS}
    notes = []
    flags["model"] = layout.model
    if "scheduler" in args and args["scheduler"] is None:  # the seeds' default: a constant learning rate
        flags["scheduler"] = "none"
    for name, (value, why) in layout.fixed.items():
        if name in flags and flags[name] != value:
            notes.append(f"--{name} {flags[name]} {why}: imported as --{name} {value}")
        flags[name] = value
    if flags.get("activation", "relu") not in ("relu", "none"):  # the seeds' heads: ReLU for relu, else nothing
        notes.append(f"--activation {flags['activation']}: the seed's head applied no activation for any value "
                     "but relu: imported as --activation none")
        flags["activation"] = "none"
    if not flags.get("pshift"):  # the seeds' default 0 semitones, unused while pitch shifting is off
        flags.pop("pshiftn", None)
    if layout.model == "ecapa_tdnn" and flags.get("fbank") not in (True, "True"):
        notes += _mfcc_mode(flags)
    if not flags.get("dataset_std"):  # the seeds' 0 / 0 divided by zero: no normalisation is what runs here
        if "dataset_std" in flags or "dataset_mean" in flags:
            notes.append(f"--dataset_mean {flags.get('dataset_mean')} --dataset_std {flags.get('dataset_std')}: "
                         "std 0 divided by zero in the seed; imported without normalisation")
        flags.pop("dataset_std", None)
        flags.pop("dataset_mean", None)
    if layout.model == "ecapa_tdnn" and flags.get("fbank") in (True, "True"):
        for seed_name, name in ECAPA_FBANK_SIZES.items():
            if seed_name in flags:
                flags[name] = flags.pop(seed_name)
        flags.pop("n_mfcc", None)  # unused by the seed's fbank mode
        notes.append("ECAPA fbank: " + ", ".join(f"--{seed} became --{name}"
                                                 for seed, name in ECAPA_FBANK_SIZES.items()))
    if not flags.get("label_groups") and not flags.get("target_labels"):
        raise SeedImportError(f"{path}: has neither label_groups nor target_labels: the heads cannot be named")
    return flags, notes


def recipe_for_the_run(config: RunConfig, seed_only: RunConfig) -> RunConfig:
    """``config`` (the seed's recipe, then its arguments) with what of the recipe is not the seed run's taken from
    ``seed_only`` (its arguments alone): where it runs (the recipe's runtime, its workers; the seed's arguments on
    the defaults, as the user's own) and the encoder's files (the recipe's hub id or SSAST-Base-Frame-400.pth: where
    a new training starts; an imported run's encoder is the seed's own, in its weights). Returns ``config``."""
    config.runtime = seed_only.runtime
    for name in encoder_paths(config).keys() | encoder_paths(seed_only).keys():
        if name in seed_only.model.options:  # the backbone's own option (SSAST's --pretrained_mdl_path)
            config.model.options[name] = seed_only.model.options[name]
        elif name in config.model.options:
            del config.model.options[name]
        else:
            setattr(config.model, name, getattr(seed_only.model, name))
    return config


def _mfcc_mode(flags: dict[str, Any]) -> list[str]:
    """The ECAPA seed's MFCC mode (``--fbank False``, its default) built the MFCC alone: its fbank-only arguments
    (normalisation, SpecAugment, noise) did nothing, so they are left out (the masks set to none); a note on each
    that held a value."""
    flags["fbank"] = False  # also for an args.pkl without it: MFCC was the seed's default
    notes = []
    for name, unused in ECAPA_MFCC_IGNORED.items():
        if flags.get(name):
            notes.append(f"--{name} {flags[name]}: fbank only in the ECAPA seed, unused by its MFCC mode (--fbank "
                         f"False); imported " + ("without it" if unused is None else f"as --{name} {unused}"))
        if unused is None:
            flags.pop(name, None)
        else:
            flags[name] = unused
    return notes


def sizes_in_weights(layout: SeedLayout, state: Mapping[str, torch.Tensor], flags: dict[str, Any]) -> list[str]:
    """Head widths an older seed's args.pkl lacks (its parser had no such flag then), read from the weights they
    shaped: ``clf_bottleneck`` from the first head's dense layer (0: a linear head), ``sd_bottleneck`` from the
    shared dense layer. Sets them in ``flags``; returns a note for each."""
    heads = [old for old, new in layout.renames if new == "classifiers."]
    found: dict[str, int] = {}
    for prefix in heads:
        if f"{prefix}0.head.dense.weight" in state:
            found["clf_bottleneck"] = int(state[f"{prefix}0.head.dense.weight"].shape[0])
        elif f"{prefix}0.head.outproj.weight" in state:
            found["clf_bottleneck"] = 0
    if "dense.dense.weight" in state:
        found["sd_bottleneck"] = int(state["dense.dense.weight"].shape[0])
    notes = []
    for name, size in found.items():
        if name not in flags:
            flags[name] = size
            notes.append(f"--{name}: not in the seed's args.pkl; {size}, as its weights are shaped")
    return notes


def seed_heads(args: dict[str, Any], path: str | Path) -> list[HeadSpec]:
    """One binary head per label group of the seed (``label_groups``, or ``target_labels`` split by ``n_class``)."""
    groups = args.get("label_groups")
    if not groups:
        labels, sizes = list(args.get("target_labels") or []), args.get("n_class") or []
        sizes = [sizes] if isinstance(sizes, int) else list(sizes)
        if sum(sizes) != len(labels):
            raise SeedImportError(f"{path}: n_class {sizes} does not add up to the {len(labels)} target_labels")
        groups, start = [], 0
        for size in sizes:
            groups.append(labels[start:start + size])
            start += size
    return [HeadSpec(name="+".join(map(str, group)), kind="binary", columns=[str(c) for c in group])
            for group in groups]


def recipe_config(recipe: str, checkpoint: str, classes: list[str]) -> RunConfig:
    """A seed recipe (the seed's model and training options) with its encoder ``checkpoint`` and one categorical
    head of ``classes`` in the seed's order; where it runs is left to the user (not the recipe's workers)."""
    path = resolve_recipe(recipe)
    config = config_from_dict(read_config_file(path), source=path)
    config.runtime = RuntimeConfig()
    config.model.checkpoint = checkpoint
    config.heads = [HeadSpec(name=HEAD_COLUMN, kind="categorical", columns=[HEAD_COLUMN], classes=list(classes))]
    return config


def _renamed(layout: SeedLayout, key: str, own: Mapping[str, torch.Tensor]) -> str | None:
    for old, new in layout.renames:
        if key.startswith(old):
            name = new + key[len(old):]
            for suffix, today in layout.aliases:
                if name.endswith(suffix) and name not in own:
                    name = name[: -len(suffix)] + today
            return name
    return None


def map_state(layout: SeedLayout, state: Mapping[str, torch.Tensor], model: Classifier, weighted: bool,
              path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The seed's weights under audiotune's names (complete for ``model``), and what was dropped or kept fresh."""
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    dropped, unknown = [], []
    for key, value in state.items():
        if key == layout.layer_weights:
            continue
        if any(key.startswith(prefix) for prefix in layout.dropped):
            dropped.append(key)
            continue
        name = _renamed(layout, key, own)
        if name is not None and name not in own and name.startswith(layout.fresh):
            dropped.append(key)  # an optional weight this model is built without (the mask embedding, masks off)
            continue
        if name is None or name not in own:
            unknown.append(key)
            continue
        mapped[name] = value.to(own[name].dtype)
    record: dict[str, Any] = {"dropped": dropped}
    if weighted:
        record["layer_weights"] = _layer_weights(layout, state, model, mapped, path)
    fresh = [k for k in own if k not in mapped and any(k.startswith(p) for p in layout.fresh)]
    mapped.update({k: own[k] for k in fresh})
    missing = [k for k in own if k not in mapped]
    reshaped = [f"{k} {tuple(mapped[k].shape)} (config builds {tuple(own[k].shape)})" for k in mapped
                if tuple(mapped[k].shape) != tuple(own[k].shape)]
    if unknown or missing or reshaped:
        raise SeedImportError(f"{path}: does not fit the model {layout.described_by} describes ({layout.seed}): "
                              + "; ".join(f"{what} {items[:4]}{' ...' if len(items) > 4 else ''}"
                                          for what, items in (("unknown keys", unknown), ("missing", missing),
                                                              ("other shapes", reshaped)) if items))
    record["kept_as_built"] = fresh
    return mapped, record


def _layer_weights(layout: SeedLayout, state: Mapping[str, torch.Tensor], model: Classifier,
                   mapped: dict[str, torch.Tensor], path: str | Path) -> dict[str, Any]:
    """The seed's raw weights as they are: the run weighs its pooled states as the seed did (``--layer_weights
    raw``), for any weights and pooling."""
    if layout.layer_weights not in state:
        raise SeedImportError(f"{path}: weighted=True in args.pkl but no '{layout.layer_weights}' weights")
    raw = state[layout.layer_weights].detach().flatten()
    assert model.layer_weights is not None  # the model is built weighted, as args.pkl says
    if raw.numel() != model.layer_weights.numel():
        raise SeedImportError(f"{path}: {raw.numel()} layer weights; the encoder's weighted sum covers "
                              f"{model.layer_weights.numel()} hidden states")
    mapped["layer_weights"] = raw.to(model.layer_weights.dtype)
    return {"seed": raw.tolist(), "layer_weights": model.config.layer_weights}


def _write_encoder(layout: SeedLayout, model: Classifier, source_checkpoint: str, folder: Path) -> None:
    """The backbone's weights as its ``--checkpoint`` / ``--pretrained_mdl_path`` reads them."""
    module = getattr(model.backbone, "model" if layout.encoder == "save_pretrained" else layout.encoder)
    if layout.encoder == "save_pretrained":
        with weights_quietly():
            module.save_pretrained(str(folder))
        try:  # the feature extractor settings the seed used (sampling rate, normalisation)
            from transformers import AutoFeatureExtractor

            AutoFeatureExtractor.from_pretrained(source_checkpoint).save_pretrained(str(folder))
        except (OSError, ValueError):
            if layout.extractor:
                from transformers import Wav2Vec2FeatureExtractor

                Wav2Vec2FeatureExtractor(**layout.extractor).save_pretrained(str(folder))
            else:
                log.warning("%s: no feature extractor config; the encoder folder has none", source_checkpoint)
        return
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / MODEL_FILE))


def _encoder_hint(checkpoint: str, given: bool) -> str:
    """What to do when the encoder ``checkpoint`` (given with -c, or the seed's own) cannot be read."""
    from huggingface_hub import constants

    if not given:
        return f" (its encoder --checkpoint {checkpoint}: pass -c with that hub id or a local copy)"
    if constants.HF_HUB_OFFLINE and not Path(checkpoint).expanduser().exists():
        return f" (-c {checkpoint}: that hub id cannot be reached offline; pass a local copy instead)"
    return ""


def write_seed_run(layout: SeedLayout, config: RunConfig, state: Mapping[str, torch.Tensor], exp_dir: str | Path,
                   record: dict[str, Any], overwrite: bool = False, checkpoint_given: bool = False,
                   files: Mapping[str, bytes] | None = None) -> dict[str, Any]:
    """Build the classifier ``config`` describes, load the seed's mapped weights strictly and write the run;
    ``checkpoint_given``: its encoder checkpoint is the one given with -c, not the seed's. ``files``: more of the
    seed's record carried into the run, by their path in it (its training log)."""
    exp_dir = Path(exp_dir)
    source = record.get(IMPORTED_WEIGHTS, "")
    with own_run_dir(exp_dir, overwrite=overwrite, command="import", resumable=False) as run_dir:
        config.exp_dir = str(exp_dir)
        checkpoint = config.model.checkpoint
        try:
            resolve_config(config)
            model = classifier_to_load(config)
        except (OSError, ValueError) as err:
            hint = _encoder_hint(checkpoint, checkpoint_given) \
                if checkpoint and (isinstance(err, OSError) or checkpoint in str(err)) else ""
            raise SeedImportError(f"{source}: {layout.described_by} does not build an audiotune model{hint}: "
                                  f"{str(err).splitlines()[0]}") from None
        mapped, mapping = map_state(layout, state, model, bool(config.classifier.weighted), source)
        model.load_state_dict(mapped, strict=True)
        run_dir.start()  # everything is checked: from here on the run directory is written
        with atomic_dir(exp_dir / ENCODER_DIR) as folder:
            _write_encoder(layout, model, checkpoint, folder)
        save_weights(model, exp_dir / MODEL_FILE)
        full = {**record, "seed": layout.seed, "model": layout.model, **mapping}
        write_json(exp_dir / IMPORT_RECORD_FILE, full)
        for name, data in (files or {}).items():
            write_bytes(exp_dir / name, data)
        save_config(config, exp_dir / CONFIG_FILE)  # last: the run is complete once its config is there
    return full
