"""Summarise the issue-5 ablation (scripts/ablation.sh): a markdown table and paired comparisons.

    .venv/bin/python scripts/ablation_table.py [--dir docs/results/ablation] [--json OUT]

Reads every finished arm's `<arm>.json` and `<arm>-per-image.csv`. Each comparison is a paired
bootstrap (omniseg.evaluation.bootstrap) of the difference in mean fg Dice over tasks on the same
20 val images: the paper's claims are "omniseg > omniseg-task", "omniseg > multihead" and
"semi > no semi", and ours that live-head initialisation beats the original's; a claim is
supported here only if its whole 95% interval is above zero, both over all tasks and over the
tasks with more than one val image (PTC has one). Up to ten claims are tested at once
and none is corrected for that: expect about one in twenty "supported" or "contradicted" verdicts
by chance alone, and read a lone one with care.
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

MODELS = ("omniseg", "omniseg-task", "multihead")
SEMI = ("no-semi", "semi")
FIX_ARM = "omniseg-no-semi-original-head"  # the dead-head fix off: heads start as the original's
ARMS = (*(f"{m}-{s}" for s in SEMI for m in MODELS), FIX_ARM)
TASKS = ("dt", "pt", "capsule", "tuft", "vessel", "ptc")


def _load(folder: Path) -> dict[str, tuple[dict, dict]]:
    arms = {}
    for arm in ARMS:
        summary, rows = folder / f"{arm}.json", folder / f"{arm}-per-image.csv"
        if summary.is_file() and rows.is_file():
            with rows.open(newline="") as fh:
                scores = scores_from_rows(list(csv.DictReader(fh)), source=str(rows))
            arms[arm] = (json.loads(summary.read_text()), scores)
    return arms


def _table(arms: dict[str, tuple[dict, dict]]) -> str:
    head = "| arm | " + " | ".join(t.upper() for t in TASKS) + " | mean fg Dice | mean bg-incl. |"
    lines = [head, "|" + "---|" * (len(TASKS) + 3)]
    for arm, (summary, _) in arms.items():
        cells = [f"{summary['tasks'][t]['dice']:.3f}" if t in summary["tasks"] else "–"
                 for t in TASKS]  # fmt: skip
        mean = summary["mean"]
        lines.append(f"| {arm} | " + " | ".join(cells)
                     + f" | {mean['dice']:.3f} | {mean['dice_bg_inclusive']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def _verdict(ci: list[float]) -> str:
    return "supported" if ci[0] > 0 else ("contradicted" if ci[1] < 0 else "not resolved")


def _comparisons(arms: dict[str, tuple[dict, dict]]) -> list[dict]:
    pairs = [(f"omniseg-{s}", f"{other}-{s}") for s in SEMI for other in MODELS[1:]]
    pairs += [(f"{m}-semi", f"{m}-no-semi") for m in MODELS]
    pairs.append(("omniseg-no-semi", FIX_ARM))
    out = []
    for a, b in pairs:
        if a in arms and b in arms:
            diff = paired_mean_difference(arms[a][1], arms[b][1])
            several = paired_mean_difference(
                tasks_with_several_images(arms[a][1]), tasks_with_several_images(arms[b][1])
            )
            verdict = _verdict(diff["ci"]) if _verdict(diff["ci"]) == _verdict(several["ci"]) else (
                "not resolved")  # fmt: skip
            out.append({"claim": f"{a} > {b}", "verdict": verdict, **diff,
                        "without_one_image_tasks": several})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", type=Path, default=Path("docs/results/ablation"))
    ap.add_argument("--json", type=Path, help="also write the comparisons here")
    args = ap.parse_args()
    arms = _load(args.dir)
    print(_table(arms))
    comparisons = _comparisons(arms)
    level = f"{comparisons[0]['level']:.0%}" if comparisons else ""
    print(f"\n| claim (mean fg Dice, val) | difference [{level} CI] | same without one-image tasks "
          "| verdict |")  # fmt: skip
    print("|---|---|---|---|")
    for c in comparisons:
        cells = []
        for d in (c, c["without_one_image_tasks"]):
            lo, hi = d["ci"]
            cells.append(f"{d['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {c['claim']} | {cells[0]} | {cells[1]} | {c['verdict']} |")
    missing = [arm for arm in ARMS if arm not in arms]
    if missing:
        print(f"\nnot finished: {', '.join(missing)}")
    if args.json:
        args.json.write_text(json.dumps({"arms": sorted(arms), "comparisons": comparisons,
                                         "missing": missing}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
