"""Throughput of the WSI I/O layer on a synthetic slide; prints one JSON object.

Usage: .venv/bin/python benchmarks/wsi_io.py [--side 8192]
Measures: open_slide on a tifffile-written SVS-like JPEG pyramid, read_at_mpp of 512² tiles at
0.5 µm/px (2x block mean) and 0.6 µm/px (resampled), the thumbnail, and the label OME-TIFF
writer streaming a side x side label map.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omniseg.data.synthetic import pyramid, slide_array, write_svs
from omniseg.export import write_label_ome_tiff
from omniseg.io import open_slide, read_at_mpp, thumbnail

TILE = 512


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=8192)
    args = parser.parse_args()
    side = args.side
    result: dict[str, float | int] = {"side": side}
    with tempfile.TemporaryDirectory() as folder:
        slide_path = write_svs(
            Path(folder) / "bench.svs", pyramid(slide_array(side, side), 3, 4), compression="jpeg"
        )
        start = time.perf_counter()
        reader = open_slide(slide_path)
        result["open_s"] = time.perf_counter() - start
        for target in (0.5, 0.6):
            count = 0
            start = time.perf_counter()
            for y in range(0, int(side * 0.252 / target) - TILE, TILE):
                for x in range(0, int(side * 0.252 / target) - TILE, TILE):
                    read_at_mpp(reader, target, x, y, TILE, TILE)
                    count += 1
            result[f"read_at_mpp_{target}_tiles_per_s"] = count / (time.perf_counter() - start)
        start = time.perf_counter()
        thumbnail(reader, 2000)
        result["thumbnail_2000_s"] = time.perf_counter() - start
        reader.close()
        labels = (np.indices((side, side)).sum(0) // 301 % 7).astype(np.uint8)

        def read_tile(level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
            step = 2**level
            return labels[y * step : (y + h) * step : step, x * step : (x + w) * step : step]

        start = time.perf_counter()
        write_label_ome_tiff(
            Path(folder) / "labels.ome.tif", labels.shape, read_tile, mpp=0.252,
            class_names={0: "background"},
        )  # fmt: skip
        result["label_tiff_s"] = time.perf_counter() - start
        result["label_tiff_mib"] = (Path(folder) / "labels.ome.tif").stat().st_size / 2**20
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))


if __name__ == "__main__":
    main()
