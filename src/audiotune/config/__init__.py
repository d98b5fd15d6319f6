"""Typed configuration: one dataclass per concern, YAML in and out, command-line flags from field metadata.

Every option is a dataclass field whose metadata carries its help text and the flag spellings the
seed command lines used (``-bs``, ``--gauss``, ...). ``config.yaml`` in a run directory is the
``RunConfig`` written with :func:`save_config`; :func:`load_config` rebuilds it exactly.

The option machinery is in :mod:`audiotune.config.options`, the sections in :mod:`audiotune.config.sections`,
the whole run config in :mod:`audiotune.config.run`, config files in :mod:`audiotune.config.files`; this module is
their public face.
"""
from __future__ import annotations

from audiotune.config.augmentation import (
    AUGMENT_GATES,
    AUGMENT_LATE_GATES,
    AUGMENT_PROBABILITIES,
    CUT_MAX_LIMIT,
    SPEED_LIMITS,
    SPEED_RANGE,
    AugmentConfig,
)
from audiotune.config.files import (
    config_changes,
    config_from_dict,
    config_to_dict,
    load_config,
    read_config_file,
    save_config,
    upgrade_sections,
)
from audiotune.config.options import (
    AT_LEAST_0,
    AT_LEAST_1,
    CLASSIFIER_STAGES,
    ENCODING,
    EVERYWHERE,
    FINE_TUNING,
    INF,
    PRETRAINING,
    PROBABILITY,
    WHILE_TRAINING,
    Needs,
    Stage,
    acts_of,
    as_flags_read,
    check_types,
    default_of,
    describe_acts,
    describe_range,
    idle_fields,
    idle_options,
    inactive_options,
    needs_on,
    option,
    option_default,
    range_problems,
    takes,
)
from audiotune.config.recipes import recipe_description, recipe_names, recipe_root, resolve_recipe
from audiotune.config.retired import BARE, RETIRED_FLAGS, RETIRED_IN_COMMAND, RETIRED_VALUES
from audiotune.config.run import (
    CONFIG_VERSION,
    FEATURES_CHECKED_VERSION,
    HEAD_KINDS,
    INPUT_RESOLVED_VERSION,
    MASK_EMBEDDING_KEPT_VERSION,
    MPG_LOSS_VERSION,
    OWN_MEANINGS_VERSION,
    PRETRAIN_TASK_CHECKED_VERSION,
    RESAMPLED_LENGTH_VERSION,
    SECTIONS,
    VALIDATION_DRAW_VERSION,
    WAVEFORM_NORM_VERSION,
    WEIGHTED_MEAN_VERSION,
    WEIGHTED_STATES_VERSION,
    HeadSpec,
    RunConfig,
    check_config,
)
from audiotune.config.sections import (
    AudioConfig,
    ClassifierConfig,
    DataConfig,
    FeatureConfig,
    ModelConfig,
    RuntimeConfig,
    TrainConfig,
)

__all__ = [
    "AT_LEAST_0", "AT_LEAST_1", "AUGMENT_GATES", "AUGMENT_LATE_GATES", "AUGMENT_PROBABILITIES", "BARE",
    "CLASSIFIER_STAGES", "CONFIG_VERSION", "CUT_MAX_LIMIT", "ENCODING", "EVERYWHERE", "FINE_TUNING", "HEAD_KINDS",
    "INF", "INPUT_RESOLVED_VERSION", "PRETRAINING", "PROBABILITY", "RETIRED_FLAGS", "WHILE_TRAINING", "Needs", "Stage",
    "WAVEFORM_NORM_VERSION", "FEATURES_CHECKED_VERSION", "WEIGHTED_STATES_VERSION", "MASK_EMBEDDING_KEPT_VERSION",
    "WEIGHTED_MEAN_VERSION", "RESAMPLED_LENGTH_VERSION",
    "MPG_LOSS_VERSION", "VALIDATION_DRAW_VERSION", "PRETRAIN_TASK_CHECKED_VERSION", "OWN_MEANINGS_VERSION",
    "acts_of", "default_of", "describe_acts", "idle_fields", "idle_options", "inactive_options", "needs_on",
    "option_default", "takes",
    "RETIRED_IN_COMMAND", "RETIRED_VALUES",
    "SECTIONS", "SPEED_LIMITS", "SPEED_RANGE", "AudioConfig", "AugmentConfig", "ClassifierConfig", "DataConfig",
    "FeatureConfig", "HeadSpec", "ModelConfig", "RunConfig", "RuntimeConfig", "TrainConfig", "check_config",
    "as_flags_read", "check_types", "config_changes", "config_from_dict", "config_to_dict", "describe_range",
    "load_config", "option",
    "range_problems", "read_config_file", "recipe_description", "recipe_names", "recipe_root", "resolve_recipe",
    "save_config", "upgrade_sections",
]
