"""Score a model folder on images from other labs (BUPT human glomeruli, mouse PAS); prints JSON,
then the BUPT glomerulus table (raw / as segment / as segment + glomerulus check) on stderr.

OMP_NUM_THREADS=1 .venv/bin/python scripts/other_labs.py [--weights MODEL_DIR] [--data PATH]
                                                         [--json OUT.json] [--bupt-limit N]

The data are for evaluation only and stay outside the repository (../shared/data/other-labs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omniseg.errors import OmnisegError
from omniseg.evaluation.external import evaluate_other_labs
from omniseg.models.bundled import require_model_dir

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "other-labs"


def bupt_table(bupt: dict) -> str:
    """Pixel and object precision/recall per stain and variant, one line each."""
    heads = ("px_P", "px_R", "obj_P", "obj_R")
    lines = [f"{'stain':<10} {'variant':<28} " + " ".join(f"{h:<5}" for h in heads) + " objects"]
    for stain, row in bupt["stains"].items():
        for variant in bupt["variants"]:
            pixel, obj = row[variant]["pixel"], row[variant]["object"]
            scores = (pixel["precision"], pixel["recall"], obj["precision"], obj["recall"])
            cells = " ".join("  -  " if v is None else f"{v:.3f}" for v in scores)
            lines.append(f"{stain:<10} {variant:<28} {cells} {obj['counts']['predicted']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="model folder (default: the bundled model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--bupt-limit", type=int, help="score only the first N BUPT images")
    args = parser.parse_args()
    try:
        report = evaluate_other_labs(
            require_model_dir(args.weights), args.data, bupt_limit=args.bupt_limit
        )
    except OmnisegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    print(bupt_table(report["bupt"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
