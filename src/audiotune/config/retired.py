"""Seed command-line spellings that audiotune does not take, each with what to write instead.

The seed systems' flags that keep their meaning are declared with their option (``option(..., flags=...)``);
the ones below would mean something else here, or nothing, so every command refuses them with one line naming
the replacement (:func:`audiotune.cli.seed_flags.refuse_retired`). A spelling is refused only by a command that does
not declare it itself (``audiotune cv`` takes ``--datadir``, ``taps align`` takes ``--latency``).
"""
from __future__ import annotations

from audiotune.config.sections import ACCELERATORS

RUN_SCRIPTS = ("audiotune train | evaluate | extract replace run.py -m train (naip-w2v2: finetune) | eval | "
               "extraction")

# spelling -> what the seed meant and what to write here
RETIRED_FLAGS: dict[str, str] = {
    # the NAIP run.py (naip-w2v2, naip-ssast, naip-ecapa-tdnn)
    "-m": f"the seed's run mode; {RUN_SCRIPTS}",
    "--mode": f"the seed's run mode; {RUN_SCRIPTS}",
    "-mp": "the seed's eval/extraction model; use `audiotune evaluate --run RUN` or `audiotune extract --run RUN`",
    "--finetuned_mdl_path": "the seed's eval/extraction model; use `audiotune evaluate --run RUN` or "
                            "`audiotune extract --run RUN`",
    "--trained_mdl_path": "the seed's eval/extraction model; use `audiotune evaluate --run RUN` or "
                          "`audiotune extract --run RUN`",
    "--lib": "the seed's librosa loading; audiotune has one decoder (soundfile): leave it out",
    "--dataset": "the seed's output file-name stem; a run's outputs are named inside its -o/--exp_dir, "
                 "extract's file by --out FILE",
    "--embedding_type": "the seed's extraction-mode flag; use `audiotune extract --run RUN --embedding_type T`",
    "--new_checkpoint": "the seed's eval-mode flag; `audiotune evaluate --run RUN` rebuilds the encoder from the run",
    "--hp_tuning": "the seed's Vertex AI AUC report; use --hypertune_metric METRIC (e.g. val_auc)",
    "--trim": "the seed's silence trimming (never applied); trim the table's segments (offset, duration) instead",
    # FT-w2v2-ser scripts
    "--saving_path": "the seed's checkpoint folder; use -o/--exp_dir RUN",
    "--output_path": "the seed's output folder; use -o/--exp_dir RUN",
    "--outputfile": "the seed's cross-validation summary file; `audiotune cv` writes cv_summary.json in -o",
    "--outputdir": "the seed's cluster output folder; use `audiotune cluster --out LABELS.parquet`",
    "--labelpath": "the seed's JSON split file; use -d SPLIT.json (-i WAVS/ for its audio folder)",
    "--labeldir": "the seed's folder of fold JSONs; use `audiotune cv -d FOLDS/`",
    "--datadir": "the seed's audio folder of a JSON split; use -i WAVS/ (`audiotune cv` and `audiotune import "
                 "clusters` take it as --audio_dir)",
    "--unsupdatadir": "the seed's extra unlabelled audio; list it in the -d table (or pretrain on -d FOLDER)",
    "--maxseqlen": "the seed's crop in seconds; use --clip_length S (train: from the start), or --max_seconds S "
                   "--clip_length 0 (pretrain: at a random offset)",
    "--pretrained_path": "the seed's TAPT/P-TAPT checkpoint to fine-tune; use -c RUN/encoder",
    "--w2v2_pretrain_path": "the seed's checkpoint to continue; use -c RUN/encoder",
    "--wav2vecpath": "the seed's fairseq wav2vec (v1) checkpoint, not offered; use -c with a Hugging Face encoder",
    "--model_path": "the seed's stage-1 checkpoint; use `audiotune cluster --run RUN`",
    "--model_type": "the seed's wav2vec/wav2vec2 switch; use --model hf -c CHECKPOINT",
    "--resume_checkpoint": "the seed's checkpoint to resume; use --resume (with the same -o/--exp_dir)",
    "--num_exps": "the seed's runs per fold; use `audiotune cv --repeats N`",
    "--num_clusters": "the seed's cluster counts; use `audiotune cluster --num_clusters K ...` (pretrain: "
                      "--pseudo_labels LABELS.parquet)",
    "--use_additional_obj": "the seed's extra cluster heads in TAPT, not offered; use --objective ptapt "
                            "--pseudo_labels LABELS.parquet",
    "--val_bucket_size": "the seed's validation buckets; validation batches are not bucketed here (leave it out)",
    "--distributed": "the seed's DDP switch; several --devices (or --num_nodes) run DDP",
    "--check_val_every_n_epoch": "the seed's validation interval; validation runs every epoch (leave it out)",
    "--valid_split": "the seed's random train/validation share: `audiotune train --valid_split F` (--val_share "
                     "1-F); pretrain validates on --val_share of the clips (10 %), or a Val split, or with "
                     "--val_size 0 on nothing (the seed's 1.0)",
    "--cpu_torchscript": "the seed's TorchScript export; use `audiotune export --run RUN`",
    # tap2key scripts
    "--dir": "tap2key's recording folder; use `audiotune taps detect DIR/01.acoustic/*.wav`",
    "--idx": "tap2key's one recording per call; `audiotune taps detect` takes every recording at once",
    "--sample": "tap2key's tap windows; use `audiotune taps align` (segments) and train on its table",
    "--presplit": "tap2key's test recordings kept apart from the training ones; use `audiotune split TABLE --group "
                  "path --test_subjects RECORDING [...] --stratify label` (whole recordings held out for test)",
    "--test_size": "tap2key's share of the 30 % holdout; use `audiotune split --test_fraction F --val_fraction F`",
    "--encode": "tap2key's feature-extractor pass; audiotune encodes while training (leave it out)",
    "--sample_rate": "tap2key's resampling; use --resample_rate HZ",
    "--prop": "tap2key's share of all data; use --train_fraction F (a stratified share of the training split)",
    "--oversample": "tap2key's oversampling; use --balance oversample",
    "--oversampling": "tap2key's oversampling (its README's spelling); use --balance oversample",
    "--plot_average_channel": "tap2key's channel-mean plot; use --channel_mode mean",
    "--reshape_interleave": "tap2key's channel interleave; use --channel_mode interleave",
    "--reshape_stack": "tap2key's channels end to end; use --channel_mode stack",
    "--reshape_c_style_top": "tap2key's top microphones; use --channel_mode interleave --channel_select 4 5 6 7",
    "--reshape_c_style_bottom": "tap2key's bottom-microphone flag (it ran the top function); use --channel_mode "
                                "interleave --channel_select 0 1 2 3 (bottom) or 4 5 6 7 (what it ran)",
    "--max_absolute": "tap2key's loudest channel per sample; use --channel_mode maxabs",
    "--dataset_dir": "tap2key's encoded dataset; use -d TABLE (or a split folder)",
    "--data_dir": "tap2key's taps folder; use -d TABLE (or a split folder)",
    "--load_dataset": "tap2key's saved-dataset switch; audiotune reads -d every run (leave it out)",
    "--save_te96k": "tap2key's saved test split; `audiotune split --out` writes test.csv",
    "--train_dir96k": "tap2key's saved train split; `audiotune split --out` writes train.csv",
    "--test_dir96k": "tap2key's saved test split; `audiotune split --out` writes test.csv",
    "--oversampled_dir": "tap2key's saved oversampled set; use --balance oversample",
    "--save_96k_all": "tap2key's saved dataset; `audiotune split --out` writes the tables",
    "--save_tr96k": "tap2key's saved train split; `audiotune split --out` writes train.csv",
    "--train": "tap2key's train switch; use `audiotune train`",
    "--early_stop": "tap2key's early stopping; use --patience N (0 = off)",
    "--early_patience": "tap2key's early-stopping patience; use --patience N",
    "--all_data": "named in tap2key's README only; leave it out",
}

