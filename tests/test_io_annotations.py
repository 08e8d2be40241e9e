"""Classified annotations from QuPath GeoJSON and ImageScope XML (load_annotations)."""

from __future__ import annotations

import json
import math

import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from omniseg.errors import OmnisegError
from omniseg.io.annotations import (
    SKIP_NO_AREA,
    SKIP_NO_GEOMETRY,
    SKIP_OUTSIDE,
    AnnotationSet,
    load_annotations,
)
from omniseg.io.base import SlideInfo

SLIDE_W, SLIDE_H = 4000, 3000
ELLIPSE_AREA_TOLERANCE = 0.01  # a 64-segment polygon falls short of the true ellipse by ~0.2 %


@pytest.fixture(scope="module")
def info() -> SlideInfo:
    return SlideInfo(
        path="slide.svs",
        reader="test",
        level_dimensions=((SLIDE_W, SLIDE_H),),
        level_downsamples=(1.0,),
        mpp=0.25,
        objective_power=40.0,
    )


def ring(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    """Closed GeoJSON ring of an axis-aligned rectangle."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def feature(geometry: dict | None, **properties) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def polygon(*rings: list[list[float]]) -> dict:
    return {"type": "Polygon", "coordinates": list(rings)}


def write_geojson(tmp_path, data, name="objects.geojson"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def collection(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def load_features(tmp_path, info, *features: dict) -> AnnotationSet:
    return load_annotations(write_geojson(tmp_path, collection(*features)), info)


def region_xml(
    index: int, points: list[tuple[float, float]], region_type="0", negative=False
) -> str:
    vertices = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in points)
    return (
        f'<Region Id="{index}" Type="{region_type}" NegativeROA="{int(negative)}">'
        f"<Attributes/><Vertices>{vertices}</Vertices></Region>"
    )


def layer_xml(regions: list[str], name="", attribute="") -> str:
    attributes = f'<Attribute Name="{attribute}" Id="0" Value=""/>' if attribute else ""
    return (
        f'<Annotation Id="1" Name="{name}" LineColor="65280">'
        f"<Attributes>{attributes}</Attributes><Regions>{''.join(regions)}</Regions></Annotation>"
    )


def write_xml(tmp_path, layers: list[str], name="objects.xml"):
    path = tmp_path / name
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><Annotations MicronsPerPixel="0.25">'
        + "".join(layers)
        + "</Annotations>"
    )
    return path


def corners(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# --- QuPath GeoJSON -----------------------------------------------------------------------------


def test_polygon_with_hole_keeps_exact_area_and_class(tmp_path, info):
    tumor = {"name": "Tumor", "color": [200, 0, 0]}
    result = load_features(
        tmp_path,
        info,
        feature(
            polygon(ring(100, 100, 1100, 1100), ring(400, 400, 600, 600)), classification=tumor
        ),
    )
    (only,) = result.shapes
    assert only.class_name == "Tumor" and only.object_type == "annotation"
    assert only.geometry.area == 1000 * 1000 - 200 * 200
    assert len(only.geometry.interiors) == 1 and only.geometry.is_valid
    assert result.skipped == {}


def test_multipolygon_is_one_shape(tmp_path, info):
    multi = {
        "type": "MultiPolygon",
        "coordinates": [[ring(0, 0, 100, 100)], [ring(500, 500, 700, 600)]],
    }
    (only,) = load_features(tmp_path, info, feature(multi, classification={"name": "Gland"})).shapes
    assert isinstance(only.geometry, MultiPolygon) and len(only.geometry.geoms) == 2
    assert only.geometry.area == 100 * 100 + 200 * 100


def test_touching_objects_of_one_class_stay_separate_but_merge_in_of_class(tmp_path, info):
    gland = {"name": "Gland"}
    result = load_features(
        tmp_path,
        info,
        feature(polygon(ring(0, 0, 100, 100)), classification=gland),
        feature(polygon(ring(100, 0, 200, 100)), classification=gland),
        feature(polygon(ring(1000, 1000, 1050, 1050)), classification={"name": "Vessel"}),
    )
    assert result.class_counts() == {"Gland": 2, "Vessel": 1}
    merged = result.of_class("Gland")
    assert isinstance(merged, Polygon) and merged.area == 200 * 100
    assert merged.equals(box(0, 0, 200, 100))
    assert result.of_class("Necrosis") is None


def test_geometry_collection_keeps_its_polygons(tmp_path, info):
    geometry = {
        "type": "GeometryCollection",
        "geometries": [
            polygon(ring(0, 0, 100, 100)),
            {"type": "Point", "coordinates": [500, 500]},
            {"type": "LineString", "coordinates": [[0, 0], [900, 900]]},
            polygon(ring(300, 300, 400, 500)),
        ],
    }
    (only,) = load_features(tmp_path, info, feature(geometry, classification="Tumor")).shapes
    assert only.geometry.area == 100 * 100 + 100 * 200


def test_points_lines_and_missing_geometry_are_skipped_and_counted(tmp_path, info):
    result = load_features(
        tmp_path,
        info,
        feature({"type": "Point", "coordinates": [10, 10]}),
        feature({"type": "LineString", "coordinates": [[0, 0], [50, 50]]}),
        feature({"type": "MultiPoint", "coordinates": [[1, 1], [2, 2]]}),
        feature(None),
        feature(polygon(ring(0, 0, 10, 10)), classification="Tumor"),
    )
    assert len(result.shapes) == 1
    assert result.skipped == {SKIP_NO_AREA: 3, SKIP_NO_GEOMETRY: 1}


def test_class_name_from_every_qupath_variant_and_unclassified(tmp_path, info):
    square = polygon(ring(0, 0, 10, 10))
    result = load_features(
        tmp_path,
        info,
        feature(square, classification={"name": "Tumor", "colorRGB": -3670016}),
        feature(square, classification="Stroma"),
        feature(square, classifications=["Immune", "Other"]),
        feature(square, classifications=[{"name": "Necrosis"}]),
        feature(square, name="no class"),
        feature(square, classification={"name": "  "}),
    )
    assert [s.class_name for s in result.shapes] == [
        "Tumor",
        "Stroma",
        "Immune",
        "Necrosis",
        None,
        None,
    ]
    assert result.class_counts()[None] == 2
    assert result.skipped == {}


def test_object_type_detection_cell_and_legacy_id(tmp_path, info):
    cell = feature(polygon(ring(0, 0, 30, 30)), objectType="cell", classification="Lymphocyte")
    cell["nucleusGeometry"] = polygon(ring(10, 10, 20, 20))
    legacy = feature(polygon(ring(50, 50, 60, 60)))
    legacy["id"] = "PathDetectionObject"
    result = load_features(
        tmp_path,
        info,
        feature(polygon(ring(100, 100, 120, 120)), objectType="detection", classification="Tumor"),
        cell,
        legacy,
    )
    assert [s.object_type for s in result.shapes] == ["detection", "cell", "detection"]
    assert result.shapes[1].geometry.area == 30 * 30  # the cell outline, not the nucleus


def test_list_of_features_and_single_feature_files(tmp_path, info):
    features = [
        feature(polygon(ring(0, 0, 10, 10)), classification="A"),
        feature(polygon(ring(20, 20, 40, 40)), classification="B"),
    ]
    listed = load_annotations(write_geojson(tmp_path, features, "list.json"), info)
    assert listed.class_counts() == {"A": 1, "B": 1}
    single = load_annotations(write_geojson(tmp_path, features[1], "single.json"), info)
    assert single.class_counts() == {"B": 1} and single.shapes[0].geometry.area == 400


def test_self_intersecting_polygon_is_repaired(tmp_path, info):
    bowtie = polygon([[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]])
    (only,) = load_features(tmp_path, info, feature(bowtie, classification="Tumor")).shapes
    assert only.geometry.is_valid
    assert only.geometry.area == pytest.approx(2 * (100 * 50 / 2))


# --- ImageScope XML -----------------------------------------------------------------------------


def test_xml_layers_are_classes_and_negative_regions_cut_their_own_layer(tmp_path, info):
    tumor = layer_xml(
        [
            region_xml(1, corners(0, 0, 1000, 1000)),
            region_xml(2, corners(2000, 0, 2500, 500)),
            region_xml(3, corners(200, 200, 400, 400), negative=True),
        ],
        name="Tumor",
    )
    stroma = layer_xml([region_xml(4, corners(100, 100, 500, 500))], attribute="Stroma")
    nameless = layer_xml([region_xml(5, corners(3000, 2000, 3100, 2100))])
    result = load_annotations(write_xml(tmp_path, [tumor, stroma, nameless]), info)
    assert result.class_counts() == {"Tumor": 2, "Stroma": 1, None: 1}
    assert all(s.object_type == "annotation" for s in result.shapes)
    assert result.of_class("Tumor").area == 1000 * 1000 - 200 * 200 + 500 * 500
    assert result.shapes[1].geometry.area == 500 * 500  # the hole did not touch this region
    assert result.of_class("Stroma").area == 400 * 400  # another layer's hole does not apply


def test_xml_ellipse_rectangle_and_lines(tmp_path, info):
    regions = [
        region_xml(1, [(1000, 1000), (1400, 1200)], region_type="2"),
        region_xml(2, corners(0, 0, 50, 80), region_type="1"),
        region_xml(3, [(0, 0), (300, 300)], region_type="4"),
        region_xml(4, [(10, 10), (20, 20)]),
    ]
    result = load_annotations(write_xml(tmp_path, [layer_xml(regions, name="Glom")]), info)
    ellipse, rectangle = (s.geometry for s in result.shapes)
    assert ellipse.area == pytest.approx(math.pi * 200 * 100, rel=ELLIPSE_AREA_TOLERANCE)
    assert ellipse.bounds == pytest.approx((1000, 1000, 1400, 1200))
    assert rectangle.area == 50 * 80
    assert result.skipped == {SKIP_NO_AREA: 2}


def test_region_partly_outside_is_clipped_and_one_outside_is_counted(tmp_path, info):
    regions = [
        region_xml(1, corners(3500, 2500, 4500, 3500)),
        region_xml(2, corners(4100, 100, 4300, 300)),
    ]
    result = load_annotations(write_xml(tmp_path, [layer_xml(regions, name="Tumor")]), info)
    (clipped,) = result.shapes
    assert clipped.geometry.area == 500 * 500
    assert clipped.geometry.bounds == (3500, 2500, SLIDE_W, SLIDE_H)
    assert result.skipped == {SKIP_OUTSIDE: 1}


# --- errors -------------------------------------------------------------------------------------


def test_every_shape_outside_the_slide_is_an_error(tmp_path, info):
    path = write_xml(tmp_path, [layer_xml([region_xml(1, corners(4100, 100, 4300, 300))])])
    with pytest.raises(OmnisegError, match=r"outside the slide \(4000 x 3000") as caught:
        load_annotations(path, info)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("broken.geojson", '{"type": "FeatureCollection", "features": [', "not valid JSON"),
        ("broken.xml", "<Annotations><Annotation></Annotations>", "not valid XML"),
        ("other.xml", "<svg></svg>", "not an ImageScope annotation file"),
        ("empty.json", "", "the file is empty"),
        ("text.txt", "hello", "neither XML nor JSON"),
        (
            "points.json",
            json.dumps([feature({"type": "Point", "coordinates": [1, 1]})]),
            "no polygon",
        ),
        ("nothing.xml", "<Annotations/>", "no polygon annotations found"),
    ],
)
def test_unusable_files_name_the_file(tmp_path, info, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(OmnisegError, match=problem) as caught:
        load_annotations(path, info)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_file(tmp_path, info):
    with pytest.raises(OmnisegError, match="not found"):
        load_annotations(tmp_path / "absent.geojson", info)


@pytest.mark.parametrize(
    ("rectangle", "reach"),
    [((0, 0, 8000, 6000), "(8000, 6000)"), ((-3000, 100, 200, 300), "(-3000, 100)")],
)
def test_wrong_coordinate_scale_mentions_the_slide_size(tmp_path, info, rectangle, reach):
    path = write_geojson(tmp_path, collection(feature(polygon(ring(*rectangle)))))
    with pytest.raises(OmnisegError, match="4000 x 3000 px at level 0") as caught:
        load_annotations(path, info)
    assert reach in str(caught.value) and "downsample" in str(caught.value)


def test_deep_nesting_is_a_clean_error(tmp_path, info):
    depth = 100_000
    path = tmp_path / "deep.json"
    path.write_text("[" * depth + "]" * depth)
    with pytest.raises(OmnisegError, match="nested too deeply"):
        load_annotations(path, info)
