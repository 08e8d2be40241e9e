#!/bin/sh
# The issue-13 seed table: every arm x every seed through scripts/seed_arm.sh (600 steps of
# src/omniseg/configs/train_default.yaml on the train split, scored on val at 0.5). Resumable.
#   OMP_NUM_THREADS=2 scripts/seed_table.sh            # or ARMS="lite0 lite0-neg" SEEDS="1 2"
cd "$(dirname "$0")/.." || exit 1
SEEDS=${SEEDS:-"1234 1 2"}
ARMS=${ARMS:-"omniseg lite0 lite0-neg lite0-random"}
failed=0
for seed in $SEEDS; do
  for arm in $ARMS; do
    case $arm in
      omniseg) flags="--model omniseg --set semi.enabled=false --set run.head_init=head" ;;
      lite0) flags="--model omniseg-lite0 --set semi.enabled=false" ;;
      lite0-neg) flags="--model omniseg-lite0 --set semi.enabled=false --set data.negatives=0.25" ;;
      lite0-leaky) flags="--model omniseg-lite0 --set semi.enabled=false --set run.head_activation=leaky_relu" ;;
      # random init: BatchNorm statistics and the encoder learn like the rest (nothing to keep)
      lite0-random) flags="--model omniseg-lite0 --set semi.enabled=false --set run.pretrained_encoder=false \
--set finetune.freeze_norm_stats=false --set finetune.encoder_lr_scale=1.0" ;;
      *) echo "unknown arm $arm" >&2; exit 2 ;;
    esac
    # shellcheck disable=SC2086
    scripts/seed_arm.sh "$arm" "$seed" $flags || failed=$((failed + 1))
  done
done
[ "$failed" = 0 ] || { echo "$failed run(s) failed" >&2; exit 1; }
