"""Per-object outputs: QuPath-compatible GeoJSON and a flat CSV of measurements.

Both are deterministic for the same objects (fixed key order, floats rounded, objects in id
order) so a resumed run reproduces them byte for byte. Coordinates are level-0 pixels.
`class_names` / `class_colors` are keyed by SlideObject.class_id (catalogue task id).

Objects are streamed: a list/tuple (small, in any order) is sorted first; any other iterable
(a generator, an on-disk spool) must already be in increasing id order and is written one object
at a time, so a whole slide's polygons never have to be in memory together.
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from omniseg.atomic import atomic_path
from omniseg.export.objects import SlideObject

DECIMALS = 3  # 1/1000 px: far below any pixel-derived precision, keeps files compact
OBJECT_TYPES = ("annotation", "detection")
FEATURE_ID_NAMESPACE = uuid.UUID("6f6d6e69-7365-6700-8000-000000000000")  # fixed: stable ids
CSV_COLUMNS = (
    "id",
    "class",
    "area_um2",
    "perimeter_um",
    "centroid_x",
    "centroid_y",
    "bbox_min_x",
    "bbox_min_y",
    "bbox_max_x",
    "bbox_max_y",
    "mean_probability",
)


def _round(value: float) -> float:
    rounded = round(float(value), DECIMALS)
    return 0.0 if rounded == 0 else rounded  # no "-0.0"


def _round_coords(coords):
    if isinstance(coords, (list, tuple)) and coords and isinstance(coords[0], (int, float)):
        return [_round(value) for value in coords[:2]]
    return [_round_coords(part) for part in coords]


def polygonal_geojson(geometry: BaseGeometry) -> dict:
    """GeoJSON dict of a Polygon/MultiPolygon (holes kept), exterior rings counter-clockwise."""
    if isinstance(geometry, Polygon):
        shaped: BaseGeometry = orient(geometry, 1.0)
    elif isinstance(geometry, MultiPolygon):
        shaped = MultiPolygon([orient(part, 1.0) for part in geometry.geoms])
    else:
        raise ValueError(f"objects must be Polygon or MultiPolygon, got {geometry.geom_type}")
    parts = shaped.geoms if isinstance(shaped, MultiPolygon) else [shaped]
    coordinates = [
        [_ring(p.exterior.coords), *(_ring(i.coords) for i in p.interiors)] for p in parts
    ]
    if isinstance(shaped, Polygon):
        return {"type": "Polygon", "coordinates": coordinates[0]}
    return {"type": "MultiPolygon", "coordinates": coordinates}


def _ring(coords) -> list[list[float]]:
    """[[x, y], ...] rounded like ``_round``. Pixel-edge outlines have integer vertices, which
    rounding leaves as they are: those skip the per-value Python loop (+ 0.0 turns -0.0 to 0.0)."""
    xy = np.asarray(coords, dtype=np.float64)[:, :2]
    if np.isfinite(xy).all() and np.array_equal(xy, np.trunc(xy)):
        return (xy + 0.0).tolist()
    return _round_coords(xy.tolist())


def feature_id(obj: SlideObject) -> str:
    """A UUID (QuPath's id format) derived from the object's id, class and box: stable on resume."""
    return str(uuid.uuid5(FEATURE_ID_NAMESPACE, f"{obj.id}:{obj.class_id}:{obj.bbox_xyxy}"))


def object_feature(
    obj: SlideObject,
    object_type: str,
    class_names: dict[int, str],
    class_colors: dict[int, Sequence[int]],
) -> dict:
    """One QuPath Feature: geometry + objectType, classification, measurements, object_id."""
    return {
        "type": "Feature",
        "id": feature_id(obj),
        "geometry": polygonal_geojson(obj.geometry),
        "properties": {
            "objectType": object_type,
            "classification": {
                "name": class_names[obj.class_id],
                "color": [int(c) for c in class_colors[obj.class_id]],
            },
            "measurements": {
                "area_um2": _round(obj.area_um2),
                "perimeter_um": _round(obj.perimeter_um),
                "mean_probability": _round(obj.mean_probability),
            },
            "object_id": int(obj.id),
        },
    }


def in_id_order(objects: Iterable[SlideObject]) -> Iterator[SlideObject]:
    """Objects by increasing id: a list/tuple is sorted; any other iterable is checked lazily.

    Raises ValueError at the first id that is not larger than the one before (a wrong file would
    otherwise be written silently); the atomic writers then leave no file behind.
    """
    if isinstance(objects, (list, tuple)):
        objects = sorted(objects, key=lambda o: o.id)
    previous = None
    for obj in objects:
        if previous is not None and obj.id <= previous:
            raise ValueError(
                f"objects must come in strictly increasing id order: id {obj.id} after "
                f"id {previous} (pass a list to have it sorted, or fix the producer)"
            )
        previous = obj.id
        yield obj


def write_geojson(
    path: str | os.PathLike[str],
    objects: Iterable[SlideObject],
    *,
    object_type: str = "annotation",
    class_names: dict[int, str],
    class_colors: dict[int, Sequence[int]],
) -> int:
    """Write a FeatureCollection (one Feature per object, streamed); returns the feature count.

    ``objects``: a list/tuple in any order, or any iterable already in increasing id order.
    """
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, got {object_type!r}")
    count = 0
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8", newline="\n") as handle:
        handle.write('{"type": "FeatureCollection", "features": [')
        for obj in in_id_order(objects):
            feature = object_feature(obj, object_type, class_names, class_colors)
            handle.write(("," if count else "") + "\n" + json.dumps(feature, ensure_ascii=False))
            count += 1
        handle.write("\n]}\n")
    return count


def object_row(obj: SlideObject, class_names: dict[int, str]) -> list:
    """One CSV row (columns CSV_COLUMNS, floats to DECIMALS decimals)."""
    return [
        obj.id,
        class_names[obj.class_id],
        f"{obj.area_um2:.{DECIMALS}f}",
        f"{obj.perimeter_um:.{DECIMALS}f}",
        f"{obj.centroid_xy[0]:.{DECIMALS}f}",
        f"{obj.centroid_xy[1]:.{DECIMALS}f}",
        *(int(v) for v in obj.bbox_xyxy),
        f"{obj.mean_probability:.{DECIMALS}f}",
    ]


def write_objects_csv(
    path: str | os.PathLike[str], objects: Iterable[SlideObject], class_names: dict[int, str]
) -> int:
    """One row per object, streamed, by id (``objects`` as for write_geojson); returns the count."""
    count = 0
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for obj in in_id_order(objects):
            writer.writerow(object_row(obj, class_names))
            count += 1
    return count
