"""Paired bootstrap of mean-over-tasks Dice between two scorings of the SAME images (JSON out).

    .venv/bin/python scripts/paired_difference.py A-per-image.csv B-per-image.csv \
        [--metric dice] [--resamples 10000] [--seed 0]

A and B are `omniseg evaluate --csv` files: two models, or one model at two settings (e.g. its
tuned thresholds vs `--thresholds 0.5`). Prints the observed difference A - B, its 95% interval,
the same over the tasks with more than one image, and a verdict ("A better" only when both
intervals lie above zero, "B better" when both lie below).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from omniseg.evaluation.bootstrap import (
    paired_mean_difference,
    scores_from_rows,
    tasks_with_several_images,
)


def _scores(path: Path, metric: str) -> dict:
    with path.open(newline="") as fh:
        return scores_from_rows(list(csv.DictReader(fh)), metric=metric, source=str(path))


def compare(a: Path, b: Path, metric: str, resamples: int, seed: int) -> dict:
    sa, sb = _scores(a, metric), _scores(b, metric)
    every = paired_mean_difference(sa, sb, resamples, seed)
    several = paired_mean_difference(
        tasks_with_several_images(sa), tasks_with_several_images(sb), resamples, seed
    )
    lows, highs = (every["ci"][0], several["ci"][0]), (every["ci"][1], several["ci"][1])
    verdict = "A better" if min(lows) > 0 else ("B better" if max(highs) < 0 else "not resolved")
    return {"a": str(a), "b": str(b), "metric": metric, "verdict": verdict, **every,
            "without_one_image_tasks": several}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--metric", default="dice", help="dice or dice_bg_inclusive (CSV column)")
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(compare(args.a, args.b, args.metric, args.resamples, args.seed), indent=2))


if __name__ == "__main__":
    main()
