#!/bin/sh
# One cross-validation arm on a 2-core CPU: the 5 folds in two one-thread processes (folds 0,2,4
# and 1,3), then `--resume` to write OUT/crossval.json. Resumable: rerun the same line.
#
#   scripts/crossval_arm.sh runs/cv-v4                                   # the shipped recipe
#   scripts/crossval_arm.sh runs/cv-tversky --set loss.fn_weight=0.7     # an arm
#   scripts/crossval_arm.sh runs/cv-student --teacher-folds runs/cv-v4   # completed labels
set -e
cd "$(dirname "$0")/.."
OUT=$1
shift
DATA=${DATA:-../shared/data/kidney-patches}
run() {
  for fold in "$@"; do
    OMP_NUM_THREADS=1 .venv/bin/omniseg train --data "$DATA" --out "$OUT" --folds 5 --fold "$fold" \
      --no-progress --resume $EXTRA
  done
}
EXTRA="$*"
run 0 2 4 &
first=$!
run 1 3
wait $first
OMP_NUM_THREADS=2 .venv/bin/omniseg train --data "$DATA" --out "$OUT" --folds 5 --no-progress --resume $EXTRA
