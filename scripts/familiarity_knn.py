"""Second not-kidney measure (issue 37 point 7): cosine distance of the controller's pooled
feature to its 3 nearest neighbours among the training patches read at 10x; per image, the
median over tissue windows at 10x. Prints JSON. Result: skin falls inside kidney (model card).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/familiarity_knn.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import familiarity as fam

from omniseg.data import discover_patches, load_pair
from omniseg.evaluation.external import bupt_mpp, load_bupt, read_rgb
from omniseg.models import load_pretrained
from omniseg.models.bundled import require_model_dir

TEN_X_SCALE_ID = 1
NEIGHBOURS = 3


def unit_features(model, windows) -> np.ndarray:
    f = fam.image_features(model, windows)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def distance(features: np.ndarray, reference: np.ndarray, exclude=None) -> np.ndarray:
    sims = features @ reference.T
    if exclude is not None:
        sims[:, exclude] = -1.0
    return 1.0 - np.sort(sims, axis=1)[:, ::-1][:, :NEIGHBOURS].mean(axis=1)


def main() -> int:
    model = load_pretrained(require_model_dir(None)).eval()
    records = [r for r in discover_patches(fam.SHARED / "kidney-patches")
               if r.scale_id == TEN_X_SCALE_ID]  # fmt: skip
    reference = unit_features(model, [load_pair(r)[0] for r in records])
    left_out = [
        float(distance(reference[i : i + 1], reference, [i])[0]) for i in range(len(reference))
    ]

    def image(rgb, mpp):
        windows = fam.tissue_windows(rgb, mpp, fam.TEN_X)
        return (
            float(np.median(distance(unit_features(model, windows), reference)))
            if windows
            else None
        )

    bupt = [image(read_rgb(i.path), bupt_mpp(i.path.name)[0])
            for i in load_bupt(fam.SHARED / "other-labs" / "bupt-glomeruli")[0]]  # fmt: skip
    mouse_dir = fam.SHARED / "other-labs" / "bouteldja-mouse-pas"
    mouse = [image(read_rgb(p), fam.MOUSE_MPP)
             for p in sorted(mouse_dir.glob("new_*.png")) if "labels" not in p.name]  # fmt: skip
    other = {
        svs.name: image(*fam.slide_rgb(svs))
        for svs in sorted((fam.SHARED / "slides").glob("*.svs"))
    }
    report = {"reference_patches_10x": len(records), "neighbours": NEIGHBOURS,
              "kidney_patches_leave_one_out": fam.stats(left_out),
              "bupt": fam.stats([b for b in bupt if b is not None]),
              "mouse": [m for m in mouse if m is not None], "non_kidney_svs": other}  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
