"""Every flag of every seed command line, walked through the audiotune command that replaces its script: each is
read with the seed's meaning (the resulting config or parsed value is checked) or refused in one line naming what
to write instead. None is accepted with another meaning."""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import io
from typing import Any

import pytest
import yaml

from audiotune.cli import COMMANDS, build_parser, config_from_args
from audiotune.cli.config_args import refuse_other_values
from audiotune.cli.pretrain import NOT_PRETRAINING, PRETRAIN_OPTIONS
from audiotune.cli.run_flags import scoring_data
from audiotune.config import (
    BARE,
    RETIRED_FLAGS,
    RETIRED_IN_COMMAND,
    RETIRED_VALUES,
    RunConfig,
    Stage,
    config_to_dict,
    option_default,
    recipe_root,
)
from audiotune.models import backbones
from audiotune.models.backbones import input_spec, resolve_config
from audiotune.models.option_checks import refuse_inactive

Expected = dict[str, Any] | str  # config/argument values (same meaning), or text the refusal must name
Flag = tuple[list[str], Expected]

# the NAIP run.py flags shared by naip-w2v2, naip-ssast and naip-ecapa-tdnn (seed-notes 2.1, 3.1, 4.1)
NAIP_COMMON: list[Flag] = [
    *[([flag, "speech/lake"], {"data.prefix": "speech/lake"}) for flag in ("-i", "--prefix")],
    *[([flag, "study1"], {"data.study": "study1"}) for flag in ("-s", "--study")],
    *[([flag, "splits"], {"data.data_split_root": "splits"}) for flag in ("-d", "--data_split_root")],
    *[([flag, "labels.txt"], {"data.label_txt": "labels.txt"}) for flag in ("-l", "--label_txt")],
    (["--lib", "True"], "soundfile"),
    (["--val_size", "30"], {"data.val_size": 30}),
    (["--seed", "4200"], {"data.seed": 4200}),
    # -b: the bucket the audio is read from (gs://BUCKET/PREFIX) and that --cloud uploads to
    (["-b", "bkt", "-i", "speech/lake"], {"data.prefix": "gs://bkt/speech/lake", "args.bucket_name": "bkt"}),
    (["--bucket_name", "bkt", "--prefix", "speech/lake"], {"data.prefix": "gs://bkt/speech/lake"}),
    (["-b", "bkt", "-i", "gs://other/lake"], {"data.prefix": "gs://other/lake"}),
    *[([flag, "proj"], {"args.project_name": "proj"}) for flag in ("-p", "--project_name")],
    (["--cloud", "True"], {"args.cloud": True}),
    (["--cloud_dir", "runs/a"], {"args.cloud_dir": "runs/a"}),
    (["--dataset", "amr"], "-o/--exp_dir"),
    *[([flag, "exp"], {"exp_dir": "exp"}) for flag in ("-o", "--exp_dir")],
    *[([flag, "eval"], "audiotune train | evaluate | extract") for flag in ("-m", "--mode")],
    (["--shared_dense", "True"], {"classifier.shared_dense": True}),
    (["--sd_bottleneck", "300"], {"classifier.sd_bottleneck": 300}),
    (["--embedding_type", "pt"], "audiotune extract"),
    (["--resample_rate", "8000"], {"audio.resample_rate": 8000}),
    (["--reduce", "True"], {"audio.channel_mode": "sum"}),  # the seeds summed the channels
    (["--reduce", "False"], {"audio.channel_mode": "none"}),
    (["--clip_length", "5"], {"audio.clip_length": 5.0}),
    (["--mixup", "0.5"], {"data.mixup": 0.5}),
    *[([flag, "16"], {"train.batch_size": 16}) for flag in ("-bs", "--batch_size")],
    *[([flag, "2"], {"runtime.num_workers": 2}) for flag in ("-nw", "--num_workers")],
    *[([flag, "1e-3"], {"train.learning_rate": 1e-3}) for flag in ("-lr", "--learning_rate")],
    *[([flag, "5"], {"train.epochs": 5}) for flag in ("-e", "--epochs")],
    (["--optim", "adam"], {"train.optim": "adam"}),
    (["--weight_decay", "1e-3"], {"train.weight_decay": 1e-3}),
    *[(["--loss", loss], {"train.loss": loss}) for loss in ("MSE", "BCE")],
    (["--scheduler", "onecycle"], {"train.scheduler": "onecycle"}),
    (["--scheduler", "None"], {"train.scheduler": "none"}),
    (["--max_lr", "0.1"], {"train.max_lr": 0.1}),
    (["--activation", "relu"], {"classifier.activation": "relu"}),
    (["--final_dropout", "0.2"], {"classifier.final_dropout": 0.2}),
    (["--layernorm", "True"], {"classifier.layernorm": True}),
    (["--clf_bottleneck", "300"], {"classifier.clf_bottleneck": 300}),
    (["--debug", "True"], {"train.debug": True}),
]
NAIP_AUGMENTS: list[Flag] = [
    *[([f"--{name}", "0.5"], {f"augment.{name}": 0.5}) for name in ("tshift", "speed", "gauss", "pshift", "gain",
                                                                     "stretch")],
    (["--pshiftn", "3"], {"augment.pshiftn": 3.0}),
]
EVAL_MODEL: list[Flag] = [([flag, "exp/model.pt"], "audiotune evaluate --run")
                           for flag in ("-mp", "--finetuned_mdl_path", "--trained_mdl_path")]
