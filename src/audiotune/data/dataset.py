"""Dataset and collation: prepared clips → model inputs with their true lengths."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from audiotune.data.audio import EXPECTED_RATE, AudioSpec, load_clip, table_spans
from audiotune.data.audio_store import AudioStore
from audiotune.data.augment import AugmentConfig, DeviceTail, WaveformAugmenter, mixup, sample_mixup_lambda
from audiotune.data.batch_features import (
    COUNTS,
    HOST_LENGTHS,
    NUM_SAMPLES,
    SEEDS,
    TAIL,
    WARPS,
    WAVEFORMS,
    BatchFeatures,
)
from audiotune.data.device_augment import collate_tails
from audiotune.data.frontend import FrontEnd, check_feature_config, waveform_batch
from audiotune.data.input_spec import InputSpec
from audiotune.data.spec_augment import spec_noise


class FeatureExtractor:
    """A mono clip → (frames, bins) features, normalised when dataset statistics are given: the
    :class:`~audiotune.data.frontend.FrontEnd` on a batch of one clip, with errors that name the file."""

    def __init__(self, config: InputSpec):
        self.config = config
        if config.features == "waveform" and (config.freqm or config.timem or config.noise):
            raise ValueError("--freqm/--timem/--noise act on spectrograms; waveform inputs have none")
        check_feature_config(config)  # fail at construction, not in a worker halfway through an epoch
        self._front_ends: dict[int, FrontEnd] = {}

    @property
    def num_bins(self) -> int:
        """Values per frame (1 for waveform samples)."""
        bins = {"fbank": self.config.num_mel_bins, "mfcc": self.config.n_mfcc}.get(self.config.features, 1)
        assert bins is not None  # __init__ rejects fbank without num_mel_bins
        return bins

    def front_end(self, rate: int) -> FrontEnd:
        """The front end at ``rate`` (one per rate: with ``--resample_rate 0`` each file keeps its own)."""
        if rate not in self._front_ends:
            self._front_ends[rate] = FrontEnd(self.config, rate)
        return self._front_ends[rate]

    def pad_frame(self, rate: int = 16000) -> torch.Tensor | None:
        """The frame that pads shorter clips (``--pad``; :meth:`FrontEnd.pad_frame`), None for zeros. For fbank
        silence is the log floor in every bin; MFCC of silence does not depend on the rate either."""
        return self.front_end(rate).pad_frame()

    def __call__(self, clip: np.ndarray, rate: int, path: str = "", warp: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The clip's features; ``warp`` != 1 (fbank only) moves its frequency axis (VTLP); ``generator``: the
        clip's SpecAugment masks (training)."""
        front_end = self.front_end(rate)
        front_end.check_clip(len(clip), path)
        return front_end.clip(torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32)), warp, generator)


