#!/bin/sh
# Reproduce the bundled default model from scratch (CPU; resumable: rerun with --resume).
set -e
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/default}
.venv/bin/omniseg train --config configs/train_default.yaml --out "$OUT" "$@"
