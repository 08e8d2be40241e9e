#!/bin/sh
# Issue 5: are per-task thresholds chosen WITHOUT val worth shipping? Trains stage 1 of the
# recipe (src/omniseg/configs/train_default.yaml, the ablation's 600-step budget) on the train split minus
# the rows data.threshold_holdout=0.25 holds back (stratified by task and stain, at least one per
# group: 22 of the 68 train rows), tunes the thresholds on those rows, then scores val once at
# the tuned thresholds and once at 0.5, and compares the two on the same images (paired
# bootstrap). select_best is false in that config, so val chooses nothing. Resumable.
#
#   OMP_NUM_THREADS=2 scripts/threshold_holdout.sh   # results: docs/results/threshold-holdout/
cd "$(dirname "$0")/.." || exit 1
STEPS=${STEPS:-600}
OUT=${OUT:-runs/threshold-holdout}
RESULTS=${RESULTS:-docs/results/threshold-holdout}
DATA=../shared/data/kidney-patches
mkdir -p "$RESULTS" || exit 1
resume=""
[ -f "$OUT/config.yaml" ] && resume="--resume"
.venv/bin/omniseg train --data "${DATA:-../shared/data/kidney-patches}" --config src/omniseg/configs/train_default.yaml --val-split val \
  --set data.threshold_holdout=0.25 --set run.tune_thresholds=true --max-steps "$STEPS" --out "$OUT" --no-progress $resume || exit 1
for mode in tuned at-0.5; do
  extra=""
  [ "$mode" = at-0.5 ] && extra="--thresholds 0.5"
  .venv/bin/omniseg evaluate "$DATA" --split val --weights "$OUT/model" --bootstrap 10000 \
    --json "$RESULTS/$mode.json" --csv "$RESULTS/$mode-per-image.csv" $extra || exit 1
done
.venv/bin/python scripts/paired_difference.py "$RESULTS/tuned-per-image.csv" \
  "$RESULTS/at-0.5-per-image.csv" > "$RESULTS/tuned-vs-0.5.json.tmp" &&
  mv "$RESULTS/tuned-vs-0.5.json.tmp" "$RESULTS/tuned-vs-0.5.json" || exit 1
cat "$RESULTS/tuned-vs-0.5.json"