class AudioDataset(Dataset):
    """Rows of a table (``path``, ``expected_rate``, optional segment columns) with their targets, prepared for
    a model.

    In training mode the waveform augmentations, mixup, VTLP and SpecAugment apply; otherwise none do.
    Random draws of a training row that a training loader gives (a :class:`~audiotune.data.draws.DrawnRow`)
    come from a generator seeded by the run's seed, the epoch and the row, so a run with the same seed repeats
    with any number of worker processes, and a resumed run draws what it would have drawn straight through; a
    plain index draws from a generator seeded by ``torch.initial_seed()`` in each process. With an
    :class:`AudioStore`, each row is decoded once and read back afterwards; augmentation still runs on every draw.

    ``on_device``: items are prepared waveforms with the clip's VTLP warp and SpecAugment seed (the same draws),
    and the features are computed batched after the transfer (:class:`~audiotune.data.batch_features.BatchFeatures`);
    without mixup, so are the last waveform augmentations (:mod:`~audiotune.data.device_augment`).
    """

    def __init__(self, table: pd.DataFrame, targets: np.ndarray, inputs: InputSpec,
                 augment: AugmentConfig | None = None, mixup_p: float = 0.0, train: bool = False,
                 store: AudioStore | None = None, on_device: bool = False):
        if len(table) != len(targets):
            raise ValueError("table and targets differ in length")
        self.uids = [str(u) for u in table.index]
        self.paths = table["path"].astype(str).tolist()
        self.spans = table_spans(table)
        self.store = store
        self.expected_rates = table.get(EXPECTED_RATE, pd.Series(np.nan, index=table.index)).astype(float).tolist()
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.inputs = inputs
        self.audio: AudioSpec = inputs.audio(train)  # the training crop, or the scoring crop
        self.min_samples = inputs.min_samples  # no augmentation leaves a clip shorter than the model reads
        self.extract = FeatureExtractor(inputs)
        self.train = train
        self.augment_config = augment if (train and augment is not None and augment.active) else None
        self.mixup_p = mixup_p if train else 0.0
        self.on_device = on_device
        # the last augmentations run batched where the features are computed, unless mixup mixes finished clips here
        self.tails_on_device = on_device and self.augment_config is not None and not self.mixup_p
        if on_device:
            BatchFeatures(inputs)  # settings the device cannot compute with are an error here, before any clip
        self._rng: np.random.Generator | None = None
        self._augmenter: WaveformAugmenter | None = None

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(torch.initial_seed())
        return self._rng

    def _draw_for(self, draw: tuple[int, ...]) -> None:
        """Make the coming item's draws (and its augmenter's) those of ``draw``, a :class:`DrawnRow`'s seed."""
        self._rng = np.random.default_rng(draw)
        if self.augment_config is not None:
            if self._augmenter is None:
                self._augmenter = WaveformAugmenter(self.augment_config)
            self._augmenter.reseed(int(self._rng.integers(2**31)))

    def _waveform(self, index: int, defer: bool = False) -> tuple[np.ndarray, int, DeviceTail]:
        """The row's prepared and augmented clip, its rate and (``defer``) the draws of the augmentations left to
        the device."""
        path, span = self.paths[index], self.spans[index]

        def prepare() -> tuple[np.ndarray, int]:
            return load_clip(path, self.audio, self.expected_rates[index], span)

        clip, rate = self.store.load(path, span, prepare) if self.store is not None else prepare()
        tail = DeviceTail()
        if self.augment_config is not None:
            if self._augmenter is None:
                self._augmenter = WaveformAugmenter(self.augment_config, seed=int(self.rng.integers(2**31)))
            if defer:
                clip, tail = self._augmenter.split(clip, rate, self.min_samples)
            else:
                clip = self._augmenter(clip, rate, self.min_samples)
        return clip, rate, tail

    def __getitem__(self, index: int) -> dict:
        draw = getattr(index, "draw", None)
        if self.train and draw is not None:
            self._draw_for(draw)
        index = int(index)
        clip, rate, tail = self._waveform(index, self.tails_on_device)
        target = self.targets[index]
        if self.mixup_p > 0 and self.rng.random() < self.mixup_p and len(self) > 1:
            other = int(self.rng.integers(len(self) - 1))
            other += other >= index
            other_clip = self._waveform(other)[0]
            clip, mixed = mixup(clip, other_clip, target.numpy(), self.targets[other].numpy(),
                                sample_mixup_lambda(self.rng))
            target = torch.as_tensor(mixed, dtype=torch.float32)
        warp = 1.0
        if self.train and self.inputs.vtlp > 0 and self.rng.random() < self.inputs.vtlp:
            low, high = self.inputs.vtlp_range
            warp = float(self.rng.uniform(low, high))
        seed = int(self.rng.integers(2**31)) if self.train else 0
        if self.on_device:
            self.extract.front_end(rate).check_clip(len(clip), self.paths[index])
            return {"uid": self.uids[index], WAVEFORMS: clip, "length": len(clip), "targets": target,
                    WARPS: warp, SEEDS: seed, TAIL: tail}
        generator = torch.Generator().manual_seed(seed) if self.train else None
        feats = self.extract(clip, rate, self.paths[index], warp, generator)  # masked before normalisation
        if generator is not None and self.inputs.noise:  # the noise after it, as the seeds
            feats = spec_noise(feats, generator=generator)
        return self._item(index, feats, target)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """The items of one batch (what a loader asks for): clips that are scored, not trained on, with fbank
        inputs are prepared stage by stage, every clip read, then the fbank of the padded batch at once (each
        clip's frames come from its own samples: what it gets alone), which keeps each stage's code and tables
        in the CPU's caches; anything else item by item."""
        if self.train or self.on_device or self.inputs.features != "fbank" or len(indices) < 2:
            return [self[index] for index in indices]
        clips = [self._waveform(index)[:2] for index in indices]
        rates = {rate for _, rate in clips}
        if len(rates) > 1:  # --resample_rate 0: a front end per rate, clip by clip
            feats = [self.extract(clip, rate, self.paths[index]) for (clip, rate), index in zip(clips, indices)]
            return [self._item(index, clip_feats) for index, clip_feats in zip(indices, feats)]
        front_end = self.extract.front_end(rates.pop())
        for (clip, _), index in zip(clips, indices):
            front_end.check_clip(len(clip), self.paths[index])
        batch, frames = front_end.extract(*waveform_batch([clip for clip, _ in clips]))
        return [self._item(index, batch[row, :count]) for row, (index, count) in enumerate(zip(indices,
                                                                                                 frames.tolist()))]

    def _item(self, index: int, feats: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        """A row's item: its features and its target (the row's own unless given: mixup's)."""
        return {"uid": self.uids[index], "inputs": feats, "length": feats.shape[0],
                "targets": self.targets[index] if target is None else target}


class Collator:
    """Stack items into a batch, padding features with zeros, or with ``pad_frame`` (one frame, e.g. the features of
    silence) where given; ``target_length`` > 0 pads or crops to that size.

    With ``features`` (items of an ``on_device`` dataset), waveforms are zero-padded into ``waveforms`` with their
    ``num_samples``, and ``features`` turns the batch into model inputs after its transfer (the padding and
    ``target_length`` are its own)."""

    def __init__(self, target_length: int = 0, pad_frame: torch.Tensor | None = None,
                 features: BatchFeatures | None = None):
        self.target_length = target_length
        self.pad_frame = pad_frame
        self.features = features

    def __call__(self, items: list[dict]) -> dict:
        if self.features is not None:
            waveforms, num_samples = waveform_batch([item[WAVEFORMS] for item in items])
            counts = num_samples.tolist()  # plain numbers: they stay on the CPU, where the masks are drawn
            batch = {"uid": [item["uid"] for item in items], WAVEFORMS: waveforms, NUM_SAMPLES: num_samples,
                     COUNTS: counts, "targets": torch.stack([item["targets"] for item in items])}
            if self.features.train:
                batch.update({WARPS: [item[WARPS] for item in items], SEEDS: [item[SEEDS] for item in items]})
                batch.update(collate_tails([item[TAIL] for item in items], counts))
            return batch
        lengths = [item["length"] for item in items]
        frames = self.target_length or max(lengths)
        first = items[0]["inputs"]
        shape = (len(items), frames, *first.shape[1:])
        pad = self.pad_frame
        inputs = first.new_zeros(shape) if pad is None else pad.to(first.dtype).expand(shape).clone()
        for row, item in enumerate(items):
            n = min(item["length"], frames)
            inputs[row, :n] = item["inputs"][:n]
        kept = [min(n, frames) for n in lengths]
        return {
            "uid": [item["uid"] for item in items],
            "inputs": inputs,
            "lengths": torch.tensor(kept, dtype=torch.long),
            HOST_LENGTHS: kept,
            "targets": torch.stack([item["targets"] for item in items]),
        }
