"""Bootstrap 95% intervals of per-task mean fg Dice from `omniseg evaluate --csv` output.

    .venv/bin/python scripts/bootstrap_ci.py per_image.csv [--resamples 10000] [--seed 0]

Images are resampled with replacement within each task (omniseg.evaluation.bootstrap); a task
with one image gets a zero-width interval: say so when reporting it.
"""

from __future__ import annotations

import argparse
import csv
import json

from omniseg.evaluation.bootstrap import DEFAULT_RESAMPLES, scores_from_rows, task_mean_intervals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv")
    ap.add_argument("--metric", default="dice")
    ap.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with open(args.csv, newline="") as fh:
        scores = scores_from_rows(list(csv.DictReader(fh)), args.metric, args.csv)
    out = task_mean_intervals(scores, args.resamples, args.seed)
    print(json.dumps({"metric": args.metric, **out}, indent=2))


if __name__ == "__main__":
    main()
