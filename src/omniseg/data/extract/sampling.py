"""Where patches are cut (pure functions): centred on annotated objects, plus a share of
negatives drawn from annotated tissue away from the class."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from omniseg.io.raster import Window

POSITIVE_JITTER = 0.25  # an object's patch is shifted by up to this share of its side
NEGATIVE_TRIES = 200  # random draws per wanted negative before giving up (a tiny region)


def centred_window(cx: float, cy: float, patch: int, shape_hw: tuple[int, int]) -> Window:
    """A patch x patch window centred on (cx, cy), moved inside the image (cut to the image
    along an axis shorter than the patch)."""
    height, width = shape_hw
    h, w = min(patch, height), min(patch, width)
    y = min(max(round(cy - h / 2), 0), height - h)
    x = min(max(round(cx - w / 2), 0), width - w)
    return Window(y, x, h, w)


def object_points(objects: Sequence[BaseGeometry], limit: int, rng: np.random.Generator):
    """Up to ``limit`` objects chosen at random (seeded), each as a point inside it."""
    order = rng.permutation(len(objects))[:limit] if limit < len(objects) else range(len(objects))
    points = []
    for i in sorted(int(j) for j in order):
        p = objects[i].representative_point()
        points.append((p.x, p.y))
    return points


def jittered(points, patch: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Each point shifted by up to ``POSITIVE_JITTER`` x patch (so objects do not always sit in
    the middle, which a network would learn)."""
    reach = POSITIVE_JITTER * patch
    return [(x + rng.uniform(-reach, reach), y + rng.uniform(-reach, reach)) for x, y in points]


def negative_points(
    region: BaseGeometry | None,
    avoid: BaseGeometry | None,
    count: int,
    rng: np.random.Generator,
    on_tissue: Callable[[float, float], bool] | None = None,
) -> list[tuple[float, float]]:
    """``count`` random points inside ``region``, outside ``avoid`` and (if given) on tissue;
    fewer when the region is too small to hold them."""
    if region is None or region.is_empty or count <= 0:
        return []
    shapely.prepare(region)
    if avoid is not None:
        shapely.prepare(avoid)
    x0, y0, x1, y1 = region.bounds
    points: list[tuple[float, float]] = []
    for _ in range(count * NEGATIVE_TRIES):
        if len(points) == count:
            break
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if not shapely.contains_xy(region, x, y):
            continue
        if avoid is not None and shapely.contains_xy(avoid, x, y):
            continue
        if on_tissue is not None and not on_tissue(x, y):
            continue
        points.append((x, y))
    return points
