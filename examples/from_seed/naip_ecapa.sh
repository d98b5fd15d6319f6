#!/usr/bin/env bash
# naip-ecapa-tdnn -> audiotune: train an ECAPA-TDNN from scratch on the seed's PREFIX/STUDY/UID layout,
# evaluate it, extract embeddings. The seed's lines were
#   python src/run.py -m train -i PREFIX -s STUDY -d SPLITS -l labels.txt -o EXP --fbank True --n_mels 80 ...
#   python src/run.py -m eval --trained_mdl_path EXP/..._mdl.pt -d SPLITS/test.csv
#   python src/run.py -m extraction --trained_mdl_path EXP/..._mdl.pt -d SPLITS/test.csv --embedding_type pt
# Usage: bash examples/from_seed/naip_ecapa.sh OUT_DIR   (tiny model, one epoch: seconds on a CPU)
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR}
EXAMPLES=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"

echo "== data: the demo clips as a clinical study (PREFIX/STUDY/UID/waveform.wav + metadata.json), split CSVs"
python "$EXAMPLES/make_clinical_data.py" --out "$OUT/data" --study study1

echo "== train (run.py -m train): the seed's flags; a small ECAPA-TDNN, 24 fbank bins, one epoch"
audiotune train -i "$OUT/data/lake" -s study1 -d "$OUT/data/splits" -l "$OUT/data/labels.txt" -o "$OUT/exp" \
  --fbank True --n_mels 24 --clip_length 1.0 -bs 16 -lr 1e-3 -e 1 --optim adamw --seed 0 \
  --channels 16 16 48 --kernel_sizes 5 3 1 --dilations 1 2 1 --attention_channels 8 --se_channels 8 \
  --res2net_scale 2 --lin_neurons 16 --clf_bottleneck 16

echo "== evaluate (run.py -m eval --trained_mdl_path): the saved weights, on the test split"
audiotune evaluate --trained_mdl_path "$OUT/exp/model.safetensors" -i "$OUT/data/lake" -s study1 \
  -d "$OUT/data/splits/test.csv" -o "$OUT/exp_eval"

echo "== extract (run.py -m extraction --embedding_type pt): ECAPA embeddings of the test clips"
audiotune extract --trained_mdl_path "$OUT/exp" -i "$OUT/data/lake" -s study1 -d "$OUT/data/splits/test.csv" \
  --embedding_type pt --out "$OUT/embeddings.parquet"

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
auc = json.loads((out / "exp_eval" / "metrics.json").read_text())["data"]["auc"]
emb = pd.read_parquet(out / "embeddings.parquet")
print(f"naip_ecapa: trained {out / 'exp'}, test AUC " + ", ".join(f"{k} {v:.2f}" for k, v in auc.items())
      + f", {len(emb)} embeddings of {len(emb['embedding'].iloc[0])} dims in {out / 'embeddings.parquet'}")
PY
