"""Regions of interest in level-0 pixels: ImageScope XML, QuPath GeoJSON, or a binary mask image.

The format is chosen by content: XML (starts with '<'), JSON (starts with '{' or '['), else an
image. Every region's full vertex list is used (the original code read 4 vertices as a box),
ImageScope negative regions (`NegativeROA="1"`) are subtracted, and the result is clipped to the
slide. A mask image of any size is stretched to the slide extent (foreground = value > 0).
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import shapely
from shapely import affinity
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from omniseg.errors import OmnisegError
from omniseg.io.base import SlideInfo
from omniseg.io.memory_readers import decode_image

IMAGESCOPE_ELLIPSE = "2"  # Region Type: 0 polygon/freehand, 1 rectangle, 2 ellipse, 3+ lines
IMAGESCOPE_LINE_TYPES = {"3", "4"}  # arrows and rulers enclose no area
ELLIPSE_SEGMENTS = 64
SNIFF_BYTES = 64


def load_roi(path: str | os.PathLike[str], info: SlideInfo) -> BaseGeometry:
    """Polygon or MultiPolygon in level-0 pixels, clipped to the slide; OmnisegError if unusable."""
    roi_path = Path(path)
    if not roi_path.is_file():
        raise OmnisegError(f"{roi_path}: ROI file not found; check the --roi path")
    head = roi_path.read_bytes()[:SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    try:
        if head.startswith(b"<"):
            geometry = _imagescope_xml(roi_path)
        elif head.startswith((b"{", b"[")):
            geometry = _geojson(roi_path)
        else:
            geometry = _mask_image(roi_path, info)
        return _finish(roi_path, geometry, info)
    except RecursionError as exc:  # a hostile or broken file nested thousands of levels deep
        raise OmnisegError(
            f"{roi_path}: nested too deeply to be an annotation file; export the ROI again"
        ) from exc


def _finish(path: Path, geometry: BaseGeometry, info: SlideInfo) -> BaseGeometry:
    width, height = info.dimensions
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    polygons = polygons_of(geometry)
    clipped = (
        shapely.union_all(polygons).intersection(box(0, 0, width, height)) if polygons else None
    )
    clipped_polygons = polygons_of(clipped) if clipped is not None else []
    if not clipped_polygons:
        raise OmnisegError(
            f"{path}: the ROI encloses no area inside the slide ({width}x{height} level-0 px); "
            "check that it belongs to this slide and uses level-0 pixel coordinates"
        )
    if len(clipped_polygons) == 1:
        return clipped_polygons[0]
    return MultiPolygon(clipped_polygons)


def polygons_of(geometry: BaseGeometry | None) -> list[Polygon]:
    """Non-empty polygons inside any geometry (collections are flattened, lines/points dropped)."""
    if geometry is None or geometry.is_empty:
        return []
    if isinstance(geometry, Polygon):
        return [geometry] if geometry.area > 0 else []
    if hasattr(geometry, "geoms"):
        return [p for part in geometry.geoms for p in polygons_of(part)]
    return []


def _imagescope_xml(path: Path) -> BaseGeometry:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise OmnisegError(f"{path}: not valid XML ({exc}); export the ROI again") from exc
    if root.tag != "Annotations":
        raise OmnisegError(
            f"{path}: not an ImageScope annotation file (root <{root.tag}>, expected <Annotations>)"
        )
    positive: list[Polygon] = []
    negative: list[Polygon] = []
    for region in root.iter("Region"):
        polygon = imagescope_region_polygon(path, region)
        if polygon is None:
            continue
        (negative if region.get("NegativeROA", "0") == "1" else positive).append(polygon)
    if not positive:
        raise OmnisegError(f"{path}: no positive region with an area in the ImageScope XML")
    geometry = shapely.union_all([shapely.make_valid(p) for p in positive])
    if negative:
        geometry = geometry.difference(shapely.union_all([shapely.make_valid(p) for p in negative]))
    return geometry


def imagescope_region_polygon(path: Path, region: ET.Element) -> Polygon | None:
    """The region's outline (ellipses from their bounding box); None for lines, arrows, points."""
    region_type = region.get("Type", "0")
    if region_type in IMAGESCOPE_LINE_TYPES:
        return None
    try:
        points = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
    except (TypeError, ValueError) as exc:
        raise OmnisegError(
            f"{path}: region {region.get('Id', '?')} has a vertex without numeric X/Y"
        ) from exc
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in points):
        raise OmnisegError(f"{path}: region {region.get('Id', '?')} has a non-finite vertex")
    if region_type == IMAGESCOPE_ELLIPSE and len(points) >= 2:
        (x0, y0), (x1, y1) = points[0], points[1]
        circle = shapely.Point(0, 0).buffer(1.0, quad_segs=ELLIPSE_SEGMENTS // 4)
        ellipse = affinity.scale(circle, abs(x1 - x0) / 2, abs(y1 - y0) / 2)
        return affinity.translate(ellipse, (x0 + x1) / 2, (y0 + y1) / 2)
    if len(points) < 3:
        return None
    return Polygon(points)


def _geojson(path: Path) -> BaseGeometry:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OmnisegError(f"{path}: not valid JSON ({exc}); export the ROI again") from exc
    geometries = [g for g in _geojson_geometries(data) if g is not None]
    polygons: list[Polygon] = []
    for geometry in geometries:
        try:
            polygons.extend(polygons_of(shapely.make_valid(shape(geometry))))
        except (ValueError, TypeError, AttributeError, GEOSException) as exc:
            raise OmnisegError(f"{path}: invalid GeoJSON geometry ({exc})") from exc
    if not polygons:
        raise OmnisegError(
            f"{path}: no Polygon or MultiPolygon in the GeoJSON (QuPath: export annotations as GeoJSON)"
        )
    return shapely.union_all(polygons)


def _geojson_geometries(data: object) -> list[dict | None]:
    """Geometry dicts from a Feature, FeatureCollection, bare geometry or a list of them."""
    if isinstance(data, list):
        return [g for item in data for g in _geojson_geometries(item)]
    if not isinstance(data, dict):
        return []
    kind = data.get("type")
    if kind == "FeatureCollection":
        return _geojson_geometries(data.get("features", []))
    if kind == "Feature":
        return [data.get("geometry")]
    if kind == "GeometryCollection":
        return list(data.get("geometries", []))
    if kind in ("Polygon", "MultiPolygon"):
        return [data]
    return []


def _mask_image(path: Path, info: SlideInfo) -> BaseGeometry:
    try:
        rgb = decode_image(path)
    except OmnisegError as exc:
        raise OmnisegError(
            f"{path}: not an ImageScope XML, GeoJSON or mask image; use one of those ({exc})"
        ) from exc
    foreground = rgb.max(axis=2) > 0
    if not foreground.any():
        raise OmnisegError(f"{path}: the ROI mask is empty (no pixel > 0)")
    width, height = info.dimensions
    mask_h, mask_w = foreground.shape
    return affinity.scale(
        mask_to_polygons(foreground), width / mask_w, height / mask_h, origin=(0, 0)
    )


def mask_to_polygons(mask: np.ndarray) -> BaseGeometry:
    """Exact union of the mask's pixel squares (pixel (r, c) = box c..c+1, r..r+1), holes kept.

    Built from horizontal runs per row, so its cost grows with the boundary, not the area.
    """
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows_start, cols_start = np.nonzero(edges == 1)
    _, cols_end = np.nonzero(edges == -1)
    boxes = shapely.box(cols_start, rows_start, cols_end, rows_start + 1)
    return shapely.union_all(boxes)
