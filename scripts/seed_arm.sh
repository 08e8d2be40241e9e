#!/bin/sh
# One arm of the issue-13 seed comparison: train on the train split with src/omniseg/configs/train_default.yaml
# for STEPS steps (default 600) with one seed, then score once on val at threshold 0.5.
#   scripts/seed_arm.sh ARM SEED [extra train flags...]
# ARM names the result files: docs/results/seeds/<ARM>-s<SEED>.json and -per-image.csv.
# Resumable: a scored arm is skipped; an interrupted one continues from its last checkpoint.
set -e
cd "$(dirname "$0")/.."
arm=$1; seed=$2; shift 2
STEPS=${STEPS:-600}
CONFIG=${CONFIG:-src/omniseg/configs/train_default.yaml}
out=runs/seeds/$arm-s$seed
res=docs/results/seeds/$arm-s$seed
mkdir -p runs/seeds docs/results/seeds
[ -f "$res.json" ] && [ -f "$res-per-image.csv" ] && exit 0
resume=""
[ -f "$out/config.yaml" ] && resume="--resume"
.venv/bin/omniseg train --data "${DATA:-../shared/data/kidney-patches}" --config "$CONFIG" --val-split val --max-steps "$STEPS" --seed "$seed" \
  --out "$out" --no-progress $resume "$@"
.venv/bin/omniseg evaluate ../shared/data/kidney-patches --split val --weights "$out/model" \
  --json "$res.json" --csv "$res-per-image.csv"