SPECTROGRAM: list[Flag] = [
    (["--dataset_mean", "-4.2"], {"features.dataset_mean": -4.2}),
    (["--dataset_std", "4.5"], {"features.dataset_std": 4.5}),
    (["--dataset_std", "0"], "audiotune stats"),  # the seeds' default: a division by zero
    *[([f"--{name}", "24"], {f"features.{name}": 24}) for name in ("freqm", "timem")],
    (["--noise", "True"], {"features.noise": True}),
]

NAIP_W2V2: list[Flag] = [
    *NAIP_COMMON, *NAIP_AUGMENTS, *EVAL_MODEL,
    *[([flag, "wav2vec2-base-960h"], {"model.checkpoint": "wav2vec2-base-960h"}) for flag in ("-c", "--checkpoint")],
    (["--weighted", "True"], {"classifier.weighted": True}),
    (["--layer", "6"], {"classifier.layer": 6}),
    (["--freeze", "False"], {"model.freeze": False}),
    *[([flag, "sum"], {"classifier.pooling_mode": "sum"}) for flag in ("-pm", "--pm", "--pooling_mode")],
    (["--hp_tuning", "True"], "--hypertune_metric"),
    (["--new_checkpoint", "True"], "audiotune evaluate --run"),
    (["--trim", "True"], "offset, duration"),
]
NAIP_SSAST: list[Flag] = [
    *NAIP_COMMON, *NAIP_AUGMENTS, *EVAL_MODEL, *SPECTROGRAM,
    (["--pretrained_mdl_path", "SSAST-Base-Frame-400.pth"],
     {"options.pretrained_mdl_path": "SSAST-Base-Frame-400.pth"}),
    (["--task", "ft_avgtok"], {"options.task": "ft_avgtok"}),
    (["--freeze", "False"], {"model.freeze": False}),
    (["--weighted", "True"], {"classifier.weighted": True}),
    (["--layer", "6"], {"classifier.layer": 6}),
    (["--pooling_mode", "mean"], {"classifier.pooling_mode": "mean"}),
    (["--pooling_mode", "sum"], "audiotune extract --embedding_type ft --pooling_mode sum"),
    (["--target_length", "512"], {"features.target_length": 512}),
    (["--num_mel_bins", "256"], {"features.num_mel_bins": 256}),
    (["--fstride", "64"], {"options.fstride": 64}),
    (["--tstride", "1"], {"options.tstride": 1}),
    (["--fshape", "16", "--fstride", "16"], {"options.fshape": 16, "options.fstride": 16}),
    (["--tshape", "16", "--tstride", "16"], {"options.tshape": 16, "options.tstride": 16}),
    (["--model_size", "tiny"], {"options.model_size": "tiny"}),
    # the seed's train mode pretrained with --task pretrain_*: here that is `audiotune pretrain`
    (["--mask_patch", "300"], "acts only in audiotune pretrain"),
    (["--cluster_factor", "4"], "acts only in audiotune pretrain"),
]
NAIP_ECAPA: list[Flag] = [
    *NAIP_COMMON, *NAIP_AUGMENTS, *EVAL_MODEL, *SPECTROGRAM,
    (["--pooling_mode", "sum"], {"classifier.pooling_mode": "sum"}),
    (["--lin_neurons", "96"], {"options.lin_neurons": 96}),
    # the seed's default mode was MFCC; its size flags alone would do nothing with audiotune's default fbank
    (["--n_mfcc", "40"], "--features mfcc"),
    (["--n_mels", "64"], "--features mfcc"),
    (["--n_fft", "512"], "--features mfcc"),
    (["--fbank", "False", "--n_mfcc", "40"], {"spec.features": "mfcc", "spec.n_mfcc": 40}),
    (["--fbank", "False", "--n_mels", "64"], {"spec.features": "mfcc", "spec.n_mels": 64}),
    (["--fbank", "False", "--n_fft", "512"], {"spec.features": "mfcc", "spec.n_fft": 512}),
    # fbank mode: --n_mels are the fbank's bins and --n_fft its frame count (seed-notes 4.2)
    (["--fbank", "True", "--n_mels", "40", "--n_fft", "200"],
     {"spec.features": "fbank", "spec.num_mel_bins": 40, "spec.target_length": 200}),
    (["--fbank", "True"], {"spec.features": "fbank", "spec.num_mel_bins": 128, "spec.target_length": 400}),
    (["--reduce", "True"], {"spec.channel_mode": "sum"}),  # what the model is fed
    (["--fbank", "True", "--n_mfcc", "40"], "--features mfcc"),
    (["--fbank", "True", "--n_mels", "40", "--num_mel_bins", "64"], "--num_mel_bins"),
    # its MFCC mode ignored the fbank-only flags (seed-notes 4.2), which act on MFCCs here
    (["--fbank", "False", "--dataset_mean", "-4.27", "--dataset_std", "4.57", "--freqm", "5", "--noise", "True"],
     "--dataset_mean, --dataset_std, --freqm, --noise: the ECAPA seed's --fbank False (MFCC) ignored them"),
    (["--fbank", "False", "--timem", "10"], "write --features mfcc instead of --fbank False"),
    (["--fbank", "False", "--freqm", "0", "--timem", "0", "--noise", "False"],  # what its MFCC mode did
     {"spec.features": "mfcc", "spec.freqm": 0, "spec.timem": 0, "spec.noise": False}),
    (["--features", "mfcc", "--dataset_mean", "-4.27", "--dataset_std", "4.57", "--freqm", "5"],
     {"spec.features": "mfcc", "spec.dataset_mean": -4.27, "spec.dataset_std": 4.57, "spec.freqm": 5}),
]

