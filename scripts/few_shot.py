"""Few-shot curve of ``omniseg finetune`` on BUPT glomeruli (issue 32): per stain, fine-tune the
starting model on k annotated images (capsule), score the glomerulus on the rest of that stain,
before and after; forgetting = every other task's Dice on the 88 shared patches, before/after.

OMP_NUM_THREADS=2 .venv/bin/python scripts/few_shot.py --stains silver --ks 1,4 --draws 1 \\
    --json docs/results/few-shot-bupt.json [--max-steps 300] [--weights MODEL_DIR]

Experiments only (../shared/data/other-labs/README.md): every fine-tuned model and patch folder
lives in a temporary folder and is deleted; only the scores are kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from shapely.geometry import Polygon

from omniseg.catalogue import GlomerulusSize, default_catalogue
from omniseg.cli.options import dotted_overrides
from omniseg.data.extract import ExtractSettings, extract_patches
from omniseg.data.extract.scale_check import glomerulus_size_warning
from omniseg.evaluation.evaluate import evaluate_path
from omniseg.evaluation.external import (
    BUPT_MPP_BY_MAGNIFICATION,
    ObjectCounts,
    PixelCounts,
    bupt_mpp,
    bupt_stain,
    load_bupt,
    match_objects,
    predict_at_mpp,
    rasterise,
    read_rgb,
)  # fmt: skip
from omniseg.inference.snapshot import segment_glomeruli
from omniseg.models import load_pretrained
from omniseg.models.bundled import require_model_dir
from omniseg.runtime import TorchPredictor
from omniseg.training.adapt import AdaptSettings, finetune

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BUPT = SHARED / "other-labs" / "bupt-glomeruli"
CLASSES = "gl=capsule,gn=capsule,gm=capsule,gs=capsule"  # BUPT's glomerulus subtypes, merged


def pixel_sizes(items, by_size: bool) -> dict[str, float]:
    """{image name: µm/px}: from its name, else the 200x estimate; with ``by_size``
    (--mpp-by-size) an unnamed image whose glomeruli would be implausibly large at 200x (the
    extract warning's rule) is taken as 400x."""
    return {item.path.name: item_mpp(item, by_size) for item in items}


def item_mpp(item, by_size: bool) -> float:
    mpp, why = bupt_mpp(item.path.name)
    if not by_size or why.startswith("name_"):
        return mpp
    polygons = [Polygon(np.asarray(p).reshape(-1, 2)).buffer(0) for p in item.instances]
    if glomerulus_size_warning(item.path.name, polygons, mpp, GlomerulusSize()) is None:
        return mpp
    return BUPT_MPP_BY_MAGNIFICATION[400]


def image_scores(model_dir: Path, items, mpps: dict[str, float]) -> dict[str, dict]:
    """Per image: pooled-ready pixel and object counts of the raw capsule mask and of segment's."""
    model = load_pretrained(model_dir).eval()
    predictor = TorchPredictor(model, "fp32")
    capsule = default_catalogue().tissue("capsule")
    out = {}
    for item in items:
        mpp = mpps[item.path.name]
        truths = [rasterise(p, (item.height, item.width)) for p in item.instances]
        truth = np.logical_or.reduce(truths)
        prob = predict_at_mpp(predictor, read_rgb(item.path), mpp, (capsule,), default_catalogue())
        masks = {"raw": prob["capsule"] > model.inference.thresholds[capsule.id],
                 "as_segment": segment_glomeruli(item.path, mpp, model, predictor, "on")}  # fmt: skip
        out[item.path.name] = {
            v: (PixelCounts().add(m, truth), match_objects(m, truths)) for v, m in masks.items()
        }
    return out


def pooled(scores: dict[str, dict], names) -> dict:
    report = {}
    for variant in ("raw", "as_segment"):
        pixels, objects = PixelCounts(), ObjectCounts()
        for name in names:
            p, o = scores[name][variant]
            pixels.tp, pixels.fp, pixels.fn = pixels.tp + p.tp, pixels.fp + p.fp, pixels.fn + p.fn
            pixels.pixels += p.pixels
            objects.add(o)
        px, ob = pixels.report(), objects.report()
        report[variant] = {"dice": px["dice"], "precision": px["precision"],
                           "recall": px["recall"], "object_precision": ob["precision"],
                           "object_recall": ob["recall"]}  # fmt: skip
    return report


def patches_from(items, folder: Path, mpps: dict[str, float]) -> Path:
    """One patch folder for the k training images (each extracted at its own pixel size)."""
    rows = []
    for i, item in enumerate(items):
        sub = folder / f"img{i}"
        settings = ExtractSettings(classes=CLASSES, complete=True, patch=256, per_class=8,
                                   negatives=0.0, mpp=mpps[item.path.name],
                                   stain=bupt_stain(item.path.name), val_fraction=0.0,
                                   progress=False)  # fmt: skip
        extract_patches([item.path], BUPT / "annotations.json", sub, settings)
        with open(sub / "manifest.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                rows.append(
                    {**row, "image": f"img{i}/{row['image']}", "mask": f"img{i}/{row['mask']}"}
                )
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def forgetting(model_dir: Path) -> dict[str, float]:
    """Foreground Dice per task on the 88 shared patches (v4 trained on them: only the change
    before -> after means anything)."""
    result = evaluate_path(SHARED / "kidney-patches", model_dir, precision="fp32")
    return {task: row["dice"] for task, row in result.summary["tasks"].items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--stains", default="silver,trichrome,pas")
    ap.add_argument("--ks", default="1,2,4,8")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--set", action="append", default=[], help="section.key=value (as finetune)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--pool-limit", type=int, help="use the first N images per stain (smoke runs)")
    ap.add_argument("--mpp-by-size", action="store_true",
                    help="unnamed images with implausibly large glomeruli at 200x are 400x")  # fmt: skip
    args = ap.parse_args()
    start = require_model_dir(args.weights)
    stains = args.stains.split(",")
    images = [i for i in load_bupt(BUPT)[0] if bupt_stain(i.path.name) in stains]
    if args.pool_limit:
        images = [
            i
            for s in stains
            for i in [j for j in images if bupt_stain(j.path.name) == s][: args.pool_limit]
        ]
    mpps = pixel_sizes(images, args.mpp_by_size)
    before = image_scores(start, images, mpps)
    base_forgetting = forgetting(start)
    runs = []
    for stain in stains:
        pool = [i for i in images if bupt_stain(i.path.name) == stain]
        for k in (int(v) for v in args.ks.split(",")):
            for draw in range(args.draws):
                rng = np.random.default_rng([k, draw, len(stain)])
                chosen = set(rng.choice(len(pool), size=k, replace=False).tolist())
                train = [pool[i] for i in sorted(chosen)]
                test = [pool[i].path.name for i in range(len(pool)) if i not in chosen]
                with tempfile.TemporaryDirectory(prefix="omniseg-fewshot-") as tmp:
                    data = patches_from(train, Path(tmp) / "patches", mpps)
                    began = time.perf_counter()
                    result = finetune(data, Path(tmp) / "run", AdaptSettings(
                        weights=start, max_steps=args.max_steps, lr=args.lr, progress=False,
                        config_overrides=dotted_overrides(args.set)))  # fmt: skip
                    seconds = time.perf_counter() - began
                    after = image_scores(
                        result.model_dir, [i for i in pool if i.path.name in test], mpps
                    )
                    other = forgetting(result.model_dir)
                runs.append({"stain": stain, "k": k, "draw": draw, "train": [i.path.name for i in train],
                             "test_images": len(test), "finetune_seconds": round(seconds, 1),
                             "steps": result.steps, "before": pooled(before, test),
                             "after": pooled(after, test),
                             "forgetting_dice_before_after": {t: [base_forgetting[t], other[t]]
                                                              for t in other}})  # fmt: skip
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    report = {"start_model": str(start), "max_steps": args.max_steps, "lr": args.lr, "set": args.set, "machine": platform.processor() or platform.machine(),
              "pixel_size": "BUPT µm/px estimated from glomerulus size (200x 0.5, 400x 0.22)"
              + ("; unnamed images with median glomerulus > 400 µm at 200x taken as 400x"
                 if args.mpp_by_size else ""),
              "runs": runs, "summary": summarise(runs)}  # fmt: skip
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def summarise(runs: list[dict]) -> dict:
    """Mean over draws per stain and k: as-segment glomerulus Dice before and after."""
    groups = defaultdict(list)
    for run in runs:
        groups[f"{run['stain']} k={run['k']}"].append(run)
    return {key: {"draws": len(g),
                  "dice_before": float(np.mean([r["before"]["as_segment"]["dice"] for r in g])),
                  "dice_after": float(np.mean([r["after"]["as_segment"]["dice"] for r in g])),
                  "seconds": float(np.mean([r["finetune_seconds"] for r in g]))}
            for key, g in groups.items()}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
