"""Classified whole-slide annotations (QuPath GeoJSON, ImageScope XML, COCO, labelme) for cutting
training patches.

Unlike `load_roi`, which merges everything into one region, every object keeps its own class
and object type, so patches can be labelled. Shapes are repaired, clipped to the slide, and
whatever cannot be used (points, lines, shapes off the slide) is counted rather than silently lost.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from omniseg.errors import OmnisegError
from omniseg.io.annotation_formats import coco_polygons, is_coco, is_labelme, labelme_polygons
from omniseg.io.base import SlideInfo
from omniseg.io.roi import imagescope_region_polygon, polygons_of

ANNOTATION = "annotation"
LEADING_NOISE = b"\xef\xbb\xbf \t\r\n"  # UTF-8 byte-order mark and whitespace before the content
SCALE_LIMIT = 1.5  # coordinates beyond this multiple of the slide size mean another downsample
NEGATIVE_LIMIT = -0.5  # ... and so do coordinates below this multiple of it
SKIP_NO_AREA = "no area (points/lines)"
SKIP_NO_GEOMETRY = "no geometry"
SKIP_OUTSIDE = "outside the slide"
SKIP_COVERED = "covered by a negative region"
# QuPath before 0.3 named the object type only in the feature's "id"
QUPATH_LEGACY_TYPES = {
    "PathAnnotationObject": ANNOTATION,
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "TMACoreObject": "tma_core",
}


@dataclass(frozen=True)
class AnnotatedShape:
    """One annotated object: its class, its outline and what kind of QuPath object it was."""

    class_name: str | None  # None = unclassified
    geometry: BaseGeometry  # valid Polygon or MultiPolygon, level-0 pixels, clipped to the slide
    object_type: str  # "annotation", "detection", "cell", ... ("annotation" for ImageScope)


@dataclass(frozen=True)
class AnnotationSet:
    """Every usable shape of one file, plus how many objects were skipped and why."""

    path: Path
    shapes: tuple[AnnotatedShape, ...]
    skipped: dict[str, int]  # reason -> count

    def class_counts(self) -> dict[str | None, int]:
        """Shapes per class, unclassified under None."""
        return dict(Counter(s.class_name for s in self.shapes))

    def of_class(self, name: str) -> BaseGeometry | None:
        """Union of that class's shapes (touching objects merge); None if the class has none."""
        geometries = [s.geometry for s in self.shapes if s.class_name == name]
        return shapely.union_all(geometries) if geometries else None


def load_annotations(path: str | os.PathLike[str], info: SlideInfo) -> AnnotationSet:
    """Read an annotation file into classified shapes; OmnisegError if unusable."""
    file_path = Path(path)
    if not file_path.is_file():
        raise OmnisegError(f"{file_path}: annotation file not found; check the path")
    try:
        content = file_path.read_bytes()
    except OSError as exc:
        raise OmnisegError(f"{file_path}: cannot read the annotation file ({exc})") from exc
    skipped: Counter[str] = Counter()
    head = content.lstrip(LEADING_NOISE)[:1]
    try:
        if head == b"<":
            shapes = _imagescope_shapes(file_path, content, skipped)
        elif head in (b"{", b"["):
            shapes = _json_shapes(file_path, content, info, skipped)
        else:
            problem = "the file is empty" if not head else "neither XML nor JSON"
            raise OmnisegError(
                f"{file_path}: {problem}; export annotations as QuPath GeoJSON, ImageScope XML, "
                "COCO JSON or labelme JSON"
            )
    except RecursionError as exc:  # a hostile or broken file nested thousands of levels deep
        raise OmnisegError(
            f"{file_path}: nested too deeply to be an annotation file; export the annotations again"
        ) from exc
    if not shapes:
        raise OmnisegError(
            f"{file_path}: no polygon annotations found ({_describe(skipped)}); "
            "draw areas (polygon, rectangle, ellipse, brush) and export again"
        )
    _check_scale(file_path, shapes, info)
    clipped = _clip_to_slide(shapes, info, skipped)
    if not clipped:
        width, height = info.dimensions
        raise OmnisegError(
            f"{file_path}: all {len(shapes)} shapes lie outside the slide ({width} x {height} px "
            "at level 0); check that the file belongs to this slide"
        )
    return AnnotationSet(path=file_path, shapes=tuple(clipped), skipped=dict(skipped))


