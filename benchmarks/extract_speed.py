"""Extraction speed: patches per second of ``omniseg extract`` on a generated slide with
generated QuPath annotations (default 512 px patches at every task's own scale). Prints JSON.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/extract_speed.py --side 12000 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from shapely.geometry import Point, box, mapping

CLASSES = {"Distal": "dt", "Proximal": "pt", "Glomerulus": "capsule", "Tuft": "tuft",
           "Artery": "vessel", "Capillary": "ptc"}  # fmt: skip
RADIUS_UM = {"Distal": 25, "Proximal": 30, "Glomerulus": 100, "Tuft": 80, "Artery": 60,
             "Capillary": 5}  # fmt: skip


def annotations(side: int, mpp: float, per_class: int, seed: int) -> dict:
    """Random discs of each class inside a Region covering 80 % of the slide."""
    rng = np.random.default_rng(seed)
    features = [_feature("Region", box(0, 0, side * 0.8, side))]
    for name, radius_um in RADIUS_UM.items():
        r = radius_um / mpp
        for _ in range(per_class):
            cx, cy = rng.uniform(r, side * 0.8 - r), rng.uniform(r, side - r)
            features.append(_feature(name, Point(cx, cy).buffer(r, 16)))
    return {"type": "FeatureCollection", "features": features}


def _feature(name: str, geometry) -> dict:
    return {
        "type": "Feature",
        "geometry": mapping(geometry),
        "properties": {"objectType": "annotation", "classification": {"name": name}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=12000, help="slide side, px at 0.25 µm/px")
    parser.add_argument("--objects", type=int, default=60, help="annotated objects per class")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--patch", type=int, default=512)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from run import emit, machine

    from omniseg.data.extract import ExtractSettings, extract_patches
    from omniseg.data.synthetic import DemoSlideSpec, write_demo_slide

    spec = DemoSlideSpec(width=args.side, height=args.side)
    with tempfile.TemporaryDirectory(prefix="omniseg-extract-") as tmp_name:
        tmp = Path(tmp_name)
        slide = write_demo_slide(tmp / "slide.tif", spec)
        notes = tmp / "slide.geojson"
        notes.write_text(json.dumps(annotations(args.side, spec.mpp, args.objects, 0)))
        classes = ",".join(f"{k}={v}" for k, v in CLASSES.items())
        settings = ExtractSettings(
            classes=classes, patch=args.patch, per_class=args.per_class, progress=False
        )
        clock = time.perf_counter()
        result = extract_patches([slide], notes, tmp / "patches", settings)
        wall = time.perf_counter() - clock
        size_mb = sum(p.stat().st_size for p in (tmp / "patches").rglob("*.png")) / 2**20
    out = {
        "command": " ".join(sys.argv),
        "machine": machine(),
        "slide_px": [args.side, args.side],
        "patch_px": args.patch,
        "patches": result.patches,
        "per_task": result.slides[0]["patches"],
        "wall_s": round(wall, 2),
        "patches_per_s": round(result.patches / wall, 2),
        "png_mb": round(size_mb, 1),
    }
    emit(out, args.json)


if __name__ == "__main__":
    main()
