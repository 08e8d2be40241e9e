#!/bin/sh
# Reproduce the bundled default model (omniseg-kidney-v5, docs/model-card.md) on CPU: bare
# `omniseg train` runs its recipe, the two packaged stages (src/omniseg/configs/train_lite0.yaml:
# 1,200 steps of random 128 px crops from the ImageNet encoder; finetune_lite0.yaml: 1,200 steps
# from stage 1 with foreground-biased crops; each saves an EMA of its weights, decay 0.999), on
# all 88 patches. Resumable: rerun with --resume. (v5 was trained with the then-packaged 600-step
# configs plus --max-steps 1200 --set run.ema_decay=0.999: the same settings.)
#
#   scripts/train_default.sh                  # runs/all/stage-1, runs/all/stage-2, runs/all/model
set -e
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/all}
.venv/bin/omniseg train --data "${DATA:-../shared/data/kidney-patches}" --out "$OUT" --val-split none "$@"
echo "bundle with: .venv/bin/python scripts/bundle_default.py $OUT/model"
