"""Each inference backend against torch fp32 on every shared labelled patch: the largest
probability difference, and the mean foreground Dice per task (the model's thresholds).

    .venv/bin/python scripts/backend_parity.py [DATA] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "kidney-patches" / "manifest.csv"


def main() -> None:
    from omniseg.catalogue import tissue
    from omniseg.data import discover_patches, load_pair
    from omniseg.models import load_pretrained
    from omniseg.models.bundled import default_model_dir
    from omniseg.models.pretrained import WEIGHTS_NAME, sha256_of
    from omniseg.runtime import image_to_tensor
    from omniseg.runtime.backends import BACKENDS, make_predictor
    from omniseg.runtime.memory import tune_allocator
    from omniseg.scoring.metrics import score_pair

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(DATA))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tune_allocator()
    folder = default_model_dir()
    model = load_pretrained(folder)
    sha = sha256_of(folder / WEIGHTS_NAME)
    records = discover_patches(args.data)
    backends = list(BACKENDS)
    predictors = {
        b: make_predictor(model, b, "fp32", model_dir=folder, sha256=sha) for b in backends
    }
    dice = {b: defaultdict(list) for b in backends}
    max_diff = dict.fromkeys(backends, 0.0)
    for record in records:
        image, mask = load_pair(record)
        x = image_to_tensor(image)[None]
        cut = model.inference.thresholds[record.task_id]
        ref = None
        for b, predictor in predictors.items():
            prob = predictor.predict_probability(x, [record.task_id], [record.scale_id], tta=False)
            prob = prob[0].numpy()
            ref = prob if ref is None else ref
            max_diff[b] = max(max_diff[b], float(np.abs(prob - ref).max()))
            score = score_pair(prob > cut, mask > 0)["dice"]
            if score is not None:  # both empty: no Dice (as in evaluate)
                dice[b][tissue(record.task_id).name].append(score)
    out = {
        "patches": len(records),
        "weights_sha256": sha,
        "threads": torch.get_num_threads(),
        "max_abs_probability_difference_vs_torch": max_diff,
        "mean_fg_dice": {
            b: {task: round(float(np.mean(v)), 4) for task, v in per.items()}
            for b, per in dice.items()
        },
    }
    out["largest_dice_gap_vs_torch"] = {
        b: max(abs(out["mean_fg_dice"][b][t] - out["mean_fg_dice"]["torch"][t]) for t in dice[b])
        for b in backends
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
