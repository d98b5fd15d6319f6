"""Pseudo-label task-adaptive pretraining (P-TAPT): predict the k-means cluster of every masked frame.

The targets are the frame labels ``audiotune cluster`` wrote (``--pseudo_labels``), one sequence per clip and
K. The encoder is the checkpoint's bare Hugging Face model (wav2vec2, HuBERT, WavLM, data2vec-audio: any
with a mask embedding), its convolutional feature encoder, feature projection and mask embedding frozen, as the
seed system ran it. Per batch:

1. each clip longer than ``--max_seconds`` is cropped at a random offset that is a multiple of the encoder's
   frame hop (the product of its conv strides), so frame ``j`` of the crop is frame ``offset / hop + j`` of
   the whole clip: the same input window, hence the same label, exactly (the seed approximated the first
   label frame from the sample offset);
2. spans of ``mask_time_length`` frames (default 15) start at ``mask_time_prob`` (default 0.06) of the clips'
   real frames (by ``--mask_spans``, :mod:`.hf_masks`: at least two spans per clip or per batch, padding never
   masked, clips too short for a span get none) and are replaced by the encoder's mask embedding;
3. the encoder skips each transformer layer with ``--layerdrop``'s probability (the checkpoint's with
   ``checkpoint``, as the seed's encoder trained; 0, the default: none), as fine-tuning does;
4. one head per K (Linear -> Tanh -> Linear, width 256, on the ReLU of the last hidden state, as the seed's
   ``LinearHead``) predicts the cluster of each masked frame; the loss is the sum over K of the mean
   cross-entropy, ``acc`` the heads' mean accuracy.

The heads are new on every start, also from an encoder that P-TAPT wrote (iterative pseudo-labelling: new
labels, new heads); only the encoder is saved (``EXP_DIR/encoder``, ``save_pretrained`` layout).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiotune.config import RunConfig
from audiotune.data.features import queued_on
from audiotune.data.pseudo_labels import PseudoLabels, read_pseudo_labels
from audiotune.models.backbones import backbone_options
from audiotune.models.backbones.hf_checkpoint import extractor_settings, normalises, weights_quietly
from audiotune.models.backbones.hf_masks import (
    PTAPT_MASK_LENGTH,
    PTAPT_MASK_PROB,
    host_time_mask,
    install_masks,
    padding_attention,
)
from audiotune.models.backbones.hf_pretraining import save_encoder
from audiotune.models.backbones.hf_training import freeze_mask_embedding, install_layerdrop

log = logging.getLogger(__name__)

HEAD_WIDTH = 256
IGNORE = -100


def hop_aligned_crop(waveforms: Tensor, lengths: Tensor, max_samples: int, hop: int,
                     rng: np.random.Generator) -> tuple[Tensor, Tensor, list[int]]:
    """Crop each clip longer than ``max_samples`` (``lengths``: on the host) at a random multiple of ``hop``;
    returns the crops, their
    lengths and each clip's offset in frames (0 for clips kept whole)."""
    offsets = [0] * waveforms.shape[0]
    if max_samples <= 0 or waveforms.shape[1] <= max_samples:
        return waveforms, lengths, offsets
    kept = lengths.clamp(max=max_samples)
    out = waveforms.new_zeros((waveforms.shape[0], int(kept.max())))
    for row, (length, keep) in enumerate(zip(lengths.tolist(), kept.tolist())):
        offsets[row] = int(rng.integers(0, (length - keep) // hop + 1))
        start = offsets[row] * hop
        out[row, :keep] = waveforms[row, start:start + keep]
    return out, kept, offsets


class PseudoLabelPretraining(nn.Module):
    """A Hugging Face encoder with one cluster-prediction head per K (see the module docstring)."""

    def __init__(self, checkpoint: str, config: RunConfig, layerdrop: float | None = 0.0) -> None:
        """``layerdrop``: the probability of skipping each transformer layer in a training pass (``--layerdrop``;
        None: the checkpoint config's)."""
        super().__init__()
        from transformers import AutoConfig, AutoModel

        m = backbone_options(config)  # the HFSettings of the run (its --pseudo_labels checked by the engine)
        self.targets: PseudoLabels = read_pseudo_labels(m.pseudo_labels)
        hf_config = AutoConfig.from_pretrained(checkpoint)
        self.checkpoint = checkpoint
        self.normalise = normalises(extractor_settings(checkpoint), config.features.waveform_norm, config.version)
        kept = ("mask_time_prob", "mask_time_length", "mask_feature_prob", "apply_spec_augment", "layerdrop")
        self.saved_settings = {key: getattr(hf_config, key) for key in kept if hasattr(hf_config, key)}
        self.prob = float(m.mask_time_prob if m.mask_time_prob is not None else PTAPT_MASK_PROB)
        self.length = int(m.mask_time_length if m.mask_time_length is not None else PTAPT_MASK_LENGTH)
        self.spans = str(m.mask_spans)
        if self.prob <= 0 or self.length < 1:
            raise ValueError(f"--mask_time_prob {self.prob} / --mask_time_length {self.length}: masked prediction "
                             "needs masked frames (> 0, >= 1)")
        self.hop = int(np.prod(getattr(hf_config, "conv_stride", ()) or (0,)))
        made = self.targets.made
        rate = extractor_settings(checkpoint)["sampling_rate"]  # the encoder's input rate (its input spec)
        if (made.hop_samples, made.sample_rate) != (self.hop, rate):
            raise ValueError(f"--pseudo_labels {self.targets.path}: labels of frames every {made.hop_samples} "
                             f"samples at {made.sample_rate} Hz, but {checkpoint} makes a frame every "
                             f"{self.hop} samples at {rate} Hz: cluster with an encoder of the same frame rate")
        hf_config.mask_time_prob = self.prob  # > 0: the encoder keeps (or gets) its mask embedding
        hf_config.mask_time_length = self.length
        hf_config.mask_feature_prob = 0.0
        hf_config.apply_spec_augment = True
        with weights_quietly():
            self.model: Any = AutoModel.from_pretrained(checkpoint, config=hf_config)  # a transformers model
        if not isinstance(getattr(self.model, "masked_spec_embed", None), nn.Parameter):
            raise ValueError(f"--objective ptapt: {checkpoint} ({hf_config.model_type}) has no mask embedding to "
                             "mask frames with")
        self.model.freeze_feature_encoder()
        self.model.feature_projection.requires_grad_(False)
        freeze_mask_embedding(self.model)  # the seed wrote masked frames with it and never trained it
        install_masks(self.model, self.spans)  # the spans drawn below, applied without a boolean index
        install_layerdrop(self.model, layerdrop)  # as fine-tuning: the seed's encoder skipped layers while it trained
        width = int(hf_config.hidden_size)
        self.heads = nn.ModuleDict({str(k): nn.Sequential(nn.Linear(width, HEAD_WIDTH), nn.Tanh(),
                                                          nn.Linear(HEAD_WIDTH, k))
                                    for k in self.targets.num_clusters})
        self.max_samples = round(config.train.max_seconds * (rate or 16000))

    @property
    def encoder(self) -> nn.Module:
        return self.model

    def unlabelled(self, uids: Sequence[str]) -> list[str]:
        """``uid UID: no frame labels in --pseudo_labels FILE`` for each of ``uids`` the labels do not hold."""
        return [f"uid {uid}: no frame labels in --pseudo_labels {self.targets.path}" for uid in uids
                if uid not in self.targets.labels]

    def _frames(self, samples: Tensor) -> Tensor:
        return self.model._get_feat_extract_output_lengths(samples).long()

    def frame_targets(self, uids: list[str], full_frames: list[int], offsets: list[int], frames: list[int],
                      total: int) -> dict[int, Tensor]:
        """(B, total) labels per K: each clip's labels from its frame offset, ``-100`` past its frames."""
        out = {k: torch.full((len(uids), total), IGNORE, dtype=torch.long) for k in self.targets.num_clusters}
        for row, uid in enumerate(uids):
            per_k = self.targets.labels.get(uid)
            if per_k is None:
                raise ValueError(f"--pseudo_labels {self.targets.path}: no labels for uid {uid}; cluster the table "
                                 "that is pretrained on")
            for k, target in out.items():
                labels = per_k.get(k)
                if labels is None or len(labels) != full_frames[row]:
                    raise ValueError(f"--pseudo_labels {self.targets.path}: uid {uid} has "
                                     f"{'no' if labels is None else len(labels)} K={k} labels, but the encoder makes "
                                     f"{full_frames[row]} frames of its audio as read now: `cluster` and `pretrain` "
                                     "must read the audio alike (sample rate, channels, segment)")
                n = min(frames[row], total)
                target[row, :n] = torch.from_numpy(labels[offsets[row]:offsets[row] + n])
        return out

    def loss(self, waveforms: Tensor, lengths: Tensor | Sequence[int], uids: list[str],
             rng: random.Random) -> dict[str, Tensor]:
        """``loss`` (sum over K of the mean cross-entropy on masked frames), ``acc``, ``masked`` frames;
        ``lengths``: each clip's samples, best on the host (the crops, masks and targets are drawn there: lengths
        on the device are read back first)."""
        generator = np.random.default_rng(rng.getrandbits(63))
        counts = torch.as_tensor(lengths, dtype=torch.long).cpu()
        full_frames = self._frames(counts).tolist()
        waveforms, counts, offsets = hop_aligned_crop(waveforms, counts, self.max_samples, self.hop, generator)
        frames = self._frames(counts).tolist()
        total = int(self._frames(torch.tensor(waveforms.shape[1])))
        targets = self.frame_targets(list(uids), full_frames, offsets, frames, total)
        chosen = host_time_mask(self.spans, [min(n, total) for n in frames], total, self.prob, self.length,
                                generator, at_least=2)  # drawn here on the host: counted and indexed here too
        # the transformer sees each clip's real frames only (group-norm convolutions still see the padding), as
        # the seed's P-TAPT ran wav2vec2-base
        attention = padding_attention(counts, waveforms.shape[1], waveforms.device)
        out = self.model(waveforms, attention_mask=attention, mask_time_indices=queued_on(chosen, waveforms.device))
        masked = int(chosen.sum())
        if masked == 0:  # every clip too short for a span: a zero loss that keeps the graph
            return {"loss": out.last_hidden_state.sum() * 0.0, "masked": queued_on(0.0, waveforms.device)}
        places = torch.from_numpy(np.flatnonzero(chosen))  # the masked frames, clip by clip, as a boolean index
        reps = F.relu(out.last_hidden_state.flatten(0, 1).index_select(0, queued_on(places, waveforms.device)))
        losses, accuracies = [], []
        for k, head in self.heads.items():
            logits = head(reps)
            target = queued_on(targets[int(k)].flatten()[places], waveforms.device)
            losses.append(F.cross_entropy(logits.float(), target, ignore_index=IGNORE))
            accuracies.append((logits.argmax(dim=1) == target).float().mean().detach())
        return {"loss": torch.stack(losses).sum(), "acc": torch.stack(accuracies).mean(),
                "masked": queued_on(float(masked), waveforms.device),  # on the device, as the values logged with it
                **{f"ce_k{k}": value.detach() for k, value in zip(self.heads, losses)}}

    def save(self, folder: Path) -> Path:
        """``folder/encoder``: the encoder (no heads) with the checkpoint's masking settings."""
        return save_encoder(self.model, self.checkpoint, self.saved_settings, Path(folder), self.normalise)
