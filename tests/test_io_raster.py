"""The fast rasteriser equals the exhaustive pixel-centre test, for any polygon and window."""

from __future__ import annotations

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Point, Polygon, box

from omniseg.io.raster import polygon_mask


def exhaustive(geometry, y, x, h, w) -> np.ndarray:
    ys, xs = np.mgrid[y : y + h, x : x + w] + 0.5
    return shapely.contains_xy(geometry, xs, ys)


def star(cx, cy, radii, turn) -> Polygon:
    angles = np.linspace(0, 2 * np.pi, len(radii), endpoint=False) + turn
    points = [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles, strict=True)]
    return shapely.make_valid(Polygon(points))


@settings(max_examples=150, deadline=None)
@given(
    cx=st.floats(-20, 120),
    cy=st.floats(-20, 120),
    radii=st.lists(st.floats(0.3, 60), min_size=3, max_size=24),
    turn=st.floats(0, 6.3),
    hole=st.floats(0, 0.9),
    window=st.tuples(
        st.integers(-30, 90), st.integers(-30, 90), st.integers(1, 80), st.integers(1, 80)
    ),
)
def test_polygon_mask_equals_the_exhaustive_centre_test(cx, cy, radii, turn, hole, window):
    shape = star(cx, cy, radii, turn)
    if hole > 0.1:
        shape = shape.difference(Point(cx, cy).buffer(min(radii) * hole, 8))
    y, x, h, w = window
    np.testing.assert_array_equal(polygon_mask(shape, y, x, h, w), exhaustive(shape, y, x, h, w))


def test_edges_on_pixel_centres_multipolygons_and_touching_boxes():
    cases = [
        box(10.5, 10.5, 20.5, 20.5),  # edges through pixel centres
        box(10, 10, 20, 20),
        MultiPolygon([box(0, 0, 5, 5), box(5, 0, 10, 5)]),  # touching
        Point(32, 32).buffer(20).difference(Point(32, 32).buffer(8)),
        box(0, 0, 0.2, 100),  # thinner than a pixel
    ]
    for shape in cases:
        for window in ((0, 0, 64, 64), (3, 7, 17, 29), (-5, -5, 12, 12)):
            np.testing.assert_array_equal(polygon_mask(shape, *window), exhaustive(shape, *window))
