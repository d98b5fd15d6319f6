#!/usr/bin/env bash
# naip-ssast -> audiotune: pretrain an SSAST without labels, fine-tune it on a clinical study, evaluate,
# extract embeddings. The seed's lines were
#   python src/run.py -m train --task pretrain_joint --mask_patch 400 -i PREFIX -s STUDY -d SPLITS -l labels.txt ...
#   python src/run.py -m train --task ft_cls --pretrained_mdl_path SSAST-Base-Frame-400.pth --fstride 128 \
#       --tstride 1 -i PREFIX -s STUDY -d SPLITS -l labels.txt -o EXP
#   python src/run.py -m eval --trained_mdl_path EXP/..._mdl.pt -d SPLITS/test.csv
#   python src/run.py -m extraction --trained_mdl_path EXP/..._mdl.pt -d SPLITS/test.csv --embedding_type pt
# Here a tiny patch model (32 mel bins x 64 frames, 16x16 patches) stands in for SSAST-Base.
# Usage: bash examples/from_seed/naip_ssast.sh OUT_DIR   (tiny model, one epoch each: seconds on a CPU)
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR}
EXAMPLES=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
SHAPE="--model_size tiny --num_mel_bins 32 --target_length 64 --fshape 16 --tshape 16 --fstride 16 --tstride 16"

echo "== data: the demo clips as a clinical study (PREFIX/STUDY/UID/waveform.wav + metadata.json), split CSVs"
python "$EXAMPLES/make_clinical_data.py" --out "$OUT/data" --study study1

echo "== pretrain (run.py -m train --task pretrain_joint): masked patches, no labels needed"
audiotune pretrain -i "$OUT/data/lake" -s study1 -d "$OUT/data/splits" -o "$OUT/pretrain" $SHAPE \
  --task pretrain_joint --mask_patch 3 --cluster_factor 2 -e 1 -bs 16 -lr 1e-3 --seed 0

echo "== fine-tune (run.py -m train --task ft_cls; the seed's defaults: seeds/naip_ssast): from the pretraining"
audiotune train --config seeds/naip_ssast -i "$OUT/data/lake" -s study1 -d "$OUT/data/splits" \
  -l "$OUT/data/labels.txt" -o "$OUT/exp" $SHAPE --task ft_cls \
  --pretrained_mdl_path "$OUT/pretrain/ssast_original.pth" --freeze False -e 1 -bs 16 \
  --clf_bottleneck 16 --seed 0   # the recipe's onecycle schedule sets the rate (--max_lr): no -lr

echo "== eval (run.py -m eval --trained_mdl_path): the saved run, on the test split"
audiotune evaluate --trained_mdl_path "$OUT/exp" -i "$OUT/data/lake" -s study1 -d "$OUT/data/splits/test.csv" \
  -o "$OUT/exp_eval"

echo "== extraction (run.py -m extraction --embedding_type pt): the class tokens of the last layer"
audiotune extract --trained_mdl_path "$OUT/exp" -i "$OUT/data/lake" -s study1 -d "$OUT/data/splits/test.csv" \
  --embedding_type pt --out "$OUT/embeddings.parquet"

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
pre = json.loads((out / "pretrain" / "metrics.json").read_text())
auc = json.loads((out / "exp_eval" / "metrics.json").read_text())["data"]["auc"]
emb = pd.read_parquet(out / "embeddings.parquet")
print(f"naip_ssast: pretrained {out / 'pretrain'} ({pre['task']}), fine-tuned {out / 'exp'}, test AUC "
      + ", ".join(f"{k} {v:.2f}" for k, v in auc.items())
      + f", {len(emb)} embeddings of {len(emb['embedding'].iloc[0])} dims")
PY
