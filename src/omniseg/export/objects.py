"""The per-object record shared by the inference stage (producer) and the writers (consumers)."""

from __future__ import annotations

from dataclasses import dataclass

from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True)
class SlideObject:
    """One connected object of one class. Geometry and coordinates are in level-0 pixels."""

    id: int  # 1-based, the same in objects.geojson and objects.csv
    class_id: int  # catalogue task id; label value = class_id + 1 (glomeruli: capsule id 2)
    geometry: BaseGeometry  # shapely Polygon or MultiPolygon, holes kept
    area_um2: float
    perimeter_um: float
    centroid_xy: tuple[float, float]
    bbox_xyxy: tuple[int, int, int, int]  # min x, min y, max x, max y (level-0 px)
    mean_probability: float
