#!/usr/bin/env bash
# End-to-end demo on the shipped spoken-word clips (examples/demo_data): manifest → split → train an
# ECAPA-TDNN from scratch → evaluate on held-out speakers → extract embeddings. Runs offline on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
START=$SECONDS
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1. manifest from file names"
audiotune manifest examples/demo_data/audio --out "$OUT/manifest.csv" \
  --pattern '(?P<word>[a-z]+)_(?P<subject>[a-z]+)_\d+\.wav'

echo "== 2. speaker-disjoint split (test: kirk, lena; validation: ivor, juno)"
audiotune split "$OUT/manifest.csv" --out "$OUT/split" --test_subjects kirk lena --val_subjects ivor juno
echo "word" > "$OUT/labels.txt"

echo "== 3. train a small ECAPA-TDNN from scratch on 40-bin fbank features"
audiotune train -d "$OUT/split" -l "$OUT/labels.txt" -o "$OUT/run" --model ecapa_tdnn \
  --features fbank --num_mel_bins 40 --clip_length 1.0 \
  --channels 64 64 64 192 --kernel_sizes 5 3 3 1 --dilations 1 2 3 1 \
  --attention_channels 32 --se_channels 32 --res2net_scale 4 --lin_neurons 64 \
  --clf_bottleneck 64 --final_dropout 0.1 \
  --gain 0.5 --gauss 0.3 --timem 10 --freqm 4 \
  --epochs 20 --batch_size 16 --learning_rate 2e-3 --scheduler cosine --warmup_steps 20 --seed 0

echo "== 4. evaluate the saved run on the held-out speakers"
audiotune evaluate --run "$OUT/run" -d "$OUT/split/test.csv" -o "$OUT/evaluate"

echo "== 5. extract 64-d ECAPA embeddings"
audiotune extract --run "$OUT/run" -d "$OUT/split/test.csv" --embedding_type pt --out "$OUT/embeddings.parquet"

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
metrics = json.loads((out / "evaluate" / "metrics.json").read_text())["data"]
emb = pd.read_parquet(out / "embeddings.parquet")
print(f"\nheld-out speakers: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
      f"UAR {metrics['uar']:.3f} on {metrics['n']} clips (chance 0.200)")
print(f"embeddings: {len(emb)} rows x {len(emb['embedding'].iloc[0])} dims -> {out / 'embeddings.parquet'}")
print(f"run directory: {out / 'run'} (config.yaml, model.safetensors, metrics.json, predictions.parquet, plots/)")
PY
echo "demo finished in $((SECONDS - START)) s"
cat <<NEXT

next: your own audio. In a new shell, from this folder:
  . .venv/bin/activate
  audiotune manifest YOUR_AUDIO_FOLDER --out data/manifest.csv --pattern '(?P<label>[a-z]+)_(?P<subject>[a-z]+)_\d+\.wav'
then README.md, "Quickstart" (split, train, evaluate); every command: audiotune COMMAND --help
NEXT
