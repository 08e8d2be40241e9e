"""Paired bootstrap of mean-over-tasks Dice between two scorings of the SAME images (JSON out).

    .venv/bin/python scripts/paired_difference.py A-per-image.csv B-per-image.csv \
        [--metric dice] [--resamples 10000] [--seed 0] [--tolerance 0.01]

A and B are `omniseg evaluate --csv` files: two models, or one model at two settings (e.g. its
tuned thresholds vs `--thresholds 0.5`). Prints the observed difference A - B, its 95% interval,
the same over the tasks with more than one image, and a verdict ("A better" only when both
intervals lie above zero, "B better" when both lie below). With --tolerance T it also gives the
per-task means and says whether |A - B| of the mean over tasks is <= T (a reproduction check).
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


def _per_task(sa: dict, sb: dict) -> dict:
    """task -> mean of A, mean of B, A - B (paired_mean_difference has checked the images match)."""
    out = {}
    for task, by_image in sorted(sa.items()):
        mean_a = sum(by_image.values()) / len(by_image)
        mean_b = sum(sb[task].values()) / len(sb[task])
        out[task] = {"n": len(by_image), "a": mean_a, "b": mean_b, "difference": mean_a - mean_b}
    return out


def compare(
    a: Path, b: Path, metric: str, resamples: int, seed: int, tolerance: float | None = None
) -> dict:
    sa, sb = _scores(a, metric), _scores(b, metric)
    every = paired_mean_difference(sa, sb, resamples, seed)
    several = paired_mean_difference(
        tasks_with_several_images(sa), tasks_with_several_images(sb), resamples, seed
    )
    lows, highs = (every["ci"][0], several["ci"][0]), (every["ci"][1], several["ci"][1])
    verdict = "A better" if min(lows) > 0 else ("B better" if max(highs) < 0 else "not resolved")
    result = {"a": str(a), "b": str(b), "metric": metric, "verdict": verdict, **every,
              "without_one_image_tasks": several}  # fmt: skip
    if tolerance is not None:
        result["tasks"] = _per_task(sa, sb)
        result["tolerance"] = tolerance
        result["within_tolerance"] = abs(every["difference"]) <= tolerance
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--metric", default="dice", help="dice or dice_bg_inclusive (CSV column)")
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--tolerance", type=float, default=None, help="report |A - B| <= T and per-task means"
    )
    args = ap.parse_args()
    result = compare(args.a, args.b, args.metric, args.resamples, args.seed, args.tolerance)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