PRECISION: list[Flag] = [(["--precision", "32"], {"runtime.precision": "32"}),
                         (["--precision", "16"], {"runtime.precision": "16"})]  # float16 mixed precision
SER_COMMON: list[Flag] = [
    *PRECISION,
    (["--lr", "1e-4"], {"train.learning_rate": 1e-4}),
    (["--batch_size", "64"], {"train.batch_size": 64}),
    (["--saving_path", "ckpt"], "-o/--exp_dir"),
    (["--resume_checkpoint", "last.ckpt"], "--resume"),
    (["--datadir", "wavs"], "-i WAVS/"),
    (["--labelpath", "label_1.json"], "-d SPLIT.json"),
    (["--maxseqlen", "10"], "--clip_length"),
    (["--save_top_k", "2"], {"train.save_top_k": 2}),
]
SER_BUCKETS: list[Flag] = [
    (["--training_step", "20000"], {"train.training_steps": 20000}),
    (["--warmup_step", "100"], {"train.warmup_steps": 100}),
    (["--distributed"], "--devices"),
    (["--accelerator", "ddp"], "--strategy ddp"),
    (["--use_bucket_sampler"], {"train.bucket_sampler": True}),
    (["--train_bucket_size", "40"], {"train.num_buckets": 40}),
    (["--val_bucket_size", "20"], "validation batches are not bucketed"),
    (["--unsupdatadir", "extra"], "-d"),
]
SER_TAPT: list[Flag] = [
    *SER_COMMON, *SER_BUCKETS,
    (["--use_additional_obj"], "--objective ptapt"),
    (["--num_clusters", "8,64"], "audiotune cluster --num_clusters"),
]
SER_PTAPT: list[Flag] = [
    *SER_COMMON, *SER_BUCKETS,
    (["--dynamic_batch"], "--dynamic_batch 250"),  # a switch in the seed; seconds of audio per batch here
    (["--dynamic_batch", "--lr", "1e-4"], "--dynamic_batch 250"),
    (["--dynamic_batch", "250"], {"train.dynamic_batch": 250.0}),
    (["--num_clusters", "64,512,4096"], "audiotune cluster --num_clusters"),
    (["--check_val_every_n_epoch", "1"], "every epoch"),
    (["--valid_split", "1.0"], "--val_size 0 on nothing"),
    (["--w2v2_pretrain_path", "our_method.ckpt"], "-c RUN/encoder"),
]
SER_STAGE1: list[Flag] = [
    *SER_COMMON,
    (["--training_step", "10000"], {"train.training_steps": 10000}),
    (["--check_val_every_n_epoch", "1"], "every epoch"),
    (["--valid_split", "0.9"], {"train.val_share": 0.1, "data.val_size": 50}),  # a random tenth of the clips
    (["--valid_split", "1.0"], {"train.val_share": 0.0, "data.val_size": 0}),  # no validation
    (["--labeling_method", "hard"], {"train.labeling_method": "hard"}),
    (["--labeling_method", "soft"], "--labeling_method sample"),  # the seed drew a class from the votes
    (["--wav2vecpath", "wav2vec_large.pt"], "-c"),
]
SER_DOWNSTREAM: list[Flag] = [
    *SER_COMMON,
    (["--max_epochs", "15"], {"train.epochs": 15}),
    (["--nworkers", "4"], {"runtime.num_workers": 4}),
    (["--pretrained_path", "our_method.ckpt"], "-c RUN/encoder"),
    (["--model_type", "wav2vec2"], "--model hf"),
    (["--output_path", "out"], "-o/--exp_dir"),
    (["--cpu_torchscript"], "audiotune export"),
]
SER_FOLDS: list[Flag] = [
    *[flag for flag in SER_DOWNSTREAM if flag[0][0] not in ("--datadir", "--output_path", "--cpu_torchscript")],
    (["--datadir", "wavs"], {"args.audio_dir": "wavs"}),
    (["--labeldir", "labels_sess"], "audiotune cv -d FOLDS/"),
    (["--num_exps", "5"], "--repeats"),
    (["--outputfile", "summary.txt"], "cv_summary.json"),
]
SER_CLUSTER: list[Flag] = [
    *PRECISION,
    (["--num_clusters", "64", "512", "4096"], {"args.num_clusters": [64, 512, 4096]}),
    (["--num_clusters", "64,512,4096"], {"args.num_clusters": [64, 512, 4096]}),  # the seed's comma list
    (["--sample_ratio", "1.0"], {"args.sample_ratio": 1.0}),
    (["--model_path", "stage1.ckpt"], "audiotune cluster --run"),
    (["--wav2vecpath", "wav2vec_large.pt"], "-c"),
    (["--model_type", "wav2vec2"], "--model hf"),
    (["--unsupdatadir", "extra"], "-d"),
    (["--labelpath", "label_1.json"], "-d SPLIT.json"),
    (["--datadir", "wavs"], "-i WAVS/"),
    (["--outputdir", "clusters"], "--out"),
]

