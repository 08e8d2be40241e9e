"""COCO JSON and labelme polygons give the same patches as the same outlines in QuPath GeoJSON."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from omniseg.cli.main import main
from omniseg.data.extract import ExtractSettings, extract_patches
from tests._annotated_slides import paint, shapes, write_geojson

CLASSES = "Glomerulus=capsule,Tubule=dt"


def _solid(found):
    """Shapes a COCO polygon can hold: single polygons without holes, plus the Region."""
    return [(n, g) for n, g in found if g.geom_type == "Polygon" and not g.interiors]


def _ring(geometry) -> list[float]:
    return [float(v) for xy in list(geometry.exterior.coords)[:-1] for v in xy]


def write_coco(path, slides_shapes: dict[str, list]) -> None:
    names = sorted({n for found in slides_shapes.values() for n, _ in found})
    images, annotations = [], []
    for image_id, (file_name, found) in enumerate(slides_shapes.items()):
        images.append(
            {"id": image_id, "file_name": f"some/dir/{file_name}", "width": 1, "height": 1}
        )
        for name, geometry in found:
            annotations.append({"id": len(annotations), "image_id": image_id,
                                "category_id": names.index(name), "segmentation": [_ring(geometry)]})  # fmt: skip
    annotations.append({"id": 999, "image_id": 0, "category_id": 0,
                        "segmentation": {"counts": "abc", "size": [4, 4]}})  # RLE: skipped  # fmt: skip
    categories = [{"id": i, "name": n} for i, n in enumerate(names)]
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )


def write_labelme(path, found) -> None:
    items = [{"label": n, "points": np.asarray(g.exterior.coords)[:-1].tolist(),
              "shape_type": "polygon"} for n, g in found]  # fmt: skip
    items.append({"label": "Glomerulus", "points": [[5.0, 5.0]], "shape_type": "point"})
    path.write_text(json.dumps({"version": "5.0.1", "shapes": items, "imagePath": "x.tif"}))


def _masks(folder) -> list[np.ndarray]:
    with open(folder / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [np.asarray(Image.open(folder / r["mask"])) for r in rows]


def test_coco_and_labelme_give_the_geojson_patches(tmp_path):
    slides, per_slide = [], {}
    for seed in range(2):
        found = _solid(shapes(seed))
        slide = paint(tmp_path / f"biopsy{seed}.tif", found)
        slides.append(slide)
        per_slide[slide.name] = found
        (tmp_path / "geojson").mkdir(exist_ok=True)
        write_geojson(tmp_path / "geojson" / f"biopsy{seed}.geojson", found)
    settings = ExtractSettings(
        classes=CLASSES, patch=64, per_class=20, negatives=0.5, progress=False
    )
    reference = extract_patches(slides, tmp_path / "geojson", tmp_path / "ref", settings)
    write_coco(tmp_path / "coco.json", per_slide)  # one COCO file for both slides
    coco = extract_patches(slides, tmp_path / "coco.json", tmp_path / "coco", settings)
    assert reference.patches == coco.patches > 0
    for a, b in zip(_masks(tmp_path / "ref"), _masks(tmp_path / "coco"), strict=True):
        np.testing.assert_array_equal(a, b)
    record = json.loads((tmp_path / "coco" / "extract.json").read_text(encoding="utf-8"))
    skipped = [s["skipped_objects"] for s in record["slides"]]
    assert skipped[0] == {"run-length masks (export polygons)": 1} and skipped[1] == {}
    write_labelme(tmp_path / "biopsy0.json", per_slide["biopsy0.tif"])
    labelme = extract_patches([slides[0]], tmp_path / "biopsy0.json", tmp_path / "lm", settings)
    first = extract_patches(
        [slides[0]], tmp_path / "geojson" / "biopsy0.geojson", tmp_path / "r0", settings
    )
    assert labelme.patches == first.patches > 0
    lm = json.loads((tmp_path / "lm" / "extract.json").read_text(encoding="utf-8"))
    assert lm["slides"][0]["skipped_objects"] == {"labelme points/lines": 1}
    for a, b in zip(_masks(tmp_path / "r0"), _masks(tmp_path / "lm"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_coco_without_the_slide_is_one_clear_error(tmp_path, capsys):
    found = _solid(shapes(0))
    slide = paint(tmp_path / "biopsy0.tif", found)
    write_coco(tmp_path / "coco.json", {"another.tif": found})
    code = main(["extract", str(slide), "--annotations", str(tmp_path / "coco.json"),
                 "-o", str(tmp_path / "out"), "--classes", CLASSES, "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "no image named biopsy0.tif" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [{"label": "G", "points": [[0, 0], [1, "x"], [2, 2]]},
                                 {"label": "G", "points": [[0, 0], [1e999, 1], [2, 2]]}])  # fmt: skip
def test_malformed_labelme_is_refused(tmp_path, capsys, bad):
    slide = paint(tmp_path / "s.tif", _solid(shapes(0)))
    (tmp_path / "s.json").write_text(json.dumps({"shapes": [bad], "imagePath": "s.tif"}))
    code = main(["extract", str(slide), "--annotations", str(tmp_path / "s.json"),
                 "-o", str(tmp_path / "out"), "--classes", "G=capsule", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "s.json" in err
