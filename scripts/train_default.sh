#!/bin/sh
# Reproduce the bundled default model from scratch on CPU, in two stages (each resumable: rerun
# with --resume). Stage 1: 1200 steps of random 128 px crops; stage 2: 1000 steps fine-tuning
# stage 1 with foreground-biased crops. Both train on the manifest's train split only.
set -e
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/default}
.venv/bin/omniseg train --config configs/train_default.yaml --out "$OUT" "$@"
.venv/bin/omniseg train --config configs/finetune_default.yaml --init "$OUT/model" --out "$OUT-ft" "$@"
