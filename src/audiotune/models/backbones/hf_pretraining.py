"""Task-adaptive pretraining (TAPT) of a wav2vec2 encoder: its own contrastive + diversity objective, continued.

The model is ``transformers.Wav2Vec2ForPreTraining`` (encoder, Gumbel quantizer, projections) loaded from the
checkpoint; every weight is trained unless ``--freeze_feature_encoder``. Per batch:

1. each clip longer than ``--max_seconds`` is cropped at a random offset (the seed's random crop);
2. spans of ``mask_time_length`` frames are masked in the clips' *real* frames by ``--mask_spans``
   (:mod:`.hf_masks`: ``clip``, each clip's own ``max(2, int(p * n / L + u))`` spans, wav2vec2's rule with the
   seed's ``min_masks = 2``; ``batch``, one count from the batch's padded length, as the seed's transformers
   4.10), ``p`` / ``L`` the checkpoint's ``mask_time_prob`` / ``mask_time_length`` unless given. Padding is
   never masked; a clip too short for one span (or left with fewer than two masked frames, too few to draw a
   distractor from) contributes no masked frame instead of failing;
3. ``num_negatives`` distractors per masked frame are drawn from the other masked frames of the same clip;
4. the encoder skips each transformer layer in a training pass with its checkpoint config's ``layerdrop``
   (transformers' own LayerDrop, as the seed's TAPT trained; ``--layerdrop`` gives no other probability here);
5. the loss is transformers' contrastive loss + ``diversity_loss_weight`` x diversity loss, divided by the
   number of masked frames (a per-frame loss whatever the batch).

``--tapt_loss batch`` is transformers 4.10's objective, with which the emotion seed ran TAPT: distractors drawn
from all of a clip's frames (its padded length where the encoder gets no attention mask), and the loss the
contrastive loss summed over the batch's masked frames + ``diversity_loss_weight`` x the diversity loss once
per batch (today's transformers weighs the diversity by the masked frames: per frame, as above).

Masks and distractors come from the ``rng`` the engine passes (validation repeats its masks every epoch).
The Gumbel temperature is annealed per optimiser step as in wav2vec2's pretraining recipe,
``max(2.0 * 0.999995 ** step, 0.5)``; ``--gumbel_anneal false`` keeps the quantizer's initial temperature
(2.0), which is what the seed system did (it never set it).

The pretrained model is written with ``save_pretrained`` (quantizer included, so TAPT can continue from it)
beside a feature extractor config: ``audiotune train --model hf -c EXP_DIR/encoder`` loads it as a hub id.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from audiotune.atomic import atomic_dir
from audiotune.config import RunConfig
from audiotune.data.features import queued_on
from audiotune.models.backbones import backbone_options
from audiotune.models.backbones.hf_checkpoint import extractor_settings, normalises, weights_quietly
from audiotune.models.backbones.hf_masks import host_time_mask, install_masks, padding_attention
from audiotune.outputs import ENCODER_DIR

log = logging.getLogger(__name__)

GUMBEL_MAX, GUMBEL_MIN, GUMBEL_DECAY = 2.0, 0.5, 0.999995  # wav2vec2 2.0's pretraining recipe
PRETRAINING_MODEL_TYPES = ("wav2vec2",)  # the encoders transformers has a contrastive pretraining model for


def gumbel_temperature(step: int, anneal: bool = True) -> float:
    """The quantizer's Gumbel-softmax temperature at optimiser step ``step``."""
    return max(GUMBEL_MAX * GUMBEL_DECAY ** step, GUMBEL_MIN) if anneal else GUMBEL_MAX


def sample_negatives(mask: np.ndarray, num_negatives: int, rng: np.random.Generator) -> np.ndarray:
    """(B, T, K) indices into the flattened (B * T) frames: for each masked frame, ``K`` other masked frames of
    the same clip, drawn uniformly with replacement (transformers' layout; unmasked positions are unused)."""
    batch, total = mask.shape
    negatives = np.zeros((batch, total, num_negatives), dtype=np.int64)
    for row in range(batch):
        positions = np.flatnonzero(mask[row])
        count = len(positions)
        if count < 2:
            continue
        drawn = rng.integers(0, count - 1, size=(count, num_negatives))
        drawn[drawn >= np.arange(count)[:, None]] += 1  # never the frame itself, still uniform over the others
        negatives[row, positions] = positions[drawn]
    return negatives + (np.arange(batch) * total)[:, None, None]


