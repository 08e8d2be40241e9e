"""Does the model's own image feature tell kidney from non-kidney? A measurement (issue 37 point
7); prints JSON. Result: it does not (docs/results/familiarity-v5.json), so no check ships.

The controller's image feature (the pooled deepest map, what every dynamic head is generated
from) is computed on tissue windows at 10x and compared with its distribution over the 88
training patches: per window the root-mean-square z-score over the channels, per image the
median over windows.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/familiarity.py

Sets: the 88 shared kidney patches (leave-one-out: each scored against a reference without
it), BUPT human biopsy snapshots and mouse PAS images (kidney from other labs; evaluation only),
and the two non-kidney SVS files of ../shared/data/slides.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from omniseg.data import discover_patches, load_pair
from omniseg.evaluation.external import bupt_mpp, load_bupt, read_rgb
from omniseg.io import open_slide
from omniseg.models import load_pretrained
from omniseg.models.bundled import require_model_dir
from omniseg.runtime.predictor import image_to_tensor

WINDOW = 256  # px at the reference scale, the training patches' size
TISSUE_MAX_MEAN = 215  # a window whose mean grey is brighter than this is mostly glass
MIN_STD = 1e-3  # a channel constant over the training patches would divide by zero


@dataclass(frozen=True)
class Reference:
    mpp: float  # µm/px the windows are read at (10x)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float  # scores above it: "unlike the training data"
    measured: str  # how the threshold was chosen


@torch.no_grad()
def image_features(model, windows: Sequence[np.ndarray]) -> np.ndarray:
    """(N, C) controller features of RGB uint8 windows."""
    model = model.eval()
    out = [model.encode(image_to_tensor(w)[None])[1][0].float().numpy() for w in windows]
    return np.stack(out) if out else np.zeros((0, 0), np.float32)


def tissue_windows(rgb: np.ndarray, mpp: float, target_mpp: float, count: int = 16) -> list:
    """Up to ``count`` non-overlapping tissue windows of the image resampled to ``target_mpp``."""
    factor = mpp / target_mpp
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    image = cv2.resize(rgb, size, interpolation=interpolation)
    short = [max(0, WINDOW - image.shape[0]), max(0, WINDOW - image.shape[1])]
    if any(short):  # smaller than one window: the rest is glass, as on a slide
        image = cv2.copyMakeBorder(
            image, 0, short[0], 0, short[1], cv2.BORDER_CONSTANT, value=(255,) * 3
        )
    found = []
    for y in range(0, image.shape[0] - WINDOW + 1, WINDOW):
        for x in range(0, image.shape[1] - WINDOW + 1, WINDOW):
            window = image[y : y + WINDOW, x : x + WINDOW]
            if window.mean() < TISSUE_MAX_MEAN:
                found.append(window)
    step = max(1, len(found) // count)
    return found[::step][:count]


def window_scores(features: np.ndarray, reference: Reference) -> np.ndarray:
    mean = np.asarray(reference.mean, np.float64)
    std = np.maximum(np.asarray(reference.std, np.float64), MIN_STD)
    z = (features.astype(np.float64) - mean) / std
    return np.sqrt((z**2).mean(axis=1))


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEN_X = 1.0  # µm/px of the windows scored
MOUSE_MPP = 0.337


def stats(values) -> dict:
    v = np.asarray(values, float)
    return {"n": len(v), "min": float(v.min()), "median": float(np.median(v)),
            "p95": float(np.percentile(v, 95)), "max": float(v.max())}  # fmt: skip


def reference_of(features: np.ndarray, threshold: float = 0.0, measured: str = "") -> Reference:
    return Reference(TEN_X, tuple(features.mean(0).tolist()), tuple(features.std(0).tolist()),
                     threshold, measured)  # fmt: skip


def image_score(model, rgb: np.ndarray, mpp: float, ref: Reference) -> float | None:
    windows = tissue_windows(rgb, mpp, TEN_X)
    if not windows:
        return None
    return float(np.median(window_scores(image_features(model, windows), ref)))


ASSUMED_MPP = 0.5  # for a slide whose metadata gives none (said in the report)


def slide_rgb(path: Path) -> tuple[np.ndarray, float]:
    with open_slide(path, require_mpp=False) as reader:
        info = reader.info
        if info.mpp is None:
            info = dataclasses.replace(info, mpp=ASSUMED_MPP)
        level = min(range(info.level_count),
                    key=lambda i: abs(info.mpp * info.level_downsamples[i] - TEN_X))  # fmt: skip
        w, h = info.level_dimensions[level]
        return reader.read_region(level, 0, 0, w, h), info.mpp * info.level_downsamples[level]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    model_dir = require_model_dir(None)
    model = load_pretrained(model_dir).eval()
    patches = [load_pair(r)[0] for r in discover_patches(SHARED / "kidney-patches")]
    features = image_features(model, patches)
    full = reference_of(features)
    loo = []
    for i in range(len(features)):
        rest = reference_of(np.delete(features, i, axis=0))
        loo.append(float(window_scores(features[i : i + 1], rest)[0]))
    bupt = [image_score(model, read_rgb(im.path), bupt_mpp(im.path.name)[0], full)
            for im in load_bupt(SHARED / "other-labs" / "bupt-glomeruli")[0]]  # fmt: skip
    mouse_dir = SHARED / "other-labs" / "bouteldja-mouse-pas"
    mouse = [image_score(model, read_rgb(p), MOUSE_MPP, full)
             for p in sorted(mouse_dir.glob("new_*.png")) if "labels" not in p.name]  # fmt: skip
    other = {}
    for svs in sorted((SHARED / "slides").glob("*.svs")):
        rgb, mpp = slide_rgb(svs)
        other[svs.name] = image_score(model, rgb, mpp, full)
    assumed = [
        n for n in other if open_slide(SHARED / "slides" / n, require_mpp=False).info.mpp is None
    ]
    kidney_other_labs = [s for s in bupt + mouse if s is not None]
    threshold = float(np.ceil(max(max(loo), np.percentile(kidney_other_labs, 99)) * 100) / 100)
    report = {"model": str(model_dir), "kidney_patches_leave_one_out": stats(loo),
              "bupt": stats([s for s in bupt if s is not None]),
              "mouse": stats([s for s in mouse if s is not None]), "non_kidney_svs": other,
              "threshold": threshold, "mpp_assumed_0.5_for": assumed,
              "non_kidney_flagged": {n: v is not None and v > threshold for n, v in other.items()},
              "rule": "ceil to 0.01 of the larger of the kidney patches' leave-one-out maximum "
                      "and the 99th percentile of the other labs' kidney images"}  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
