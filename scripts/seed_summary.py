"""The issue-13 seed table as JSON: each run, each arm's mean and spread across seeds, and
paired bootstraps between arms over the val images (each image's Dice averaged over seeds).

    .venv/bin/python scripts/seed_summary.py [--results docs/results/seeds] [--json OUT]
        [--markdown] [--pairs A:B ...]   (default pairs: those of docs/model-card.md)

Reads ``<arm>-s<seed>.json`` / ``-per-image.csv`` written by scripts/seed_arm.sh. An arm's spread
is the sample standard deviation and the range of its per-seed mean fg Dice.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from omniseg.evaluation.bootstrap import paired_mean_difference, tasks_with_several_images

NAME = re.compile(r"(?P<arm>.+)-s(?P<seed>\d+)\.json$")


def seed_average(csv_paths: list[Path]) -> dict[str, dict[str, float]]:
    """task -> image -> Dice averaged over the seeds' per-image CSVs (same images in each)."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in csv_paths:
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                sums[row["task"]][row["image"]].append(float(row["dice"]))
    counts = {len(v) for task in sums.values() for v in task.values()}
    if counts != {len(csv_paths)}:
        raise SystemExit(f"per-image CSVs do not cover the same images: {csv_paths}")
    return {t: {i: statistics.fmean(v) for i, v in imgs.items()} for t, imgs in sums.items()}


def markdown(out: dict) -> str:
    """Per-run rows, per-arm mean / sd / range, paired differences, cross-task shares."""
    tasks = ("dt", "pt", "capsule", "tuft", "vessel", "ptc")
    lines = ["| arm | seed | " + " | ".join(t.upper() for t in tasks) + " | mean fg | bg-incl. |",
             "|---" * (len(tasks) + 4) + "|"]  # fmt: skip
    for arm, row in out["arms"].items():
        for seed, run in row["seeds"].items():
            cells = " | ".join(f"{run['tasks'][t]:.3f}" for t in tasks)
            lines.append(f"| {arm} | {seed} | {cells} | {run['mean_fg_dice']:.3f} | "
                         f"{run['mean_bg_inclusive']:.3f} |")  # fmt: skip
        sd = row["sd_across_seeds"]
        lo, hi = row["range_across_seeds"]
        cells = " | ".join(f"{row['task_means'][t]:.3f}" for t in tasks)
        sd_text = "n/a" if sd is None else f"{sd:.3f}"
        lines.append(f"| **{arm}** | mean of {row['n_seeds']} | {cells} | **{row['mean_fg_dice']:.3f}**"
                     f" (sd {sd_text}, {lo:.3f}-{hi:.3f}) | |")  # fmt: skip
    lines += ["", "| A - B (seed-averaged per image) | all tasks [95% CI] | without PTC [95% CI] | verdict |",
              "|---|---|---|---|"]  # fmt: skip
    for name, pair in out["paired_seed_averaged"].items():
        w = pair["without_one_image_tasks"]
        lines.append(f"| {name} | {pair['difference']:+.3f} [{pair['ci'][0]:+.3f}, {pair['ci'][1]:+.3f}]"
                     f" | {w['difference']:+.3f} [{w['ci'][0]:+.3f}, {w['ci'][1]:+.3f}] | "
                     f"{pair['verdict']} |")  # fmt: skip
    lines += ["", "| arm | seeds | " + " | ".join(f"{t} marks (known neg.)" for t in tasks[:5]) + " |",
              "|---" * 7 + "|"]  # fmt: skip
    for arm, row in out["arms"].items():
        if not row["cross_task"]:
            continue
        cells = " | ".join(
            f"{row['cross_task'][t]['marked_share']:.2f} ({row['cross_task'][t]['known_negative_marked']:.2f})"
            for t in tasks[:5])  # fmt: skip
        lines.append(f"| {arm} | {row['cross_task_seeds']} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("docs/results/seeds"))
    ap.add_argument("--pairs", nargs="*",
                    default=["lite0:omniseg", "lite0:lite0-random", "lite0-random:omniseg",
                             "lite0-leaky:lite0", "lite0-neg:lite0",
                             "lite0-leaky-2stage:lite0-leaky", "lite0-leaky-2stage:omniseg-2stage",
                             "lite0-leaky-2stage:omniseg",
                             "lite0-leaky-2stage-semi:lite0-leaky-2stage"])  # fmt: skip
    ap.add_argument("--cross-task", type=Path, default=Path("docs/results/cross-task"))
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = ap.parse_args()
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    for path in sorted(args.results.glob("*-s*.json")):
        match = NAME.match(path.name)
        if match is None:
            continue
        summary = json.loads(path.read_text())
        runs[match["arm"]][int(match["seed"])] = {
            "mean_fg_dice": summary["mean"]["dice"],
            "mean_bg_inclusive": summary["mean"]["dice_bg_inclusive"],
            "tasks": {t: v["dice"] for t, v in summary["tasks"].items()},
        }
    arms = {}
    for arm, seeds in sorted(runs.items()):
        means = [r["mean_fg_dice"] for r in seeds.values()]
        tasks = {t: statistics.fmean(r["tasks"][t] for r in seeds.values())
                 for t in next(iter(seeds.values()))["tasks"]}  # fmt: skip
        cross = [json.loads(p.read_text())["tasks"] for s in sorted(seeds)
                 if (p := args.cross_task / f"{arm}-s{s}.json").is_file()]  # fmt: skip
        cross_means = {
            task: {key: statistics.fmean(c[task][key] for c in cross)
                   for key in ("marked_share", "known_negative_marked")}
            for task in (cross[0] if cross else {})
        }  # fmt: skip
        arms[arm] = {
            "cross_task_seeds": len(cross),
            "cross_task": cross_means,
            "seeds": {str(s): r for s, r in sorted(seeds.items())},
            "n_seeds": len(seeds),
            "mean_fg_dice": statistics.fmean(means),
            "sd_across_seeds": statistics.stdev(means) if len(means) > 1 else None,
            "range_across_seeds": [min(means), max(means)],
            "task_means": tasks,
        }
    pairs = {}
    for pair in args.pairs:
        a, b = pair.split(":")
        if a not in runs or b not in runs:
            continue
        sa = seed_average([args.results / f"{a}-s{s}-per-image.csv" for s in sorted(runs[a])])
        sb = seed_average([args.results / f"{b}-s{s}-per-image.csv" for s in sorted(runs[b])])
        every = paired_mean_difference(sa, sb, args.resamples, 0)
        several = paired_mean_difference(
            tasks_with_several_images(sa), tasks_with_several_images(sb), args.resamples, 0
        )
        lows, highs = (every["ci"][0], several["ci"][0]), (every["ci"][1], several["ci"][1])
        verdict = f"{a} better" if min(lows) > 0 else (
            f"{b} better" if max(highs) < 0 else "not resolved")  # fmt: skip
        pairs[f"{a} - {b}"] = {**every, "without_one_image_tasks": several, "verdict": verdict}
    out = {"arms": arms, "paired_seed_averaged": pairs}
    if args.markdown:
        print(markdown(out))
        return
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
