"""Bootstrap 95% intervals of per-task mean fg Dice from `omniseg evaluate --csv` output.

    .venv/bin/python scripts/bootstrap_ci.py per_image.csv [--resamples 10000] [--seed 0]

Images are resampled with replacement within each task (a task with one image gets a
zero-width interval: say so when reporting it).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv")
    ap.add_argument("--metric", default="dice")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    by_task: dict[str, list[float]] = defaultdict(list)
    with open(args.csv, newline="") as fh:
        for row in csv.DictReader(fh):
            by_task[row["task"]].append(float(row[args.metric]))
    rng = np.random.default_rng(args.seed)
    out = {}
    for task, values in by_task.items():
        arr = np.asarray(values)
        means = rng.choice(arr, size=(args.resamples, arr.size), replace=True).mean(axis=1)
        lo, hi = np.percentile(means, [2.5, 97.5])
        out[task] = {"n": int(arr.size), "mean": round(float(arr.mean()), 4),
                     "ci95": [round(float(lo), 4), round(float(hi), 4)]}  # fmt: skip
    print(json.dumps({"metric": args.metric, "tasks": out}, indent=2))


if __name__ == "__main__":
    main()
