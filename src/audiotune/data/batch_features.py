"""Features on the model's device (``--features_on device``): a loader batch of zero-padded waveforms → the batch
of model inputs the data workers would have given, computed batched wherever the batch is.

The workers only decode, resample, map channels, crop and augment waveforms (mixup included); they draw each
clip's VTLP warp and SpecAugment seed as before and send them with the batch. Without mixup, the last waveform
augmentations (equalisation, gain, Gaussian noise) are only drawn there too (:mod:`~audiotune.data.device_augment`).
After the transfer, :class:`BatchFeatures` applies them, then runs the front end
(:class:`~audiotune.data.frontend.FrontEnd`, each clip's SpecAugment masks included) on the whole batch, then the
noise (training only), the padding (zeros or silence) and ``target_length``: what
:class:`~audiotune.data.dataset.FeatureExtractor` and the collator give per clip, batched.
"""
from __future__ import annotations

import torch
from torch import Tensor

from audiotune.data.device_augment import TAIL_KEYS, finish_tails
from audiotune.data.features import queued_on
from audiotune.data.frontend import FrontEnd
from audiotune.data.input_spec import InputSpec

# keys of a waveform batch; COUNTS: num_samples as plain numbers, for the SpecAugment masks drawn on the
# host, so that no clip's length is read back from the device; TAIL: an item's augmentations left to the device
WAVEFORMS, NUM_SAMPLES, WARPS, SEEDS, COUNTS, TAIL = "waveforms", "num_samples", "warps", "seeds", "counts", "tail"
# a batch of model inputs: each clip's ``lengths`` also as plain numbers, which stay on the host (pretraining draws
# its crops and masks there without reading the lengths back from the device); features computed on the device
# give them where the host knows them: for clips of one length
HOST_LENGTHS = "host_lengths"


def batch_lengths(batch: dict) -> Tensor | None:
    """The ``lengths`` a backbone reads of a batch of model inputs: None where the host lengths say that no clip is
    padded (each as long as the batch), so that the backbone runs without a padding mask
    (:meth:`~audiotune.models.backbones.Backbone.hidden_states`); else the batch's ``lengths``."""
    host = batch.get(HOST_LENGTHS)
    if host is not None and all(n == batch["inputs"].shape[1] for n in host):
        return None
    return batch["lengths"]


class BatchFeatures:
    """Turns a batch of padded waveforms (``waveforms`` (B, N), ``num_samples`` (B,) and ``counts``, the samples of
    each clip as plain numbers; in training ``warps`` and ``seeds``: one VTLP factor and one SpecAugment seed of
    each clip, and the waveform augmentations left to the device) into ``inputs`` and ``lengths``, on the batch's
    device; a batch that holds model inputs already passes unchanged.

    ``pad_frame``: one frame that pads clips shorter than the batch (the features of silence; None: zeros).
    """

    def __init__(self, inputs: InputSpec, train: bool = False, pad_frame: Tensor | None = None):
        if not inputs.resample_rate:
            raise ValueError("features on the device need one sample rate (--resample_rate 0 keeps each file's)")
        self.inputs, self.train, self.pad_frame = inputs, train, pad_frame
        self.front_end = FrontEnd(inputs, inputs.resample_rate)
        self.augments = train and bool(inputs.freqm or inputs.timem or inputs.noise)

    def __call__(self, batch: dict) -> dict:
        if WAVEFORMS not in batch:
            return batch
        own = (WAVEFORMS, NUM_SAMPLES, WARPS, SEEDS, COUNTS, *TAIL_KEYS)
        rest = {key: value for key, value in batch.items() if key not in own}
        waveforms, samples = batch[WAVEFORMS], batch[NUM_SAMPLES]
        if samples.device != waveforms.device:  # moved with the batch, unless the caller moved the waveforms only
            samples = samples.to(waveforms.device)
        # the features the workers would compute, in float32 whatever autocast the caller runs under
        with torch.no_grad(), torch.autocast(waveforms.device.type, enabled=False):
            waveforms = finish_tails(waveforms.float(), samples, batch.get(COUNTS), batch)
            # each clip's draws, from the seed its worker drew: the masks go on before the dataset normalisation
            generators = [torch.Generator().manual_seed(int(seed)) for seed in batch[SEEDS]] if self.augments else None
            feats, frames = self.front_end.extract(waveforms, samples, batch.get(WARPS), own_edges=True,
                                                   generators=generators, counts=batch.get(COUNTS))
            if generators is not None and self.inputs.noise:  # the noise after it, as the seeds
                feats = _noise(feats, frames, generators)
            width = feats.shape[1]
            feats, frames = self._pad(feats, frames)
        out = {**rest, "inputs": feats, "lengths": frames}
        counts = batch.get(COUNTS)
        if counts and len(set(counts)) == 1:  # clips of one length: each has the batch's frames, known here
            out[HOST_LENGTHS] = [min(width, feats.shape[1])] * len(counts)
        return out

    def _pad(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Frames past each clip's own hold the pad frame; ``target_length`` pads with it or crops."""
        target = self.inputs.target_length or feats.shape[1]
        if target > feats.shape[1]:
            feats = torch.cat([feats, feats.new_zeros(feats.shape[0], target - feats.shape[1], feats.shape[2])], 1)
        feats, frames = feats[:, :target], frames.clamp(max=target)
        if self.pad_frame is not None:
            own = torch.arange(target, device=feats.device)[None, :] < frames[:, None]
            feats = torch.where(own[..., None], feats, queued_on(self.pad_frame, feats.device, feats.dtype))
        return feats, frames


def _noise(feats: Tensor, frames: Tensor, generators: list[torch.Generator]) -> Tensor:
    """SSAST noise on each clip's own frames: ``rand * U / 10`` added, then its frames rolled by U{-10..9}."""
    device = feats.device
    scales = queued_on([float(torch.rand((), generator=g)) for g in generators], device)
    shifts = queued_on([int(torch.randint(-10, 10, (), generator=g)) for g in generators], device)
    noise_source = torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (), generator=generators[0])))
    noise = torch.rand(feats.shape, generator=noise_source, device=device)
    steps = torch.arange(feats.shape[1], device=device)[None, :]
    own = steps < frames[:, None]
    feats = feats + noise * (scales / 10.0)[:, None, None] * own[..., None]
    # roll within each clip's frames: frame t takes frame (t - shift) mod frames
    source = torch.where(own, torch.remainder(steps - shifts[:, None], frames.clamp(min=1)[:, None]), steps)
    return feats.gather(1, source[..., None].expand_as(feats))
