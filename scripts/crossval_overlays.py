"""Out-of-fold overlays of a cross-validation run: the worst and best patches of some tasks.

    .venv/bin/python scripts/crossval_overlays.py runs/cv-v4 --out /tmp/overlays \
        [--tasks dt,vessel,ptc] [--worst 2] [--best 1] [--data ../shared/data/kidney-patches]

Each patch is predicted by its own fold model (the one that never trained on it) and drawn beside
itself: green = found, magenta = missed, yellow = marked but not labelled. One PNG per patch and
a mosaic; the data's licence keeps these images out of the repository (write them elsewhere).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from omniseg.data import discover_patches, load_pair
from omniseg.models import load_pretrained
from omniseg.runtime import TorchPredictor, image_to_tensor

FOUND, MISSED, EXTRA = (0, 200, 0), (255, 0, 255), (255, 255, 0)
ALPHA = 0.6


def overlay(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    out = image.astype(np.float64)
    for mask, colour in ((truth & predicted, FOUND), (truth & ~predicted, MISSED),
                         (predicted & ~truth, EXTRA)):  # fmt: skip
        out[mask] = out[mask] * (1 - ALPHA) + np.asarray(colour) * ALPHA
    return np.concatenate([image, out.astype(np.uint8)], axis=1)


def chosen_rows(run: Path, tasks: list[str], worst: int, best: int) -> list[dict]:
    with open(run / "crossval.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = []
    for task in tasks:
        ranked = sorted((r for r in rows if r["task"] == task), key=lambda r: float(r["dice"]))
        picked += ranked[:worst] + (ranked[-best:] if best else [])
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", default="../shared/data/kidney-patches")
    ap.add_argument("--tasks", default="dt,vessel,ptc")
    ap.add_argument("--worst", type=int, default=2)
    ap.add_argument("--best", type=int, default=1)
    args = ap.parse_args()
    records = {str(r.image): r for r in discover_patches(args.data)}
    models: dict[int, object] = {}
    tiles = []
    args.out.mkdir(parents=True, exist_ok=True)
    for row in chosen_rows(args.run, args.tasks.split(","), args.worst, args.best):
        record, fold = records[row["image"]], int(row["fold"])
        if fold not in models:
            models[fold] = load_pretrained(args.run / f"fold-{fold}" / "model")
        model = models[fold]
        image, truth = load_pair(record)
        prob = (
            TorchPredictor(model, "fp32")
            .predict_probability(
                image_to_tensor(image)[None], [record.task_id], [record.scale_id], tta=False
            )[0]
            .numpy()
        )
        tile = overlay(image, truth, prob > model.inference.thresholds[record.task_id])
        name = f"{row['task']}-{record.stain}-{record.image.stem}-dice{float(row['dice']):.3f}.png"
        Image.fromarray(tile).save(args.out / name)
        tiles.append(tile)
        print(name)
    if tiles:
        width = max(t.shape[1] for t in tiles)
        padded = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in tiles]
        Image.fromarray(np.concatenate(padded, axis=0)).save(args.out / "mosaic.png")


if __name__ == "__main__":
    main()
