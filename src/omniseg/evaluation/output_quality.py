"""Checks a user would make on a ``segment`` result: true outlines, tile seams, labels on glass.

Pure functions over arrays and parsed GeoJSON, so the same numbers come from a test, from
``scripts/output_quality.py`` and from a notebook:

* :func:`outline_report` - features that are bare rectangles, and whether each polygon's area
  agrees with the object's pixel area (``measurements.area_um2``).
* :func:`seam_index` - label changes per pixel boundary on the tile-core borders of the run's
  grids divided by the same rate everywhere else; 1.0 means the grid is invisible.
* :func:`glass_share` - the share of labelled pixels that a full-resolution glass test calls glass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from shapely.geometry import shape

AREA_TOLERANCE = 0.02  # relative; or one pixel row along the perimeter, whichever is larger


@dataclass(frozen=True)
class OutlineReport:
    features: int
    rectangles: int  # Polygons without holes that fill their bounding box exactly
    invalid: int
    area_mismatches: int  # polygon area vs pixel area beyond the tolerance
    worst_area_error: float  # largest |polygon - pixels| / pixels

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _is_rectangle(geometry) -> bool:
    if geometry.geom_type != "Polygon" or len(geometry.interiors):
        return False
    return math.isclose(geometry.area, geometry.envelope.area, rel_tol=1e-9)


def outline_report(geojson: dict, mpp: float) -> OutlineReport:
    """Outline checks over a FeatureCollection written by ``segment`` (coordinates: level-0 px)."""
    rectangles = invalid = mismatches = 0
    worst = 0.0
    features = geojson.get("features", [])
    for feature in features:
        geometry = shape(feature["geometry"])
        invalid += not geometry.is_valid
        measured = feature["properties"]["measurements"]
        pixels = float(measured["area_um2"]) / (mpp * mpp)
        error = abs(geometry.area - pixels)
        tolerance = max(AREA_TOLERANCE * pixels, geometry.length)
        # a one-pixel object has area 1 and perimeter 4: the rectangle test would flag it
        rectangles += _is_rectangle(geometry) and pixels > 1 and error > 0.5
        mismatches += error > tolerance
        worst = max(worst, error / max(pixels, 1.0))
    return OutlineReport(len(features), rectangles, invalid, mismatches, worst)


def grid_lines(length: int, core_level0: float) -> np.ndarray:
    """Level-0 positions (pixel boundaries) of tile-core borders along one axis."""
    if core_level0 <= 0:
        raise ValueError(f"core size must be positive, got {core_level0}")
    count = int(length // core_level0)
    return np.rint(np.arange(1, count + 1) * core_level0).astype(np.int64)


def _near_lines(length: int, lines: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
    """bool over boundaries 1..length-1: within ``band`` px of a line of any grid."""
    near = np.zeros(length + 1, dtype=bool)
    for positions, band in lines:
        for offset in range(-band, band + 1):
            idx = positions + offset
            near[idx[(idx > 0) & (idx < length)]] = True
    return near[1:length]


@dataclass(frozen=True)
class SeamReport:
    index: float  # rate on borders / rate elsewhere (nan when nothing changes anywhere)
    border_rate: float
    elsewhere_rate: float
    border_changes: int
    elsewhere_changes: int

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def seam_index(
    labels: np.ndarray,
    grids: Sequence[tuple[float, int]],
    *,
    valid: np.ndarray | None = None,
) -> SeamReport:
    """Label changes per pixel boundary on tile-core borders / elsewhere.

    ``grids``: (core side in level-0 px, band in px) per scale; a scale upsampled to level 0
    smears a border over about half a native pixel on each side, hence the band. ``valid``
    (optional bool map) restricts the count to boundaries between two valid pixels, e.g. tissue.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    along_x = labels[:, 1:] != labels[:, :-1]  # boundaries between columns j-1 and j
    along_y = labels[1:, :] != labels[:-1, :]
    count_x = np.ones_like(along_x)
    count_y = np.ones_like(along_y)
    if valid is not None:
        count_x = valid[:, 1:] & valid[:, :-1]
        count_y = valid[1:, :] & valid[:-1, :]
        along_x &= count_x
        along_y &= count_y
    near_x = _near_lines(w, [(grid_lines(w, core), band) for core, band in grids])
    near_y = _near_lines(h, [(grid_lines(h, core), band) for core, band in grids])
    border_changes = int(along_x[:, near_x].sum() + along_y[near_y, :].sum())
    border_total = int(count_x[:, near_x].sum() + count_y[near_y, :].sum())
    other_changes = int(along_x[:, ~near_x].sum() + along_y[~near_y, :].sum())
    other_total = int(count_x[:, ~near_x].sum() + count_y[~near_y, :].sum())
    border_rate = border_changes / max(border_total, 1)
    other_rate = other_changes / max(other_total, 1)
    index = border_rate / other_rate if other_rate > 0 else float("nan")
    return SeamReport(index, border_rate, other_rate, border_changes, other_changes)


def glass_share(labels: np.ndarray, glass: np.ndarray) -> float:
    """Share of labelled pixels (label > 0) on glass; 0.0 when nothing is labelled."""
    labelled = np.asarray(labels) > 0
    total = int(labelled.sum())
    return float((labelled & np.asarray(glass, dtype=bool)).sum()) / total if total else 0.0


def slide_glass(path, thumbnail_side: int, mpp: float | None = None) -> np.ndarray:
    """The full-resolution glass test over a whole slide's level 0 (as ``segment`` applies it
    chunk by chunk), for measuring labels on glass; loads level 0 whole (small slides only)."""
    from omniseg.io import open_slide
    from omniseg.io.levels import thumbnail
    from omniseg.io.tissue import full_resolution_glass

    reader = open_slide(path, mpp=mpp)
    try:
        width, height = reader.info.dimensions
        rgb = reader.read_region(0, 0, 0, width, height)
        thumb, downsample = thumbnail(reader, thumbnail_side)
        level0_mpp = float(reader.info.mpp)
    finally:
        reader.close()
    return full_resolution_glass(rgb, level0_mpp, thumb, downsample)
