#!/bin/sh
# The issue-5 ablation: omniseg (scale-aware) vs omniseg-task vs multihead, each without and with
# the cross-scale semi-supervised terms; same data (train split), same settings
# (configs/train_default.yaml), same budget in optimiser steps (STEPS, default 600), scored once on
# val at threshold 0.5. Resumable across sessions: rerun the script and finished arms are skipped,
# interrupted ones continue from their last checkpoint (every 5 min).
#
#   OMP_NUM_THREADS=2 scripts/ablation.sh            # results: docs/results/ablation/<arm>.json
cd "$(dirname "$0")/.."
STEPS=${STEPS:-600}
ROOT=${ROOT:-runs/ablation}
mkdir -p docs/results/ablation
for semi in no-semi semi; do
  for model in omniseg omniseg-task multihead; do
    arm="$model-$semi"
    out="$ROOT/$arm"
    if [ ! -f "$out/model/model.safetensors" ]; then
      resume=""
      [ -f "$out/config.yaml" ] && resume="--resume"
      .venv/bin/omniseg train --config configs/train_default.yaml --model "$model" "--$semi" \
        --val-split val --max-steps "$STEPS" --out "$out" --no-progress $resume \
        || { echo "arm $arm failed" >&2; continue; }
    fi
    if [ ! -f "docs/results/ablation/$arm.json" ]; then
      .venv/bin/omniseg evaluate ../shared/data/kidney-patches --split val --weights "$out/model" \
        --json "docs/results/ablation/$arm.json" --csv "docs/results/ablation/$arm-per-image.csv" \
        || echo "evaluation of $arm failed" >&2
    fi
  done
done
