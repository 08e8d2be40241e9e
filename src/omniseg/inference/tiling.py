"""Tile geometry as pure functions: read windows with context, and cores that partition the image.

Every tile owns a *core* on a regular grid of ``tile - 2 * overlap`` px, so the cores partition the
image and each output pixel comes from exactly one tile (no averaging, no votes): stitching is
exact and independent of tile order. The *window* the network sees is the core grown by
``overlap`` on each side, shifted inwards at the image border so that it stays inside the image.
Along an axis where the image is smaller than a tile the window is the whole image: the network
sees exactly the pixels ``evaluate`` would give it, never white padding (which changes what the
scale-aware controller pools over, and so the prediction).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from omniseg.errors import OmnisegError
from omniseg.io.raster import Window
from omniseg.models.config import check_tile_overlap


@dataclass(frozen=True)
class Tile:
    """One network input: ``window`` is read (tile x tile px, or the whole image along an axis
    shorter than a tile), ``core`` is kept."""

    row: int
    col: int
    window: Window
    core: Window

    def core_in_window(self) -> Window:
        """The core in the window's own pixel coordinates (where to crop the prediction)."""
        return Window(
            self.core.y - self.window.y, self.core.x - self.window.x, self.core.h, self.core.w
        )


def core_size(tile: int, overlap: int) -> int:
    """Side of the owned region; also the zarr chunk side of the probability stores."""
    check_tile_overlap(tile, overlap)
    return tile - 2 * overlap


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one scale: tile side and overlap (checked once, here) over its native
    shape, and the grid's rows and columns, computed once."""

    shape_hw: tuple[int, int]
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        check_tile_overlap(self.tile, self.overlap)

    @property
    def core(self) -> int:
        return self.tile - 2 * self.overlap

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the grid."""
        return -(-self.shape_hw[0] // self.core), -(-self.shape_hw[1] // self.core)

    def tile_at(self, row: int, col: int) -> Tile:
        return tile_at(self.shape_hw, self.tile, self.overlap, row, col)

    def __iter__(self) -> Iterator[Tile]:
        return iter_tiles(self.shape_hw, self.tile, self.overlap)


def window_side(length: int, tile: int) -> int:
    """Read-window side along an axis: the tile, or the whole axis when it is shorter."""
    return min(tile, length)


def _axis_entry(index: int, length: int, tile: int, overlap: int) -> tuple[int, int, int, int]:
    """(index, window start, core start, core length) of one grid position on one axis."""
    core = tile - 2 * overlap
    start = index * core
    window_start = min(max(start - overlap, 0), max(length - tile, 0))
    return index, window_start, start, min(core, length - start)


def _axis(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    core = tile - 2 * overlap
    return [_axis_entry(i, length, tile, overlap) for i in range(-(-length // core))]


def tile_at(shape_hw: tuple[int, int], tile: int, overlap: int, row: int, col: int) -> Tile:
    """The tile at grid position (row, col), without building the grid."""
    _, wy, cy, ch = _axis_entry(row, shape_hw[0], tile, overlap)
    _, wx, cx, cw = _axis_entry(col, shape_hw[1], tile, overlap)
    window = Window(wy, wx, window_side(shape_hw[0], tile), window_side(shape_hw[1], tile))
    return Tile(row, col, window, Window(cy, cx, ch, cw))


def grid_shape(shape_hw: tuple[int, int], tile: int, overlap: int) -> tuple[int, int]:
    """Number of tile rows and columns (= ceil(side / core))."""
    core = core_size(tile, overlap)
    return -(-shape_hw[0] // core), -(-shape_hw[1] // core)


def iter_tiles(shape_hw: tuple[int, int], tile: int, overlap: int) -> Iterator[Tile]:
    """All tiles of an image in row-major order, lazily (a huge slide has ~10^5 tiles)."""
    check_tile_overlap(tile, overlap)
    height, width = shape_hw
    if height <= 0 or width <= 0:
        raise OmnisegError(f"cannot tile an empty image of {height}x{width} px")
    cols = _axis(width, tile, overlap)
    win_h, win_w = window_side(height, tile), window_side(width, tile)
    for r, wy, cy, ch in _axis(height, tile, overlap):
        for c, wx, cx, cw in cols:
            yield Tile(r, c, Window(wy, wx, win_h, win_w), Window(cy, cx, ch, cw))


def tile_grid(shape_hw: tuple[int, int], tile: int, overlap: int) -> list[Tile]:
    """All tiles of an image in row-major order; their cores cover each pixel exactly once."""
    return list(iter_tiles(shape_hw, tile, overlap))


def tiles_touching(window: Window, tile: int, overlap: int) -> tuple[range, range]:
    """Grid rows and columns whose cores intersect ``window`` (cores lie on a regular grid)."""
    core = core_size(tile, overlap)
    rows = range(max(window.y, 0) // core, max(window.y1 - 1, 0) // core + 1)
    cols = range(max(window.x, 0) // core, max(window.x1 - 1, 0) // core + 1)
    return rows, cols


def iter_chunk_windows(shape_hw: tuple[int, int], chunk: int) -> Iterator[Window]:
    """Non-overlapping chunk x chunk windows in row-major order (the last ones cut at the edge),
    lazily: a whole slide has ~10^4 of them at the default chunk."""
    height, width = shape_hw
    for y in range(0, height, chunk):
        for x in range(0, width, chunk):
            yield Window(y, x, min(chunk, height - y), min(chunk, width - x))


def chunk_windows(shape_hw: tuple[int, int], chunk: int) -> list[Window]:
    """All of ``iter_chunk_windows`` as a list."""
    return list(iter_chunk_windows(shape_hw, chunk))
