"""Deep Zoom tile geometry (pure functions): which level-0 box a viewer tile shows.

Deep Zoom level ``L`` of a ``W x H`` image is the image scaled by ``2 ** (L - max_level)``, with
``max_level = ceil(log2(max(W, H)))`` (level 0 is 1 x 1 px). Tiles are ``tile`` px squares
without overlap, the last row and column smaller. Requests outside that grid are errors, never
clamped: the server answers 404 instead of reading an absurd region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TILE = 256  # px: OpenSeadragon's default, and small enough to render in milliseconds


@dataclass(frozen=True)
class TileBox:
    """One tile: its level-0 box and the size it is drawn at."""

    x: int
    y: int
    width: int
    height: int
    out_width: int
    out_height: int
    downsample: float  # level-0 px per tile px


def max_level(width: int, height: int) -> int:
    return max(0, math.ceil(math.log2(max(width, height, 1))))


def level_size(width: int, height: int, level: int) -> tuple[int, int]:
    scale = 2.0 ** (level - max_level(width, height))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def tile_box(width: int, height: int, level: int, col: int, row: int, tile: int = TILE) -> TileBox:
    """The level-0 box of tile (col, row) of Deep Zoom ``level``; ValueError outside the grid."""
    top = max_level(width, height)
    if not 0 <= level <= top:
        raise ValueError(f"level {level} outside 0..{top}")
    lw, lh = level_size(width, height, level)
    cols, rows = math.ceil(lw / tile), math.ceil(lh / tile)
    if not (0 <= col < cols and 0 <= row < rows):
        raise ValueError(f"tile {col},{row} outside the {cols} x {rows} grid of level {level}")
    downsample = 2.0 ** (top - level)
    out_w, out_h = min(tile, lw - col * tile), min(tile, lh - row * tile)
    x, y = round(col * tile * downsample), round(row * tile * downsample)
    w = min(width - x, max(1, round(out_w * downsample)))
    h = min(height - y, max(1, round(out_h * downsample)))
    return TileBox(x, y, w, h, out_w, out_h, downsample)


def best_level(downsamples: tuple[float, ...], wanted: float) -> int:
    """The coarsest pyramid level still at least as fine as ``wanted`` (level-0 px per out px)."""
    best = 0
    for i, d in enumerate(downsamples):
        if d <= wanted * (1 + 1e-6) and d >= downsamples[best]:
            best = i
    return best
