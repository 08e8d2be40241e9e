"""Reading at a requested resolution (µm/px) from the best pyramid level, with antialiasing.

Resampling is done in two steps so that any tiling of the output gives the same pixels: (1) an
integer k x k block mean (cv2.INTER_AREA) on a grid anchored at the level's origin, (2) a
residual bilinear resample (scale between 2/3 and 3/2) whose taps and weights are computed from
absolute output coordinates. A tile therefore equals the same part of a larger read, bit for
bit; this holds for the pixel maths here, but a reader whose own decoding depends on the
requested window (none of ours does) would break it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from omniseg.errors import OmnisegError
from omniseg.io.base import SlideInfo, SlideReader
from omniseg.io.pixels import WHITE
from omniseg.threads import ordered_map

LEVEL_MPP_TOLERANCE = 0.01  # a level within 1 % of the target counts as fine enough
MARGIN_BLOCKS = 1  # extra source blocks on each side so interpolation never reads past the window
INTERPOLATION_STEPS = 32  # cv2.remap's sub-pixel grid (INTER_TAB_SIZE): 1/32 px
THUMBNAIL_BAND_ROWS = 256  # at most this many output rows per read when building a thumbnail
THUMBNAIL_BAND_BYTES = 64 << 20  # ... and at most this much source pixel data per read


@dataclass(frozen=True)
class LevelPlan:
    """Which level to read for a target µm/px and how to resample it."""

    level: int
    level_mpp: float
    scale: float  # target px per level px (< 1 shrinks, > 1 enlarges)
    upsampled: bool  # even level 0 is coarser than the target: the caller should warn


def _require_mpp(info: SlideInfo) -> float:
    if info.mpp is None:
        raise OmnisegError(f"{info.path}: the resolution (µm/px) is unknown; pass --mpp")
    return info.mpp


def plan_level(info: SlideInfo, target_mpp: float) -> LevelPlan:
    """The coarsest level whose µm/px is <= target (1 % tolerance), else level 0 upsampled."""
    mpp0 = _require_mpp(info)
    if not target_mpp > 0:
        raise ValueError(f"target_mpp must be positive, got {target_mpp}")
    limit = target_mpp * (1 + LEVEL_MPP_TOLERANCE)
    candidates = [
        (mpp0 * downsample, level)
        for level, downsample in enumerate(info.level_downsamples)
        if mpp0 * downsample <= limit
    ]
    if candidates:
        level_mpp, level = max(candidates)
        return LevelPlan(level, level_mpp, level_mpp / target_mpp, upsampled=False)
    return LevelPlan(0, mpp0, mpp0 / target_mpp, upsampled=True)


def target_shape(info: SlideInfo, target_mpp: float) -> tuple[int, int]:
    """(height, width) of the whole slide at `target_mpp`."""
    mpp0 = _require_mpp(info)
    width0, height0 = info.dimensions
    ratio = mpp0 / target_mpp
    return math.ceil(height0 * ratio - 1e-9), math.ceil(width0 * ratio - 1e-9)


def read_scaled(
    reader: SlideReader,
    level: int,
    source_per_output: float,
    x: int,
    y: int,
    width: int,
    height: int,
) -> np.ndarray:
    """HxWx3 uint8 of output pixels [x, x+width) x [y, y+height), where one output pixel spans
    `source_per_output` pixels of `level`. Reads only the needed window plus a margin.

    Output pixels whose footprint lies entirely outside the level are white; elsewhere the slide's
    edge pixels are replicated for the interpolation support, so no white bleeds into the border
    rows (the last, partial row/column of target_shape() carries edge content).
    """
    block = max(1, round(source_per_output))
    residual = source_per_output / block  # block px per output px, in [2/3, 3/2] when shrinking
    level_w, level_h = reader.info.level_dimensions[level]

    def block_span(start: int, size: int) -> tuple[int, int]:
        first = math.floor((start + 0.5) * residual - 0.5) - MARGIN_BLOCKS
        last = math.floor((start + size - 0.5) * residual - 0.5) + 1 + MARGIN_BLOCKS
        return first, last + 1

    bx0, bx1 = block_span(x, width)
    by0, by1 = block_span(y, height)
    window = _read_replicated(reader, level, bx0 * block, by0 * block, bx1 * block, by1 * block)
    if window is None:
        return np.full((height, width, 3), WHITE, dtype=np.uint8)
    if block > 1:
        window = cv2.resize(window, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_AREA)
    # Bilinear sampling at block coordinates derived from ABSOLUTE output indices and quantised to
    # OpenCV's 1/32-px grid here, so the same output pixel gets the same taps and weights whatever
    # region it is read in: tilings agree bit for bit. (The block mean removed all but <= 1.5x of
    # the shrink, so bilinear does not alias.)
    column_index, column_phase = _linear_taps(x, width, residual, bx0)
    row_index, row_phase = _linear_taps(y, height, residual, by0)
    if not column_phase.any() and not row_phase.any():  # integer ratio: pure block means
        out = np.ascontiguousarray(window[_as_slice(row_index)][:, _as_slice(column_index)])
    else:
        positions = np.empty((height, width, 2), dtype=np.int16)
        positions[..., 0] = column_index[None, :]
        positions[..., 1] = row_index[:, None]
        phases = (row_phase[:, None] * INTERPOLATION_STEPS + column_phase[None, :]).astype(
            np.uint16
        )
        out = cv2.remap(
            window, positions, phases, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    out[:, _outside(x, width, source_per_output, level_w)] = WHITE
    out[_outside(y, height, source_per_output, level_h), :] = WHITE
    return out


def _linear_taps(
    start: int, size: int, residual: float, origin: int
) -> tuple[np.ndarray, np.ndarray]:
    """(left source index within the window, phase in 1/32 px) of each output pixel on one axis.

    Computed from the absolute coordinate, then shifted by the integer window origin, so the
    result for a given output pixel never depends on the window.
    """
    centres = (np.arange(start, start + size, dtype=np.float64) + 0.5) * residual - 0.5
    steps = np.rint(centres * INTERPOLATION_STEPS).astype(np.int64)
    left, phase = np.divmod(steps, INTERPOLATION_STEPS)
    return left - origin, phase


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """A run of consecutive indices as a slice (a view, not a gather: the common 1:1 read)."""
    if len(index) and index[0] >= 0 and np.array_equal(index, np.arange(index[0], index[-1] + 1)):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _outside(start: int, size: int, source_per_output: float, extent: int) -> np.ndarray:
    """Output pixels whose footprint lies entirely outside [0, extent) of the level."""
    first = np.arange(start, start + size, dtype=np.float64)
    return (first * source_per_output >= extent) | ((first + 1) * source_per_output <= 0)


def _read_replicated(
    reader: SlideReader, level: int, x0: int, y0: int, x1: int, y1: int
) -> np.ndarray | None:
    """Window [x0, x1) x [y0, y1) of `level`; parts outside the level repeat its edge pixels.
    None when the window does not touch the level at all."""
    level_w, level_h = reader.info.level_dimensions[level]
    ix0, ix1 = min(max(x0, 0), level_w), min(max(x1, 0), level_w)
    iy0, iy1 = min(max(y0, 0), level_h), min(max(y1, 0), level_h)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    inside = reader.read_region(level, ix0, iy0, ix1 - ix0, iy1 - iy0)
    if (ix0, iy0, ix1, iy1) == (x0, y0, x1, y1):
        return inside
    return cv2.copyMakeBorder(inside, iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1, cv2.BORDER_REPLICATE)


def read_at_mpp(
    reader: SlideReader, target_mpp: float, x: int, y: int, width: int, height: int
) -> np.ndarray:
    """HxWx3 uint8 region at `target_mpp`; (x, y) = top-left in target-resolution pixels."""
    plan = plan_level(reader.info, target_mpp)
    return read_scaled(reader, plan.level, 1.0 / plan.scale, x, y, width, height)


def thumbnail(reader: SlideReader, max_side: int, threads: int = 0) -> tuple[np.ndarray, float]:
    """(RGB image whose longest side is `max_side` (never enlarged), level-0 px per thumbnail px).

    Read from the coarsest level that is still at least as fine as the thumbnail, band by band,
    so memory stays bounded even for a single-level giant image. ``threads`` > 1 decodes that many
    bands at once (the same pixels: each band is one independent read).
    """
    width0, height0 = reader.info.dimensions
    downsample = max(1.0, max(width0, height0) / max_side)
    out_w = max(1, math.ceil(width0 / downsample - 1e-9))
    out_h = max(1, math.ceil(height0 / downsample - 1e-9))
    level = max(
        (
            i
            for i, d in enumerate(reader.info.level_downsamples)
            if d <= downsample * (1 + LEVEL_MPP_TOLERANCE)
        ),
        key=lambda i: reader.info.level_downsamples[i],
    )
    per_output = downsample / reader.info.level_downsamples[level]
    # A single-level giant (or a header claiming 100000² px) has no coarse level to read from:
    # bound each read by bytes, not only by output rows (256 rows x 50 source rows each x
    # 100000 px x 3 was 3.8 GB in one read).
    level_width = reader.info.level_dimensions[level][0]
    source_rows = max(1, THUMBNAIL_BAND_BYTES // (3 * max(level_width, 1)))
    band_rows = int(max(1, min(THUMBNAIL_BAND_ROWS, source_rows // max(per_output, 1.0))))

    def band(top: int) -> np.ndarray:
        return read_scaled(reader, level, per_output, 0, top, out_w, min(band_rows, out_h - top))

    bands = list(ordered_map(band, range(0, out_h, band_rows), threads, name="omniseg-thumbnail"))
    return np.concatenate(bands, axis=0), downsample
