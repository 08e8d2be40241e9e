"""Tile latency of ``omniseg view`` on a large generated slide; prints one JSON object.

A pyramidal JPEG slide of WIDTH x HEIGHT px and a matching labels.ome.tif pyramid are written
tile by tile (never whole in memory), with a summary.json, as a result folder. The viewer's app
then serves N random 256² tiles (slide and labels, every Deep Zoom level, uniformly) over HTTP
on 127.0.0.1; the JSON holds p50 / p95 / max latency per kind, cold (first request of a tile),
and the peak RSS.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/viewer_tiles.py --width 100000 --height 80000
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/viewer_tiles.py --quick   # 20000 x 16000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omniseg.runtime.cpu import cpu_capabilities
from omniseg.viewer.server import Viewer
from omniseg.viewer.tiles import level_size, max_level
from tests._viewer_server import serving

TILE = 256
MPP = 0.25
LEVELS = 6  # downsamples 1, 4, ..., 4**5 (each level a quarter of the one before, as SVS)


def _tiles(height: int, width: int, downsample: int, channels: int, seed: int):
    """Row-major 256² tiles of a level: textured pink tissue, or label blobs (deterministic)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (64, TILE // 16, TILE // 16, max(channels, 1)), dtype=np.uint8)
    base = coarse.repeat(16, axis=1).repeat(16, axis=2)  # 16 px blocks: compact tiles on disk
    for ty in range(0, height, TILE):
        for tx in range(0, width, TILE):
            block = base[(ty // TILE * 7 + tx // TILE) % 64]
            if channels == 3:
                yield (block // 4 + np.array([180, 120, 150], np.uint8)).astype(np.uint8)
            else:
                yield (block[..., 0] // 43).astype(np.uint8)  # values 0..5: background + classes


def write_level_pyramid(path: Path, width: int, height: int, channels: int) -> None:
    kw = {"tile": (TILE, TILE), "photometric": "rgb" if channels == 3 else "minisblack"}
    kw["compression"] = "jpeg" if channels == 3 else "zlib"
    if channels == 3:
        kw["compressionargs"] = {"level": 85}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        for i in range(LEVELS):
            d = 4**i
            h, w = max(1, height // d), max(1, width // d)
            shape = (h, w, 3) if channels == 3 else (h, w)
            opts = {"subifds": LEVELS - 1} if i == 0 else {"subfiletype": 1}
            tif.write(_tiles(h, w, d, channels, i), shape=shape, dtype=np.uint8,
                      resolution=(1e4 / (MPP * d), 1e4 / (MPP * d)), resolutionunit="CENTIMETER",
                      **kw, **opts)  # fmt: skip


def make_result(root: Path, width: int, height: int) -> Path:
    result = root / "big"
    result.mkdir()
    slide = root / "big.ome.tif"
    write_level_pyramid(slide, width, height, 3)
    write_level_pyramid(result / "labels.ome.tif", width, height, 1)
    summary = {"slide": str(slide), "dimensions_wh": [width, height], "mpp": MPP, "classes": {}}
    (result / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return result


def measure(url: str, width: int, height: int, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    top = max_level(width, height)
    out = {}
    for kind, ext in (("slide", "jpeg"), ("labels", "png")):
        times = []
        for _ in range(n):
            level = int(rng.integers(max(0, top - 16), top + 1))
            lw, lh = level_size(width, height, level)
            col, row = int(rng.integers(0, -(-lw // TILE))), int(rng.integers(0, -(-lh // TILE)))
            began = time.perf_counter()
            with urllib.request.urlopen(f"{url}/tiles/a/0/{kind}/{level}/{col}_{row}.{ext}") as r:
                r.read()
            times.append(1000 * (time.perf_counter() - began))
        out[kind] = {"n": n, "p50_ms": float(np.percentile(times, 50)),
                     "p95_ms": float(np.percentile(times, 95)), "max_ms": float(max(times))}  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=100_000)
    ap.add_argument("--height", type=int, default=80_000)
    ap.add_argument("--tiles", type=int, default=400, help="random tiles per kind")
    ap.add_argument("--quick", action="store_true", help="20000 x 16000, 200 tiles")
    args = ap.parse_args()
    if args.quick:
        args.width, args.height, args.tiles = 20_000, 16_000, 200
    with tempfile.TemporaryDirectory(prefix="omniseg-viewer-bench-") as tmp:
        began = time.perf_counter()
        result = make_result(Path(tmp), args.width, args.height)
        written = time.perf_counter() - began
        with serving(Viewer(result)) as url:
            latency = measure(url, args.width, args.height, args.tiles)
    report = {"benchmark": "viewer_tiles", "width": args.width, "height": args.height,
              "tile": TILE, "cold_requests": True, "latency": latency,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "fixture_write_s": round(written, 1), "machine": cpu_capabilities()}  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
