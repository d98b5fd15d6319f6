"""The whole run config: its version (and the versions from which options changed meaning), the heads, the
``RunConfig`` of every section, and :func:`check_config`, which checks every option against its declared range
before any work is done."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from audiotune.config.augmentation import AugmentConfig
from audiotune.config.options import range_problems
from audiotune.config.sections import (
    TENSORBOARD,
    AudioConfig,
    ClassifierConfig,
    DataConfig,
    FeatureConfig,
    ModelConfig,
    RuntimeConfig,
    TrainConfig,
)

CONFIG_VERSION = 7
# from this version on the audio and features sections hold the user's options; before it, the input the backbone
# resolved from them (which is then the run's input as it is)
INPUT_RESOLVED_VERSION = 2
# from this version on --waveform_norm false is the user's choice; before it, false was the saved default and a
# pretrained encoder's feature extractor decided (read as null: the model's own)
WAVEFORM_NORM_VERSION = 3
# from this version on, --features other than a backbone reads is an error; before it, a backbone with its own input
# (SSAST, Hugging Face encoders, Whisper) read it whatever --features said
FEATURES_CHECKED_VERSION = 3
# from this version on --weighted sums the states a backbone declares (Backbone.weighted_states: SSAST's without its
# final norm, as the seed summed); before it, every hidden state
WEIGHTED_STATES_VERSION = 4
# from this version on an unset --features (null) is the backbone's own input; before it, fbank, the saved default,
# stood for it (read as null)
FEATURES_OWN_VERSION = 4
# from this version on --freeze_feature_projection also keeps the mask embedding as loaded (the emotion seed trained
# neither); before it, the mask embedding trained (and a resumed run's optimiser state holds it)
MASK_EMBEDDING_KEPT_VERSION = 5
# from this version on a class-weighted categorical or soft head's loss is the batch's weighted mean (divided by the
# rows' summed class weights, as CrossEntropyLoss(weight)); before it, the plain mean of the weighted rows
WEIGHTED_MEAN_VERSION = 6
# from this version on a resampled clip has ceil(N * target / rate) samples per channel, as librosa and torchaudio
# (the seeds' resamplers) give; before it, soxr's rounded count, one fewer where the fraction is below a half
RESAMPLED_LENGTH_VERSION = 6
# from this version on SSAST's pretrain_mpg trains on the MSE itself (the weight 10 is the joint objective's); before
# it, on 10 x the MSE (so a resumed run's validation losses keep one scale)
MPG_LOSS_VERSION = 6
# from this version on pretrain draws the validation rows it is not given as train does (data.splits.draw_validation
# over utterances: the same rows for the same table, share and seed); before it, a seeded permutation of the rows
VALIDATION_DRAW_VERSION = 6
# from this version on an SSAST --task pretrain_* other than --objective is an error; before it, pretrain wrote
# --task pretrain_joint whatever --objective said, and the objective decided
PRETRAIN_TASK_CHECKED_VERSION = 6
# from this version on (and in a file without a version: a user's) a config file's options mean what their flags
# mean: the spellings of earlier releases (the audio section's reduce and mono, labeling_method soft for the vote
# distribution, runtime options in the train section, the backbone's options copied under options:, other
# backbones' options) and values the flags refuse are errors naming their replacement; before it, each is read as
# the release that wrote it meant
OWN_MEANINGS_VERSION = 7


HEAD_KINDS = ("binary", "categorical", "soft", "regression")


@dataclass
class HeadSpec:
    """One head of the classifier, by ``kind``:

    - ``binary``: one 0/1 output per column (BCE);
    - ``categorical``: one column of class names, one output per class (CE);
    - ``soft``: vote columns of one categorical head; ``classes`` are the column names and a row's votes,
      normalised to sum 1, are its target distribution (CE against it);
    - ``regression``: one real-valued output per column (MSE or Huber). ``target_mean``/``target_std``
      (one per column, from the training split) are set when the model learns standardised targets.
    """

    name: str
    kind: str
    columns: list[str]
    classes: list[str] = field(default_factory=list)
    target_mean: list[float] = field(default_factory=list)
    target_std: list[float] = field(default_factory=list)

    @property
    def num_outputs(self) -> int:
        return len(self.classes) if self.kind in ("categorical", "soft") else len(self.columns)

    @property
    def output_names(self) -> list[str]:
        if self.kind == "categorical":
            return [f"{self.columns[0]}={c}" for c in self.classes]
        return list(self.columns)

    @property
    def is_distribution(self) -> bool:
        """True for heads whose outputs are one softmax over classes (categorical and soft)."""
        return self.kind in ("categorical", "soft")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    heads: list[HeadSpec] = field(default_factory=list)
    exp_dir: str = "./experiments"
    version: int = CONFIG_VERSION


SECTIONS: dict[str, type] = {
    "data": DataConfig, "audio": AudioConfig, "features": FeatureConfig, "augment": AugmentConfig,
    "model": ModelConfig, "classifier": ClassifierConfig, "train": TrainConfig, "runtime": RuntimeConfig,
}


def check_config(config: RunConfig) -> RunConfig:
    """Every numeric option finite and in its range, augmentation probabilities in [0, 1]; one error listing
    every bad option with the flag to fix, before any work is done. (The backbone's own options are checked when
    the backbone reads them.)"""
    problems = [problem for section in SECTIONS for problem in range_problems(getattr(config, section))]
    features = config.features
    if len(features.vtlp_range) != 2 or features.vtlp_range[0] > features.vtlp_range[1]:
        problems.append(f"--vtlp_range {' '.join(map(str, features.vtlp_range))}: give LOW HIGH with LOW <= HIGH")
    if features.vtlp > 0 and features.features not in (None, "fbank"):
        problems.append(f"--vtlp {features.vtlp}: warps the fbank's frequency axis; needs --features fbank "
                        f"(not {features.features})")
    if config.train.keep == "last" and config.train.patience > 0:
        problems.append(f"--patience {config.train.patience} with --keep last: early stopping would end the run "
                        "at an epoch that --keep last does not choose; give one of them")
    if config.runtime.logger == "tensorboard" and not any(importlib.util.find_spec(name) for name in TENSORBOARD):
        problems.append("--logger tensorboard: the tensorboard package is not installed (pip install tensorboard)")
    try:
        AugmentConfig(**vars(config.augment))
    except (TypeError, ValueError) as err:
        problems.append(str(err))
    if problems:
        raise ValueError("invalid option(s): " + "; ".join(problems))
    return config

