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
    island=st.booleans(),
    window=st.tuples(
        st.integers(-30, 90), st.integers(-30, 90), st.integers(1, 80), st.integers(1, 80)
    ),
)
def test_polygon_mask_equals_the_exhaustive_centre_test(cx, cy, radii, turn, hole, island, window):
    shape = star(cx, cy, radii, turn)
    if hole > 0.1:
        inner = min(radii) * hole
        shape = shape.difference(Point(cx, cy).buffer(inner, 8))
        if island:  # a part inside the hole
            shape = shape.union(Point(cx, cy).buffer(inner / 2, 8))
    y, x, h, w = window
    np.testing.assert_array_equal(polygon_mask(shape, y, x, h, w), exhaustive(shape, y, x, h, w))


def test_edges_on_pixel_centres_multipolygons_and_touching_boxes():
    cases = [
        box(10.5, 10.5, 20.5, 20.5),  # edges through pixel centres
        box(10, 10, 20, 20),
        MultiPolygon([box(0, 0, 5, 5), box(5, 0, 10, 5)]),  # touching
        Point(32, 32).buffer(20).difference(Point(32, 32).buffer(8)),
        box(0, 0, 0.2, 100),  # thinner than a pixel
        # an island inside another part's hole (a tuft drawn apart from its capsule ring)
        box(0, 0, 60, 60).difference(box(10, 10, 50, 50)).union(box(20, 20, 40, 40)),
        box(0, 0, 60, 60)
        .difference(box(10, 10, 50, 50))
        .union(box(20, 20, 40, 40).difference(box(27, 27, 33, 33))),
    ]
    for shape in cases:
        for window in ((0, 0, 64, 64), (3, 7, 17, 29), (-5, -5, 12, 12)):
            np.testing.assert_array_equal(polygon_mask(shape, *window), exhaustive(shape, *window))


@settings(max_examples=60, deadline=None)
@given(
    cx=st.floats(0, 100),
    cy=st.floats(0, 100),
    outer=st.floats(20, 60),
    hole=st.floats(0.5, 0.8),
    island=st.floats(0.5, 0.9),
    shift=st.tuples(st.integers(-20, 20), st.integers(-20, 20)),
    size=st.tuples(st.integers(8, 80), st.integers(8, 80)),
)
def test_an_island_inside_a_hole_is_kept(cx, cy, outer, hole, island, shift, size):
    ring = Point(cx, cy).buffer(outer, 16).difference(Point(cx, cy).buffer(outer * hole, 16))
    shape = ring.union(Point(cx, cy).buffer(outer * hole * island, 16))
    h, w = size
    y, x = int(cy) - h // 2 + shift[0], int(cx) - w // 2 + shift[1]  # around the island
    np.testing.assert_array_equal(polygon_mask(shape, y, x, h, w), exhaustive(shape, y, x, h, w))


def test_rgba_conversion_equals_the_plain_rule_opaque_or_not():
    """An opaque RGBA block takes cv2's channel drop; it must equal slicing off alpha, and any
    transparency still composites over white."""
    from omniseg.io.pixels import to_rgb_uint8

    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 256, size=(37, 53, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    out = to_rgb_uint8(rgba)
    assert out.flags.c_contiguous and np.array_equal(out, rgba[..., :3])
    rgba[3, 5, 3] = 0  # one transparent pixel: white there, the colour elsewhere
    out = to_rgb_uint8(rgba)
    assert (out[3, 5] == 255).all() and np.array_equal(out[4:], rgba[4:, :, :3])


def test_one_to_one_reads_equal_the_gathered_ones():
    """Reads at the level's own resolution slice the window; the result equals gathering the
    same rows and columns, inside the slide and across its edge."""
    from omniseg.io import ArraySlide
    from omniseg.io.levels import _as_slice, read_at_mpp

    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    slide = ArraySlide(image, mpp=0.5)
    np.testing.assert_array_equal(read_at_mpp(slide, 0.5, 10, 7, 40, 30), image[7:37, 10:50])
    edge = read_at_mpp(slide, 0.5, 100, 80, 40, 30)  # beyond the slide: white
    np.testing.assert_array_equal(edge[:10, :20], image[80:, 100:])
    assert (edge[10:] == 255).all() and (edge[:, 20:] == 255).all()
    assert _as_slice(np.arange(3, 9)) == slice(3, 9)
    gather = np.array([3, 4, 6])
    assert _as_slice(gather) is gather
