"""Cross-validation arms side by side, each paired per patch against the first (JSON/markdown).

    .venv/bin/python scripts/crossval_table.py BASELINE_RUN ARM_RUN... [--names a,b,...]
        [--markdown] [--resamples 10000]

Each RUN is a finished `omniseg train --folds K` run (its crossval.csv). Every arm must have
scored the same patches out-of-fold; the difference of the mean over tasks is bootstrapped over
patches within each task (paired: the same patches for both), so patch difficulty cancels.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from omniseg.catalogue import tissues
from omniseg.evaluation.bootstrap import paired_mean_difference, scores_from_rows


def _scores(run: Path) -> dict:
    path = run / "crossval.csv" if run.is_dir() else run
    with path.open(newline="") as fh:
        return scores_from_rows(list(csv.DictReader(fh)), "dice", str(path))


def _means(scores: dict) -> dict:
    out = {task: sum(v.values()) / len(v) for task, v in scores.items()}
    out["mean"] = sum(out.values()) / len(scores)
    return out


def table(runs: list[Path], names: list[str], resamples: int) -> list[dict]:
    base = _scores(runs[0])
    rows = []
    for run, name in zip(runs, names, strict=True):
        scores = _scores(run)
        row = {"arm": name, "run": str(run), "n": sum(len(v) for v in scores.values())}
        row.update(_means(scores))
        if run != runs[0]:
            diff = paired_mean_difference(scores, base, resamples=resamples)
            row["vs_first"] = {"difference": diff["difference"], "ci": diff["ci"]}
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    tasks = [t.name for t in tissues() if t.name in rows[0]]
    head = ["arm", "n", *tasks, "mean fg Dice", f"vs {rows[0]['arm']} [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vs = r.get("vs_first")
        cell = (
            "—"
            if vs is None
            else f"{vs['difference']:+.3f} [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]"
        )
        vals = [f"{r[t]:.3f}" for t in tasks]
        lines.append(
            f"| {r['arm']} | {r['n']} | " + " | ".join(vals) + f" | **{r['mean']:.3f}** | {cell} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--names", help="comma-separated arm names (default: folder names)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--resamples", type=int, default=10_000)
    args = ap.parse_args()
    names = args.names.split(",") if args.names else [r.name for r in args.runs]
    rows = table(args.runs, names, args.resamples)
    print(markdown(rows) if args.markdown else json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
