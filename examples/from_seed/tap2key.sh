#!/usr/bin/env bash
# tap2key -> audiotune: find the taps in long 8-channel recordings, pair them with the touch sensor's log,
# split, fine-tune a wav2vec2 on the interleaved channels, evaluate. The seed's lines were
#   python3 WavPreprocess.py --dir D --idx N --latency -0.14 --peak_height H --plot            (one recording)
#   python3 WavPreprocess.py --dir D --idx N --latency -0.14 --selectivity 0.134 --sample
#   python create_dataset.py --all_data --sample_rate 16_000 --reshape_interleave --oversample
#   python3 Wav2Vec2_tap2key.py --oversample --train --early_stop
#   predict_model_conf_matrix.py
# The recordings are synthetic (examples/make_tap_data.py: clicks through a synthetic room response, a touch
# log with latency -0.14 s, jitter, missed and spurious touches); a tiny wav2vec2 written here stands in for
# facebook/wav2vec2-base (a hub id works the same way).
# Usage: bash examples/from_seed/tap2key.sh OUT_DIR   (tiny model, one epoch: about two minutes on 2 CPU cores)
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR}
EXAMPLES=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"

echo "== data: 8-channel 96 kHz tap recordings (01.acoustic/) and the neonode touch log (02.neonode/)"
python "$EXAMPLES/make_tap_data.py" --out "$OUT/recordings" --recordings 4 --seconds 30 --gap 0.25 0.4 --seed 0
echo "== encoder: a tiny wav2vec2 folder in place of facebook/wav2vec2-base"
python "$EXAMPLES/make_tiny_wav2vec2.py" --out "$OUT/tiny-wav2vec2"

echo "== WavPreprocess.py --plot: the taps of every recording at once (high-passed channel mean, peaks)"
audiotune taps detect "$OUT"/recordings/01.acoustic/*.wav --out "$OUT/taps/taps.csv" --plot "$OUT/taps/plots"
echo "== WavPreprocess.py --sample: taps paired one to one with the logged touches, labelled by key"
audiotune taps align "$OUT/taps/taps.csv" --touch_log "$OUT"/recordings/02.neonode/*_nnode.csv \
  --keys "$OUT/recordings/keys.csv" --latency -0.14 --selectivity 0.1 --out "$OUT/taps/segments.csv"

echo "== create_dataset.py: a stratified 70/15/15 split, every tap its own group"
audiotune split "$OUT/taps/segments.csv" --out "$OUT/taps/split" --group uid --stratify label \
  --test_fraction 0.15 --val_fraction 0.15 --seed 0
echo label > "$OUT/taps/labels.txt"

echo "== Wav2Vec2_tap2key.py --oversample --train --early_stop: interleaved channels at 16 kHz, fine-tuned"
# the seeds/tap2key recipe: the whole wav2vec2 fine-tuned with its projector 256 -> mean -> linear head, AdamW 3e-5
# without weight decay, batches of 64 x 4, the best epoch by weighted F1; here one epoch
audiotune train --config seeds/tap2key -c "$OUT/tiny-wav2vec2" -d "$OUT/taps/split" -l "$OUT/taps/labels.txt" \
  -o "$OUT/tap2key" --balance oversample --patience 16 -e 1 --seed 0

echo "== predict_model_conf_matrix.py: the held-out taps, with the report and confusion matrix"
audiotune evaluate --run "$OUT/tap2key" -d "$OUT/taps/split/test.csv" -o "$OUT/tap2key_eval"

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
report = json.loads((out / "taps" / "segments.report.json").read_text())
metrics = json.loads((out / "tap2key_eval" / "metrics.json").read_text())["data"]
plots = sorted(p.name for p in (out / "tap2key_eval" / "plots").glob("confusion_*.png"))
print(f"tap2key: {sum(1 for _ in open(out / 'taps' / 'segments.csv')) - 1} labelled taps; test weighted-F1 "
      f"{metrics['weighted_f1']:.3f} on {metrics['n']} taps; confusion matrix {plots[0]} in {out / 'tap2key_eval'}")
PY