def _describe(skipped: Counter[str]) -> str:
    if not skipped:
        return "the file holds no objects"
    return ", ".join(f"{count} skipped: {reason}" for reason, count in skipped.items())


def _polygonal(geometry: BaseGeometry) -> BaseGeometry | None:
    """Valid Polygon or MultiPolygon from any geometry (repaired; lines and points dropped)."""
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    polygons = polygons_of(geometry)
    if not polygons:
        return None
    if len(polygons) == 1:
        return polygons[0]
    return shapely.union_all(polygons)  # parts of a repaired shape may touch: merge them


def _check_scale(path: Path, shapes: list[AnnotatedShape], info: SlideInfo) -> None:
    """A file exported at another downsample lands far off the slide; say so instead of clipping."""
    width, height = info.dimensions
    min_x, min_y, max_x, max_y = shapely.total_bounds([s.geometry for s in shapes])
    if min_x < NEGATIVE_LIMIT * width or min_y < NEGATIVE_LIMIT * height:
        reach = (min_x, min_y)
    elif max_x > SCALE_LIMIT * width or max_y > SCALE_LIMIT * height:
        reach = (max_x, max_y)
    else:
        return
    raise OmnisegError(
        f"{path}: the coordinates reach ({reach[0]:.0f}, {reach[1]:.0f}) but the slide is "
        f"{width} x {height} px at level 0, so the file was probably exported at another "
        "downsample or for another slide; export it in level-0 pixels of this slide"
    )


def _clip_to_slide(
    shapes: list[AnnotatedShape], info: SlideInfo, skipped: Counter[str]
) -> list[AnnotatedShape]:
    width, height = info.dimensions
    slide = box(0, 0, width, height)
    clipped: list[AnnotatedShape] = []
    for annotated in shapes:
        min_x, min_y, max_x, max_y = annotated.geometry.bounds
        if min_x >= 0 and min_y >= 0 and max_x <= width and max_y <= height:
            clipped.append(annotated)
            continue
        inside = _polygonal(annotated.geometry.intersection(slide))
        if inside is None:
            skipped[SKIP_OUTSIDE] += 1
        else:
            clipped.append(replace(annotated, geometry=inside))
    return clipped


def _imagescope_shapes(path: Path, content: bytes, skipped: Counter[str]) -> list[AnnotatedShape]:
    """One shape per positive region; negative regions cut holes in their own layer only."""
    try:
        root = ET.fromstring(content)
    except ET.ParseError as exc:
        raise OmnisegError(f"{path}: not valid XML ({exc}); export the annotations again") from exc
    if root.tag != "Annotations":
        raise OmnisegError(
            f"{path}: not an ImageScope annotation file (root <{root.tag}>, expected "
            "<Annotations>); export the annotations from ImageScope or QuPath again"
        )
    shapes: list[AnnotatedShape] = []
    for layer in root.findall("Annotation"):
        class_name = _imagescope_class(layer)
        positive: list[BaseGeometry] = []
        negative: list[BaseGeometry] = []
        for region in layer.iter("Region"):
            outline = imagescope_region_polygon(path, region)
            geometry = _polygonal(outline) if outline is not None else None
            if geometry is None:
                skipped[SKIP_NO_AREA] += 1
            elif region.get("NegativeROA", "0") == "1":
                negative.append(geometry)
            else:
                positive.append(geometry)
        holes = shapely.union_all(negative) if negative else None
        for geometry in positive:
            if holes is not None and geometry.intersects(holes):
                geometry = _polygonal(geometry.difference(holes))
            if geometry is None:
                skipped[SKIP_COVERED] += 1
            else:
                shapes.append(AnnotatedShape(class_name, geometry, ANNOTATION))
    return shapes


