"""Objects streamed through the on-disk spool: exact round trip, same output bytes, no leftovers."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import tifffile
from shapely.geometry import MultiPolygon, Polygon

from omniseg.export import SlideObject, write_geojson, write_objects_csv
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.inference.outputs import (
    ClassTally,
    class_tables,
    object_colors,
    object_names,
)
from omniseg.inference.results import WORK_NAME
from omniseg.inference.spool import ObjectSpool
from omniseg.models import InferenceSettings
from omniseg.testing import PointwiseModel

MPP = 0.25


def random_objects(count: int, seed: int = 0) -> list[SlideObject]:
    """Rings with holes and two-part objects at non-representable float coordinates."""
    rng = np.random.default_rng(seed)
    classes = sorted(object_names())
    objects = []
    for number in range(1, count + 1):
        cx, cy = rng.uniform(0, 1e5, size=2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(5, 40))))
        radius = rng.uniform(20, 80)
        outer = np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)])
        inner = np.column_stack(
            [cx + radius / 3 * np.cos(angles), cy + radius / 3 * np.sin(angles)]
        )
        geometry = Polygon(outer, [inner[::-1]])
        if number % 3 == 0:
            geometry = MultiPolygon([geometry, Polygon(outer + 1000.1)])
        minx, miny, maxx, maxy = geometry.bounds
        objects.append(
            SlideObject(
                id=number,
                class_id=int(rng.choice(classes)),
                geometry=geometry,
                area_um2=geometry.area * MPP**2,
                perimeter_um=geometry.length * MPP,
                centroid_xy=(geometry.centroid.x, geometry.centroid.y),
                bbox_xyxy=(int(minx), int(miny), int(np.ceil(maxx)), int(np.ceil(maxy))),
                mean_probability=float(rng.uniform(0.5, 1.0)),
            )
        )
    return objects


def test_spool_round_trip_is_exact_and_replayable(tmp_path):
    objects = random_objects(40)
    with ObjectSpool(tmp_path / "work" / "objects.spool") as spool:
        for obj in objects:
            spool.append(obj)
        for _ in range(2):  # each writer replays the spool
            back = list(spool)
            assert len(back) == len(objects)
            for got, want in zip(back, objects, strict=True):
                assert shapely.equals_exact(got.geometry, want.geometry, tolerance=0)
                assert got.geometry.geom_type == want.geometry.geom_type
                assert shapely.get_coordinates(got.geometry).tobytes() == (
                    shapely.get_coordinates(want.geometry).tobytes()
                )
                assert (got.id, got.class_id, got.bbox_xyxy) == (
                    want.id,
                    want.class_id,
                    want.bbox_xyxy,
                )
                assert (got.area_um2, got.perimeter_um, got.centroid_xy, got.mean_probability) == (
                    want.area_um2,
                    want.perimeter_um,
                    want.centroid_xy,
                    want.mean_probability,
                )
        assert spool.path.is_file()
    assert not spool.path.exists()


def test_spool_replays_in_id_order_whatever_the_append_order(tmp_path):
    """Objects are traced chunk by chunk, not in id order; the writers still get id order."""
    objects = random_objects(60, seed=3)
    shuffled = [objects[i] for i in np.random.default_rng(4).permutation(len(objects))]
    with ObjectSpool(tmp_path / "objects.spool") as spool:
        for obj in shuffled:
            spool.append(obj)
        assert spool.count == len(objects)
        for _ in range(2):
            back = list(spool)
            assert [o.id for o in back] == [o.id for o in objects]
            for got, want in zip(back, objects, strict=True):
                assert shapely.to_wkb(got.geometry) == shapely.to_wkb(want.geometry)
                assert (got.class_id, got.area_um2, got.bbox_xyxy) == (
                    want.class_id, want.area_um2, want.bbox_xyxy,
                )  # fmt: skip
        with pytest.raises(ValueError, match="already spooled"):
            spool.append(objects[5])


def test_spooled_objects_write_the_same_files_as_a_list(tmp_path):
    objects = random_objects(25, seed=1)
    names, colors = object_names(), object_colors()
    with ObjectSpool(tmp_path / "objects.spool") as spool:
        for obj in objects:
            spool.append(obj)
        write_geojson(tmp_path / "s.geojson", spool, class_names=names, class_colors=colors)
        write_objects_csv(tmp_path / "s.csv", spool, names)
    write_geojson(tmp_path / "l.geojson", objects[::-1], class_names=names, class_colors=colors)
    write_objects_csv(tmp_path / "l.csv", objects[::-1], names)
    for suffix in ("geojson", "csv"):
        spooled = (tmp_path / f"s.{suffix}").read_bytes()
        assert spooled == (tmp_path / f"l.{suffix}").read_bytes()
        assert spooled.count(b"\n") > len(objects)


def test_class_tally_matches_the_list_tables():
    objects = random_objects(30, seed=2)
    tally = ClassTally()
    for obj in objects:
        tally.add(obj)
    tables = tally.tables()
    assert tables == class_tables(objects) == class_tables(iter(objects))
    assert tables["objects"] == len(objects)
    assert sum(row["count"] for row in tables["classes"].values()) == len(objects)
    total_mm2 = sum(o.area_um2 for o in objects) / 1e6
    rounded = sum(r["area_mm2"] for r in tables["classes"].values())  # 6 decimals per class
    assert rounded == pytest.approx(total_mm2, abs=len(tables["classes"]) * 1e-6)


def test_pipeline_leaves_no_spool_behind(tmp_path):
    img = np.full((96, 128, 3), 245, np.uint8)
    yy, xx = np.mgrid[:96, :128]
    img[np.hypot(yy - 48, xx - 60) < 25] = (225, 110, 120)
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, img, resolution=(4e4, 4e4), resolutionunit="CENTIMETER")
    settings = SegmentSettings(progress=False, merge_chunk=64, keep_intermediate=True)
    inference = InferenceSettings(tile_size=64, tile_overlap=16, min_area_um2=(0.0,) * 6)
    result = segment_slide(slide, tmp_path / "out", settings, PointwiseModel(inference))
    assert result.summary["objects"] >= 1
    work = result.out_dir / WORK_NAME
    assert work.is_dir()  # intermediates kept on request ...
    assert not list(work.rglob("*.spool"))  # ... but the object spool is always removed
    assert (result.out_dir / "objects.csv").read_text().count("\n") == 1 + result.summary["objects"]
