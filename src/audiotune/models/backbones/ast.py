"""Audio Spectrogram Transformer (transformers' ``ASTModel``) as an audiotune backbone: ``--model ast``.

``-c`` is a hub id (default ``MIT/ast-finetuned-audioset-10-10-0.4593``) or a ``save_pretrained`` folder; a
classification checkpoint (``ASTForAudioClassification``) loads without its head, through ``AutoModel``.

Input
-----
The checkpoint's own ``ASTFeatureExtractor`` (``preprocessor_config.json``) is reproduced by the shared front end,
set up by :func:`ast_input`: Kaldi fbank (``data.features.kaldi_fbank``: hanning window, 25 ms frames, 10 ms
shift, preemphasis 0.97, DC offset removed, no energy, dither 0, log floored at float32 eps: the settings of
``torchaudio.compliance.kaldi.fbank`` that the extractor calls) at its ``sampling_rate`` with its
``num_mel_bins``, on float waveforms (no int16 scaling, as the extractor), normalised as ``(x - mean) / (2 std)``
with its ``mean``/``std`` when ``do_normalize`` (``--dataset_mean/--dataset_std`` replace them, e.g. for a new
dataset's statistics). The computation is the same; kaldi_fbank runs in float32 as torchaudio does, while
transformers' numpy fallback (used when torchaudio is absent) runs in float64: the normalised values then differ
by float32 rounding only (measured under 1e-4 with 128 bins on speech, keystrokes and tones; 1e-6 in float64).

Padding
-------
Every clip is padded or cropped to exactly ``max_length`` frames (``--target_length``; the position embeddings
are fixed to it) and, as the extractor does, padded with frames of log-mel value 0 *before* normalisation, i.e.
``(0 - mean) / (2 std)``. The collator pads normalised features with zeros (or silence, ``--pad``), so the
backbone rewrites every frame past a clip's length with that value: a clip's output never depends on its batch
and ``--pad`` does not apply. As in AST, padding frames are ordinary input (no attention mask).

Hidden states
-------------
``num_layers + 1`` states (B, 2 + patches, D), HF's ``output_hidden_states`` numbering: ``0`` the embeddings
(cls + distillation tokens + patch embeddings + position embeddings), ``1..N`` the transformer layers, the last
including the final LayerNorm (``last_hidden_state``). Tokens are the cls and distillation tokens, then the patches
frequency-major (``f * t_dim + t``). The mask marks the patch tokens whose time span starts within the clip's real
frames: pooling averages the patches over the audio, not the padding; the two class tokens are never in it.

Not supported: pooling the class tokens (``pooler_output``: would need an option in ``config/sections.py``), inputs of
another length or number of mel bins than the checkpoint's (no position-embedding interpolation), waveform or
MFCC inputs, ``--freeze_feature_encoder`` (no separate feature encoder), self-supervised pretraining. SpecAugment
(``--freqm/--timem``) masks the features with 0 before the normalisation, as the original AST recipe does (a masked
cell reads (0 - mean) / (2 std)).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from audiotune.config import RunConfig
from audiotune.config.sections import ZERO_PAD
from audiotune.data.features import normalize
from audiotune.data.input_spec import InputSpec
from audiotune.models.backbones import Backbone, TransformersSizes, input_spec, register, whole_lengths
from audiotune.models.backbones.hf_checkpoint import check_available, from_config_initialised, weights_quietly

__all__ = ["DEFAULT_CHECKPOINT", "ASTBackbone", "ASTOptions", "ast_extractor_settings", "ast_input", "build_ast",
           "resolve_ast"]

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "MIT/ast-finetuned-audioset-10-10-0.4593"
MODEL_TYPE = "audio-spectrogram-transformer"
CLASS_TOKENS = 2  # cls and distillation tokens precede the patches
# ASTFeatureExtractor's defaults (AudioSet statistics), for a checkpoint without preprocessor_config.json
EXTRACTOR_DEFAULTS: dict[str, Any] = {"sampling_rate": 16000, "num_mel_bins": 128, "max_length": 1024,
                                      "do_normalize": True, "mean": -4.2677393, "std": 4.5689974}


def _model_config(checkpoint: str) -> Any:
    """The checkpoint's ``ASTConfig`` (no weights); ValueError when it is another kind of model."""
    from transformers import AutoConfig  # deferred: importing transformers takes seconds

    config = AutoConfig.from_pretrained(checkpoint)
    if config.model_type != MODEL_TYPE:
        raise ValueError(f"--model ast -c {checkpoint}: a '{config.model_type}' checkpoint, not an Audio Spectrogram "
                         f"Transformer ('{MODEL_TYPE}'); wav2vec2-style encoders are --model hf")
    return config