TAP_DETECT: list[Flag] = [
    (["--dir", "recordings"], "audiotune taps detect"),
    (["--idx", "3"], "every recording at once"),
    (["--plot"], "--plot FOLDER"),  # a switch in the seed; the folder for the plots here
    (["--plot", "--height", "0.01"], "--plot FOLDER"),
    (["--plot", "plots"], {"args.plot": "plots"}),
    (["--peak_height", "0.01"], {"args.peak_height": 0.01, "args.height": None}),
    (["--sample"], "audiotune taps align"),
]
TAP_ALIGN: list[Flag] = [
    (["--latency", "-0.15"], {"args.latency": -0.15}),
    (["--selectivity", "0.134"], {"args.selectivity": 0.134}),
]
TAP_DATASET: list[Flag] = [
    (["--presplit"], "--group path --test_subjects"),
    *[([flag], "--balance oversample") for flag in ("--oversample", "--oversampling")],
    (["--test_size", "0.5"], "--test_fraction"),
    (["--encode"], "leave it out"),
    (["--seed", "42"], {"data.seed": 42}),
    (["--sample_rate", "16000"], "--resample_rate"),
    (["--plot_average_channel"], "--channel_mode mean"),
    (["--prop", "0.8"], "--train_fraction"),
    (["--reshape_interleave"], "--channel_mode interleave"),
    (["--reshape_stack"], "--channel_mode stack"),
    (["--reshape_c_style_top"], "--channel_select 4 5 6 7"),
    (["--reshape_c_style_bottom"], "--channel_select 0 1 2 3"),
    (["--max_absolute"], "--channel_mode maxabs"),
    (["--all_data"], "leave it out"),
    *[([flag, "/work/data"], "audiotune split --out") for flag in ("--train_dir96k", "--test_dir96k", "--save_96k_all",
                                                                  "--save_tr96k", "--save_te96k")],
    (["--oversampled_dir", "/work/data"], "--balance oversample"),
    (["--data_dir", "/work/data"], "-d TABLE"),
]
TAP_TRAIN: list[Flag] = [
    (["--dataset_dir", "/work/encoded"], "-d TABLE"),
    (["--data_dir", "/work/taps"], "-d TABLE"),
    (["--seed", "42"], {"data.seed": 42}),
    (["--load_dataset"], "leave it out"),
    (["--save_te96k", "/work/test"], "audiotune split --out"),
    (["--oversample"], "--balance oversample"),
    (["--sample_rate", "16000"], "--resample_rate"),
    (["--early_stop"], "--patience"),
    (["--train"], "audiotune train"),
    (["--early_patience", "16"], "--patience"),
    (["--epochs", "150"], {"train.epochs": 150}),
]

