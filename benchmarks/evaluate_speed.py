"""Wall time of `evaluate_records` on a patch folder (prediction + metrics). Prints one JSON.

    python benchmarks/evaluate_speed.py DATA [--model omniseg-tiny] [--split val]
        [--batch 8] [--precision fp32|bf16] [--tta]

The model has random weights (speed does not depend on them). ``metrics_s`` is the time of
scoring alone (ground truth against itself shifted by one pixel), to separate it from the network.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from omniseg.data import discover_patches, read_mask, select_split
from omniseg.evaluation.evaluate import evaluate_records
from omniseg.models import create_model
from omniseg.scoring.metrics import score_pair


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data")
    ap.add_argument("--model", default="omniseg-tiny")
    ap.add_argument("--split", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--tta", action="store_true")
    args = ap.parse_args()
    records = select_split(discover_patches(args.data), args.split)
    model = create_model(args.model).eval()
    masks = [read_mask(r.mask) for r in records]
    t0 = time.perf_counter()
    for m in masks:
        score_pair(np.roll(m, 1, axis=1), m)
    metrics_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = evaluate_records(
        model, records, tta=args.tta, batch_size=args.batch, precision=args.precision
    )
    total_s = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "model": args.model,
                "images": result.summary["n_images"],
                "batch": args.batch,
                "precision": args.precision,
                "tta": args.tta,
                "threads": torch.get_num_threads(),
                "total_s": round(total_s, 2),
                "images_per_s": round(len(records) / total_s, 2),
                "metrics_s": round(metrics_s, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