def _imagescope_class(layer: ET.Element) -> str | None:
    """The layer's Name, else its first attribute's Name (how ImageScope users label classes)."""
    name = (layer.get("Name") or "").strip()
    if name:
        return name
    attribute = layer.find("Attributes/Attribute")
    attribute_name = (attribute.get("Name") or "").strip() if attribute is not None else ""
    return attribute_name or None


def _json_shapes(
    path: Path, content: bytes, info: SlideInfo, skipped: Counter[str]
) -> list[AnnotatedShape]:  # fmt: skip
    """GeoJSON (QuPath), COCO or labelme, told apart by their keys."""
    try:
        data = json.loads(content.decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OmnisegError(
            f"{path}: not valid JSON ({exc}); export the annotations as GeoJSON again"
        ) from exc
    if is_coco(data) or is_labelme(data):
        found = (
            coco_polygons(path, data, info.path, skipped)
            if is_coco(data)
            else labelme_polygons(path, data, skipped)
        )
        shapes = []
        for name, polygon in found:
            geometry = _polygonal(polygon)
            if geometry is None:
                skipped[SKIP_NO_AREA] += 1
            else:
                shapes.append(AnnotatedShape(name, geometry, ANNOTATION))
        return shapes
    return _geojson_shapes(path, data, skipped)


def _geojson_shapes(path: Path, data: object, skipped: Counter[str]) -> list[AnnotatedShape]:
    """One shape per feature with an area; the feature's polygons stay together."""
    shapes: list[AnnotatedShape] = []
    for feature in _geojson_features(data):
        geometry_data = feature.get("geometry")
        if not geometry_data:
            skipped[SKIP_NO_GEOMETRY] += 1
            continue
        try:
            parsed = shape(geometry_data)
            finite = bool(np.isfinite(shapely.get_coordinates(parsed)).all())
        except (ValueError, TypeError, AttributeError, KeyError, IndexError, GEOSException) as exc:
            raise OmnisegError(
                f"{path}: invalid GeoJSON geometry ({exc!r}); export the annotations again"
            ) from exc
        if not finite:
            raise OmnisegError(f"{path}: a geometry has a non-finite coordinate; export again")
        geometry = _polygonal(parsed)
        if geometry is None:
            skipped[SKIP_NO_AREA] += 1
            continue
        properties = feature.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        shapes.append(
            AnnotatedShape(_qupath_class(properties), geometry, _qupath_type(feature, properties))
        )
    return shapes


def _geojson_features(data: object) -> list[dict]:
    """Features of a FeatureCollection, a Feature, a list of them, or bare geometries."""
    if isinstance(data, list):
        return [feature for item in data for feature in _geojson_features(item)]
    if not isinstance(data, dict):
        return []
    kind = data.get("type")
    if kind == "FeatureCollection":
        return _geojson_features(data.get("features", []))
    if kind == "Feature":
        return [data]
    if kind == "GeometryCollection" or (isinstance(kind, str) and "coordinates" in data):
        return [{"geometry": data}]
    return []


def _qupath_class(properties: dict) -> str | None:
    """classification {"name"} (QuPath 0.2+), a plain string, or the older classifications list."""
    classification = properties.get("classification")
    if classification is None:
        names = properties.get("classifications")
        classification = names[0] if isinstance(names, list) and names else None
    if isinstance(classification, dict):
        classification = classification.get("name")
    if isinstance(classification, str) and classification.strip():
        return classification.strip()
    return None


def _qupath_type(feature: dict, properties: dict) -> str:
    object_type = properties.get("objectType")
    if isinstance(object_type, str) and object_type:
        return object_type
    return QUPATH_LEGACY_TYPES.get(str(feature.get("id")), ANNOTATION)