# the seeds' spellings of one command's flags that the command does not take: command -> spelling -> replacement
RETIRED_IN_COMMAND: dict[str, dict[str, str]] = {
    # naip-w2v2 data_splits.py: `audiotune table` builds the table, `audiotune split` splits it
    "table": {
        "-o": "the seed's output folder; write the table with --out OUT/table.csv, then `audiotune split "
              "OUT/table.csv --out OUT`",
        "--output_dir": "the seed's output folder; write the table with --out OUT/table.csv, then `audiotune split "
                        "OUT/table.csv --out OUT`",
        "--csv_path": "the seed's existing table; split it with `audiotune split TABLE`",
        "--train_task": "the seed's split by task; use `audiotune split TABLE --train_task T`",
        "--test_task": "the seed's split by task; use `audiotune split TABLE --test_task T`",
        "--split_size": "the seed's speaker counts; use `audiotune split TABLE --split_size TRAIN TEST VAL`",
        "--existing_spk_split": "the seed's test speakers; use `audiotune split TABLE --existing_spk_split SPK.csv`",
        "--debug": "unused by the seed's data_splits.py; leave it out",
    },
    "split": {
        "--csv_path": "the seed's existing table; give it as the argument: `audiotune split TABLE`",
        "--edit_feats": "recodes the scores when the table is built: `audiotune table FOLDER --edit_feats`",
        "--debug": "unused by the seed's data_splits.py; leave it out",
    },
}

BARE = ""  # the value of a (flag, value) entry below that means the flag given alone, as the seed's switch

# (flag, value) -> what the seed meant by that value and what to write here
RETIRED_VALUES: dict[tuple[str, str], str] = {
    ("--dynamic_batch", BARE): "the seed's switch (batches of --batch_size/64 x 250 s of audio); give the "
                               "seconds per batch: --dynamic_batch 250 (the seed's with -bs 64)",
    ("--plot", BARE): "tap2key's switch that drew each recording's taps; give the folder for the PNG files: "
                      "--plot FOLDER",
    ("--labeling_method", "soft"): "the seed's soft drew a class from the votes each time a clip is seen: "
                                   "--labeling_method sample; to train on the vote distribution: "
                                   "--labeling_method distribution",
    ("--dataset_std", "0"): "the seed divided by zero; leave out --dataset_mean/--dataset_std (no normalisation) "
                            "or take them from `audiotune stats`",
    ("--accelerator", "ddp"): "the seed's --accelerator ddp is a strategy here: --strategy ddp (--accelerator is "
                              f"one of {', '.join(ACCELERATORS)})",
}
