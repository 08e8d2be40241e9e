"""Outputs a user can trust: exact outlines, a measurable seam index, labels off glass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from scipy import ndimage

from omniseg.evaluation.output_quality import (
    glass_share,
    grid_lines,
    outline_report,
    seam_index,
)
from omniseg.inference.components import object_mask
from omniseg.inference.outlines import mask_outline, outline_perimeter
from omniseg.io.tissue import TissueSettings, TissueThresholds, glass_mask


def _blobs(seed: int, shape=(90, 120), threshold=0.55) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), 3)
    return field > np.quantile(field, threshold)


@pytest.mark.parametrize("seed", range(6))
def test_outline_area_is_the_pixel_area_and_covers_exactly_the_pixels(seed):
    mask = _blobs(seed)
    mask[5, 3:40] = True  # a one-pixel-thin line: its area must survive
    mask[60, 60] = True
    mask[61, 61] = True  # touches the rest only diagonally
    outline = mask_outline(mask, 7, 11)
    assert outline.is_valid
    assert outline.area == mask.sum()
    ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]]
    inside = shapely.contains_xy(outline, xs + 11.5, ys + 7.5)
    np.testing.assert_array_equal(inside, mask)


def test_outline_keeps_holes_and_splits_corner_touching_parts():
    ring = np.ones((7, 7), bool)
    ring[2:5, 2:5] = False
    outline = mask_outline(ring, 0, 0)
    assert outline.geom_type == "Polygon" and len(outline.interiors) == 1
    assert outline.area == 40 and outline.interiors[0].envelope.area == 9
    diagonal = np.array([[1, 0], [0, 1]], bool)
    parts = mask_outline(diagonal, 0, 0)
    assert parts.geom_type == "MultiPolygon" and len(parts.geoms) == 2 and parts.is_valid


def test_huge_objects_are_reduced_without_losing_thin_parts(monkeypatch):
    from omniseg.inference import components

    monkeypatch.setattr(components, "MAX_TRACE_PIXELS", 64)
    ids = np.zeros((40, 40), np.uint32)
    ids[3, :] = 1  # a one-pixel line: strided sampling would miss it
    ids[10:30, 10:30] = 1
    root_of = np.array([-1, 0])
    mask, step = object_mask(
        lambda y0, y1, x0, x1: ids[y0:y1, x0:x1], root_of, 0, np.array([3, 0, 29, 39])
    )
    assert step > 1 and mask.any(axis=1)[0]  # the line's band is kept
    outline = mask_outline(mask, 3, 0, step)
    assert outline.is_valid and outline.area >= (ids > 0).sum()


def test_perimeter_does_not_count_pixel_stairs():
    yy, xx = np.mgrid[:201, :201]
    disc = np.hypot(yy - 100, xx - 100) <= 80
    assert outline_perimeter(disc) == pytest.approx(2 * np.pi * 80, rel=0.03)
    assert mask_outline(disc, 0, 0).length > 1.2 * 2 * np.pi * 80  # the staircase


def _feature(geometry, area_px: float, mpp: float) -> dict:
    return {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(geometry),
        "properties": {"measurements": {"area_um2": area_px * mpp * mpp}},
    }


def test_outline_report_flags_boxes_and_area_mismatches():
    mask = _blobs(1)
    lab, n = ndimage.label(mask)
    features = [
        _feature(mask_outline(lab == i, 0, 0), (lab == i).sum(), 0.5) for i in range(1, n + 1)
    ]
    clean = outline_report({"features": features}, 0.5)
    assert clean.rectangles == clean.area_mismatches == clean.invalid == 0
    boxed = shapely.box(0, 0, 100, 50)  # the old fallback: a box around 1,000 px of object
    report = outline_report({"features": [*features, _feature(boxed, 1000, 0.5)]}, 0.5)
    assert report.rectangles == 1 and report.area_mismatches == 1
    json.dumps(report.to_dict())


def test_seam_index_sees_changes_piled_on_the_grid_and_not_elsewhere():
    rng = np.random.default_rng(0)
    base = (ndimage.gaussian_filter(rng.random((300, 300)), 4) > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(grid_lines(300, 100.0), [100, 200, 300])
    smooth = seam_index(base, [(100.0, 1)])
    assert 0.5 < smooth.index < 1.5
    seamed = base.copy()
    seamed[:, 100:200] = np.roll(base[:, 100:200], 37, axis=0)  # tiles that disagree
    seamed[100:200, :] = np.roll(seamed[100:200, :], 23, axis=1)
    assert seam_index(seamed, [(100.0, 1)]).index > 2.0
    valid = np.ones_like(base, dtype=bool)
    valid[:, 95:205] = False  # the vertical seams are off the valid area
    restricted = seam_index(seamed, [(100.0, 1)], valid=valid)
    assert restricted.border_changes < seam_index(seamed, [(100.0, 1)]).border_changes


def test_glass_test_keeps_lumens_and_finds_glass():
    img = np.full((200, 300, 3), 240, np.uint8)  # glass
    img[:, :150] = (200, 120, 160)  # tissue on the left
    yy, xx = np.mgrid[:200, :300]
    img[np.hypot(yy - 100, xx - 70) < 15] = 240  # a lumen: enclosed, 700 µm² at 1 µm/px
    cut = TissueThresholds(saturation=20.0, density=0.2)
    glass = glass_mask(img, 1.0, cut, TissueSettings())  # no thumbnail: by size
    assert not glass[:, :140].any()  # tissue and its lumen
    assert glass[:, 160:].all()
    img[98:103, 70:150] = 240  # a pale cleft from the lumen to the glass: one region now
    background = np.zeros((200, 300), bool)
    background[:, 250:] = True  # where the thumbnail saw no tissue
    by_background = glass_mask(img, 1.0, cut, TissueSettings(), background)
    assert by_background[:, 160:].all() and by_background[100, 70]  # reaches the background
    img[98:103, 85:150] = (200, 120, 160)
    enclosed = glass_mask(img, 1.0, cut, TissueSettings(), background)
    assert not enclosed[:, :140].any() and enclosed[:, 160:].all()
    for top in (0, 60, 120):  # any window: the same answer for the lumen
        window = glass_mask(
            img[top : top + 80], 1.0, cut, TissueSettings(), background[top : top + 80]
        )
        np.testing.assert_array_equal(window[:, :140], enclosed[top : top + 80, :140])
    labels = np.zeros((200, 300), np.uint8)
    labels[:, :155] = 2
    assert glass_share(labels, glass) == pytest.approx(((labels > 0) & glass).sum() / (200 * 155))
    assert glass_share(np.zeros_like(labels), glass) == 0.0


def test_only_large_non_tissue_regions_of_the_thumbnail_are_open_glass():
    """A fine thumbnail resolves lumens and Bowman's spaces: they are not glass; big areas are."""
    from omniseg.io.tissue import glass_background

    tissue = np.zeros((100, 100), bool)
    tissue[:, :60] = True
    tissue[40:45, 20:25] = False  # a lumen: 25 px of 4 µm² = 100 µm²
    open_glass = glass_background(tissue, 2.0)  # 40 px x 100 px x 4 µm² = 16,000 µm² of glass
    assert open_glass[:, 60:].all() and not open_glass[:, :60].any()
    assert not glass_background(tissue, 1.0).any()  # at 1 µm/px the same 4,000 µm² is small