def sample_negatives_anywhere(mask: np.ndarray, frames: list[int], num_negatives: int,
                              rng: np.random.Generator) -> np.ndarray:
    """As :func:`sample_negatives`, but each masked frame's ``K`` distractors are any other of its clip's first
    ``frames[b]`` frames, masked or not: transformers 4.10's draw, with which the emotion seed's TAPT ran (over
    the padded length, as it passed no attention mask)."""
    batch, total = mask.shape
    negatives = np.zeros((batch, total, num_negatives), dtype=np.int64)
    for row in range(batch):
        positions = np.flatnonzero(mask[row])
        if frames[row] < 2 or not len(positions):
            continue
        drawn = rng.integers(0, frames[row] - 1, size=(len(positions), num_negatives))
        drawn[drawn >= positions[:, None]] += 1  # never the frame itself, still uniform over the others
        negatives[row, positions] = drawn
    return negatives + (np.arange(batch) * total)[:, None, None]


def random_crop(waveforms: Tensor, lengths: Tensor, max_samples: int,
                rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Crop every clip longer than ``max_samples`` (``lengths``: on the host) at a random offset; the batch shrinks
    to its longest crop."""
    if max_samples <= 0 or waveforms.shape[1] <= max_samples:
        return waveforms, lengths
    kept = lengths.clamp(max=max_samples)
    out = waveforms.new_zeros((waveforms.shape[0], int(kept.max())))
    for row, (length, keep) in enumerate(zip(lengths.tolist(), kept.tolist())):
        offset = int(rng.integers(0, length - keep + 1))
        out[row, :keep] = waveforms[row, offset:offset + keep]
    return out, kept


class Wav2Vec2Tapt(nn.Module):
    """``Wav2Vec2ForPreTraining`` of a checkpoint with the masking, distractors and loss described above."""

    def __init__(self, checkpoint: str, config: RunConfig, layerdrop: float | None = 0.0) -> None:
        """``layerdrop``: ``--layerdrop`` as read (None: ``checkpoint``); TAPT skips layers with the checkpoint's
        own LayerDrop whatever it says, so a probability of its own is an error."""
        super().__init__()
        from transformers import AutoConfig, Wav2Vec2ForPreTraining

        hf_config = AutoConfig.from_pretrained(checkpoint)
        if hf_config.model_type not in PRETRAINING_MODEL_TYPES:
            raise ValueError(f"--objective tapt: {checkpoint} is a {hf_config.model_type} encoder; contrastive "
                             f"pretraining needs a wav2vec2 checkpoint (transformers' Wav2Vec2ForPreTraining)")
        if layerdrop:
            raise ValueError(f"--layerdrop {layerdrop}: --objective tapt skips layers with the checkpoint's own "
                             f"LayerDrop ({checkpoint}: layerdrop {getattr(hf_config, 'layerdrop', 0.0)}), as the "
                             "seed's TAPT; --layerdrop acts while fine-tuning and in --objective ptapt")
        m = backbone_options(config)  # the HFSettings of the run
        self.checkpoint = checkpoint
        self.normalise = normalises(extractor_settings(checkpoint), config.features.waveform_norm, config.version)
        # what the saved config keeps as the checkpoint had it (pretraining switches feature masking off)
        self.saved_settings = {key: getattr(hf_config, key) for key in
                               ("mask_time_prob", "mask_time_length", "mask_feature_prob", "apply_spec_augment")}
        self.prob = float(m.mask_time_prob if m.mask_time_prob is not None else hf_config.mask_time_prob)
        self.length = int(m.mask_time_length if m.mask_time_length is not None else hf_config.mask_time_length)
        self.spans = str(m.mask_spans)
        self.per_batch = m.tapt_loss == "batch"
        if self.prob <= 0:
            raise ValueError(f"--mask_time_prob {self.prob}: contrastive pretraining needs masked frames (> 0)")
        hf_config.mask_time_prob = self.prob  # > 0: the encoder keeps its mask embedding
        hf_config.mask_time_length = self.length
        hf_config.mask_feature_prob = 0.0
        hf_config.apply_spec_augment = True
        with weights_quietly():
            loaded: Any = Wav2Vec2ForPreTraining.from_pretrained(checkpoint, config=hf_config,
                                                                 output_loading_info=True)
        model, info = loaded
        missing = sorted(k for k in info["missing_keys"] if k.startswith(("quantizer.", "project_hid.", "project_q.")))
        if missing and not m.fresh_quantizer:
            raise ValueError(f"{checkpoint}: no quantizer weights ({missing[:3]} ...): a fine-tuned (e.g. CTC) or "
                             "bare encoder checkpoint; TAPT continues wav2vec2's pretraining and needs a "
                             "pretraining checkpoint, or pass --fresh_quantizer to start the quantizer and "
                             "projections from random weights")
        if m.fresh_quantizer and not missing and not config.train.resume:  # (a resumed run's did nothing: goes on)
            raise ValueError(f"--fresh_quantizer true: {checkpoint} has quantizer weights, from which TAPT continues; "
                             "leave --fresh_quantizer out (it starts a missing quantizer from random weights)")
        if missing:
            log.warning("%s: no quantizer weights; the quantizer and projections start from random weights "
                        "(--fresh_quantizer)", checkpoint)
        self.model: Any = model  # a transformers model
        install_masks(self.model.wav2vec2, self.spans)  # the spans loss() draws, applied without a boolean index
        self.anneal = bool(m.gumbel_anneal)
        # the encoder reads audio at its extractor's rate (the backbone's input spec)
        self.max_samples = round(config.train.max_seconds * extractor_settings(checkpoint)["sampling_rate"])
        self.group_norm = getattr(hf_config, "feat_extract_norm", "layer") == "group"
        if config.model.freeze_feature_encoder:
            self.model.freeze_feature_encoder()

    @property
    def encoder(self) -> nn.Module:
        """The bare ``Wav2Vec2Model`` inside (shares its weights)."""
        return self.model.wav2vec2

    def loss(self, waveforms: Tensor, lengths: Tensor | Sequence[int], step: int,
             rng: random.Random) -> dict[str, Tensor]:
        """``loss`` (per masked frame) with ``contrastive``, ``diversity``, ``perplexity``, ``masked`` frames
        and the Gumbel ``temperature``; ``lengths``: each clip's samples, best on the host (the crops and masks
        are drawn there: lengths on the device are read back first)."""
        generator = np.random.default_rng(rng.getrandbits(63))
        counts = torch.as_tensor(lengths, dtype=torch.long).cpu()
        waveforms, counts = random_crop(waveforms, counts, self.max_samples, generator)
        temperature = gumbel_temperature(step, self.anneal)
        self.model.set_gumbel_temperature(temperature)
        frames = self.model._get_feat_extract_output_lengths(counts).long()
        total = int(self.model._get_feat_extract_output_lengths(torch.tensor(waveforms.shape[1])))
        real = frames.clamp(max=total).tolist()
        mask = host_time_mask(self.spans, real, total, self.prob, self.length, generator, at_least=2)
        # group-norm ones get none, as they were pretrained and as the seed's TAPT ran them
        attention = None if self.group_norm else padding_attention(counts, waveforms.shape[1], waveforms.device)
        count = int(self.model.config.num_negatives)
        negatives = sample_negatives(mask, count, generator) if not self.per_batch else \
            sample_negatives_anywhere(mask, real if attention is not None else [total] * len(real), count, generator)
        masked = int(mask.sum())
        out = self.model(waveforms, attention_mask=attention,
                         mask_time_indices=queued_on(mask, waveforms.device),
                         sampled_negative_indices=queued_on(negatives, waveforms.device))
        # every value on the device: Lightning reduces each logged one across DDP processes there (NCCL has no CPU)
        extra = {"masked": queued_on(float(masked), waveforms.device),
                 "temperature": queued_on(temperature, waveforms.device),
                 "perplexity": out.codevector_perplexity.detach().float()}
        if masked == 0:  # every clip too short for a span: no target, a zero loss that keeps the graph
            return {"loss": out.projected_states.sum() * 0.0, **extra}
        diversity = out.diversity_loss / masked  # transformers scales it by the masked frames
        # --tapt_loss batch: transformers 4.10's sum over the batch's masked frames + the weighted diversity once
        loss = out.contrastive_loss + self.model.config.diversity_loss_weight * diversity if self.per_batch else \
            out.loss / masked
        return {"loss": loss, "contrastive": out.contrastive_loss.detach() / masked, "diversity": diversity.detach(),
                **extra}

    def save(self, folder: Path) -> Path:
        """``folder/encoder``: the pretraining model (quantizer included) with the checkpoint's masking settings."""
        return save_encoder(self.model, self.checkpoint, self.saved_settings, Path(folder), self.normalise)


