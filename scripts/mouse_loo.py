"""Mouse leave-one-out of ``omniseg finetune`` (issue 32): for each of the four Bouteldja mouse
PAS pairs, fine-tune the starting model on the other three (capsule, tuft, vessel, each outlined
from the label map, with the labelled centre as a Region: unlabelled pixels there are background,
the margin is unknown), then score the held-out pair before and after; forgetting = every task's
Dice on the 88 shared patches, before and after.

OMP_NUM_THREADS=2 .venv/bin/python scripts/mouse_loo.py --json docs/results/adapt/mouse-loo.json

Experiments only (../shared/data/other-labs/README.md): the patches and fine-tuned models live in
a temporary folder and are deleted; only the scores are kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from omniseg.catalogue import default_catalogue
from omniseg.data.extract import ExtractSettings, extract_patches
from omniseg.evaluation.external import MOUSE_MPP, MOUSE_TASKS, evaluate_mouse
from omniseg.models import load_pretrained
from omniseg.models.bundled import require_model_dir
from omniseg.training.adapt import AdaptSettings, finetune

sys.path.insert(0, str(Path(__file__).parent))
from few_shot import forgetting

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MOUSE = SHARED / "other-labs" / "bouteldja-mouse-pas"
REGION = "Region"


def pairs() -> list[tuple[Path, Path]]:
    return [(p.with_name(p.name.removesuffix("-labels.png") + ".png"), p)
            for p in sorted(MOUSE.glob("*-labels.png"))]  # fmt: skip


def feature(name: str, ring: np.ndarray) -> dict:
    coords = [[float(x), float(y)] for x, y in ring] + [[float(ring[0][0]), float(ring[0][1])]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]},
            "properties": {"objectType": "annotation", "classification": {"name": name}}}  # fmt: skip


def annotations(image: Path, label_path: Path) -> dict:
    """QuPath-style GeoJSON: one polygon per connected part of each task, plus the Region."""
    with Image.open(image) as im:
        width, height = im.size
    with Image.open(label_path) as im:
        label = np.asarray(im)
    top, left = (height - label.shape[0]) // 2, (width - label.shape[1]) // 2
    features = []
    for task, values in MOUSE_TASKS.items():
        mask = np.isin(label, values).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            if len(c) >= 3:
                features.append(feature(task, c[:, 0, :] + [left, top]))
    h, w = label.shape
    corners = np.array([[left, top], [left + w, top], [left + w, top + h], [left, top + h]])
    features.append(feature(REGION, corners))
    return {"type": "FeatureCollection", "features": features}


def scores(model_dir: Path, pair: tuple[Path, Path], tmp: Path) -> dict:
    """evaluate_mouse on the one held-out pair (symlinked into a folder of its own)."""
    folder = tmp / f"score-{pair[0].stem}-{model_dir.parent.name}"
    folder.mkdir()
    for p in pair:
        (folder / p.name).symlink_to(p)
    report = evaluate_mouse(load_pretrained(model_dir).eval(), folder)
    return {task: {k: row[k] for k in ("dice", "precision", "recall", "counts")}
            for task, row in report["pooled"].items()}  # fmt: skip


def one_fold(start: Path, held: int, all_pairs, tmp: Path) -> dict:
    train = [p for i, p in enumerate(all_pairs) if i != held]
    notes = tmp / "annotations"
    notes.mkdir()
    for image, label in train:
        (notes / f"{image.stem}.geojson").write_text(json.dumps(annotations(image, label)))
    settings = ExtractSettings(classes="capsule=capsule,tuft=tuft,vessel=vessel", patch=256,
                               per_class=8, negatives=0.25, mpp=MOUSE_MPP, stain="pas",
                               val_fraction=0.0, progress=False)  # fmt: skip
    data = tmp / "patches"
    extracted = extract_patches([i for i, _ in train], notes, data, settings)
    catalogue = default_catalogue()
    tasks = tuple(catalogue.tissue(t).id for t in MOUSE_TASKS)
    began = time.perf_counter()
    result = finetune(data, tmp / "run", AdaptSettings(weights=start, tasks=tasks, progress=False))
    seconds = time.perf_counter() - began
    return {"held_out": all_pairs[held][0].name, "patches": extracted.patches,
            "finetune_seconds": round(seconds, 1), "steps": result.steps,
            "before": scores(start, all_pairs[held], tmp),
            "after": scores(result.model_dir, all_pairs[held], tmp),
            "forgetting_after": forgetting(result.model_dir)}  # fmt: skip


def pooled_dice(counts: list[dict]) -> float | None:
    """Dice of the summed counts: each image is held out once, so this is the LOO Dice (an
    image without the class adds only its false positives)."""
    tp, fp, fn = (sum(c[k] for c in counts) for k in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    start = require_model_dir(args.weights)
    all_pairs = pairs()
    if len(all_pairs) < 2:
        raise SystemExit(f"{MOUSE}: the mouse pairs are missing")
    base = forgetting(start)
    folds = []
    for held in range(len(all_pairs)):
        with tempfile.TemporaryDirectory(prefix="omniseg-mouse-loo-") as tmp:
            folds.append(one_fold(start, held, all_pairs, Path(tmp)))
        print(json.dumps(folds[-1]), file=sys.stderr, flush=True)
    summary = {task: {when: pooled_dice([f[when][task]["counts"] for f in folds])
                      for when in ("before", "after")} for task in MOUSE_TASKS}  # fmt: skip
    worst = {t: min(f["forgetting_after"][t] - base[t] for f in folds) for t in base}
    report = {"start_model": str(start), "machine": platform.processor() or platform.machine(),
              "pixel_size_um": MOUSE_MPP, "folds": folds,
              "pooled_dice_over_held_out_images": summary,
              "forgetting_dice_before": base, "forgetting_worst_change": worst}  # fmt: skip
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
