#!/bin/sh
# Stage 2 of a seed-table arm: fine-tune runs/seeds/<ARM>-s<SEED>/model with
# src/omniseg/configs/finetune_lite0.yaml (foreground-biased crops) and score once on val at 0.5.
#   scripts/stage2_arm.sh ARM SEED [extra train flags...]   -> docs/results/seeds/<ARM>-2stage-s<SEED>.*
# SUFFIX names a variant of stage 2 (e.g. SUFFIX=-semi with --semi -> <ARM>-2stage-semi-s<SEED>).
set -e
cd "$(dirname "$0")/.."
arm=$1; seed=$2; shift 2
init=runs/seeds/$arm-s$seed/model
out=runs/seeds/$arm-2stage${SUFFIX:-}-s$seed
res=docs/results/seeds/$arm-2stage${SUFFIX:-}-s$seed
[ -f "$res.json" ] && [ -f "$res-per-image.csv" ] && exit 0
[ -f "$init/config.json" ] || { echo "$init: run scripts/seed_arm.sh $arm $seed first" >&2; exit 1; }
resume=""
[ -f "$out/config.yaml" ] && resume="--resume"
# stage 2 draws its own crops: seed + 4321 (stage 1 used SEED)
.venv/bin/omniseg train --data "${DATA:-../shared/data/kidney-patches}" --config src/omniseg/configs/finetune_lite0.yaml --init "$init" --val-split val \
  --seed $((seed + 4321)) --out "$out" --no-progress $resume "$@"
.venv/bin/omniseg evaluate ../shared/data/kidney-patches --split val --weights "$out/model" \
  --json "$res.json" --csv "$res-per-image.csv"
