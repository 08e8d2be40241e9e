#!/bin/sh
# Cross-task false positives (scripts/cross_task_fp.py, val split) of every seed-table model in
# runs/seeds/: docs/results/cross-task/<run>.json. Skips runs already scored.
cd "$(dirname "$0")/.." || exit 1
mkdir -p docs/results/cross-task
for model in runs/seeds/*/model; do
  run=$(basename "$(dirname "$model")")
  out=docs/results/cross-task/$run.json
  [ -f "$out" ] && continue
  [ -f "docs/results/seeds/$run.json" ] || continue  # not finished and scored yet
  .venv/bin/python scripts/cross_task_fp.py "$model" --split val --json "$out" > /dev/null || exit 1
done
