#!/usr/bin/env bash
# naip-w2v2 -> audiotune: split a clinical study by task, fine-tune heads on a frozen wav2vec2, evaluate,
# extract embeddings. The seed's lines were
#   python src/data_splits.py -i PREFIX -s STUDY --edit_feats True --train_task T1 --test_task T2 \
#       --split_size 538 96 50 -o SPLITS
#   python src/run.py -m finetune -c wav2vec2-base-960h -i PREFIX -d SPLITS -l labels.txt -o EXP \
#       --layer 6 --weighted False --freeze True
#   python src/run.py -m eval -mp EXP/..._mdl.pt -d SPLITS/test.csv
#   python src/run.py -m extraction -mp EXP/..._mdl.pt -d SPLITS/test.csv --embedding_type pt
# A tiny wav2vec2 written here stands in for facebook/wav2vec2-base-960h (a hub id works the same way).
# Usage: bash examples/from_seed/naip_w2v2.sh OUT_DIR   (tiny model, one epoch: seconds on a CPU)
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR}
EXAMPLES=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"

echo "== data: the demo clips as a clinical study (PREFIX/STUDY/UID/waveform.wav + metadata.json)"
python "$EXAMPLES/make_clinical_data.py" --out "$OUT/data" --study study1
echo "== encoder: a tiny wav2vec2 folder in place of a hub id"
python "$EXAMPLES/make_tiny_wav2vec2.py" --out "$OUT/tiny-wav2vec2"

echo "== data_splits.py: one table from the metadata.json files, then subjects split by task"
audiotune table "$OUT/data/lake/study1" --out "$OUT/splits/table.csv" --edit_feats
audiotune split "$OUT/splits/table.csv" --out "$OUT/splits" --train_task "Alternating Motion Rate" \
  --test_task "Sentences" --split_size 0 3 2 --seed 0
printf 'distorted Cs,distorted V\n' > "$OUT/labels.txt"

echo "== finetune (run.py -m finetune, the seed's defaults from seeds/naip_w2v2): frozen encoder, hidden state 1"
# --clip_length 1: the recipe pads every shorter clip to --clip_length as the seed did, and this tiny encoder reads
# one frame per 10 samples (wav2vec2-base: per 320), so the seed's 10 s would be 16,000 frames a clip here
audiotune train -c "$OUT/tiny-wav2vec2" -d "$OUT/splits" -l "$OUT/labels.txt" -o "$OUT/exp" \
  --config seeds/naip_w2v2 --layer 1 --weighted False --freeze True -pm mean -bs 16 -lr 1e-3 -e 1 --seed 0 \
  --clip_length 1

echo "== evaluation (run.py -m eval -mp): the saved run, on the test subjects"
audiotune evaluate -mp "$OUT/exp" -d "$OUT/splits/test.csv" -o "$OUT/exp_eval"

echo "== extraction (run.py -m extraction --embedding_type pt): encoder embeddings of the test clips"
audiotune extract -mp "$OUT/exp" -d "$OUT/splits/test.csv" --embedding_type pt --layer 1 -pm mean \
  --out "$OUT/embeddings.parquet"

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
auc = json.loads((out / "exp_eval" / "metrics.json").read_text())["data"]["auc"]
emb = pd.read_parquet(out / "embeddings.parquet")
print(f"naip_w2v2: trained {out / 'exp'}, test AUC " + ", ".join(f"{k} {v:.2f}" for k, v in auc.items())
      + f", {len(emb)} embeddings of {len(emb['embedding'].iloc[0])} dims in {out / 'embeddings.parquet'}")
PY
