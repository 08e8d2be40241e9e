"""Blending of overlapping tile predictions (pure numpy), so the tile grid does not show.

Each tile's whole window prediction is kept; where windows overlap, a pixel's value is the
weighted mean of every processed tile that saw it. A tile's weight falls linearly from 1 to ~0
over the last ``2 * overlap`` px towards each window edge (the width two neighbouring windows
share), so across the shared band one tile fades out while its neighbour fades in, the way
nnU-Net and MONAI weight sliding windows. Without it, each output pixel came from exactly one
tile and every disagreement between neighbours (each tile gets its own dynamic head from its
own pooled features) became a straight cut along the tile border.

Values are combined in a fixed (row-major) order and rounded back to integer codes, so the
result does not depend on the order tiles were computed in, and a pixel seen by one tile only
keeps that tile's code exactly.
"""

from __future__ import annotations

import numpy as np
import zarr

from omniseg.inference.tiling import Window, tile_at, tiles_touching


def edge_ramp(length: int, overlap: int) -> np.ndarray:
    """(length,) float64 weights of one window axis: 1 inside, falling towards both edges."""
    if overlap <= 0:
        return np.ones(length)
    distance = np.minimum(np.arange(length) + 0.5, length - np.arange(length) - 0.5)
    return np.minimum(distance / (2 * overlap), 1.0)


def tiles_seeing(window: Window, shape_hw, tile: int, overlap: int) -> tuple[range, range]:
    """Grid rows and columns whose read windows may intersect ``window``."""
    grown = Window(window.y - tile, window.x - tile, window.h + 2 * tile, window.w + 2 * tile)
    rows, cols = tiles_touching(grown, tile, overlap)
    grid_h = -(-shape_hw[0] // (tile - 2 * overlap))
    grid_w = -(-shape_hw[1] // (tile - 2 * overlap))
    return range(rows.start, min(rows.stop, grid_h)), range(cols.start, min(cols.stop, grid_w))


def blended_codes(
    windows: zarr.Array | np.ndarray,
    processed: np.ndarray,
    shape_hw: tuple[int, int],
    tile: int,
    overlap: int,
    region: Window,
) -> np.ndarray:
    """(T, h, w) float32 codes on ``region`` of the native grid, from the per-tile window store.

    ``windows[:, r*tile : r*tile + win_h, c*tile : c*tile + win_w]`` holds tile (r, c)'s codes;
    ``processed[r, c]`` says whether it ran. Pixels no processed tile saw are 0.
    """
    n_tasks = windows.shape[0]
    total = np.zeros((n_tasks, region.h, region.w), dtype=np.float64)
    weight = np.zeros((region.h, region.w), dtype=np.float64)
    rows, cols = tiles_seeing(region, shape_hw, tile, overlap)
    for r in rows:
        for c in cols:
            if not processed[r, c]:
                continue
            win = tile_at(shape_hw, tile, overlap, r, c).window
            y0, y1 = max(win.y, region.y), min(win.y1, region.y1)
            x0, x1 = max(win.x, region.x), min(win.x1, region.x1)
            if y0 >= y1 or x0 >= x1:
                continue
            slot_y, slot_x = r * tile + y0 - win.y, c * tile + x0 - win.x
            codes = np.asarray(windows[:, slot_y : slot_y + y1 - y0, slot_x : slot_x + x1 - x0])
            w = np.outer(
                edge_ramp(win.h, overlap)[y0 - win.y : y1 - win.y],
                edge_ramp(win.w, overlap)[x0 - win.x : x1 - win.x],
            )
            ry, rx = slice(y0 - region.y, y1 - region.y), slice(x0 - region.x, x1 - region.x)
            total[:, ry, rx] += codes * w
            weight[ry, rx] += w
    seen = weight > 0
    total[:, seen] /= weight[seen]
    return np.rint(total).astype(np.float32)