# naip-w2v2 data_splits.py (seed-notes 1.2): `audiotune table` builds the table, `audiotune split` splits it
SPLITS_TABLE: list[Flag] = [
    (["-i", "speech/lake", "-s", "study1"], {"args.prefix": "speech/lake/study1"}),
    (["--prefix", "speech/lake", "--study", "study1"], {"args.prefix": "speech/lake/study1"}),
    (["-b", "bkt", "-i", "speech/lake"], {"args.prefix": "gs://bkt/speech/lake"}),
    (["--bucket_name", "bkt", "-i", "gs://other/lake"], {"args.prefix": "gs://other/lake"}),
    *[([flag, "proj", "-i", "lake"], {"args.project_name": "proj"}) for flag in ("-p", "--project_name")],
    (["--cloud", "True", "-b", "bkt", "--cloud_dir", "runs/a", "-i", "lake"],
     {"args.cloud": True, "args.cloud_dir": "runs/a"}),
    (["--edit_feats", "True", "-i", "lake"], {"args.edit_feats": True}),
    (["--edit_feats", "False", "-i", "lake"], {"args.edit_feats": False}),
    *[([flag, "out"], "audiotune split OUT/table.csv --out OUT") for flag in ("-o", "--output_dir")],
    (["--csv_path", "t.csv"], "audiotune split TABLE"),
    (["--train_task", "Reading"], "audiotune split TABLE --train_task"),
    (["--test_task", "Reading"], "audiotune split TABLE --test_task"),
    (["--split_size", "538", "96", "50"], "audiotune split TABLE --split_size"),
    (["--existing_spk_split", "spk.csv"], "audiotune split TABLE --existing_spk_split"),
    (["--debug", "True"], "leave it out"),
]
SPLITS_SPLIT: list[Flag] = [
    (["--train_task", "Alternating Motion Rate"], {"args.train_task": ["Alternating Motion Rate"]}),
    (["--test_task", "Reading", "Picture"], {"args.test_task": ["Reading", "Picture"]}),
    (["--split_size", "538", "96", "50"], {"args.split_size": [538, 96, 50]}),
    *[([flag, "out"], {"args.out": "out"}) for flag in ("-o", "--output_dir")],
    *[([flag, "proj"], {"args.project_name": "proj"}) for flag in ("-p", "--project_name")],
    (["--cloud", "True", "-b", "bkt", "--cloud_dir", "runs/a"], {"args.cloud": True, "args.bucket_name": "bkt"}),
    (["--csv_path", "t.csv"], "audiotune split TABLE"),
    (["--existing_spk_split", "spk.csv"], {"args.existing_spk_split": "spk.csv"}),  # its speakerID column
    (["--edit_feats", "True"], "audiotune table FOLDER --edit_feats"),
    (["--debug", "True"], "leave it out"),
]

NAIP_EXTRACTION: list[Flag] = [  # run.py -m extraction
    *[([flag, "pt"], {"args.embedding_type": "pt"}) for flag in ("--embedding_type", "--embedding-type")],
    (["--embedding_type", "None"], "is the flag left out: ft for a trained run, pt for an encoder"),
    (["--dataset", "amr"], "extract's file by --out FILE"),
]
CLUSTER = ["cluster", "--out", "labels.parquet"]
ALIGN = ["taps", "align", "taps.csv", "--touch_log", "touch.csv", "--keys", "keys.csv", "--out", "segments.csv"]
# seed script -> (the audiotune command line its flags are walked through, its flags)
SEEDS: dict[str, tuple[list[str], list[Flag]]] = {
    "naip-w2v2 run.py": (["train", "--model", "hf"], NAIP_W2V2),
    "naip-ssast run.py": (["train", "--model", "ssast"], NAIP_SSAST),
    "naip-ecapa-tdnn run.py": (["train", "--model", "ecapa_tdnn"], NAIP_ECAPA),
    "naip run.py -m extraction": (["extract", "-mp", "run", "-d", "t.csv"], NAIP_EXTRACTION),
    "naip-w2v2 data_splits.py (table)": (["table", "--out", "table.csv"], SPLITS_TABLE),
    "naip-w2v2 data_splits.py (split)": (["split", "table.csv", "--out", "splits"], SPLITS_SPLIT),
    "FT-w2v2-ser run_baseline_continueFT.py": (["pretrain", "--model", "hf", "--objective", "tapt"], SER_TAPT),
    "FT-w2v2-ser run_pretrain.py": (["train", "--model", "hf"], SER_STAGE1),
    "FT-w2v2-ser cluster.py": (CLUSTER, SER_CLUSTER),
    "FT-w2v2-ser run_second.py": (["pretrain", "--model", "hf", "--objective", "ptapt"], SER_PTAPT),
    "FT-w2v2-ser run_downstream_custom.py": (["train", "--model", "hf"], SER_DOWNSTREAM),
    "FT-w2v2-ser run_downstream_custom_multiple_fold.py": (["cv", "--model", "hf"], SER_FOLDS),
    "tap2key WavPreprocess.py (detection)": (["taps", "detect", "rec.wav", "--out", "taps.csv"], TAP_DETECT),
    "tap2key WavPreprocess.py (alignment)": (ALIGN, TAP_ALIGN),
    "tap2key create_dataset.py": (["train"], TAP_DATASET),
    "tap2key Wav2vec2_tap2key.py": (["train", "--model", "hf"], TAP_TRAIN),
}
CASES = [pytest.param(command, flag, expected, id=f"{seed}: {' '.join(flag)}")
         for seed, (command, flags) in SEEDS.items() for flag, expected in flags]


