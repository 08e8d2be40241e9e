#!/bin/sh
# The issue-5 ablation: omniseg (scale-aware) vs omniseg-task vs multihead, each without and with
# the cross-scale semi-supervised terms, and the dead-head fix (head_init) on or off; same data
# (train split), same settings (src/omniseg/configs/train_default.yaml), same budget in optimiser steps
# (STEPS, default 600), scored once on val at threshold 0.5. Resumable across sessions: rerun
# the script and scored arms are skipped, interrupted ones continue from their last checkpoint
# (every 5 min, and on SIGTERM).
#
#   OMP_NUM_THREADS=2 scripts/ablation.sh            # results: docs/results/ablation/<arm>.json
#
# Several copies may run at once (on a machine with cores to spare): each arm is held under an
# flock(1) lock, so a copy skips the arm another copy is training and takes the next one;
# REVERSE=1 walks the arms in reverse order, so a second copy starts at the other end. On this
# project's 2-core CPU one OMP_NUM_THREADS=2 copy is faster: two 1-thread copies measured 3.6 s
# per supervised step and 15 s per semi step each, against 1.9 s and 5.5 s for one 2-thread copy.
cd "$(dirname "$0")/.." || exit 1
STEPS=${STEPS:-600}
ROOT=${ROOT:-runs/ablation}
RESULTS=docs/results/ablation
mkdir -p "$RESULTS" "$ROOT" || exit 1
# The six arms of the paper's claims, plus the dead-head fix: omniseg without semi terms whose
# generated heads start as PyTorch's default init, as the original's did (suffix -original-head).
ARMS="omniseg-no-semi omniseg-task-no-semi multihead-no-semi omniseg-no-semi-original-head \
omniseg-semi omniseg-task-semi multihead-semi"
case ${REVERSE:-0} in
  0) ;;
  1) reversed=""; for arm in $ARMS; do reversed="$arm $reversed"; done; ARMS=$reversed ;;
  *) echo "REVERSE=$REVERSE: use 0 or 1" >&2; exit 2 ;;
esac

scored() {  # an arm is done when both of its result files exist (evaluate writes them in turn)
  [ -f "$RESULTS/$1.json" ] && [ -f "$RESULTS/$1-per-image.csv" ]
}

run_arm() {  # $1 = arm; trains (or resumes) it, then scores it on val once
  arm=$1
  base=$arm
  head_init=head
  case $arm in
    *-original-head) base=${arm%-original-head}; head_init=default ;;
  esac
  case $base in
    *-no-semi) model=${base%-no-semi}; semi=no-semi ;;
    *-semi) model=${base%-semi}; semi=semi ;;
    *) echo "arm $arm: name must end in -semi or -no-semi" >&2; return 2 ;;
  esac
  out="$ROOT/$arm"
  # model/ is rewritten at every validation, so its presence does not mean the arm is finished:
  # always (re)run train; --resume on a finished run only re-saves its final model.
  resume=""
  [ -f "$out/config.yaml" ] && resume="--resume"
  .venv/bin/omniseg train --data "${DATA:-../shared/data/kidney-patches}" --config src/omniseg/configs/train_default.yaml --model "$model" --set "semi.enabled=$([ "$semi" = semi ] && echo true || echo false)" \
    --set "run.head_init=$head_init" --val-split val --max-steps "$STEPS" --out "$out" --no-progress $resume \
    || { echo "arm $arm failed" >&2; return 1; }
  .venv/bin/omniseg evaluate ../shared/data/kidney-patches --split val --weights "$out/model" \
    --json "$RESULTS/$arm.json" --csv "$RESULTS/$arm-per-image.csv" \
    || { echo "evaluation of $arm failed" >&2; return 1; }
}

failed=0
for arm in $ARMS; do
  scored "$arm" && continue
  (
    flock -n 9 || { echo "arm $arm is held by another copy; skipping it" >&2; exit 0; }
    scored "$arm" && exit 0  # another copy finished it while this one waited for the lock
    run_arm "$arm"
  ) 9>"$ROOT/$arm.lock" || failed=$((failed + 1))
done
[ "$failed" = 0 ] || { echo "$failed arm(s) failed" >&2; exit 1; }
