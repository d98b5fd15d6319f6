"""``--model ssast``: the package backbone over :class:`~audiotune.models.backbones.ssast_model.SSASTModel`
(the SSAST ViT with the original parameter names), its options and flags, and how it sets the config it needs.

Fine-tuning loads an original SSL checkpoint
(:func:`~audiotune.models.backbones.ssast_checkpoint.load_ssast_checkpoint`); ``audiotune pretrain`` runs the
MPC / MPG objectives and writes the model in both layouts.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from audiotune.atomic import atomic_path
from audiotune.config import (
    AT_LEAST_1,
    CLASSIFIER_STAGES,
    MPG_LOSS_VERSION,
    PRETRAIN_TASK_CHECKED_VERSION,
    PRETRAINING,
    RunConfig,
    option,
    option_default,
)
from audiotune.data.input_spec import InputSpec
from audiotune.models.backbones import Backbone, backbone_options, input_spec, register
from audiotune.models.backbones.ssast_checkpoint import load_ssast_checkpoint
from audiotune.models.backbones.ssast_masking import patch_grid
from audiotune.models.backbones.ssast_model import (
    FINETUNE_TASKS,
    PRETRAIN_TASKS,
    SIZE_ALIASES,
    SIZES,
    SSASTModel,
)
from audiotune.outputs import MODEL_FILE, ORIGINAL_SSAST_FILE
from audiotune.storage import Role

log = logging.getLogger(__name__)

__all__ = ["SSASTBackbone", "build_ssast", "resolve_ssast", "ssast_input"]

MEL_BINS, FRAMES = 128, 1024  # the released SSAST checkpoints' input: fbank mel bins and frames
DEFAULT_OBJECTIVE = "pretrain_joint"  # the seed's pretraining task: nce + 10 mse


@dataclass
class SSASTSettings:
    """The options of ``--model ssast`` (flags shown with it; ``config.model.options`` in a run)."""

    pretrained_mdl_path: str = option("", "self-supervised checkpoint to start from: fine-tuned, or pretrained on "
                                          "(original .pth, with or without 'module.', or one written by "
                                          "`audiotune pretrain`)",
                                          role=Role.INPUT)
    model_size: str = option("base", "size", choices=("tiny", "small", "base", "base_nokd"))
    task: str = option("ft_cls", "pooled tokens for fine-tuning (ft_cls, ft_avgtok) or, the seed's spelling of "
                                 "--objective, the objective of `audiotune pretrain` (pretrain_mpc, pretrain_mpg, "
                                 "pretrain_joint = nce + 10 mse)",
                       choices=("ft_cls", "ft_avgtok", "pretrain_mpc", "pretrain_mpg", "pretrain_joint"),
                       acts={**dict.fromkeys(FINETUNE_TASKS, CLASSIFIER_STAGES),
                             **dict.fromkeys(PRETRAIN_TASKS, PRETRAINING)})
    fshape: int = option(128, "patch height in mel bins (128 with tshape 2: frame model; 16x16: patch model)",
                         valid=AT_LEAST_1)
    tshape: int = option(2, "patch width in frames", valid=AT_LEAST_1)
    fstride: int = option(128, "patch stride in mel bins (pretraining: = fshape)", valid=AT_LEAST_1)
    tstride: int = option(2, "patch stride in frames (pretraining: = tshape)", valid=AT_LEAST_1)
    mask_patch: int = option(400, "pretraining: patches masked per clip", valid=AT_LEAST_1, acts=PRETRAINING)
    cluster_factor: int = option(3, "pretraining: side of the square blocks of masked patches (patch models)",
                                 valid=AT_LEAST_1, acts=PRETRAINING)
    cluster_side: str = option("fixed", "pretraining: each clip's block side is --cluster_factor (fixed) or drawn "
                                        "from --cluster_factor to --cluster_factor + 2 (drawn: the SSAST seeds' "
                                        "3, 4 or 5 with the default 3)",
                               choices=("fixed", "drawn"), acts=PRETRAINING)


@dataclass(frozen=True)
class SSASTOptions:
    """What builds an :class:`SSASTBackbone`, read from a run config by :meth:`from_config`: the options of
    ``--model ssast`` (their defaults are :class:`SSASTSettings`'), the fbank's mel bins and frames, and the depth
    (12 in every released checkpoint; fewer only for tests)."""

    model_size: str = option_default(SSASTSettings, "model_size")
    fshape: int = option_default(SSASTSettings, "fshape")
    tshape: int = option_default(SSASTSettings, "tshape")
    fstride: int = option_default(SSASTSettings, "fstride")
    tstride: int = option_default(SSASTSettings, "tstride")
    input_fdim: int = MEL_BINS
    input_tdim: int = FRAMES
    task: str = option_default(SSASTSettings, "task")
    depth: int = 12

    @classmethod
    def from_config(cls, config: RunConfig) -> SSASTOptions:
        m, f = backbone_options(config), input_spec(config)
        assert f.num_mel_bins is not None and f.target_length is not None  # ssast_input sets them
        return cls(m.model_size, m.fshape, m.tshape, m.fstride, m.tstride, f.num_mel_bins, f.target_length,
                   ssast_task(config, m))


def ssast_task(config: RunConfig, settings: SSASTSettings) -> str:
    """The task the model serves: the run's ``--objective`` when it is an SSAST objective (a pretrain run, whose
    encoder then pools its patch tokens), else ``--task`` (which may spell the objective as the seed did)."""
    return config.model.objective if config.model.objective in PRETRAIN_TASKS else settings.task


class SSASTBackbone(Backbone):
    """Package backbone over :class:`SSASTModel` (``self.model``).

    ``hidden_states`` returns ``depth + 2`` states (B, cls + N, D) and a token mask choosing what the classifier's
    masked mean pools: the cls token(s) for ``ft_cls`` (= upstream ``(x0 + x1) / 2``), the patch tokens otherwise
    (``ft_avgtok``; also for the pretraining tasks). ``lengths`` are ignored: inputs are padded / cropped to
    ``target_length`` frames and the padding is part of the input, as in the original.
    """


    def __init__(self, options: SSASTOptions, pretrained_path: str | Path | None = None) -> None:
        super().__init__()
        o = options
        if o.task not in FINETUNE_TASKS + PRETRAIN_TASKS:
            raise ValueError(f"SSAST task '{o.task}' is not one of {FINETUNE_TASKS + PRETRAIN_TASKS}")
        self.options = options
        self.task = o.task
        self.model = SSASTModel(o.model_size, o.fshape, o.tshape, input_fdim=o.input_fdim, input_tdim=o.input_tdim,
                                depth=o.depth, fstride=o.fstride, tstride=o.tstride)
        if o.task in FINETUNE_TASKS:  # the pretext heads and mask token get no gradient while fine-tuning
            for param in (*self.model.cpredlayer.parameters(), *self.model.gpredlayer.parameters(),
                          self.model.mask_embed):
                param.requires_grad_(False)
        if pretrained_path:
            self.load_pretrained(pretrained_path)

    @property
    def embedding_dim(self) -> int:
        """Token width D."""
        return self.model.embed_dim

    @property
    def num_layers(self) -> int:
        """Transformer blocks."""
        return self.model.depth

    @property
    def num_hidden_states(self) -> int:
        """Blocks + 2: the embedded tokens, each block, and the final ``v.norm``."""
        return self.model.depth + 2

    @property
    def weighted_states(self) -> int:
        """The embedded tokens and each block: the seed's weighted sum left the final ``v.norm`` out."""
        return self.model.depth + 1

    # the seed's ft_cls / ft_avgtok merges: the mean of the cls token(s), or of the patch tokens
    token_pools = ("cls", "avgtok")

    def token_mask(self, pool: str, batch: int, device: torch.device) -> Tensor:
        """(B, tokens) True on the cls token(s) (``cls``) or on the patch tokens (``avgtok``)."""
        if pool not in self.token_pools:
            raise ValueError(f"SSAST token pool '{pool}' is not one of {self.token_pools}")
        tokens = self.model.cls_token_num + self.model.num_patches
        mask = torch.zeros(batch, tokens, dtype=torch.bool, device=device)
        if pool == "cls":
            mask[:, :self.model.cls_token_num] = True
        else:
            mask[:, self.model.cls_token_num:] = True
        return mask

    @property
    def pooled_tokens(self) -> str:
        """The tokens its hidden states are pooled over: the cls token(s) for ``ft_cls``, else the patches."""
        return "cls" if self.task == "ft_cls" else "avgtok"

    def _mask(self, batch: int, device: torch.device) -> Tensor:
        return self.token_mask(self.pooled_tokens, batch, device)

    def hidden_states(self, features: Tensor, lengths: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """Features (B, T, F) -> (``num_hidden_states`` tensors (B, tokens, D), pooling mask (B, tokens))."""
        return self.model.hidden_states(features), self._mask(features.shape[0], features.device)

    def hidden_states_with_attention(self, features: Tensor, lengths: Tensor | None = None
                                     ) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        """As :meth:`hidden_states`, plus each block's attention probabilities (B, heads, tokens, tokens)."""
        states, attentions = self.model.forward_with_attention(features)
        return states, self._mask(features.shape[0], features.device), attentions

    def attention_layout(self) -> tuple[int, tuple[int, int], tuple[int, int]]:
        """Class tokens before the patches, the patch grid (frequency rows, time columns), and the bins and frames
        the patches read (those past the last patch's stride are read by none)."""
        m = self.model
        return m.cls_token_num, (m.f_dim, m.t_dim), ((m.f_dim - 1) * m.fstride + m.fshape,
                                                      (m.t_dim - 1) * m.tstride + m.tshape)

    # ------------------------------------------------------------------ self-supervised pretraining

    @classmethod
    def pretrain_objectives(cls, config: RunConfig) -> tuple[str, ...]:
        """Masked-patch classification, generation, or both; the task the model serves (:func:`ssast_task`) first
        when it is one (``--task`` is the seed's spelling of ``--objective``; :func:`resolve_ssast` refuses the two
        naming different ones)."""
        task = ssast_task(config, backbone_options(config))
        first = task if task in PRETRAIN_TASKS else DEFAULT_OBJECTIVE
        return (first, *(task for task in PRETRAIN_TASKS if task != first))

    @classmethod
    def objective_problems(cls, objective: str, config: RunConfig) -> list[str]:
        """Every objective reads the clips alone: nothing more to give."""
        return []

    def start_pretraining(self, objective: str, config: RunConfig) -> None:
        """Every parameter trainable (pretext heads and mask token too); masking from ``--mask_patch``,
        ``--cluster_factor`` and ``--cluster_side`` (training and validation masks alike, as the seeds)."""
        self.task = objective
        settings = backbone_options(config)
        if settings.mask_patch > self.model.num_patches:
            model = self.model
            raise ValueError(f"--mask_patch {settings.mask_patch}: more patches than a clip has ({model.num_patches}: "
                             f"{model.f_dim} x {model.t_dim} of this --num_mel_bins, --target_length and patch shape "
                             "and stride)")
        self.mask_options = {"mask_patch": settings.mask_patch, "cluster_factor": settings.cluster_factor,
                             "jitter": settings.cluster_side == "drawn",
                             "mpg_weight": 1.0 if config.version >= MPG_LOSS_VERSION else 10.0}
        for param in self.parameters():
            if param.is_floating_point():
                param.requires_grad_(True)

    def clip_problems(self, uids: Sequence[str]) -> list[str]:
        """Every objective learns from any clip."""
        return []

    def pretrain_loss(self, batch: dict[str, Any], objective: str, step: int = 0,
                      rng: random.Random | None = None) -> dict[str, Tensor]:
        """:meth:`SSASTModel.pretrain_loss` of the batch's fbank ``inputs`` (``step`` is not used)."""
        options = getattr(self, "mask_options", {})
        return self.model.pretrain_loss(batch["inputs"], task=objective, rng=rng, **options)

    def save_pretrained_outputs(self, folder: Path) -> list[Path]:
        """``model.safetensors`` (original key names, no prefix: ``--pretrained_mdl_path`` reads it) and
        ``ssast_original.pth`` (the original ``module.`` keys, tensors only, for the original code)."""
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        written = [Path(folder) / MODEL_FILE, Path(folder) / ORIGINAL_SSAST_FILE]
        with atomic_path(written[0]) as partial:
            save_file(state, str(partial))
        with atomic_path(written[1]) as partial:
            torch.save({f"module.{k}": v for k, v in state.items()}, partial)
        return written

    def load_pretrained(self, path: str | Path | Mapping[str, Any]) -> None:
        """Original SSL checkpoint (with or without ``module.``) or one written by this package; see
        :func:`load_ssast_checkpoint`."""
        load_ssast_checkpoint(self.model, path, strict=True)


def resolve_ssast(config: RunConfig) -> None:
    """Frozen by default for fine-tuning (the seed's ``--freeze True``), trained for the pretraining tasks; a
    pretraining ``--task`` that names another objective than ``--objective`` is an error."""
    settings = backbone_options(config)
    task, objective = settings.task, config.model.objective
    checked = config.version >= PRETRAIN_TASK_CHECKED_VERSION  # an earlier run's recorded task: pretrain's default
    if task in PRETRAIN_TASKS and objective and objective != task and checked:
        raise ValueError(f"--task {task} and --objective {objective}: two pretraining objectives (--task {task} is "
                         f"the seed's spelling of --objective {task}); give one")
    if config.classifier.pooling_mode == "sum":  # the seed's flag, which merged the heads' ft embeddings only
        raise ValueError("--pooling_mode sum with --model ssast: the SSAST seed's flag merged the heads' ft embeddings "
                         "only, its tokens were averaged: `audiotune extract --embedding_type ft --pooling_mode sum`; "
                         "here it would sum the tokens")
    if config.train.max_seconds:
        raise ValueError(f"--max_seconds {config.train.max_seconds}: crops a Hugging Face encoder's pretraining clips; "
                         "SSAST reads --target_length frames of each clip from its start")
    if config.model.freeze is None:
        config.model.freeze = ssast_task(config, settings) in FINETUNE_TASKS


def ssast_input(config: RunConfig) -> InputSpec:
    """SSAST reads fbank features of a fixed length: ``--features fbank`` (waveform is rejected), ``MEL_BINS`` mel
    bins and ``FRAMES`` frames unless given. Checks size, task and patch geometry against the mel bins and frames."""
    s = backbone_options(config)
    if config.features.features == "waveform":
        raise ValueError("--model ssast reads fbank features, not waveforms")
    bins = config.features.num_mel_bins or MEL_BINS
    f = replace(InputSpec.from_sections(config.audio, config.features), features="fbank", num_mel_bins=bins,
                target_length=config.features.target_length or FRAMES, min_samples=config.audio.min_samples)
    size = s.model_size
    if SIZE_ALIASES.get(size, size) not in SIZES:
        raise ValueError(f"--model_size {size}: SSAST sizes are {sorted(SIZES)}")
    task = ssast_task(config, s)
    if task not in FINETUNE_TASKS + PRETRAIN_TASKS:
        raise ValueError(f"--task {task}: SSAST tasks are {FINETUNE_TASKS + PRETRAIN_TASKS}")
    fshape, tshape, fstride, tstride = s.fshape, s.tshape, s.fstride, s.tstride
    try:
        patch_grid(bins, f.target_length, fshape, tshape, fstride, tstride)
    except ValueError as error:
        raise ValueError(f"--model ssast: {error} (--fshape/--tshape/--fstride/--tstride vs --num_mel_bins "
                         f"{f.num_mel_bins} / --target_length {f.target_length})") from None
    if task in PRETRAIN_TASKS and (fstride, tstride) != (fshape, tshape):
        raise ValueError(f"{task}: pretraining needs --fstride = --fshape and --tstride = --tshape "
                         f"(no overlapping patches), got stride ({fstride}, {tstride}), shape ({fshape}, {tshape})")
    return f.with_min_samples()


@register("ssast", input=ssast_input, resolve=resolve_ssast, options=SSASTSettings)
def build_ssast(config: RunConfig, pretrained: bool = True) -> SSASTBackbone:
    """SSAST over ``num_mel_bins x target_length`` fbanks; loads ``pretrained_mdl_path`` (or ``--checkpoint``)."""
    m, s = config.model, backbone_options(config)
    backbone = SSASTBackbone(SSASTOptions.from_config(config))
    path = s.pretrained_mdl_path or m.checkpoint
    if pretrained and path:
        backbone.load_pretrained(path)
        if config.features.dataset_mean is None or config.features.dataset_std is None:
            log.warning("--model ssast from %s with features not normalised (no --dataset_mean/--dataset_std): "
                        "SSAST checkpoints were trained on (x - mean) / (2 std) of their data (the original ones: "
                        "mean -4.2677393, std 4.5689974); `audiotune stats --model ssast -d DATA` measures yours", path)
    elif pretrained and m.freeze and backbone.task in FINETUNE_TASKS:
        log.warning("--model ssast with a frozen backbone and no --pretrained_mdl_path: the encoder stays random")
    return backbone
