"""COCO JSON and labelme polygons: the formats most public glomerulus sets ship in.

COCO holds many images in one file: the image whose ``file_name`` matches the slide's file name
is used. Both give polygons in the image's pixels (level 0); categories / labels are the class
names that ``--classes`` maps to tasks. Run-length-encoded COCO masks are counted as skipped:
export polygons instead.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from shapely.geometry import Point, Polygon, box

from omniseg.errors import OmnisegError

SKIP_RLE = "run-length masks (export polygons)"
SKIP_SHAPE = "labelme points/lines"
QUARTER_CIRCLE_SEGMENTS = 16  # a labelme circle becomes a 64-gon


def is_coco(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("images"), list) and "annotations" in data


def is_labelme(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and "imagePath" in data


def holds_many_images(path: Path) -> bool:
    """True for a COCO file (one file may annotate every slide of an extract)."""
    if path.suffix.lower() != ".json":
        return False
    try:
        return is_coco(json.loads(path.read_bytes().decode("utf-8-sig")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False


def _basename(name: str) -> str:
    """File name of a path written on any system (COCO files carry Windows and POSIX paths)."""
    return PureWindowsPath(PurePosixPath(name).name).name


def _finite_polygon(path: Path, coords: list, what: str) -> Polygon | None:
    try:
        points = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    except (ValueError, TypeError) as exc:
        raise OmnisegError(
            f"{path}: {what} has malformed coordinates ({exc}); export again"
        ) from exc
    if not np.isfinite(points).all():
        raise OmnisegError(f"{path}: {what} has a non-finite coordinate; export again")
    return Polygon(points) if len(points) >= 3 else None


def coco_polygons(path: Path, data: dict, slide: str, skipped: Counter[str]) -> list[tuple]:
    """(category name, polygon) of the slide's image in a COCO file."""
    wanted = _basename(slide)
    images = [im for im in data["images"] if isinstance(im, dict)]
    matches = [im.get("id") for im in images if _basename(str(im.get("file_name", ""))) == wanted]
    if not matches:
        raise OmnisegError(
            f"{path}: no image named {wanted} in this COCO file ({len(images)} images); "
            "pass the slide the file annotates, or rename it as in the file's 'images'"
        )
    categories = {
        c.get("id"): str(c.get("name")) for c in data.get("categories", []) if isinstance(c, dict)
    }
    out = []
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("image_id") != matches[0]:
            continue
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, dict):
            skipped[SKIP_RLE] += 1
            continue
        name = categories.get(ann.get("category_id"))
        for coords in segmentation or []:
            polygon = _finite_polygon(path, coords, f"annotation {ann.get('id')}")
            if polygon is not None:
                out.append((name, polygon))
    return out


def labelme_polygons(path: Path, data: dict, skipped: Counter[str]) -> list[tuple]:
    """(label, polygon) of every area shape of a labelme file (polygon, rectangle, circle)."""
    out = []
    for item in data["shapes"]:
        if not isinstance(item, dict):
            continue
        kind = item.get("shape_type") or "polygon"
        points = item.get("points") or []
        what = f"shape {item.get('label')!r}"
        if kind == "polygon":
            polygon = _finite_polygon(path, points, what)
        elif kind == "rectangle" and len(points) == 2:
            (x0, y0), (x1, y1) = _finite_polygon(path, points * 2, what).exterior.coords[:2]
            polygon = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        elif kind == "circle" and len(points) == 2:
            (cx, cy), (px, py) = points
            polygon = Point(cx, cy).buffer(math.hypot(px - cx, py - cy), QUARTER_CIRCLE_SEGMENTS)
        else:
            polygon = None
        if polygon is None:
            skipped[SKIP_SHAPE] += 1
            continue
        out.append((str(item.get("label")) if item.get("label") is not None else None, polygon))
    return out