def ast_extractor_settings(checkpoint: str) -> dict[str, Any]:
    """``sampling_rate``, ``num_mel_bins``, ``max_length``, ``do_normalize``, ``mean``, ``std`` of the checkpoint's
    ``ASTFeatureExtractor``; without a ``preprocessor_config.json``, the extractor's defaults with the model's own
    mel bins and length."""
    from transformers import AutoFeatureExtractor

    try:
        extractor = AutoFeatureExtractor.from_pretrained(checkpoint)
    except (OSError, ValueError):  # no preprocessor_config.json (or offline without a cache)
        model = _model_config(checkpoint)
        log.warning("%s has no feature extractor settings: using ASTFeatureExtractor's defaults (16 kHz, AudioSet "
                    "mean/std)", checkpoint)
        return {**EXTRACTOR_DEFAULTS, "num_mel_bins": int(model.num_mel_bins), "max_length": int(model.max_length)}
    return {name: type(default)(getattr(extractor, name, default)) for name, default in EXTRACTOR_DEFAULTS.items()}


def patch_grid(model_config: Any) -> tuple[int, int]:
    """Patch rows (frequency) and columns (time) of the checkpoint's input, as ``ASTEmbeddings.get_shape``."""
    size = int(model_config.patch_size)
    return ((int(model_config.num_mel_bins) - size) // int(model_config.frequency_stride) + 1,
            (int(model_config.max_length) - size) // int(model_config.time_stride) + 1)


@dataclass(frozen=True)
class ASTOptions:
    """What builds an :class:`ASTBackbone`, read from a run config by :meth:`from_config` (the input from
    :func:`ast_input`)."""

    checkpoint: str = DEFAULT_CHECKPOINT
    sample_rate: int = 16000
    dataset_mean: float | None = None  # the front end's normalisation (None: none), for the padding value
    dataset_std: float | None = None

    @classmethod
    def from_config(cls, config: RunConfig) -> ASTOptions:
        f = input_spec(config)
        return cls(checkpoint=config.model.checkpoint or DEFAULT_CHECKPOINT, sample_rate=f.rate_or_default,
                   dataset_mean=None if f.dataset_std is None else float(f.dataset_mean or 0.0),
                   dataset_std=None if f.dataset_std is None else float(f.dataset_std))

    @property
    def pad_value(self) -> float:
        """A padding frame as the extractor makes it: log-mel 0, then normalised."""
        if self.dataset_std is None:
            return 0.0
        return normalize(0.0, self.dataset_mean or 0.0, self.dataset_std)


def _load_encoder(checkpoint: str, pretrained: bool) -> Any:
    """The bare ``ASTModel`` of ``checkpoint`` (a transformers model, typed Any); random weights unless
    ``pretrained``."""
    from transformers import AutoModel

    config = _model_config(checkpoint)
    if pretrained:
        with weights_quietly():
            return AutoModel.from_pretrained(checkpoint, config=config)
    with from_config_initialised():
        return AutoModel.from_config(config)


class ASTBackbone(TransformersSizes, Backbone):
    """transformers' ``ASTModel``: (B, max_length, num_mel_bins) normalised fbank -> hidden states, patch mask.

    See the module docstring for the input, the padding value and the numbering of the hidden states.
    """

    pads_itself = True  # every frame past a clip's holds the extractor's padding frame, whatever --pad says

    def __init__(self, options: ASTOptions, pretrained: bool = True) -> None:
        """``pretrained=False`` builds from the checkpoint's config only (random weights)."""
        super().__init__()
        self.options = options
        self.checkpoint = options.checkpoint
        self.model = _load_encoder(options.checkpoint, pretrained)
        config = self.model.config
        self.num_mel_bins, self.max_length = int(config.num_mel_bins), int(config.max_length)
        self.time_stride = int(config.time_stride)
        self.f_dim, self.t_dim = patch_grid(config)

    def describe_front_end(self) -> dict[str, Any]:
        """The padding this backbone sets (see :meth:`model_inputs`)."""
        return {"padding_frames": f"every frame past a clip's length set to {self.options.pad_value:.6g}, a frame "
                                  "of log-mel 0 normalised, as the checkpoint's feature extractor pads"}

    def model_inputs(self, features: Tensor, lengths: Tensor) -> Tensor:
        """(B, max_length, num_mel_bins) features with every frame past ``lengths`` set to the extractor's padding."""
        if features.dim() != 3 or tuple(features.shape[1:]) != (self.max_length, self.num_mel_bins):
            raise ValueError(f"AST expects features (B, {self.max_length} frames, {self.num_mel_bins} mel bins) "
                             f"(--target_length, --num_mel_bins of the checkpoint), got {tuple(features.shape)}")
        frames = torch.arange(self.max_length, device=features.device)
        valid = frames[None, :] < lengths.to(features.device)[:, None]
        return torch.where(valid[..., None], features, torch.full_like(features, self.options.pad_value))

    def token_mask(self, lengths: Tensor) -> Tensor:
        """(B, 2 + patches) True at the patch tokens whose time span starts within the clip's frames."""
        starts = torch.arange(self.t_dim, device=lengths.device) * self.time_stride
        columns = starts[None, :] < lengths.clamp(min=1)[:, None]  # (B, t_dim); at least one column per clip
        patches = columns[:, None, :].expand(-1, self.f_dim, -1).reshape(lengths.shape[0], -1)
        return torch.cat([patches.new_zeros(lengths.shape[0], CLASS_TOKENS), patches], dim=1)

    def _run(self, features: Tensor, lengths: Tensor | None, attentions: bool = False
             ) -> tuple[list[Tensor], Tensor, Any]:
        lengths = whole_lengths(features, lengths).to(device=features.device, dtype=torch.long)
        out = self.model(self.model_inputs(features, lengths), output_hidden_states=True,
                         output_attentions=attentions)
        states = list(out.hidden_states)
        if len(states) != self.num_hidden_states:
            raise RuntimeError(f"ASTModel returned {len(states)} hidden states, expected {self.num_hidden_states}")
        states[-1] = out.last_hidden_state  # the last layer with the final LayerNorm
        return states, self.token_mask(lengths), out

    def hidden_states(self, features: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """Features (B, max_length, F), valid frames (B,) -> ``num_layers + 1`` tensors (B, 2 + patches, D) and
        the patch mask (B, 2 + patches)."""
        states, mask, _ = self._run(features, lengths)
        return states, mask

    def hidden_states_with_attention(self, features: Tensor, lengths: Tensor
                                     ) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        """As :meth:`hidden_states`, plus each layer's attention probabilities (B, heads, tokens, tokens)."""
        switch = getattr(self.model, "set_attn_implementation", None)  # older transformers: eager already
        previous = self.model.config._attn_implementation
        if switch is not None:
            switch("eager")  # fused attention kernels return no weights
        try:
            states, mask, out = self._run(features, lengths, attentions=True)
        finally:
            if switch is not None:
                switch(previous)
        return states, mask, list(out.attentions)

    def attention_layout(self) -> tuple[int, tuple[int, int], tuple[int, int]]:
        """The two class tokens before the patches, the patch grid (frequency rows, time columns), and the bins and
        frames the patches read."""
        config, size = self.model.config, int(self.model.config.patch_size)
        return CLASS_TOKENS, (self.f_dim, self.t_dim), ((self.f_dim - 1) * int(config.frequency_stride) + size,
                                                        (self.t_dim - 1) * self.time_stride + size)

    def load_pretrained(self, path: str | Path) -> None:
        """Re-load the encoder weights from a hub id or folder (strict: same architecture required)."""
        self.model.load_state_dict(_load_encoder(str(path), True).state_dict())

    def export_config(self, folder: str | Path) -> None:
        """Write the architecture (config.json) and the front end the run used (preprocessor_config.json), so a
        run directory rebuilds without the hub and the folder works as a ``-c`` checkpoint."""
        from transformers import ASTFeatureExtractor

        self.model.config.save_pretrained(str(folder))
        o = self.options
        normalize = o.dataset_std is not None
        ASTFeatureExtractor(sampling_rate=o.sample_rate, num_mel_bins=self.num_mel_bins, max_length=self.max_length,
                            do_normalize=normalize, mean=o.dataset_mean if normalize else EXTRACTOR_DEFAULTS["mean"],
                            std=o.dataset_std if normalize else EXTRACTOR_DEFAULTS["std"]).save_pretrained(str(folder))


def resolve_ast(config: RunConfig) -> None:
    """The default checkpoint; frozen unless asked (as ``--model hf``); warnings where the extractor and the model
    disagree and where ``--clip_length`` leaves frames empty (:func:`ast_input` is what the model reads, at its
    extractor's rate); ``--pad`` other than its default is an error (the backbone pads with its extractor's frame
    whatever it says: see the module docstring; a resumed run made with one goes on)."""
    if config.features.pad != ZERO_PAD and not config.train.resume:
        raise ValueError(f"--pad {config.features.pad}: --model ast pads every clip with its feature extractor's "
                         "padding frame (log-mel 0, then normalised) whatever --pad says; leave --pad out")
    m = config.model
    if not m.checkpoint:
        m.checkpoint = DEFAULT_CHECKPOINT
    check_available(m.checkpoint, "-c")  # no network and no local copy: one line at once
    if m.freeze is None:
        m.freeze = True
    model = _model_config(m.checkpoint)
    settings = ast_extractor_settings(m.checkpoint)
    frames = int(model.max_length)
    if (settings["num_mel_bins"], settings["max_length"]) != (int(model.num_mel_bins), frames):
        log.warning("%s: its feature extractor says %s mel bins x %s frames, its model %s x %s; the model's are used",
                    m.checkpoint, settings["num_mel_bins"], settings["max_length"], model.num_mel_bins, frames)
    rate = settings["sampling_rate"]
    frame, shift = int(rate * 0.025), int(rate * 0.010)  # kaldi_fbank's 25 ms frames, 10 ms shift
    needed = (frames - 1) * shift + frame  # samples that fill every frame
    if config.audio.clip_length and config.audio.clip_length * rate < needed:
        log.info("--clip_length %s s gives at most %s of the %s frames AST reads (the rest is padding); "
                 "--clip_length %.2f fills them", config.audio.clip_length,
                 1 + max(round(config.audio.clip_length * rate) - frame, 0) // shift, frames,
                 math.ceil(needed / rate * 100) / 100)


def ast_input(config: RunConfig) -> InputSpec:
    """The checkpoint's ASTFeatureExtractor as the front end: the Kaldi fbank at the extractor's rate with the
    model's mel bins, padded or cropped to the model's ``max_length`` frames, normalised by the extractor's
    ``mean``/``std`` when it normalises and neither ``--dataset_mean`` nor ``--dataset_std`` is given. Other
    features, mel bins or lengths than the checkpoint's are an error."""
    f = config.features
    checkpoint = config.model.checkpoint or DEFAULT_CHECKPOINT
    if f.features not in (None, "fbank"):
        raise ValueError(f"--features {f.features}: --model ast reads the Kaldi fbank of its feature extractor")
    model = _model_config(checkpoint)
    settings = ast_extractor_settings(checkpoint)
    bins, frames = int(model.num_mel_bins), int(model.max_length)
    if f.num_mel_bins not in (None, bins):
        raise ValueError(f"--num_mel_bins {f.num_mel_bins}: {checkpoint} reads {bins} mel bins")
    if f.target_length not in (0, frames):
        raise ValueError(f"--target_length {f.target_length}: {checkpoint} reads exactly {frames} frames (its "
                         "position embeddings are fixed)")
    mean, std = f.dataset_mean, f.dataset_std
    if settings["do_normalize"] and mean is None and std is None:
        mean, std = settings["mean"], settings["std"]
    spec = replace(InputSpec.from_sections(config.audio, config.features), resample_rate=settings["sampling_rate"],
                   num_mel_bins=bins, target_length=frames, dataset_mean=mean, dataset_std=std,
                   min_samples=config.audio.min_samples)
    return spec.with_min_samples()


@register("ast", input=ast_input, resolve=resolve_ast)
def build_ast(config: RunConfig, pretrained: bool = True) -> ASTBackbone:
    """The AST encoder named by ``--checkpoint`` (default MIT/ast-finetuned-audioset-10-10-0.4593).

    ``pretrained=False`` reads the checkpoint's config only (random weights), for runs whose weights are loaded
    from their own ``model.safetensors`` afterwards.
    """
    return ASTBackbone(ASTOptions.from_config(config), pretrained=pretrained)
