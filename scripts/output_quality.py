"""Measure what a user sees in `omniseg segment` results and print JSON.

For each result folder: features that are bare rectangles, polygon area vs pixel area, the seam
index on the run's tile grids (label changes per boundary on tile-core borders / elsewhere, on
tissue), and the share of labelled pixels that the full-resolution glass test calls glass.

    .venv/bin/python scripts/output_quality.py OUT/<slide> [OUT/<slide> ...]

The slide is read from summary.json; its whole level 0 and label map are loaded (fine for the
demo, CMU-1-Small-Region and the mosaic; not meant for gigapixel slides).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import tifffile

from omniseg.evaluation.output_quality import (
    glass_share,
    outline_report,
    seam_index,
    slide_glass,
)


def measure(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    mpp = float(summary["mpp"])
    geojson = json.loads((folder / "objects.geojson").read_text(encoding="utf-8"))
    labels = tifffile.imread(folder / "labels.ome.tif", level=0)
    labels = labels.reshape(labels.shape[-2:])
    tile, overlap = summary["model"]["tile_size"], summary["model"]["tile_overlap"]
    grids = []
    for scale in summary["scales"]:
        to_level0 = scale["mpp"] / mpp
        grids.append(((tile - 2 * overlap) * to_level0, max(1, math.ceil(to_level0 / 2))))
    parameters = summary["parameters"]
    glass = slide_glass(summary["slide"], parameters["thumbnail_side"], mpp=parameters["mpp"])
    seams = seam_index(labels, grids, valid=~glass)
    return {
        "result": str(folder),
        "slide": Path(summary["slide"]).name,
        "objects": outline_report(geojson, mpp).to_dict(),
        "seams": seams.to_dict(),
        "glass_share": round(glass_share(labels, glass), 6),
        "labelled_px": int((labels > 0).sum()),
        "glass_px": int(glass.sum()),
        "grids_level0_px": [[round(c, 3), b] for c, b in grids],
        "model_sha256": summary["model"].get("weights_sha256"),
        "timings_s": summary.get("timings_s"),
    }


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps([measure(Path(a)) for a in argv], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
