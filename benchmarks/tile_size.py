"""Tile size vs wall time on a generated slide: what larger tiles save on overlap, and what
they change in the labels. Prints JSON (one run on one machine).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/tile_size.py --side 4000 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.inference.loading import load_segment_model
slide, out, backend, tile, overlap, region = sys.argv[1:7]
model, source = load_segment_model(None, "cpu", "auto")
settings = SegmentSettings(progress=False, backend=backend, tile_size=int(tile),
                           tile_overlap=int(overlap), ptc_region=region)
clock = time.perf_counter()
result = segment_slide(slide, out, settings, model, model_source=source)
wall = time.perf_counter() - clock
from omniseg.runtime.memory import peak_rss_mb
peak = peak_rss_mb()
print(json.dumps({"wall_s": wall, "peak_rss_mb": peak, "summary": result.summary}))
"""


def run(slide: Path, out: Path, backend: str, tile: int, overlap: int, region: str) -> dict:
    argv = [sys.executable, "-c", CHILD, str(slide), str(out), backend, str(tile), str(overlap)]
    proc = subprocess.run([*argv, region], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def labels(folder: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(folder / "labels.ome.tif", level=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=4000, help="slide side, px at 0.25 µm/px")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--tiles", default="512:64,1024:64", help="tile:overlap list")
    parser.add_argument("--regions", default="interstitium", help="ptc regions to compare")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from run import emit, machine

    from omniseg.data.synthetic import DemoSlideSpec, write_demo_slide

    started = time.perf_counter()
    result: dict = {"command": " ".join(sys.argv), "machine": machine(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="omniseg-tiles-") as tmp_name:
        tmp = Path(tmp_name)
        slide = write_demo_slide(
            tmp / "slide.tif", DemoSlideSpec(width=args.side, height=args.side)
        )
        reference = None
        for region in args.regions.split(","):
            for pair in args.tiles.split(","):
                tile, overlap = (int(v) for v in pair.split(":"))
                out = tmp / f"out-{region}-{tile}-{overlap}"
                numbers = run(slide, out, args.backend, tile, overlap, region)
                summary = numbers["summary"]
                got = labels(out / "slide")
                reference = got if reference is None else reference
                result["runs"].append(
                    {
                        "tile_size": tile,
                        "tile_overlap": overlap,
                        "ptc_region": region,
                        "wall_s": round(numbers["wall_s"], 2),
                        "peak_rss_mb": round(numbers["peak_rss_mb"], 1),
                        "tiles": summary["tiles"],
                        "timings_s": summary["timings_s"],
                        "objects": {k: v["count"] for k, v in summary["classes"].items()},
                        "label_agreement_with_first_run": float((got == reference).mean()),
                    }
                )
    result["seconds"] = round(time.perf_counter() - started, 1)
    emit(result, args.json)


if __name__ == "__main__":
    main()
