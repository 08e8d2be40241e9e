#!/bin/sh
# Reproduce the bundled default model (omniseg-lite0 recipe of issue 13) on CPU, in two stages
# (each resumable: rerun with --resume). Stage 1: src/omniseg/configs/train_lite0.yaml (600 steps of random
# 128 px crops from the ImageNet-pretrained encoder); stage 2: src/omniseg/configs/finetune_lite0.yaml (600
# steps fine-tuning stage 1 with foreground-biased crops).
#
#   scripts/train_default.sh                         # the shipped model: all 88 patches (runs/all, runs/all-ft)
#   VAL_SPLIT=val OUT=runs/default scripts/train_default.sh   # the evaluation model: train split
#                                                    # only, scored on val in docs/model-card.md
set -e
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/all}
VAL_SPLIT=${VAL_SPLIT:-none}
.venv/bin/omniseg train --data "${DATA:-../shared/data/kidney-patches}" --config src/omniseg/configs/train_lite0.yaml --out "$OUT" --val-split "$VAL_SPLIT" "$@"
.venv/bin/omniseg train --data "${DATA:-../shared/data/kidney-patches}" --config src/omniseg/configs/finetune_lite0.yaml --init "$OUT/model" --out "$OUT-ft" \
  --val-split "$VAL_SPLIT" "$@"
echo "bundle with: .venv/bin/python scripts/bundle_default.py $OUT-ft/model"