def save_encoder(model: Any, checkpoint: str, settings: dict[str, Any], folder: Path, normalise: bool) -> Path:
    """``folder/encoder``: ``model`` via ``save_pretrained`` with ``settings`` (the checkpoint's own masking
    settings) in its config, and a feature extractor config that normalises each clip as the encoder was trained
    (``normalise``), so that ``-c folder/encoder`` reads clips so by default; written aside and moved into place
    complete."""
    from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

    target = folder / ENCODER_DIR
    config = model.config
    current = {key: getattr(config, key) for key in settings}
    try:
        extractor = AutoFeatureExtractor.from_pretrained(checkpoint)
    except (OSError, ValueError):  # none with the checkpoint: the settings the encoder was read with
        read = extractor_settings(checkpoint)
        extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=read["sampling_rate"], padding_value=0.0,
                                             do_normalize=read["do_normalize"],
                                             return_attention_mask=read["return_attention_mask"])
    extractor.do_normalize = normalise
    for key, value in settings.items():
        setattr(config, key, value)
    try:
        with atomic_dir(target) as partial, weights_quietly():
            model.save_pretrained(str(partial), safe_serialization=True)
            extractor.save_pretrained(str(partial))
    finally:
        for key, value in current.items():
            setattr(config, key, value)
    return target
