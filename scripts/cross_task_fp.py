"""Per task, the share of other tasks' patches (and of their known negatives) a model marks.

.venv/bin/python scripts/cross_task_fp.py MODEL_DIR [--split val] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omniseg.data import discover_patches, select_split
from omniseg.evaluation.cross_task import cross_task_rates
from omniseg.models import load_pretrained


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", default="../shared/data/kidney-patches")
    parser.add_argument("--split", default="val", help="a split name, or 'all'")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    records = discover_patches(args.data)
    if args.split != "all":
        records = select_split(records, args.split)
    report = {
        "model": str(args.model),
        "split": args.split,
        "tasks": cross_task_rates(load_pretrained(args.model), records),
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
