"""Paired per-image difference of one task's Dice between two scorings of the SAME images
(e.g. two cross-validation arms' out-of-fold CSVs), with a percentile bootstrap interval.

    .venv/bin/python scripts/paired_task_difference.py A.csv B.csv --task ptc [--json OUT]

Prints (and writes) the mean of each, the mean difference A - B, its 95% interval over images,
and every image's pair. Used for issue 33: PTC at 20x (A) against PTC at 40x (B).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def paired(a_csv: Path, b_csv: Path, task: str, resamples: int, seed: int) -> dict:
    def rows(path: Path) -> dict[str, float]:
        with path.open(newline="") as fh:
            return {r["image"]: float(r["dice"]) for r in csv.DictReader(fh) if r["task"] == task}

    a, b = rows(a_csv), rows(b_csv)
    images = sorted(set(a) & set(b))
    if not images or set(a) != set(b):
        raise SystemExit(f"the two files must score the same {task} images")
    diff = np.array([a[i] - b[i] for i in images])
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {
        "task": task, "images": len(images), "a": str(a_csv), "b": str(b_csv),
        "mean_a": float(np.mean([a[i] for i in images])),
        "mean_b": float(np.mean([b[i] for i in images])),
        "mean_difference": float(diff.mean()), "ci95": [float(low), float(high)],
        "a_better_images": int((diff > 0).sum()), "b_better_images": int((diff < 0).sum()),
        "pairs": [{"image": i, "a": a[i], "b": b[i]} for i in images],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--task", required=True)
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = paired(args.a, args.b, args.task, args.resamples, args.seed)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
