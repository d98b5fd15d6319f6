"""The config sections: one dataclass per concern (data, audio, features, model, classifier, train, runtime; the
augment section is :mod:`audiotune.config.augmentation`). The whole run config is :mod:`audiotune.config.run`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from audiotune.config.options import (
    AT_LEAST_0,
    AT_LEAST_1,
    FINE_TUNING,
    INF,
    PRETRAINING,
    PROBABILITY,
    WHILE_TRAINING,
    Needs,
    needs_on,
    option,
)
from audiotune.outputs import (
    CHECKPOINT_DIR,
    CONFIG_HISTORY_FILE,
    DROPPED_FILE,
    LAST_CHECKPOINT,
    LOG_DIR,
    LOG_FILE,
    SKIPPED_FILE,
    SKIPPED_SUFFIX,
    TENSORBOARD_DIR,
)
from audiotune.storage import Role

PRECISIONS = ("32", "tf32", "bf16", "16-mixed", "16")  # 16: the seeds' spelling of 16-mixed
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")  # Lightning's names; auto takes the GPU when there is one
ONE_DEVICE = "auto, 1 or one index"  # what --devices may name for a command that runs in one process
PADS = ("zero", "silence", "zero_before_norm")  # --pad: what pads the shorter clips' features in a batch
ZERO_PAD = PADS[0]
AUDIO_ROOT = ("prefix", "study")  # the data options that say where uid-layout audio lives (PREFIX[/STUDY]/UID)
RAISE, SKIP = "raise", "skip"  # what a command does with a bad input: stop with an error, or leave it out and list it
ON_ERROR = (RAISE, SKIP)
LOGGERS = ("csv", "tensorboard")
# --monitor: the validation metrics that can pick the best epoch -> "max" (higher is better) or "min"
MONITORS = {"loss": "min", "uar": "max", "accuracy": "max", "macro_f1": "max", "weighted_f1": "max",
            "auc": "max", "ccc": "max", "mae": "min"}


def monitor_key(monitor: str) -> str:
    """The name a --monitor metric is logged under, e.g. ``val_uar``."""
    return f"val_{monitor}"

TENSORBOARD = ("tensorboard", "tensorboardX")  # the packages Lightning's TensorBoardLogger writes with
RESUME_HINT = "the same command with --resume continues from the last finished epoch"  # a stopped train/pretrain


# the features options a model reading waveforms reads (every other one acts on spectrogram frames: FeatureConfig)
WAVEFORM_OPTIONS = ("features", "waveform_norm")


@dataclass
class DataConfig:
    prefix: str = option("", "audio root for uid-addressed rows: PREFIX[/STUDY]/UID/waveform.EXT", ("-i",),
                         role=Role.AUDIO)
    study: str = option("", "optional study folder under --prefix", ("-s",))
    data_split_root: str = option("", "split directory (train.csv, test.csv, optional val.csv), one CSV, or a folder "
                                      "of audio (unlabelled: pretrain, extract, stats)", ("-d",), role=Role.TABLE)
    label_txt: str = option("", "label file: one classifier head per line, comma-separated column names", ("-l",),
                            role=Role.INPUT)
    val_size: int = option(50, "subjects drawn from train to validate without val.csv (0: none)", valid=AT_LEAST_0)
    seed: int = option(0, "random seed for splits, initialisation, shuffling and augmentation",
                       valid=(0, 2**32 - 1, True, True))
    na_values: list[str] = option([], "cells read as missing besides the empty cell (e.g. NA); by default NA, "
                                      "None, null and nan are values")
    on_error: str = option(RAISE, f"bad audio: raise an error, or skip it, listed in {SKIPPED_FILE} (beside "
                                  f"an output file NAME.EXT: NAME{SKIPPED_SUFFIX})",
                           choices=ON_ERROR)
    allow_overlap: bool = option(False, "let validation/test share subjects or uids with train: the training rows "
                                        f"they share are left out and listed in {DROPPED_FILE} (default: an error)")
    complete_rows: bool = option(False, "keep only rows labelled in every label column, as the NAIP seeds (the "
                                        f"rest: {DROPPED_FILE}; default no; evaluate: the run's)")
    mixup: float = option(0.0, "probability of mixing two training clips (Beta(10,10), targets mixed)",
                          valid=PROBABILITY, training_only=True)
    train_fraction: float = option(1.0, "train on this share of the training split: round(share x n) rows of each "
                                        "class of the first categorical head, drawn with --seed (nested shares: "
                                        f"learning curves); the rest: {DROPPED_FILE}", valid=(0, 1, False, True))


@dataclass
class AudioConfig:
    resample_rate: int = option(16000, "sample rate the audio is resampled to (0 keeps each file's rate)",
                                valid=(0, 768000, True, True))
    channel_mode: str = option("mean", "how a row's channels become one signal: mean or sum per sample, maxabs (per "
                                       "sample the loudest channel), select (the one --channel_select channel), "
                                       "interleave (c0[0], c1[0], ..., C times longer), stack (channels end to end, "
                                       "C times longer), none (mono files only); aliases --mono, --reduce",
                               choices=("mean", "sum", "maxabs", "select", "interleave", "stack", "none"))
    channel_select: list[int] = option([], "file channels to read before the channel mode (e.g. 4 5 6 7; "
                                           "default all); a row's own 'channels' column wins",
                                           valid=(0, 1024, True, False))
    min_samples: int = option(0, "shortest prepared clip the model can read (0: the backbone's; shorter clips "
                                 "are bad audio, like unreadable ones)", cli=False)
    clip_length: float = option(10.0, "crop clips to this many seconds of the recording, per channel and before the "
                                      "channel mode (0 = keep whole clips)", valid=AT_LEAST_0)
    eval_clip_length: float = option(-1.0, "crop of the clips that are scored, not trained on (validation, test, "
                                           "evaluate, extract), in seconds: 0 keeps whole clips (as the seed "
                                           "emotion system tested), -1 the same crop as --clip_length",
                                           valid=(-1, INF, True, False))
    remove_dc: bool = option(False, "subtract each clip's mean after the channel mode and crop, before any feature "
                                    "(a DC offset moves MFCCs and raw waveforms; fbank removes it per frame), as "
                                    "the NAIP seeds did")
    # config only (the NAIP seed recipes set it, `import naip` through them): the seeds' padding, not a new habit
    pad_clips: bool = option(False, "pad each clip shorter than --clip_length to it with its mean (silence after "
                                    "--remove_dc), as the NAIP seeds' Truncate stage did", cli=False,
                             needs=needs_on("clip_length", "--clip_length above 0"))


@dataclass
class FeatureConfig:
    features: str | None = option(None, "input features of the model (default: the backbone's own: fbank for "
                                         "ECAPA-TDNN, SSAST and AST, waveforms for Hugging Face encoders and "
                                         "Whisper; mfcc: the ECAPA seed's default)",
                                  choices=("mfcc", "fbank", "waveform"))
    waveform_norm: bool | None = option(None, "per-clip zero mean, unit variance of waveform inputs (default: as "
                                               "a pretrained encoder's feature extractor does; false: the raw "
                                               "samples, as the emotion seed fed them)")
    num_mel_bins: int | None = option(None, "mel bins of the Kaldi fbank (default: the backbone's)",
                                      valid=(1, 1024, True, True),
                                      needs=Needs("features", lambda features: features != "mfcc",
                                                  "--features fbank (MFCCs: --n_mfcc, --n_mels)"))
    target_length: int = option(0, "pad or crop features to this many frames (0 = the clip's own length)",
                                valid=AT_LEAST_0)
    n_mfcc: int = option(80, "MFCC coefficients", valid=(1, 1024, True, True))
    n_fft: int = option(400, "MFCC FFT size (window = n_fft, hop = n_fft // 2)", valid=(2, 65536, True, True))
    n_mels: int = option(128, "mel bands under the MFCC", valid=(1, 1024, True, True))
    utterance_norm: str = option("none", "per-clip normalisation of spectral features, per bin over the clip's own "
                                         "frames: mean (subtract the mean: cepstral mean normalisation, removes the "
                                         "channel and much of the speaker), meanvar (also divide by the std)",
                                 choices=("none", "mean", "meanvar"))
    pad: str = option(ZERO_PAD, "what the shorter clips of a batch are padded with: zero (the value 0; for log "
                                "fbank a frame louder than any speech), silence (the features of a silent clip, "
                                "as if the waveform were padded with zeros), zero_before_norm (0 before "
                                "--dataset_mean/std: the NAIP seeds' fbank padding); for models that read padded "
                                "frames (SSAST): refused by ECAPA-TDNN, whose padding is masked, and AST, which pads "
                                "with its feature extractor's frame", choices=PADS)
    dataset_mean: float | None = option(None, "feature mean for (x - mean) / (2 std); see `audiotune stats`",
                                        valid=(-INF, INF, False, False),
                                        needs=Needs("dataset_std", lambda std: std is not None,
                                                    "--dataset_std: the two go together (`audiotune stats` "
                                                    "measures both)"))
    dataset_std: float | None = option(None, "feature std for (x - mean) / (2 std); 0 is an error",
                                       valid=(0, INF, False, False))
    freqm: int | None = option(None, "SpecAugment: max frequency mask width (train only; default 8 for an ECAPA-TDNN "
                                     "that trains, 0 otherwise)", valid=AT_LEAST_0, training_only=True)
    timem: int | None = option(None, "SpecAugment: max time mask width in frames (train only; default 10 for an "
                                     "ECAPA-TDNN that trains, 0 otherwise)", valid=AT_LEAST_0, training_only=True)
    noise: bool = option(False, "add the SSAST spectrogram noise and time roll (train only)", training_only=True)
    vtlp: float = option(0.0, "vocal tract length perturbation (fbank, train only): probability of warping a clip's "
                              "frequency axis by a factor from --vtlp_range (the spectrum's peaks moved as by a "
                              "shorter or longer vocal tract; duration kept)", valid=PROBABILITY,
                              training_only=True)
    vtlp_range: list[float] = option([0.9, 1.1], "VTLP warp factors: LOW HIGH (drawn uniformly)",
                                     needs=needs_on("vtlp", "--vtlp above 0"),
                                     valid=(0.5, 2, True, True), training_only=True)


# the ECAPA seed's fbank-only feature options, which its MFCC mode (--fbank False) ignored: the value doing nothing
ECAPA_MFCC_IGNORED: dict[str, Any] = {"dataset_mean": None, "dataset_std": None, "freqm": 0, "timem": 0,
                                      "noise": False}
# the ECAPA seed's --fbank True sized the fbank with its MFCC size flags: the seed's flag -> the option it meant
ECAPA_FBANK_SIZES = {"n_mels": "num_mel_bins", "n_fft": "target_length"}


@dataclass
class ModelConfig:
    model: str = option("ecapa_tdnn", "backbone (every file of models/backbones/ that registers one)")
    checkpoint: str = option("", "weights to start from: a Hugging Face hub id or folder, or a checkpoint file, as "
                                 "the backbone reads them (default: the backbone's own; see the README's table of "
                                 "backbones)", ("-c",), role=Role.INPUT)
    freeze: bool | None = option(None, "freeze the whole backbone (default: yes for pretrained encoders (hf, ast, "
                                       "whisper; ssast's fine-tuning tasks), as the seeds did; no for ECAPA-TDNN, "
                                       "also from a -c checkpoint)")
    frozen_train_mode: bool = option(False, "a frozen encoder runs in training mode while the heads train (dropout, "
                                            "--mask_*, --layerdrop, BatchNorm by batch but its statistics kept; no "
                                            "feature cache), as the NAIP seeds' frozen encoders did", acts=FINE_TUNING,
                                     needs=Needs("freeze", lambda freeze: freeze is not False,
                                                 "--freeze true (a trained encoder runs in training mode anyway)"))
    freeze_feature_encoder: bool = option(False, "freeze only the convolutional feature encoder",
                                          acts=WHILE_TRAINING,
                                          needs=Needs("objective", lambda objective: objective != "ptapt",
                                                      "fine-tuning or --objective tapt (--objective ptapt always "
                                                      "freezes it)"))
    freeze_feature_projection: bool = option(False, "--model hf: also freeze the feature projection after the "
                                                    "convolutional encoder and the mask embedding that masked time "
                                                    "spans get (with --freeze_feature_encoder: the seed emotion "
                                                    "system's fine-tuning)", acts=FINE_TUNING)
    objective: str = option("", "`audiotune pretrain` objective (ssast: pretrain_joint, pretrain_mpc, pretrain_mpg; "
                                "hf: tapt, wav2vec2's contrastive + diversity loss; ptapt, masked prediction of "
                                "--pseudo_labels); default: the backbone's first", acts=PRETRAINING)
    # the chosen backbone's own options (its module's options dataclass), written flat beside these in config.yaml
    options: dict[str, Any] = field(default_factory=dict, metadata={"cli": False})


@dataclass
class ClassifierConfig:
    shared_dense: bool = option(False, "add a dense layer shared by all heads")
    sd_bottleneck: int = option(768, "width of the shared dense layer", valid=AT_LEAST_1,
                                needs=needs_on("shared_dense", "--shared_dense true"))
    clf_bottleneck: int = option(768, "width of each head's first dense layer (0: a linear head, activation then "
                                      "one Linear on the pooled frames)", valid=AT_LEAST_0)
    activation: str = option("relu", "head activation", choices=("relu", "gelu", "tanh", "none"))
    final_dropout: float = option(0.3, "dropout before each head's output projection", valid=(0, 1, True, False))
    layernorm: bool = option(False, "LayerNorm after each head's first dense layer",
                             needs=needs_on("clf_bottleneck", "--clf_bottleneck above 0 (a first dense layer)"))
    layer: int = option(-1, "hidden state fed to the heads (-1 = last)",
                        needs=Needs("weighted", lambda weighted: not weighted, "--weighted false (with --weighted "
                                    "true the heads read the weighted sum of the hidden states whatever --layer "
                                    "says)"))
    weighted: bool = option(False, "learn a weighted sum of the hidden states (how: --layer_weights)")
    layer_weights: str = option("softmax", "--weighted: softmax (weights summing to 1, from the average; states "
                                "summed, then pooled) or raw (free weights from 1/n, each state pooled, then summed: "
                                "the NAIP seeds')", choices=("softmax", "raw"),
                                needs=needs_on("weighted", "--weighted true"))
    pooling_mode: str = option("mean", "pooling over frames (`extract --pooling_mode` merges the heads' ft "
                                       "embeddings: mean unless given)",
                               ("-pm", "--pm"), choices=("mean", "sum", "max"))
    frame_activation: str = option("none", "activation of every hidden state's frames before the layer choice or "
                                           "weighted sum and the pooling (relu: the seed emotion system's V-FT)",
                                   choices=("none", "relu", "gelu", "tanh"))
    pool_drop_last: bool = option(False, "leave each clip's last frame out of the pooling (the seed emotion system's "
                                         "V-FT pooled its first frames - 1); a clip of one frame keeps it")


@dataclass
class TrainConfig:
    epochs: int = option(1, "training epochs", ("-e", "--max_epochs"), valid=AT_LEAST_0)
    batch_size: int = option(8, "batch size", ("-bs",), valid=AT_LEAST_1)
    learning_rate: float = option(3e-4, "learning rate (the onecycle schedule's rates come from --max_lr)",
                                  ("-lr", "--lr"), valid=AT_LEAST_0,
                                  needs=Needs("scheduler", lambda name: name != "onecycle",
                                              "--scheduler none, cosine or linear (onecycle sets the rate itself: "
                                              "from --max_lr / 25 up to --max_lr, then down)"))
    optim: str = option("adamw", "optimizer", choices=("adam", "adamw"))
    weight_decay: float = option(1e-4, "AdamW weight decay", valid=AT_LEAST_0,
                                 needs=Needs("optim", lambda name: name == "adamw", "--optim adamw"))
    scheduler: str = option("cosine", "learning-rate schedule (stepped per optimiser step, every "
                                      "--accumulate_grad_batches batches; none: constant, as the seeds; "
                                      "linear: warm-up, flat for --flat_ratio of the steps, then linear decay to 0)",
                      choices=("none", "onecycle", "cosine", "linear"))
    max_lr: float = option(0.01, "peak learning rate of the onecycle schedule (it starts at --max_lr / 25, "
                                 "whatever -lr says)", valid=AT_LEAST_0,
                           needs=Needs("scheduler", lambda name: name == "onecycle", "--scheduler onecycle"))
    grad_clip: float = option(0.0, "clip the gradients' global L2 norm to this value before each optimiser step "
                                   "(0 = off); wav2vec2-style pretraining from random weights can diverge without it",
                                   valid=AT_LEAST_0)
    accumulate_grad_batches: int = option(1, "sum the gradients of this many batches before each optimiser step "
                                             "(effective batch: -bs x N; tap2key: -bs 64 x 4)", valid=AT_LEAST_1)
    warmup_steps: int = option(0, "warm-up steps (cosine and linear schedules)", ("--warmup_step",), valid=AT_LEAST_0,
                               needs=Needs("scheduler", lambda name: name in ("cosine", "linear"),
                                           "--scheduler cosine or linear"))
    warmup_ratio: float = option(0.0, "warm-up over this share of the optimiser steps, rounded up (instead of "
                                      "--warmup_steps; the Hugging Face Trainer's warmup_ratio)", valid=PROBABILITY,
                                 needs=Needs("", lambda train: train.scheduler in ("cosine", "linear")
                                             and not train.warmup_steps,
                                             "--scheduler cosine or linear, without --warmup_steps"))
    flat_ratio: float = option(0.05, "share of the optimiser steps the linear schedule holds the peak after the "
                                     "warm-up (0.05: the emotion seed's TAPT; 0: the Hugging Face Trainer's linear "
                                     "schedule)", valid=PROBABILITY,
                               needs=Needs("scheduler", lambda name: name == "linear", "--scheduler linear"))
    training_steps: int = option(0, "stop after this many optimiser steps instead of --epochs (0 = use --epochs)",
                                 ("--training_step",), valid=AT_LEAST_0)
    bucket_sampler: bool = option(False, "batches of similar lengths: clips in --num_buckets length buckets, "
                                         "shuffled within them, batches shuffled", ("--use_bucket_sampler",))
    num_buckets: int = option(50, "length buckets of --bucket_sampler", ("--train_bucket_size",), valid=AT_LEAST_1,
                              needs=Needs("", lambda train: train.bucket_sampler or train.dynamic_batch > 0,
                                          "--bucket_sampler true (or --dynamic_batch)"))
    dynamic_batch: float = option(0.0, "training batches by audio instead of -bs: as many clips as fit this many "
                                       "seconds, counted padded (clips x longest); implies --bucket_sampler "
                                       "(the seed emotion system: 250 s for -bs 64)", valid=AT_LEAST_0)
    max_seconds: float = option(0.0, "pretraining a Hugging Face encoder (TAPT, P-TAPT): crop each clip to this many "
                                     "seconds at a random offset, anew every time it is seen (0: none; TAPT reads "
                                     "--clip_length seconds from each clip's start first, P-TAPT whole clips; "
                                     "SSAST reads its --target_length frames)", valid=AT_LEAST_0, acts=PRETRAINING)
    loss: str = option("auto", "loss of binary heads (BCE, or MSE) and of regression heads (MSE, or huber); "
                               "categorical and soft heads use CE", choices=("auto", "BCE", "MSE", "CE", "huber"))
    labeling_method: str = option("distribution", "soft (vote) heads learn: distribution (CE against the votes), "
                                                  "hard (their argmax), sample (one drawn each time: the seed's soft)",
                                  choices=("distribution", "hard", "sample"))
    class_weights: str = option("none", "balanced: weight each class by its inverse frequency in the training "
                                        "split (mean class weight 1) in the loss of categorical and soft heads "
                                        "(CE class weights) and binary columns (per-sample weights)",
                                choices=("none", "balanced"))
    balance: str = option("none", "class-balanced training epochs over the first categorical head: oversample "
                                  "(every class drawn to the size of the largest, its clips cycled; the tap2key "
                                  "recipe) or undersample (every class drawn down to the smallest, anew each epoch)",
                          choices=("none", "oversample", "undersample"))
    standardize_targets: bool = option(True, "regression heads learn (target - mean) / std with the training "
                                             "split's mean and std (kept in the config); predictions are in the "
                                             "original units")
    group_batches: str = option("", "draw every training batch from one group of this column of the training "
                                    "table (e.g. subject): BatchNorm then normalises each batch with one "
                                    "speaker's statistics, as --adapt_bn does for a split of one new speaker")
    ema: float = option(0.0, "keep an exponential moving average of the weights with this decay per step (e.g. "
                              "0.99; 0 = off): validation, checkpoints and the saved model use the average "
                              "(its time constant, 1 / (1 - decay) steps, should be well under the run's steps)",
                              valid=(0, 1, True, False))
    adapt_bn: str = option("none", "test-time adaptation: before scoring a split (validation in every epoch, "
                                   "test, `audiotune evaluate`), re-estimate the BatchNorm statistics on its own "
                                   "clips (unlabelled; AdaBN): split (the whole split: one new speaker or "
                                   "microphone), a column such as subject (each of its groups apart), or none. "
                                   "The saved model keeps its training statistics")
    # the SER seed's --valid_split F is 1 - F; clips drawn seeded by --seed, subjects not kept apart
    val_share: float = option(0.0, "without a val part, validate on this share of the training clips drawn at "
                                   "random (seeded by --seed; subjects not kept apart), not --val_size subjects "
                                   "(0: off)",
                              valid=(0, 1, True, False))
    patience: int = option(0, "early stopping patience in epochs on the --monitor metric (0 = off)", valid=AT_LEAST_0)
    monitor: str = option("loss", "validation metric that picks the best epoch and stops early (max for "
                                  f"{', '.join(m for m, way in MONITORS.items() if way == 'max')}; min for "
                                  f"{', '.join(m for m, way in MONITORS.items() if way == 'min')}; the mean over "
                                  "heads when there are several)",
                          choices=tuple(MONITORS))
    save_top_k: int = option(1, f"keep the K best validation epochs by --monitor as checkpoints in "
                                f"EXP_DIR/{CHECKPOINT_DIR} (1: best.ckpt; more: best-epoch=NN.ckpt each, NN from 0); "
                                "the saved model is the best of them (with --keep last they are kept for inspection "
                                "only)",
                            valid=AT_LEAST_1)
    keep: str = option("best", "the saved model: the best validation epoch by --monitor, or the last epoch's weights "
                               "(validation still scored and logged every epoch; no early stopping); without "
                               "validation the last epoch is kept either way", choices=("best", "last"))
    resume: bool = option(False, f"continue from EXP_DIR/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}", action=True)
    overwrite: bool = option(False, "replace the run already in --exp_dir (deleted once the inputs are checked)",
                             action=True)
    allow_changes: bool = option(False, "with --resume: go on although options other than --epochs, "
                                        "--training_steps and where it runs differ from the run's config.yaml; "
                                        f"the changes are recorded in EXP_DIR/{CONFIG_HISTORY_FILE}", action=True,
                                        needs=needs_on("resume", "--resume"))
    debug: bool = option(False, "use only the first 8 rows of every split")


FEATURE_PLACES = ("auto", "device", "workers")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")  # none: eager; the rest torch.compile's


@dataclass
class RuntimeConfig:
    """Where and how a command runs (device, precision, processes, data workers, caches): training and inference
    alike; a command that loads a run may set them anew (``--accelerator``, ``-bs`` ...)."""

    num_workers: int | Literal["auto"] = option(
        "auto", "data loader worker processes; auto: from the CPUs this process may use (C, its share when several "
                "processes run on one machine) and the data: none when a split holds under 5 minutes of audio "
                "(starting a worker costs more than it saves), else with an accelerator C - 1 (at most 8, or 4 when "
                "every input is PCM WAV at the model's rate), on the CPU C / 2 (at most 4) for compressed or "
                "resampled inputs, else C / 4 (at most 2), as the model's own threads need the rest",
        ("-nw", "--nworkers"), valid=(0, 1024, True, True))
    features_on: str = option("auto", "where fbank/MFCC features, their normalisation and SpecAugment are computed: "
                                      "device (batched on the model's device, after the transfer, with --eq, --gain "
                                      "and --gauss unless --mixup is on; the data workers decode, resample, crop and "
                                      "augment up to the pitch shift), workers (per clip in the data workers), or "
                                      "auto (device on a GPU, workers on the CPU)",
                              choices=FEATURE_PLACES)
    compile: str = option("none", "torch.compile the model's training steps (forward and backward on model inputs; "
                                  "validation, scoring and heads trained on cached states stay eager): default "
                                  "(fused kernels), reduce-overhead (also CUDA graphs, which replay a step's many "
                                  "small kernels at once: models such as ECAPA-TDNN whose steps the host cannot "
                                  "launch as fast as a GPU runs them), max-autotune (also tries kernel "
                                  "configurations); the first steps compile (seconds to minutes), and the "
                                  "results match eager ones to float rounding; none: eager",
                          choices=COMPILE_MODES)
    precision: str = option("32", "precision of training and inference: 32, tf32 (float32, its matrix products "
                                  "and convolutions in TensorFloat-32 on an NVIDIA GPU's tensor cores, Ampere or "
                                  "newer; elsewhere 32), bf16 (bfloat16 autocast), 16-mixed (float16 autocast with "
                                  "loss scaling; needs a GPU; 16, the seeds' spelling, is the same)",
                            choices=PRECISIONS)
    accelerator: str = option("auto", "where the model runs (Lightning's accelerator): auto takes the GPU when there "
                                      "is one", choices=ACCELERATORS)
    devices: str = option("auto", "Lightning devices (auto, a count, or a list); with several, one training "
                                  "process per device (DDP), -bs clips each")
    strategy: str = option("auto", "Lightning strategy: auto (DDP when there are several devices or nodes), ddp, "
                                   "or ddp_find_unused_parameters_true for models whose trainable weights are not all "
                                   "used in every step (ddp_spawn is not offered)",
                           choices=("auto", "ddp", "ddp_find_unused_parameters_true"))
    num_nodes: int = option(1, "machines of a multi-node DDP run (each runs --devices processes)", valid=AT_LEAST_1)
    cache: bool = option(True, "with a frozen backbone whose inputs are the same every epoch, encode each clip once "
                               "and train the heads from cached pooled hidden states (not with waveform "
                               "augmentation, mixup, SpecAugment, VTLP, --frozen_train_mode, --adapt_bn or batches by "
                               "group or length; metrics.json's feature_cache says why not)")
    cache_dir: str = option("", "folder of the feature cache, the audio store and the record of checked audio "
                                "(default $AUDIOTUNE_CACHE or ~/.cache/audiotune)",
                            role=Role.CACHE)
    audio_cache: bool | Literal["auto"] = option(
        "auto", "store each row's decoded, resampled, channel-mapped audio once (under the cache folder) and read it "
                "back every epoch instead of decoding again; waveform augmentation still runs per epoch. auto: on "
                "when the inputs are compressed (not PCM WAV) or resampled, the split is read more than once (epochs) "
                "and its prepared audio fits --audio_cache_gb and half the cache folder's free disk")
    audio_cache_gb: float = option(20.0, "the most prepared audio (GiB, float32) one split may put in the audio store "
                                         "under --audio_cache auto", valid=AT_LEAST_0)
    report: bool = option(True, "write the HTML report (see `audiotune report`) when train, evaluate, cv, "
                                "sweep, probe or taps ends")
    logger: str = option("csv", f"training curves of train, pretrain, cv and sweep runs: csv ({LOG_DIR}/{LOG_FILE})"
                                f" or tensorboard (also TensorBoard event files in {LOG_DIR}/{TENSORBOARD_DIR}; needs "
                                "`pip install tensorboard`); the CSV, which the report reads, is always written",
                         choices=LOGGERS)
