"""The bundled model on all BUPT images, per stain, at the estimated pixel sizes and with the 18
images whose glomeruli are implausibly large at 200x taken as 400x (``few_shot.py --mpp-by-size``
rule); prints JSON. Evaluation only: no training, nothing kept but the scores.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bupt_checked_mpp.py > docs/results/other-labs-v5-bupt-checked-mpp.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import few_shot

from omniseg.evaluation.external import bupt_stain, load_bupt
from omniseg.models.bundled import require_model_dir


def main() -> int:
    start = require_model_dir(None)
    images = load_bupt(few_shot.BUPT)[0]
    report = {"model": start.name}
    for checked in (False, True):
        mpps = few_shot.pixel_sizes(images, by_size=checked)
        scores = few_shot.image_scores(start, images, mpps)
        by_stain = {}
        for stain in ("silver", "trichrome", "pas"):
            names = [i.path.name for i in images if bupt_stain(i.path.name) == stain]
            by_stain[stain] = {"images": len(names), **few_shot.pooled(scores, names)}
        report["checked_mpp" if checked else "estimated_mpp"] = by_stain
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
