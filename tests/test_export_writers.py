"""Writers: label OME-TIFF pyramid, GeoJSON, CSV, overlay PNG and atomic file replacement."""

from __future__ import annotations

import csv
import hashlib
import json
import xml.etree.ElementTree as ET

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image
from shapely.geometry import MultiPolygon, Polygon, shape

from omniseg.atomic import atomic_path, atomic_write_json, atomic_write_text
from omniseg.export import (
    SlideObject,
    render_overlay,
    write_geojson,
    write_label_ome_tiff,
    write_objects_csv,
)
from omniseg.export.label_tiff import pyramid_shapes
from omniseg.export.overlay import draw_legend, draw_outlines
from omniseg.io import ArraySlide, load_roi, open_slide

MPP = 0.25
CLASS_NAMES_BY_LABEL = {0: "background", 1: "dt", 2: "pt", 6: "ptc"}
CLASS_NAMES = {0: "dt", 1: "pt", 2: "capsule"}
CLASS_COLORS = {0: (255, 0, 0), 1: (0, 200, 0), 2: (0, 0, 255)}


def label_image(height: int = 1300, width: int = 1100) -> np.ndarray:
    yy, xx = np.indices((height, width))
    return np.select(
        [(xx // 97 + yy // 89) % 5 == 1, (xx // 97 + yy // 89) % 5 == 3], [1, 6], 0
    ).astype(np.uint8)


def tile_reader(labels: np.ndarray, calls: list | None = None):
    def read_tile(level, y, x, h, w):
        if calls is not None:
            calls.append((level, h, w))
        step = 2**level
        return labels[::step, ::step][y : y + h, x : x + w]

    return read_tile


# ---- label OME-TIFF --------------------------------------------------------------------------


def test_label_tiff_reads_few_tiles_ahead_and_threads_keep_the_bytes(tmp_path):
    """Compressing on threads must not buffer the pyramid: tifffile's default read ~2,000 tiles
    ahead (a 100k² slide's labels.ome.tif stage peaked 500 MB above the rest)."""
    import weakref

    from omniseg.export.label_tiff import TILES_AHEAD_PER_THREAD

    labels = np.random.default_rng(5).integers(0, 7, size=(40 * 16, 40 * 16), dtype=np.uint8)
    alive: set[int] = set()
    most = [0]

    def read_tile(level, y, x, h, w):
        tile = np.ascontiguousarray(labels[:: 2**level, :: 2**level][y : y + h, x : x + w])
        alive.add(id(tile))
        weakref.finalize(tile, alive.discard, id(tile))
        most[0] = max(most[0], len(alive))
        return tile

    written = {}
    for threads in (1, 2):
        path = tmp_path / f"t{threads}.ome.tif"
        write_label_ome_tiff(
            path, labels.shape, read_tile, mpp=MPP, class_names=CLASS_NAMES_BY_LABEL,
            tile=16, min_level_side=16, threads=threads,
        )  # fmt: skip
        written[threads] = path.read_bytes()
    assert written[1] == written[2]
    assert 1 <= most[0] <= 2 * TILES_AHEAD_PER_THREAD + 2  # 1,600 tiles at level 0 alone


def test_pyramid_shapes_halve_until_small():
    assert pyramid_shapes((1300, 1100), 256) == [(1300, 1100), (650, 550), (325, 275), (163, 138)]
    assert pyramid_shapes((100, 90), 512) == [(100, 90)]


def test_label_tiff_round_trip(tmp_path):
    labels = label_image()
    calls: list = []
    path = tmp_path / "labels.ome.tif"
    shapes = write_label_ome_tiff(
        path, labels.shape, tile_reader(labels, calls), mpp=MPP,
        class_names=CLASS_NAMES_BY_LABEL, tile=256, min_level_side=256,
    )  # fmt: skip
    assert max(h * w for _, h, w in calls) <= 256 * 256  # asked tile by tile
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert [level.shape for level in series.levels] == shapes
        for level, expected_shape in enumerate(shapes):
            data = series.levels[level].asarray()
            assert data.dtype == np.uint8 and data.shape == expected_shape
            np.testing.assert_array_equal(data, labels[:: 2**level, :: 2**level])
        page = tif.pages[0]
        assert page.is_tiled and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        root = ET.fromstring(tif.ome_metadata)
    namespace = {"ome": root.tag.split("}")[0][1:]}
    pixels = root.find("ome:Image/ome:Pixels", namespace)
    assert float(pixels.get("PhysicalSizeX")) == MPP and pixels.get("PhysicalSizeXUnit") == "µm"
    pairs = {
        int(m.get("K")): m.text for m in root.iterfind(".//ome:MapAnnotation//ome:M", namespace)
    }
    assert pairs == CLASS_NAMES_BY_LABEL
    with open_slide(path) as reader:  # our own auto-pick sees all levels and the pixel size
        assert reader.info.level_count == len(shapes)
        assert reader.info.mpp == pytest.approx(MPP)
        region = reader.read_region(1, 10, 20, 30, 40)
        np.testing.assert_array_equal(region[..., 0], labels[::2, ::2][20:60, 10:40])
    slide = openslide.OpenSlide(str(path))  # OpenSlide reads level 0 with the right mpp
    assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(MPP)
    rgba = np.asarray(slide.read_region((100, 200), 0, (50, 50)))
    np.testing.assert_array_equal(rgba[..., 0], labels[200:250, 100:150])
    slide.close()


def test_label_tiff_is_byte_deterministic(tmp_path):
    labels = label_image(600, 700)
    digests = set()
    for name in ("a.ome.tif", "b.ome.tif"):
        write_label_ome_tiff(
            tmp_path / name, labels.shape, tile_reader(labels), mpp=MPP,
            class_names=CLASS_NAMES_BY_LABEL, tile=256, min_level_side=128,
        )  # fmt: skip
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1


def test_failing_read_tile_leaves_no_file(tmp_path):
    labels = label_image(600, 700)
    read = tile_reader(labels)

    def failing(level, y, x, h, w):
        if level == 1:
            raise RuntimeError("model crashed")
        return read(level, y, x, h, w)

    path = tmp_path / "out" / "labels.ome.tif"
    with pytest.raises(RuntimeError, match="model crashed"):
        write_label_ome_tiff(
            path,
            labels.shape,
            failing,
            mpp=MPP,
            class_names={0: "bg"},
            tile=256,
            min_level_side=128,
        )
    assert list(path.parent.iterdir()) == []


def test_wrong_tile_shape_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        write_label_ome_tiff(
            tmp_path / "x.ome.tif", (300, 300), lambda *a: np.zeros((5, 5), np.uint8),
            mpp=MPP, class_names={0: "bg"}, tile=256,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# ---- GeoJSON and CSV -------------------------------------------------------------------------


def make_objects() -> list[SlideObject]:
    ring = Polygon(
        [(0, 0), (400, 0), (400, 300), (0, 300)], [[(100, 100), (200, 100), (200, 200), (100, 200)]]
    )
    triangle = Polygon([(1000.25, 50.5), (1300.125, 60), (1100, 400.75)])
    pair = MultiPolygon(
        [
            Polygon([(2000, 0), (2100, 0), (2100, 80)]),
            Polygon([(2300, 0), (2400, 0), (2400, 90), (2300, 90)]),
        ]
    )
    objects = []
    for object_id, (class_id, geometry) in enumerate(
        [(1, ring), (0, triangle), (2, pair)], start=1
    ):
        minx, miny, maxx, maxy = geometry.bounds
        objects.append(
            SlideObject(
                id=object_id,
                class_id=class_id,
                geometry=geometry,
                area_um2=geometry.area * MPP**2,
                perimeter_um=geometry.length * MPP,
                centroid_xy=(geometry.centroid.x, geometry.centroid.y),
                bbox_xyxy=(int(minx), int(miny), int(np.ceil(maxx)), int(np.ceil(maxy))),
                mean_probability=0.5 + object_id / 10,
            )
        )
    return objects[::-1]  # writers must sort by id


@pytest.mark.parametrize("object_type", ["annotation", "detection"])
def test_geojson_is_qupath_shaped_and_geometries_round_trip(tmp_path, object_type):
    objects = make_objects()
    path = tmp_path / "objects.geojson"
    count = write_geojson(
        path, objects, object_type=object_type, class_names=CLASS_NAMES, class_colors=CLASS_COLORS
    )
    data = json.loads(path.read_text())
    assert count == 3 and data["type"] == "FeatureCollection"
    by_id = {o.id: o for o in objects}
    assert [f["properties"]["object_id"] for f in data["features"]] == [1, 2, 3]
    ids = set()
    for feature in data["features"]:
        props = feature["properties"]
        obj = by_id[props["object_id"]]
        geometry = shape(feature["geometry"])
        assert geometry.is_valid
        assert geometry.area == pytest.approx(obj.geometry.area, rel=1e-6)
        assert props["objectType"] == object_type
        assert props["classification"] == {
            "name": CLASS_NAMES[obj.class_id],
            "color": list(CLASS_COLORS[obj.class_id]),
        }
        assert props["measurements"]["area_um2"] == pytest.approx(obj.area_um2, abs=1e-3)
        assert props["measurements"]["mean_probability"] == pytest.approx(
            obj.mean_probability, abs=1e-3
        )
        ids.add(feature["id"])
    assert len(ids) == 3
    holes = [
        f
        for f in data["features"]
        if f["geometry"]["type"] == "Polygon" and len(f["geometry"]["coordinates"]) > 1
    ]
    assert len(holes) == 1
    assert any(f["geometry"]["type"] == "MultiPolygon" for f in data["features"])


def test_geojson_is_deterministic(tmp_path):
    objects = make_objects()
    kwargs = {"class_names": CLASS_NAMES, "class_colors": CLASS_COLORS}
    write_geojson(tmp_path / "a.geojson", objects, **kwargs)
    write_geojson(tmp_path / "b.geojson", list(reversed(objects)), **kwargs)
    assert (tmp_path / "a.geojson").read_bytes() == (tmp_path / "b.geojson").read_bytes()


def test_empty_object_list_gives_valid_files(tmp_path):
    write_geojson(tmp_path / "e.geojson", [], class_names=CLASS_NAMES, class_colors=CLASS_COLORS)
    assert json.loads((tmp_path / "e.geojson").read_text()) == {
        "type": "FeatureCollection",
        "features": [],
    }
    write_objects_csv(tmp_path / "e.csv", [], CLASS_NAMES)
    assert (tmp_path / "e.csv").read_text().count("\n") == 1


def test_csv_rows_match_objects(tmp_path):
    objects = make_objects()
    path = tmp_path / "objects.csv"
    write_objects_csv(path, objects, CLASS_NAMES)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "id", "class", "area_um2", "perimeter_um", "centroid_x", "centroid_y",
        "bbox_min_x", "bbox_min_y", "bbox_max_x", "bbox_max_y", "mean_probability",
    ]  # fmt: skip
    for row, obj in zip(rows, sorted(objects, key=lambda o: o.id), strict=True):
        assert int(row["id"]) == obj.id and row["class"] == CLASS_NAMES[obj.class_id]
        assert float(row["area_um2"]) == pytest.approx(obj.area_um2, abs=1e-3)
        assert float(row["perimeter_um"]) == pytest.approx(obj.perimeter_um, abs=1e-3)
        assert (float(row["centroid_x"]), float(row["centroid_y"])) == pytest.approx(
            obj.centroid_xy, abs=1e-3
        )
        bbox = tuple(int(row[k]) for k in ("bbox_min_x", "bbox_min_y", "bbox_max_x", "bbox_max_y"))
        assert bbox == obj.bbox_xyxy
        assert float(row["mean_probability"]) == pytest.approx(obj.mean_probability, abs=1e-3)


def test_streamed_generator_gives_the_same_bytes_as_a_list(tmp_path):
    objects = make_objects()  # a list in reverse id order: sorted by the writers
    kwargs = {"class_names": CLASS_NAMES, "class_colors": CLASS_COLORS}
    in_order = sorted(objects, key=lambda o: o.id)
    assert write_geojson(tmp_path / "list.geojson", objects, **kwargs) == 3
    assert write_geojson(tmp_path / "gen.geojson", (o for o in in_order), **kwargs) == 3
    assert write_objects_csv(tmp_path / "list.csv", objects, CLASS_NAMES) == 3
    assert write_objects_csv(tmp_path / "gen.csv", iter(in_order), CLASS_NAMES) == 3
    for suffix in ("geojson", "csv"):
        streamed = (tmp_path / f"gen.{suffix}").read_bytes()
        assert streamed == (tmp_path / f"list.{suffix}").read_bytes()
        assert streamed.count(b"\n") >= 4  # header/footer + 3 objects: not trivially empty


@pytest.mark.parametrize("ids", [(2, 1, 3), (1, 3, 3)])
@pytest.mark.parametrize("writer", ["geojson", "csv"])
def test_out_of_order_stream_is_an_error_and_leaves_the_old_file(tmp_path, ids, writer):
    by_id = {o.id: o for o in make_objects()}
    stream = (by_id[i] for i in ids)
    path = tmp_path / f"objects.{writer}"
    path.write_text("previous result")
    with pytest.raises(ValueError, match="increasing id order"):
        if writer == "geojson":
            write_geojson(path, stream, class_names=CLASS_NAMES, class_colors=CLASS_COLORS)
        else:
            write_objects_csv(path, stream, CLASS_NAMES)
    assert path.read_text() == "previous result"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


# ---- overlay ---------------------------------------------------------------------------------


def test_overlay_draws_class_outlines_and_is_deterministic(tmp_path):
    thumb = np.full((300, 400, 3), 230, np.uint8)
    labels = np.zeros((150, 200), np.uint8)  # half size: resized to the thumbnail
    labels[20:80, 100:180] = 1
    labels[100:140, 20:60] = 6
    colors = {1: (255, 0, 0), 2: (0, 255, 0), 6: (0, 0, 255)}
    names = {0: "background", 1: "dt", 2: "pt", 6: "ptc"}
    first = render_overlay(
        tmp_path / "a.png", thumb, labels, class_names=names, class_colors=colors
    )
    render_overlay(tmp_path / "b.png", thumb, labels, class_names=names, class_colors=colors)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    image = np.asarray(Image.open(tmp_path / "a.png"))
    np.testing.assert_array_equal(image, first)
    assert tuple(image[40, 200]) == (255, 0, 0)  # top edge of the dt box, outside the legend
    assert tuple(image[100, 300]) == (230, 230, 230)  # interior untouched
    assert tuple(image[240, 40]) == (0, 0, 255)  # ptc outline (left edge)
    assert tuple(image[240, 80]) == (230, 230, 230)
    assert image.shape[0] == 300 and image.shape[1] > 400  # the legend is beside the image
    drawn = draw_outlines(thumb, np.repeat(np.repeat(labels, 2, 0), 2, 1), colors, 1)
    np.testing.assert_array_equal(image[:, :400], drawn)  # ... and hides none of it
    legend = image[:, 400:]
    assert (legend == 255).all(axis=2).any() and (legend == (0, 255, 0)).all(axis=2).any()


def test_legend_beside_a_small_patch_image_covers_nothing():
    thumb = np.full((40, 40, 3), 200, np.uint8)
    names = {i: name for i, name in enumerate(["background", "dt", "pt", "capsule", "tuft"])}
    colors = {i: (10 * i, 0, 0) for i in names}
    out = draw_legend(thumb, names, colors)
    np.testing.assert_array_equal(out[:40, :40], thumb)
    assert out.shape[0] > 40 and (out[40:, :40] == 255).all()  # grown below, white


# ---- atomic helpers --------------------------------------------------------------------------


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"b": 1, "a": 2}, sort_keys=True)
    assert target.read_text().index('"a"') < target.read_text().index('"b"')
    with pytest.raises(KeyError), atomic_path(target) as temp:
        temp.write_text("partial")
        raise KeyError("boom")
    assert json.loads(target.read_text()) == {"a": 2, "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    atomic_write_text(tmp_path / "new" / "note.txt", "hello")
    assert (tmp_path / "new" / "note.txt").read_text() == "hello"


def test_our_geojson_reads_back_as_an_roi(tmp_path):
    objects = make_objects()
    path = tmp_path / "objects.geojson"
    write_geojson(path, objects, class_names=CLASS_NAMES, class_colors=CLASS_COLORS)
    info = ArraySlide(np.zeros((500, 2500, 3), np.uint8), MPP).info
    roi = load_roi(path, info)
    assert roi.area == pytest.approx(sum(o.geometry.area for o in objects), rel=1e-6)


def test_geojson_rings_round_the_same_with_and_without_the_integer_fast_path():
    """Integer vertices take a vectorised path; it must equal rounding every value (and never
    write -0.0), as must rings with fractional vertices, holes and multipolygons."""
    from shapely.geometry import MultiPolygon, Polygon, mapping
    from shapely.geometry.polygon import orient

    from omniseg.export.vectors import DECIMALS, polygonal_geojson

    def slow(geometry):
        def rounded(value):
            r = round(float(value), DECIMALS)
            return 0.0 if r == 0 else r

        def walk(c):
            if isinstance(c[0], (int, float)):
                return [rounded(v) for v in c[:2]]
            return [walk(p) for p in c]

        shaped = (
            orient(geometry, 1.0)
            if isinstance(geometry, Polygon)
            else MultiPolygon([orient(p, 1.0) for p in geometry.geoms])
        )
        geo = mapping(shaped)
        return {"type": geo["type"], "coordinates": walk(geo["coordinates"])}

    square = Polygon([(-0.0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (1, 2), (2, 2), (2, 1)]])
    fractional = Polygon([(0.12345, 0.5), (3.00049, 0.2), (2.5, 2.99951), (-0.0004, 1.0)])
    for geometry in (square, fractional, MultiPolygon([square, fractional.buffer(0).envelope])):
        fast = polygonal_geojson(geometry)
        assert json.dumps(fast) == json.dumps(slow(geometry))
        assert "-0.0" not in json.dumps(fast)
