"""ROI parsing (ImageScope XML, QuPath GeoJSON, mask images) and tissue detection."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from shapely.geometry import MultiPolygon, Point, Polygon, box

from omniseg.errors import OmnisegError
from omniseg.io import ArraySlide, detect_tissue, load_roi

SLIDE_W, SLIDE_H = 4000, 3000
HEPTAGON = [
    (1000, 500),
    (1600, 700),
    (1800, 1300),
    (1500, 1900),
    (900, 1900),
    (600, 1300),
    (700, 800),
]


@pytest.fixture(scope="module")
def info():
    return ArraySlide(np.zeros((8, 8, 3), np.uint8), 0.25).info.__class__(
        path="slide.svs",
        reader="test",
        level_dimensions=((SLIDE_W, SLIDE_H),),
        level_downsamples=(1.0,),
        mpp=0.25,
        objective_power=40.0,
    )


def imagescope_xml(regions: list[tuple[list[tuple[float, float]], bool]], region_type="0") -> str:
    parts = []
    for index, (points, negative) in enumerate(regions, start=1):
        vertices = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in points)
        parts.append(
            f'<Region Id="{index}" Type="{region_type}" NegativeROA="{int(negative)}">'
            f"<Attributes/><Vertices>{vertices}</Vertices></Region>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Annotations MicronsPerPixel="0.25">'
        '<Annotation Id="1" LineColor="65280"><Regions>' + "".join(parts) + "</Regions>"
        "</Annotation></Annotations>"
    )


def test_imagescope_polygon_uses_every_vertex(tmp_path, info):
    path = tmp_path / "roi.xml"
    path.write_text(imagescope_xml([(HEPTAGON, False)]))
    roi = load_roi(path, info)
    assert roi.equals(Polygon(HEPTAGON))
    assert roi.area == pytest.approx(Polygon(HEPTAGON).area)
    original_box = box(1000, 500, 1800, 1300)  # what reading vertices 0 and 2 as a box gave
    assert roi.contains(Point(700, 1300)) and not original_box.contains(Point(700, 1300))


def test_imagescope_multiple_and_negative_regions(tmp_path, info):
    second = [(2500, 2000), (3500, 2000), (3500, 2800), (2500, 2800)]
    hole = [(2800, 2200), (3200, 2200), (3200, 2600), (2800, 2600)]
    path = tmp_path / "multi.xml"
    path.write_text(imagescope_xml([(HEPTAGON, False), (second, False), (hole, True)]))
    roi = load_roi(path, info)
    assert isinstance(roi, MultiPolygon) and len(roi.geoms) == 2
    expected = Polygon(HEPTAGON).area + Polygon(second).area - Polygon(hole).area
    assert roi.area == pytest.approx(expected)
    assert not roi.contains(box(2900, 2300, 3100, 2500))


def test_roi_is_clipped_to_the_slide(tmp_path, info):
    path = tmp_path / "edge.xml"
    path.write_text(
        imagescope_xml([([(3500, 2500), (4500, 2500), (4500, 3500), (3500, 3500)], False)])
    )
    assert load_roi(path, info).area == pytest.approx(500 * 500)


@pytest.mark.parametrize("wrap", ["feature", "collection", "geometry", "list"])
def test_qupath_geojson_variants(tmp_path, info, wrap):
    outer = [[600, 600], [2000, 600], [2000, 2000], [600, 2000], [600, 600]]
    hole = [[1000, 1000], [1400, 1000], [1400, 1400], [1000, 1400], [1000, 1000]]
    geometry = {"type": "Polygon", "coordinates": [outer, hole]}
    feature = {"type": "Feature", "geometry": geometry, "properties": {"objectType": "annotation"}}
    data = {
        "feature": feature,
        "collection": {"type": "FeatureCollection", "features": [feature]},
        "geometry": geometry,
        "list": [feature],
    }[wrap]
    path = tmp_path / "roi.geojson"
    path.write_text(json.dumps(data))
    roi = load_roi(path, info)
    assert roi.area == pytest.approx(1400 * 1400 - 400 * 400)
    assert len(roi.interiors) == 1


def test_geojson_multipolygon(tmp_path, info):
    squares = [
        [[[x, 100], [x + 200, 100], [x + 200, 300], [x, 300], [x, 100]]] for x in (100, 1000)
    ]
    path = tmp_path / "multi.json"
    path.write_text(json.dumps({"type": "MultiPolygon", "coordinates": squares}))
    roi = load_roi(path, info)
    assert isinstance(roi, MultiPolygon) and roi.area == pytest.approx(2 * 200 * 200)


def test_mask_image_is_scaled_to_the_slide(tmp_path, info):
    mask = np.zeros((30, 40), np.uint8)  # 100 level-0 px per mask px
    mask[3:9, 5:15] = 255
    mask[20:25, 30:38] = 1
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path)
    roi = load_roi(path, info)
    assert roi.area == pytest.approx((6 * 10 + 5 * 8) * 100 * 100)
    assert roi.bounds == (500.0, 300.0, 3800.0, 2500.0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<Annotations><Annotation><Regions/></Annotation></Annotations>", "no positive region"),
        ("<Annotations><Region><Vertices><Vertex X='a' Y='1'/>", "not valid XML"),
        ('<Other/>', "not an ImageScope"),
        ('{"type": "FeatureCollection", "features": []}', "no Polygon"),
        ('{"type": "Point", "coordinates": [1, 2]}', "no Polygon"),
        ('{"type": ', "not valid JSON"),
        ('{"type": "Polygon", "coordinates": [[[9000, 9000], [9500, 9000], [9500, 9500]]]}',
         "no area inside the slide"),
        ("garbage bytes that are no image", "not an ImageScope XML, GeoJSON or mask"),
    ],
)  # fmt: skip
def test_invalid_roi_names_the_file(tmp_path, info, content, message):
    path = tmp_path / "bad_roi.txt"
    path.write_text(content)
    with pytest.raises(OmnisegError, match=message) as error:
        load_roi(path, info)
    assert "bad_roi.txt" in str(error.value)


def test_empty_mask_and_missing_file(tmp_path, info):
    path = tmp_path / "empty.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(path)
    with pytest.raises(OmnisegError, match="empty"):
        load_roi(path, info)
    with pytest.raises(OmnisegError, match="not found"):
        load_roi(tmp_path / "nope.xml", info)


# ---- tissue detection ------------------------------------------------------------------------

GLASS = (238, 236, 240)
HE_PINK = (200, 110, 170)
PALE_PAS = (210, 192, 210)
NUCLEI = (90, 60, 150)
BLUE_PEN = (30, 60, 200)
GREEN_PEN = (40, 150, 60)
BLACK_PEN = (20, 20, 25)


def synthetic_thumbnail(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    rgb = np.empty((400, 600, 3), np.uint8)
    rgb[:] = GLASS
    masks = {name: np.zeros((400, 600), np.uint8) for name in ("he", "pale", "pen", "speck")}
    cv2.ellipse(masks["he"], (150, 200), (100, 140), 0, 0, 360, 1, -1)
    cv2.circle(masks["pale"], (420, 130), 80, 1, -1)
    cv2.line(masks["pen"], (300, 380), (590, 250), 1, 12)
    cv2.line(masks["pen"], (280, 20), (280, 120), 1, 10)
    cv2.circle(masks["pen"], (500, 340), 15, 1, -1)
    cv2.circle(masks["speck"], (300, 200), 1, 1, -1)
    rgb[masks["he"] > 0] = HE_PINK
    nuclei = (rng.random((400, 600)) < 0.15) & (masks["he"] > 0)
    rgb[nuclei] = NUCLEI
    rgb[masks["pale"] > 0] = PALE_PAS
    pen = np.argwhere(masks["pen"] > 0)
    colours = np.array([BLUE_PEN, GREEN_PEN, BLACK_PEN], np.uint8)
    rgb[pen[:, 0], pen[:, 1]] = colours[
        np.where(pen[:, 1] > 450, 0, np.where(pen[:, 0] < 150, 1, 2))
    ]
    rgb[masks["speck"] > 0] = HE_PINK
    noise = rng.normal(0, 3, rgb.shape)
    rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    return rgb, {k: v.astype(bool) for k, v in masks.items()}


def test_tissue_detection_keeps_pale_stain_and_drops_ink_and_specks():
    rgb, masks = synthetic_thumbnail()
    tissue = detect_tissue(rgb)
    assert tissue.dtype == bool and tissue.shape == rgb.shape[:2]
    for name in ("he", "pale"):
        found = (tissue & masks[name]).sum() / masks[name].sum()
        assert found > 0.95, name
    assert (tissue & masks["pen"]).sum() < 0.05 * masks["pen"].sum()
    assert not tissue[masks["speck"]].any()
    outside = ~(masks["he"] | masks["pale"] | masks["pen"])
    assert (tissue & outside).sum() < 0.02 * outside.sum()


def test_blank_glass_has_no_tissue():
    rng = np.random.default_rng(1)
    glass = np.clip(np.array(GLASS) + rng.normal(0, 4, (300, 300, 3)), 0, 255).astype(np.uint8)
    assert not detect_tissue(glass).any()


def test_tissue_detection_is_deterministic_and_accepts_rgba():
    rgb, _ = synthetic_thumbnail(seed=2)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(detect_tissue(rgb), detect_tissue(rgba))


def test_optical_density_lookup_equals_the_formula_for_every_byte():
    """The table lookup gives bitwise the float32 of -log10((v + 1) / 256) summed over RGB."""
    from omniseg.io.tissue import _saturation_density

    values = np.arange(256, dtype=np.uint8)
    red, green = np.meshgrid(values, values[::-1])
    rgb = np.stack([red, green, red * 7 + green], axis=-1)  # 256 x 256: every byte per channel
    _, density = _saturation_density(np.ascontiguousarray(rgb))
    expected = -np.log10((rgb.astype(np.float32) + 1.0) / 256.0).sum(axis=2)
    assert density.dtype == np.float32
    np.testing.assert_array_equal(density, expected)


def test_thumbnail_is_the_same_on_threads():
    """Bands decoded at once are the bands decoded one by one (three bands here)."""
    from omniseg.io.levels import THUMBNAIL_BAND_ROWS, thumbnail

    pixels = np.random.default_rng(4).integers(0, 256, (1000, 3000, 3), dtype=np.uint8)
    reader = ArraySlide(pixels, 0.5)
    one, ds_one = thumbnail(reader, 2000)
    many, ds_many = thumbnail(reader, 2000, threads=3)
    assert ds_one == ds_many == 1.5 and one.shape == (667, 2000, 3)
    assert one.shape[0] > 2 * THUMBNAIL_BAND_ROWS
    np.testing.assert_array_equal(one, many)