@functools.cache
def parser() -> argparse.ArgumentParser:
    return build_parser()


def outcome(argv: list[str]) -> tuple[argparse.Namespace, RunConfig | None] | str:
    """The parsed arguments and config of a command line, or the one-line error it is refused with."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser().parse_args(argv)
        command = next(c for c in COMMANDS if c.name == args.command)
        if command.default_outputs:  # what the command derives from its flags before it runs
            command.default_outputs(args)
        config = config_from_args(args) if "config_defaults" in vars(args) else None
        if config is not None and config.model.model != "hf":  # the hub is offline: hf resolves when it trains
            resolve_config(copy.deepcopy(config))
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1]
    except ValueError as error:
        return str(error)
    return args, config


def value_of(args: argparse.Namespace, config: RunConfig | None, key: str) -> Any:
    section, _, name = key.partition(".")
    if key == "exp_dir":
        return config.exp_dir
    if section == "args":
        return vars(args)[name]
    if section == "options":
        return config.model.options[name]
    if section == "spec":  # the input the backbone reads
        return getattr(input_spec(resolve_config(copy.deepcopy(config))), name)
    return getattr(getattr(config, section), name)


@pytest.mark.parametrize(("command", "flag", "expected"), CASES)
def test_seed_flag_keeps_its_meaning_or_is_refused_naming_the_replacement(command: list[str], flag: list[str],
                                                                           expected: Expected) -> None:
    result = outcome([*command, *flag])
    if isinstance(expected, str):
        assert isinstance(result, str), f"{flag} is accepted, but the seed meant something else"
        assert expected in result and flag[0].lstrip("-").split("_")[0] in result, result
        assert "Traceback" not in result
    else:
        assert not isinstance(result, str), result
        args, config = result
        for key, value in expected.items():
            assert value_of(args, config, key) == value, (key, flag)


def test_every_retired_spelling_is_walked_and_every_command_refuses_it() -> None:
    walked = {flag[0] for _, flags in SEEDS.values() for flag, _ in flags}
    assert set(RETIRED_FLAGS) <= walked, set(RETIRED_FLAGS) - walked
    for command, spellings in RETIRED_IN_COMMAND.items():
        walked_here = {flag[0] for line, flags in SEEDS.values() if line[0] == command for flag, _ in flags}
        assert set(spellings) <= walked_here, (command, set(spellings) - walked_here)
    walked_values = {(flag[0], flag[1] if len(flag) > 1 else BARE) for _, flags in SEEDS.values() for flag, _ in flags}
    assert set(RETIRED_VALUES) <= walked_values
    for command in (["evaluate", "--run", "r", "-d", "t.csv"], ["split", "t.csv", "--out", "s"], ["stats"]):
        result = outcome([*command, "--saving_path", "ckpt"])
        assert isinstance(result, str) and "--saving_path: the seed's checkpoint folder; use -o" in result


def test_a_command_that_declares_a_seed_spelling_keeps_it() -> None:
    assert outcome(["evaluate", "--trained_mdl_path", "run", "-d", "t.csv"])[0].run == "run"
    assert outcome(["extract", "-mp", "run", "-d", "t.csv", "--embedding_type", "pt"])[0].embedding_type == "pt"


def test_evaluate_and_extract_read_a_seed_prefix_from_the_bucket_as_train_does() -> None:
    for command in (["evaluate", "--run", "r", "-d", "t.csv"], ["extract", "--run", "r", "-d", "t.csv"]):
        args = outcome([*command, "-b", "bkt", "-i", "speech/lake", "-s", "study1"])[0]
        assert scoring_data(args) == {"prefix": "gs://bkt/speech/lake", "study": "study1"}
        with pytest.raises(ValueError, match="-b/--bucket_name bkt: .*without -i the run's own audio root is read"):
            scoring_data(outcome([*command, "-b", "bkt"])[0])  # -b alone would do nothing: the run's own prefix
        assert scoring_data(outcome([*command, "-i", "speech/lake"])[0]) == {"prefix": "speech/lake"}


def test_a_seed_spelling_is_refused_with_its_hyphen_spelling_too() -> None:
    result = outcome(["train", "--reshape-interleave"])
    assert isinstance(result, str) and "--channel_mode interleave" in result


RECIPES = recipe_root() / "seeds"
# a few of each seed's defaults that audiotune's own defaults change
SEED_DEFAULTS = {
    "naip_w2v2": {"model.model": "hf", "audio.channel_mode": "sum", "train.scheduler": "none", "data.seed": 4200,
                  "model.frozen_train_mode": True, "options.mask_time_prob": 0.05, "options.layerdrop": "checkpoint",
                  "classifier.layer_weights": "raw", "train.keep": "last",
                  "audio.remove_dc": True, "data.complete_rows": True},
    "naip_ssast": {"model.model": "ssast", "classifier.layernorm": True, "train.scheduler": "onecycle",
                   "features.target_length": 1024, "audio.channel_mode": "sum",
                   "options.pretrained_mdl_path": "SSAST-Base-Frame-400.pth", "classifier.layer_weights": "raw",
                   "features.pad": "zero_before_norm", "train.keep": "last", "audio.remove_dc": True,
                   "data.complete_rows": True},
    "naip_ecapa": {"model.model": "ecapa_tdnn", "features.features": "mfcc", "train.scheduler": "none",
                   "features.freqm": 0, "features.timem": 0, "audio.channel_mode": "sum", "train.keep": "last",
                   "audio.remove_dc": True, "data.complete_rows": True},
    "naip_ssast_pretrain": {"model.model": "ssast", "train.scheduler": "onecycle",
                            "features.target_length": 1024, "audio.channel_mode": "sum", "data.val_size": 0,
                            "features.pad": "zero_before_norm", "train.keep": "last", "audio.remove_dc": True,
                            "options.cluster_side": "drawn"},
    "ser_vft": {"train.learning_rate": 1e-4, "train.batch_size": 64, "train.epochs": 15, "train.optim": "adam",
                "train.class_weights": "balanced", "audio.eval_clip_length": 0.0, "runtime.num_workers": 4,
                "classifier.frame_activation": "relu", "classifier.pool_drop_last": True, "data.val_size": 0,
                "options.layerdrop": "checkpoint", "options.mask_spans": "batch"},
    "ser_tapt": {"model.objective": "tapt", "train.training_steps": 120000, "train.warmup_steps": 4000,
                 "train.scheduler": "linear", "train.max_seconds": 10.0, "options.gumbel_anneal": False,
                 "data.val_size": 0, "options.mask_spans": "batch", "options.tapt_loss": "batch"},
    "ser_ptapt": {"model.objective": "ptapt", "train.training_steps": 120000, "options.mask_time_prob": 0.06,
                  "data.val_size": 0, "options.mask_spans": "batch", "options.layerdrop": "checkpoint"},
    "tap2key": {"audio.channel_mode": "interleave", "train.learning_rate": 3e-5, "train.epochs": 150,
                "train.monitor": "weighted_f1", "data.seed": 42, "classifier.clf_bottleneck": 256,
                "train.accumulate_grad_batches": 4, "options.mask_time_prob": 0.05,
                "options.layerdrop": "checkpoint", "train.grad_clip": 1.0, "train.scheduler": "linear",
                "train.warmup_ratio": 0.1, "train.flat_ratio": 0.0},
}


# the recipes of `audiotune pretrain`, which refuses the options of labels and heads
PRETRAIN_RECIPES = ("ser_tapt", "ser_ptapt", "naip_ssast_pretrain")
# a recipe's value for when its switch is on (the seed's way of --weighted): at its default while the switch is off
SWITCHED_ON = {"classifier.layer_weights": ["--weighted", "true"], "model.read_padding": ["--fbank", "True"]}


def test_every_seed_recipe_loads_with_the_seed_defaults() -> None:
    recipes = {path.stem: path for path in RECIPES.glob("*.yaml")}
    assert set(recipes) == set(SEED_DEFAULTS)
    for name, path in recipes.items():
        command = "pretrain" if name in PRETRAIN_RECIPES else "train"
        result = outcome([command, "--config", str(path)])
        assert not isinstance(result, str), (name, result)
        args, config = result
        if command == "pretrain":  # every option one that pretraining takes and acts on
            refuse_other_values(config, args, PRETRAIN_OPTIONS, NOT_PRETRAINING)
            refuse_inactive(config, Stage.PRETRAIN)
        written, plain = config_to_dict(config), outcome([command, "--model", config.model.model])[1]
        for section, values in yaml.safe_load(path.read_text()).items():
            for option, value in values.items():
                key = f"{section}.{option}"
                if key in SWITCHED_ON:  # its switch off: the default (a backbone's option: its declared one)
                    backbone = backbones.options_classes()[config.model.model]
                    off = option_default(backbone, option) if section == "model" and option in {
                        spec.name for spec in dataclasses.fields(backbone)} else value_of(args, plain, key)
                    assert written[section][option] == off, (name, key, "switch off")
                    written_on = config_to_dict(outcome([command, "--config", str(path), *SWITCHED_ON[key]])[1])
                    assert written_on[section][option] == value, (name, key, "switch on")
                else:
                    assert written[section][option] == value, (name, section, option)
        settings = backbones.options_classes()[config.model.model]()
        for key, value in SEED_DEFAULTS[name].items():
            switched = outcome([command, "--config", str(path), *SWITCHED_ON[key]]) if key in SWITCHED_ON else None
            assert value_of(*(switched or (args, config)), key) == value, (name, key)
            default = getattr(settings, key.partition(".")[2]) if key.startswith("options.") else \
                value_of(args, plain, key)
            assert value != default or key == "model.model", (name, key, "audiotune's default is the seed's")


def test_the_ecapa_seed_recipe_keeps_mfcc_without_masks_after_the_backbone_resolves_it() -> None:
    config = resolve_config(outcome(["train", "--config", str(RECIPES / "naip_ecapa.yaml")])[1])
    spec = input_spec(config)
    assert (spec.features, spec.freqm, spec.timem, spec.channel_mode) == ("mfcc", 0, 0, "sum")
    assert config.train.scheduler == "none"


def test_the_seeds_extraction_without_a_fine_tuned_model_reads_the_encoder_flags() -> None:
    args, config = outcome(["extract", "-c", "wav2vec2-base-960h", "--model", "hf", "-d", "t.csv", "--out", "e.parquet",
                            "--resample_rate", "8000", "--reduce", "True", "--clip_length", "5"])
    assert args.run is None and config.model.checkpoint == "wav2vec2-base-960h"
    assert (config.audio.resample_rate, config.audio.channel_mode, config.audio.clip_length) == (8000, "sum", 5.0)
    # with a run, the SSAST seed's --task chooses the tokens pt embeddings pool (read by `extract`)
    assert vars(parser().parse_args(["extract", "-mp", "run", "-d", "t.csv", "--task", "ft_avgtok"]))[
        "options.task"] == "ft_avgtok"


def test_the_ecapa_seed_s_mfcc_switch_with_its_fbank_only_flags_is_refused_before_anything_is_written(
        tmp_path, capsys: pytest.CaptureFixture) -> None:
    """Its --fbank False ignored them; applied to MFCCs here, they would train another model than the seed's."""
    from audiotune.cli import main

    run = tmp_path / "run"
    assert main(["train", "--model", "ecapa_tdnn", "-d", str(tmp_path), "-l", "labels.txt", "-o", str(run),
                 "--fbank", "False", "--dataset_mean", "-4.27", "--dataset_std", "4.57", "--freqm", "5",
                 "--noise", "True"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and not run.exists()
    assert "--dataset_mean, --dataset_std, --freqm, --noise: the ECAPA seed's --fbank False (MFCC) ignored them" in err
    assert "write --features mfcc instead of --fbank False" in err


@pytest.mark.parametrize(("argv", "said"), [
    (["evaluate", "--run", "r", "-d", "t.csv", "--fbank", "True"], "--fbank: not an option of evaluate"),
    (["evaluate", "--run", "r", "-d", "t.csv", "--model_size", "tiny"], "--model_size: not an option of evaluate"),
    (["evaluate", "--run", "r", "-d", "t.csv", "--lin_neurons", "64"], "--lin_neurons: not an option of evaluate"),
    (["extract", "--run", "r", "-d", "t.csv", "-o", "out"],
     "-o: the seeds' folder of the embeddings; extract writes one parquet file: --out FILE.parquet"),
    (["taps", "detect", "r.wav", "--out", "t.csv", "--latency", "-0.14"],
     "--latency: an option of `audiotune taps align`"),
    (["taps", "align", "t.csv", "--touch_log", "l.csv", "--keys", "k.csv", "--out", "s.csv", "--peak_height", "0.002"],
     "--peak_height: an option of `audiotune taps detect`"),
])
def test_a_seed_command_lines_flag_that_belongs_elsewhere_is_refused_naming_where(
        argv: list[str], said: str, capsys: pytest.CaptureFixture) -> None:
    """The seeds' eval and extraction modes took every training flag, and tap2key one command both steps' flags: each
    is refused in one line, not with argparse's bare "unrecognized arguments"."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert f"error: {said}" in capsys.readouterr().err


def test_a_retired_spelling_says_when_its_replacement_is_another_commands_option() -> None:
    """`evaluate --sample_rate` said "use --resample_rate HZ", which evaluate refuses (the run's rate is read):
    the command says its replacement is not an option of its own; train takes it and says nothing more."""
    evaluated = outcome(["evaluate", "--run", "r", "-d", "t.csv", "--sample_rate", "8000"])
    assert isinstance(evaluated, str)
    assert evaluated.endswith("use --resample_rate HZ (--resample_rate: not an option of this command)")
    trained = outcome(["train", "--sample_rate", "8000"])
    assert isinstance(trained, str) and trained.endswith("use --resample_rate HZ")
