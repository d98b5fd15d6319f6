#!/usr/bin/env bash
# FT-w2v2-ser -> audiotune: V-FT, TAPT and P-TAPT on session folds, each scored by cross-validation.
# The seed's lines were
#   run_downstream_custom_multiple_fold.py --labeldir FOLDS/ --datadir WAVS/ --num_exps N        (V-FT)
#   run_baseline_continueFT.py --datadir WAVS/ --labelpath FOLD.json --training_step S ...        (TAPT)
#   run_pretrain.py ..., cluster.py --num_clusters 64,512,4096, run_second.py ...                 (P-TAPT)
#   run_downstream_custom_multiple_fold.py ... --pretrained_path CKPT                         (fine-tune them)
# A tiny wav2vec2 written here stands in for facebook/wav2vec2-base (a hub id works the same way); the sizes
# (steps, clusters, masks, batch) are shrunk to it; the rest comes from the shipped seeds/ser_* recipes.
# Usage: bash examples/from_seed/ser_w2v2.sh OUT_DIR   (tiny model, one epoch per run: a few minutes on a CPU)
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR}
EXAMPLES=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"

echo "== data: utterances of three sessions and the seed's fold files (one session tested, \"Val\" empty)"
python "$EXAMPLES/make_emotion_data.py" --out "$OUT/data" --takes 1
echo "== encoder: a tiny wav2vec2 folder (quantizer included) in place of facebook/wav2vec2-base"
python "$EXAMPLES/make_tiny_wav2vec2.py" --out "$OUT/tiny-wav2vec2"
WAVS="$OUT/data/Audio_16k"
FOLDS="$OUT/data/labels"
# the seed's V-FT on its fold files (the seeds/ser_vft recipe): CNN + projection frozen, masks on the projected
# features while training, class-weighted CE, a linear head, test clips whole, the last epoch kept (the folds' Val
# is empty); mask_feature_length 64 of the seed is wider than the tiny encoder (32)
VFT="--config seeds/ser_vft --mask_feature_length 8 -e 1 --num_workers 0"

echo "== V-FT (run_downstream_custom_multiple_fold.py): fine-tune on every fold"
audiotune cv $VFT -c "$OUT/tiny-wav2vec2" -d "$FOLDS" --audio_dir "$WAVS" -o "$OUT/vft" --repeats 1

# the seed pretrained its TAPT and P-TAPT encoders once per held-out session (run_exp_iemocap*.sh ... label_K.json),
# each on that fold's Train part only: here a loop over the fold files, then one cv whose -c names each fold's encoder
# ({fold}: the fold's name, fold_1, fold_2, ... in the order of the fold files); cv refuses an encoder that
# pretrained on its fold's test clips
echo "== TAPT (run_baseline_continueFT.py, per fold): wav2vec2's own objective on each fold's Train audio"
for k in 1 2 3; do
  audiotune pretrain --config seeds/ser_tapt -c "$OUT/tiny-wav2vec2" -d "$FOLDS/fold$k.json" -i "$WAVS" \
    -o "$OUT/tapt_fold_$k" --training_steps 4 --warmup_steps 1 -bs 16 --seed 0
done
echo "== TAPT fine-tuning: every fold from its own encoder"
audiotune cv $VFT -c "$OUT/tapt_{fold}/encoder" -d "$FOLDS" --audio_dir "$WAVS" -o "$OUT/tapt_ft" --repeats 1

for k in 1 2 3; do
  echo "== P-TAPT stage 1 (run_pretrain.py), fold $k: a classifier on its Train part, validated on 8 drawn utterances"
  audiotune train --config seeds/ser_vft --monitor uar -c "$OUT/tiny-wav2vec2" --mask_feature_length 8 -e 1 \
    -d "$FOLDS/fold$k.json" -i "$WAVS" -o "$OUT/stage1_fold_$k" --val_size 8 --seed 0
  echo "== P-TAPT clustering (cluster.py --num_clusters), fold $k: k-means labels of its frames, fitted on Train"
  audiotune cluster --run "$OUT/stage1_fold_$k" --layer -1 -d "$FOLDS/fold$k.json" -i "$WAVS" \
    --num_clusters 8 32 --sample_ratio 1.0 --out "$OUT/labels_fold_$k.parquet"
  echo "== P-TAPT stage 2 (run_second.py), fold $k: predict the clusters of masked frames"
  audiotune pretrain --config seeds/ser_ptapt -c "$OUT/tiny-wav2vec2" --pseudo_labels "$OUT/labels_fold_$k.parquet" \
    -d "$FOLDS/fold$k.json" -i "$WAVS" -o "$OUT/ptapt_fold_$k" --training_steps 4 --warmup_steps 1 \
    --dynamic_batch 5 --seed 0
done
echo "== P-TAPT fine-tuning: every fold from its own encoder"
audiotune cv $VFT -c "$OUT/ptapt_{fold}/encoder" -d "$FOLDS" --audio_dir "$WAVS" -o "$OUT/ptapt_ft" --repeats 1

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
uar = {name: json.loads((out / run / "cv_summary.json").read_text())["statistics"]["test"]["uar"]["mean"]
       for name, run in (("V-FT", "vft"), ("TAPT", "tapt_ft"), ("P-TAPT", "ptapt_ft"))}
print("ser_w2v2: 3-fold test UAR " + ", ".join(f"{k} {v:.3f}" for k, v in uar.items())
      + f" (chance 0.250); summaries in {out}/{{vft,tapt_ft,ptapt_ft}}/cv_summary.json")
PY
