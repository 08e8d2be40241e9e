"""Polygons of object masks: traced along pixel edges (their area is the object's pixel area),
so an object cut by tile or chunk lines is still one polygon, holes included; and a perimeter
that follows the shape, not its pixel staircase."""

from __future__ import annotations

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon


def mask_outline(mask: np.ndarray, y0: int, x0: int, step: int = 1) -> Polygon | MultiPolygon:
    """Exact pixel-edge outline of a bool mask whose pixel (r, c) covers level-0
    [x0 + c*step, x0 + (c+1)*step) x [y0 + r*step, ...): holes are kept, parts touching only at a
    corner become separate polygons, and the polygon's area equals the pixel area (times
    step**2).

    The mask's boundary edges, merged into maximal straight runs, are noded exactly where they
    meet, so GEOS polygonizes them into the faces of the pixel grid's in/out partition; the faces
    made of mask pixels are the outline. 2-5x faster than the union of every row run for
    objects of 80-200 px, the same geometry. Parts are ordered by their top-left vertex."""
    if not np.any(mask):
        raise ValueError("an object outline needs at least one pixel")
    padded = np.pad(np.asarray(mask, dtype=np.int8), 1)
    h_line, h_first, h_stop = _edge_runs(np.diff(padded, axis=0)[:, 1:-1])  # y = line
    v_line, v_first, v_stop = _edge_runs(np.ascontiguousarray(np.diff(padded, axis=1)[1:-1].T))
    horizontal = np.stack([h_first, h_line, h_stop, h_line], axis=1)  # x, y -> x, y
    vertical = np.stack([v_line, v_first, v_line, v_stop], axis=1)
    runs = np.concatenate([horizontal, vertical]).reshape(-1, 2, 2)
    segments = (runs * step + np.array([x0, y0])).astype(np.float64)
    faces = shapely.get_parts(shapely.polygonize(shapely.linestrings(segments)))
    parts = []
    for face in faces:
        ring = np.asarray(face.exterior.coords)
        corner = ring[np.lexsort((ring[:, 0], ring[:, 1]))[0]]  # its pixel is inside the face
        if mask[int(corner[1] - y0) // step, int(corner[0] - x0) // step]:
            parts.append((corner[1], corner[0], face))
    parts.sort(key=lambda part: part[:2])
    polygons = [face for _, _, face in parts]
    outline = polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)
    if not outline.is_valid:  # not expected for grid faces; never write an invalid geometry
        outline = shapely.make_valid(outline)
    return outline


def _edge_runs(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line, first, stop) of the runs of equal non-zero sign along each row of ``edges`` (mask
    differences across one grid line per row). A run also ends where the sign flips: that is a
    corner two parts share, where the perpendicular edges end too (so every meeting is a node)."""
    lines, cols = np.nonzero(edges)
    signs = edges[lines, cols]
    new = np.ones(len(lines), dtype=bool)
    new[1:] = (lines[1:] != lines[:-1]) | (cols[1:] != cols[:-1] + 1) | (signs[1:] != signs[:-1])
    starts = np.flatnonzero(new)
    last = np.append(starts[1:], len(lines)) - 1
    return lines[starts], cols[starts], cols[last] + 1


PERIMETER_SMOOTHING_PX = 1.0  # Douglas-Peucker tolerance: within 3% of 2*pi*r for r >= 5 px


def outline_perimeter(mask: np.ndarray, step: int = 1) -> float:
    """Perimeter in px that does not count pixel stairs (the pixel-edge outline is ~4/pi longer
    on a disc): border chains through pixel centres, outer borders and holes, smoothed by
    ``PERIMETER_SMOOTHING_PX``."""
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    contours, _ = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    smoothed = (cv2.approxPolyDP(c, PERIMETER_SMOOTHING_PX, True) for c in contours)
    return float(sum(cv2.arcLength(c, True) for c in smoothed)) * step
