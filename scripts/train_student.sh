#!/bin/sh
# The student arm of issue 31 (docs/model-card.md: measured, NOT shipped), on CPU:
# 1. the shipped two-stage recipe (packaged configs), 5-fold cross-validated on the 88 patches:
#    the CV table's baseline, and the five teacher models ($TEACHERS/fold-i/model);
# 2. the five teachers, averaged, label every patch for capsule and tuft wherever it carries no
#    label of them (omniseg complete-labels --tasks capsule,tuft): the glomerulus heads learn what
#    is NOT a glomerulus from tubule, artery and capillary patches;
# 3. the same two-stage recipe on all 88 real patches plus those labels -> $OUT/model.
# Every step resumes: rerun the same line to continue after a stop.
#
#   scripts/train_student.sh                  # runs/cv-v4 (teachers), runs/student-patches, runs/student
set -e
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/kidney-patches}
OUT=${OUT:-runs/student}
TEACHERS=${TEACHERS:-runs/cv-v4}
DATA=$DATA scripts/crossval_arm.sh "$TEACHERS"
if [ ! -f "$OUT-patches/completion.json" ]; then
  .venv/bin/omniseg complete-labels "$DATA" --tasks capsule,tuft -o "$OUT-patches" --overwrite \
    --teacher "$TEACHERS/fold-0/model" --teacher "$TEACHERS/fold-1/model" \
    --teacher "$TEACHERS/fold-2/model" --teacher "$TEACHERS/fold-3/model" \
    --teacher "$TEACHERS/fold-4/model"
fi
.venv/bin/omniseg train --data "$OUT-patches" --out "$OUT" --val-split none "$@"
echo "model folder: $OUT/model"
