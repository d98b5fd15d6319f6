"""The augment section: the probability and settings of each waveform augmentation of training."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from audiotune.config.options import needs_on, option

AUGMENT_GATES = ("tshift", "speed", "gauss", "pshift", "gain", "stretch")  # gates drawn on every call
AUGMENT_LATE_GATES = ("eq", "cut_edges")  # gates drawn only when they are on, after the others
AUGMENT_PROBABILITIES = (*AUGMENT_GATES, *AUGMENT_LATE_GATES)
# the seed's numbers, as speeds: its rate stretched the clip's length by it (0.6: faster), whose speeds were 1/1.3-1/0.6
SPEED_RANGE = (0.6, 1.3)
SPEED_LIMITS = (0.25, 4.0)  # what --speed_range accepts
CUT_MAX, CUT_MAX_LIMIT = 0.05, 1.0  # --cut_max's default and what it accepts, in seconds
augmentation = functools.partial(option, training_only=True)  # every option of this section changes training clips


@dataclass
class AugmentConfig:
    """Probabilities (in [0, 1], 0 = off) of each waveform augmentation.

    tshift: shift by U(-0.5 s, 0.5 s) (bounded by the clip length), vacated part filled
        with U(-0.001, 0.001) noise.
    speed: resample at a rate drawn from U(speed_range) (pitch, formants and tempo change together),
        then centre-crop or centre-pad with U(-0.001, 0.001) noise back to the original length.
    speed_range: [low, high] of the speed rate (above 1: faster and shorter; default 0.6-1.3, the seed's
        numbers, whose rate was the length's factor instead: its speeds were 1/1.3-1/0.6, ``0.77 1.67`` here;
        ASR speed perturbation uses 0.9-1.1).
    speed_crop: fit a sped-up or slowed clip back to its original length (the seed's way); False keeps
        its new length, so a tightly trimmed word loses no onset or ending (the clip may then exceed
        --clip_length by a factor of up to 1 / low).
    gauss: add Gaussian noise with std U(0.001, 0.015) x the clip's peak amplitude
        (audiomentations' AddGaussianNoise amplitudes for a peak-normalised clip).
    With the features computed on the model's device (``--features_on``) and no mixup, eq, gain and gauss, the
    last of the chain, are drawn in the data workers and applied there, batched (the noise's values then from the
    device's generator).
    pshift: pitch shift by U(-pshiftn, +pshiftn) semitones at the real sample rate.
    pshiftn: maximum pitch shift in semitones (0 < pshiftn <= 24).
    gain: multiply by U(-12, 12) dB.
    stretch: time stretch at rate U(0.5, 1.5) (tempo only), cropped or zero-padded at
        the end back to the original length.
    eq: random equalisation, as a different microphone or room: a 2nd-order Butterworth
        high-pass at a cutoff log-uniform in 40-600 Hz, then 2 peaking bands (centres
        log-uniform from 150 Hz to 0.45 x the sample rate, gains U(-10, 10) dB, Q U(0.7, 2)).
        Its gate is drawn only when ``eq > 0``, so configurations without it keep their
        random streams.
    cut_edges: cut U(0, cut_max) seconds from the start of the clip and, independently, from its end
        (at most a quarter of the clip at each end, never below the model's shortest clip), as a tighter
        silence trimmer or voice-activity detector would: a word's onset (a plosive's burst) or ending is
        sometimes lost in real recordings. The clip gets shorter. Its gate is drawn after eq's, only when
        ``cut_edges > 0``.
    cut_max: the longest cut at each end, in seconds (0 < cut_max <= 1).
    """

    tshift: float = augmentation(0.0, "probability of a random time shift (up to ±0.5 s)")
    speed: float = augmentation(0.0, "probability of a speed change (rate from U(--speed_range))")
    gauss: float = augmentation(0.0, "probability of added Gaussian noise")
    pshift: float = augmentation(0.0, "probability of a pitch shift of up to ±pshiftn semitones")
    pshiftn: float = augmentation(2.0, "largest pitch shift in semitones", needs=needs_on("pshift", "--pshift above 0"))
    gain: float = augmentation(0.0, "probability of a gain change (±12 dB)")
    stretch: float = augmentation(0.0, "probability of a time stretch (rate 0.5–1.5)")
    eq: float = augmentation(0.0, "probability of a random equalisation: high-pass at 40–600 Hz, two peaking bands "
                                  "of ±10 dB")
    speed_range: list[float] = augmentation(list(SPEED_RANGE), "lowest and highest speed rate, above 1 faster "
                                                               f"(default {' '.join(map(str, SPEED_RANGE))}, the "
                                                               "seed's numbers, which scaled the length instead: its "
                                                               "speeds are "
                                                               f"{' '.join(f'{1 / r:.2f}' for r in SPEED_RANGE[::-1])}"
                                                               " here; ASR speed perturbation: 0.9 1.1)",
                                            needs=needs_on("speed", "--speed above 0"))
    speed_crop: bool = augmentation(True, "fit a speed-changed clip back to its original length (the seed's way); "
                                          "False keeps its new length, so no onset or ending of a trimmed word is cut",
                                    needs=needs_on("speed", "--speed above 0"))
    cut_edges: float = augmentation(0.0, "probability of cutting up to --cut_max seconds from each end of the clip (a "
                                         "lost onset or ending)")
    cut_max: float = augmentation(CUT_MAX, f"longest cut at each end by --cut_edges, in seconds (default {CUT_MAX:g})",
                                  needs=needs_on("cut_edges", "--cut_edges above 0"))

    def __post_init__(self) -> None:
        for name in AUGMENT_PROBABILITIES:
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name} {value}: must be a probability in [0, 1]")
            setattr(self, name, value)
        if not 0.0 < float(self.pshiftn) <= 24.0:  # audiomentations' PitchShift limit
            raise ValueError(f"--pshiftn {self.pshiftn}: must be in (0, 24] semitones")
        self.pshiftn = float(self.pshiftn)
        low_limit, high_limit = SPEED_LIMITS
        rates = [float(r) for r in self.speed_range]
        if len(rates) != 2 or not low_limit <= rates[0] <= rates[1] <= high_limit:
            raise ValueError(f"--speed_range {' '.join(map(str, self.speed_range))}: must be two rates LOW HIGH "
                             f"with {low_limit} <= LOW <= HIGH <= {high_limit}")
        self.speed_range = rates
        self.speed_crop = bool(self.speed_crop)
        if not 0.0 < float(self.cut_max) <= CUT_MAX_LIMIT:
            raise ValueError(f"--cut_max {self.cut_max}: must be in (0, {CUT_MAX_LIMIT}] seconds")
        self.cut_max = float(self.cut_max)

    @property
    def active(self) -> bool:
        """True when at least one augmentation has a non-zero probability."""
        return any(getattr(self, name) > 0.0 for name in AUGMENT_PROBABILITIES)

    def to_dict(self) -> dict[str, float | bool | list[float]]:
        """Plain dict of all fields (for logging / configs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
