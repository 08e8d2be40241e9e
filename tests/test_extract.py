"""``omniseg extract``: annotated slides -> native-scale patches whose masks equal the polygons."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import shapely
import torch
from PIL import Image

from omniseg.data import discover_patches, load_labelled
from omniseg.data.augment import AugmentConfig
from omniseg.data.dataset import PatchDataset, check_group_split, group_split
from omniseg.data.extract import ExtractSettings, extract_patches
from omniseg.data.extract.run import UNKNOWN
from omniseg.data.negatives import IGNORE
from omniseg.errors import OmnisegError
from omniseg.training.losses import supervised_loss
from tests._annotated_slides import (
    MPP,
    SIDE,
    paint,
    polygons_of,
    shapes,
    write_geojson,
    write_imagescope,
    write_label_image,
)
from tests._training_synth import ONE_STAGE

CLASSES = "Glomerulus=capsule,Tubule=dt"
PATCH = 64


def settings(**kw) -> ExtractSettings:
    base = dict(classes=CLASSES, patch=PATCH, per_class=20, negatives=0.5, progress=False)
    return ExtractSettings(**{**base, **kw})


def rows_of(folder) -> list[dict]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def centre_mask(geometry, row: dict, shape_hw) -> np.ndarray:
    """Independent rasteriser: native pixel centres mapped to level 0, tested one by one."""
    f = float(row["mpp"]) / MPP
    x0, y0 = int(row["x"]) / f, int(row["y"]) / f
    h, w = shape_hw
    ys, xs = np.mgrid[:h, :w] + 0.5
    return shapely.contains_xy(geometry, (xs + x0) * f, (ys + y0) * f)


@pytest.fixture
def annotated(tmp_path):
    found = shapes()
    return paint(tmp_path / "kidney.tif", found), found


def test_masks_equal_the_polygons_rasterised_at_native_scale(annotated, tmp_path):
    slide, found = annotated
    notes = write_geojson(tmp_path / "kidney.geojson", found)
    result = extract_patches([slide], notes, tmp_path / "patches", settings())
    rows = rows_of(tmp_path / "patches")
    assert result.patches == len(rows) > 0
    region = polygons_of(found, "Region")
    tasks = {"0": polygons_of(found, "Tubule"), "2": polygons_of(found, "Glomerulus")}
    kinds = {(r["task_id"], r["kind"]) for r in rows}
    assert kinds == {("0", "positive"), ("0", "negative"), ("2", "positive"), ("2", "negative")}
    for row in rows:
        mask = np.asarray(Image.open(tmp_path / "patches" / row["mask"]))
        image = np.asarray(Image.open(tmp_path / "patches" / row["image"]))
        assert image.shape[:2] == mask.shape and row["ignore_value"] == str(UNKNOWN)
        fg = centre_mask(tasks[row["task_id"]], row, mask.shape)
        known = centre_mask(region, row, mask.shape) | fg
        np.testing.assert_array_equal(mask == 255, fg)
        np.testing.assert_array_equal(mask == UNKNOWN, ~known)
        assert set(np.unique(mask)) <= {0, UNKNOWN, 255}
        if row["kind"] == "positive":
            assert fg.any()
    scales = {r["task_id"]: float(r["mpp"]) for r in rows}
    assert scales == {"0": 1.0, "2": 2.0}  # each task at its own magnification
    report = json.loads((tmp_path / "patches" / "extract.json").read_text())
    assert report["slides"][0]["unmapped_classes"] == ["Artifact"]
    assert any("Artifact" in w for w in result.warnings)


def test_patch_pixels_are_the_slide_read_at_native_scale(annotated, tmp_path):
    slide, found = annotated
    notes = write_geojson(tmp_path / "kidney.geojson", found)
    extract_patches([slide], notes, tmp_path / "p", settings(classes="Tubule=ptc"))
    source = np.asarray(Image.open(slide).convert("RGB"))
    for row in rows_of(tmp_path / "p"):  # PTC is 40x = this slide's level 0: exact pixels
        image = np.asarray(Image.open(tmp_path / "p" / row["image"]))
        x, y = int(row["x"]), int(row["y"])
        np.testing.assert_array_equal(image, source[y : y + PATCH, x : x + PATCH])


def test_geojson_list_and_imagescope_xml_give_the_same_patches(annotated, tmp_path):
    slide, found = annotated
    a = write_geojson(tmp_path / "a.geojson", found, as_list=True)
    b = write_imagescope(tmp_path / "b.xml", found)
    extract_patches([slide], a, tmp_path / "a", settings())
    extract_patches([slide], b, tmp_path / "b", settings())
    rows_a, rows_b = rows_of(tmp_path / "a"), rows_of(tmp_path / "b")
    assert [r["x"] for r in rows_a] == [r["x"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        ma = np.asarray(Image.open(tmp_path / "a" / ra["mask"]))
        mb = np.asarray(Image.open(tmp_path / "b" / rb["mask"]))
        np.testing.assert_array_equal(ma, mb)


def test_label_image_route_labels_every_pixel(annotated, tmp_path):
    slide, found = annotated
    labels = write_label_image(tmp_path / "labels.tif", found, {"Tubule": 1, "Glomerulus": 3})
    extract_patches([slide], labels, tmp_path / "p", settings(classes=None))
    rows = rows_of(tmp_path / "p")
    assert {r["task_id"] for r in rows} == {"0", "2"}
    agree = []
    for row in rows:
        mask = np.asarray(Image.open(tmp_path / "p" / row["mask"]))
        assert UNKNOWN not in mask  # a label image annotates every pixel
        geometry = polygons_of(found, "Tubule" if row["task_id"] == "0" else "Glomerulus")
        agree.append(((mask == 255) == centre_mask(geometry, row, mask.shape)).mean())
    assert min(agree) > 0.97  # nearest sampling of a level-0 raster vs exact polygons


def test_complete_flag_makes_every_pixel_known(annotated, tmp_path):
    slide, found = annotated
    notes = write_geojson(tmp_path / "k.geojson", [s for s in found if s[0] != "Region"])
    result = extract_patches([slide], notes, tmp_path / "p", settings(complete=True))
    masks = [np.asarray(Image.open(tmp_path / "p" / r["mask"])) for r in rows_of(tmp_path / "p")]
    assert masks and all(UNKNOWN not in m for m in masks)
    assert not any("no 'Region'" in w for w in result.warnings)
    partial = extract_patches([slide], notes, tmp_path / "q", settings())
    assert any("no 'Region'" in w for w in partial.warnings)
    assert {r["kind"] for r in rows_of(tmp_path / "q")} == {"positive"}  # no known background


def test_split_is_by_slide_and_train_refuses_a_leaking_split(tmp_path):
    slides = []
    for seed in range(3):
        found = shapes(seed)
        slides.append(paint(tmp_path / f"s{seed}.tif", found))
        write_geojson(tmp_path / f"s{seed}.geojson", found)
    extract_patches(slides, tmp_path, tmp_path / "p", settings())
    records = discover_patches(tmp_path / "p")
    sides = {}
    for r in records:
        sides.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values())
    assert {"train", "val"} == set().union(*sides.values())
    first = records[0]
    flipped = "val" if first.split == "train" else "train"
    assert sum(r.group == first.group for r in records) > 1
    leaking = [dataclasses.replace(first, split=flipped), *records[1:]]
    with pytest.raises(OmnisegError, match="both 'train' and 'val'"):
        check_group_split(leaking, "train", "val")
    regrouped = group_split([dataclasses.replace(r, split=None) for r in records], 0.3, 1)
    assert all(len({r.split for r in regrouped if r.group == g}) == 1 for g in sides)


def test_unknown_pixels_never_reach_the_loss(annotated, tmp_path):
    slide, found = annotated
    notes = write_geojson(tmp_path / "k.geojson", found)
    extract_patches([slide], notes, tmp_path / "p", settings())
    records = discover_patches(tmp_path / "p")
    partial = [r for r in records if load_labelled(r)[2] is not None]
    assert partial, "some patch reaches beyond the annotated region"
    no_aug = AugmentConfig(enabled=False)
    sample = PatchDataset(partial, PATCH, no_aug, seed=0)[0]
    _, fg, known = load_labelled(partial[0])
    np.testing.assert_array_equal(sample["mask"].numpy() == 1, fg)
    np.testing.assert_array_equal(sample["mask"].numpy() == IGNORE, ~known)
    logits = torch.zeros(1, 2, PATCH, PATCH, requires_grad=True)
    supervised_loss(logits, sample["mask"][None]).backward()
    grad = logits.grad.abs().sum(1)[0].numpy()
    assert (grad[~known] == 0).all() and (grad[known] > 0).any()


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "not valid JSON"),
        ('{"type": "FeatureCollection", "features": []}', "no polygon"),
        ("<Annotations><Annotation", "not valid XML"),
    ],
)
def test_bad_annotation_files_fail_with_one_line_naming_the_file(
    annotated, tmp_path, content, words
):
    slide, _ = annotated
    bad = tmp_path / "kidney.geojson"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(OmnisegError, match=words) as info:
        extract_patches([slide], bad, tmp_path / "out", settings())
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_annotations_at_the_wrong_scale_or_off_the_slide_are_refused(annotated, tmp_path):
    from shapely import affinity

    slide, found = annotated
    scaled = [(n, affinity.scale(g, 4, 4, origin=(0, 0))) for n, g in found]
    notes = write_geojson(tmp_path / "big.geojson", scaled)
    with pytest.raises(OmnisegError, match=f"{SIDE} x {SIDE}"):
        extract_patches([slide], notes, tmp_path / "out", settings())
    moved = [(n, affinity.translate(g, SIDE + 10, 0)) for n, g in found if n != "Region"]
    notes = write_geojson(tmp_path / "off.geojson", moved[:1])
    with pytest.raises(OmnisegError, match="outside"):
        extract_patches([slide], notes, tmp_path / "out", settings())
    assert not (tmp_path / "out").exists()


def test_only_unmapped_classes_is_an_error(annotated, tmp_path):
    slide, found = annotated
    notes = write_geojson(tmp_path / "k.geojson", found)
    with pytest.raises(OmnisegError, match="no patches could be cut"):
        extract_patches([slide], notes, tmp_path / "out", settings(classes="Nothing=dt"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_round_trip_extract_train_segment_gives_qupath_geojson(tmp_path, capsys):
    """The user's route in CI: annotated slides -> extract -> train (3 steps) -> segment ->
    objects.geojson that QuPath (and our own annotation reader) imports."""
    from omniseg.cli.main import main
    from omniseg.io import open_slide
    from omniseg.io.annotations import load_annotations

    slides = []
    for seed in range(2):
        found = shapes(seed)
        slides.append(str(paint(tmp_path / f"biopsy{seed}.tif", found)))
        write_geojson(tmp_path / f"biopsy{seed}.geojson", found)
    patches, run = tmp_path / "patches", tmp_path / "run"
    extract = ["extract", *slides, "--annotations", str(tmp_path), "-o", str(patches),
               "--classes", CLASSES, "--patch", "64", "--per-class", "4", "--quiet"]  # fmt: skip
    assert main(extract) == 0
    assert "patches in" in capsys.readouterr().out
    train = ["train", *ONE_STAGE, "--data", str(patches), "--out", str(run), "--model", "omniseg-tiny",
             "--max-steps", "3", "--batch-size", "2", "--patch-size", "64", "--no-progress",
             "--precision", "fp32"]  # fmt: skip
    assert main(train) == 0
    out = tmp_path / "segmented"
    segment = ["segment", slides[0], "-o", str(out), "--weights", str(run / "model"), "--quiet"]
    assert main(segment) == 0
    result = out / "biopsy0"
    data = json.loads((result / "objects.geojson").read_text(encoding="utf-8"))
    assert data["type"] == "FeatureCollection"
    for feature in data["features"]:  # what QuPath's GeoJSON import reads
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
        props = feature["properties"]
        assert props["objectType"] in ("annotation", "detection")
        assert isinstance(props["classification"]["name"], str)
        assert len(props["classification"]["color"]) == 3
    with open_slide(slides[0]) as reader:
        if data["features"]:  # re-import: the route back into QuPath / another extract
            again = load_annotations(result / "objects.geojson", reader.info)
            assert len(again.shapes) == len(data["features"])
    if not data["features"]:
        return  # (a 3-step model may find nothing on another CPU; the route below needs objects)
    # the corrected-label-image route: segment's labels.ome.tif (a pyramid) as annotations
    relabelled = tmp_path / "from-labels"
    labels = result / "labels.ome.tif"
    assert main(["extract", slides[0], "--annotations", str(labels), "-o", str(relabelled),
                 "--patch", "64", "--per-class", "2", "--quiet"]) == 0  # fmt: skip
    rows = rows_of(relabelled)
    assert rows and all(UNKNOWN not in np.asarray(Image.open(relabelled / r["mask"])) for r in rows)


def test_cli_extract_error_is_one_line_and_exit_2(annotated, tmp_path, capsys):
    from omniseg.cli.main import main

    slide, _ = annotated
    missing = tmp_path / "none.geojson"
    assert (
        main(["extract", str(slide), "--annotations", str(missing), "-o", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_output_does_not_depend_on_the_number_of_threads(annotated, tmp_path):
    slide, found = annotated
    notes = write_geojson(tmp_path / "k.geojson", found)
    folders = []
    for workers in (0, 3):
        folder = tmp_path / f"w{workers}"
        extract_patches([slide], notes, folder, settings(workers=workers))
        folders.append(
            {
                p.relative_to(folder): p.read_bytes()
                for p in folder.rglob("*")
                if p.is_file() and p.name != "extract.json"
            }
        )
    assert folders[0] == folders[1] and len(folders[0]) > 10


def test_misaligned_label_image_and_one_file_for_two_slides_are_refused(annotated, tmp_path):
    import tifffile

    slide, found = annotated
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.zeros((SIDE, SIDE // 2), dtype=np.uint8))
    with pytest.raises(OmnisegError, match=f"{SIDE // 2} x {SIDE} px but the slide is"):
        extract_patches([slide], wrong, tmp_path / "out", settings())
    other = paint(tmp_path / "other.tif", found)
    notes = write_geojson(tmp_path / "k.geojson", found)
    with pytest.raises(OmnisegError, match="one annotation file for 2 slides"):
        extract_patches([slide, other], notes, tmp_path / "out", settings())
    assert not (tmp_path / "out").exists()


def test_val_fraction_zero_keeps_every_slide_in_train():
    from omniseg.data.dataset import val_groups

    assert val_groups(["a", "b", "c"], 0.0, seed=0) == set()
    assert len(val_groups(["a", "b", "c"], 0.3, seed=0)) == 1


def test_extract_hint_for_one_slide_trains_without_a_val_split(annotated, tmp_path, capsys):
    """One slide puts every patch in train: the printed train command must say --val-split none."""
    from omniseg.cli.main import main

    slide, found = annotated
    notes = write_geojson(tmp_path / "k.geojson", found)
    out = tmp_path / "p"
    assert main(["extract", str(slide), "--annotations", str(notes), "-o", str(out),
                 "--classes", CLASSES, "--patch", "64", "--per-class", "2", "--quiet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert f"train --data {out} --out RUN --val-split none" in printed
    assert not any(r["split"] == "val" for r in rows_of(out))


def test_a_second_extract_to_the_same_folder_is_refused_while_one_runs(annotated, tmp_path):
    """Two runs to one -o both reported success and the later replaced the other's patches
    (issue 36 point 5): extract now holds OUT's lock, as segment and train do."""
    from omniseg.locks import folder_lock

    slide, found = annotated
    notes = write_geojson(tmp_path / "k.geojson", found)
    out = tmp_path / "p"
    with folder_lock(out), pytest.raises(OmnisegError, match="being written by another running"):
        extract_patches([slide], notes, out, settings())
    assert not out.exists()
    assert extract_patches([slide], notes, out, settings()).patches > 0  # the lock is released


def test_escape_codes_in_class_names_never_reach_the_terminal(annotated, tmp_path, capsys):
    """A class named with an ANSI escape (issue 36 point 11) is shown escaped in the warning."""
    from omniseg.cli.main import main

    slide, found = annotated
    hostile = [*found, ("\x1b[2J\x1b[31mEvil", found[1][1])]
    notes = write_geojson(tmp_path / "k.geojson", hostile)
    assert main(["extract", str(slide), "--annotations", str(notes), "-o", str(tmp_path / "p"),
                 "--classes", CLASSES, "--patch", "64", "--per-class", "2", "--quiet"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b[2J\\x1b[31mEvil" in err


def test_a_killed_extracts_staging_folder_is_removed_by_the_next_run(annotated, tmp_path):
    """Issue 36 point 11: a killed extract left `.p.<random>/` beside OUT for good; the next
    run (holding OUT's lock) removes it. The cleaner never takes `.p.old` (a previous result
    mid-swap) or a name that is not a temp folder's."""
    from omniseg.atomic import remove_stale_staging

    slide, found = annotated
    notes = write_geojson(tmp_path / "k.geojson", found)
    out = tmp_path / "p"
    stale = tmp_path / ".p.k1ll3d_x"
    (stale / "0_1_dt").mkdir(parents=True)
    assert extract_patches([slide], notes, out, settings()).patches > 0
    assert not stale.exists() and not list(tmp_path.glob(".p.*"))
    for name in (".p.old", ".p.something-else", ".q.k1ll3d_x"):
        (tmp_path / name).mkdir()
    assert remove_stale_staging(out) == []


def test_annotations_exported_at_half_scale_are_refused_not_cut_from_glass(tmp_path):
    """Coordinates in µm at 0.5 µm/px (or exported at downsample 2) stay inside the slide, so
    the bounds check missed them and patches were cut from glass: the objects miss the tissue
    and fit it when scaled by 2, and the error says so."""
    from shapely import affinity
    from shapely.geometry import Point

    from omniseg.data.synthetic import write_tiff

    img = np.full((SIDE, SIDE, 3), 245, dtype=np.uint8)  # glass, tissue only in the far corner
    img[560:, 560:] = (225, 150, 170)
    centres = [(700, 700), (880, 640), (650, 900), (900, 900)]
    found = [("Glomerulus", Point(cx, cy).buffer(50, 24)) for cx, cy in centres]
    ys, xs = np.mgrid[:SIDE, :SIDE] + 0.5
    for _, g in found:
        img[shapely.contains_xy(g, xs, ys)] = (90, 50, 120)
    slide = write_tiff(tmp_path / "corner.tif", img, 0.5)
    halved = [(n, affinity.scale(g, 0.5, 0.5, origin=(0, 0))) for n, g in found]
    notes = write_geojson(tmp_path / "halved.geojson", halved)
    with pytest.raises(OmnisegError, match=r"halved.geojson: 0% of its 4 objects lie on tissue, "
                       r"but 100% do with their coordinates multiplied by 2"):  # fmt: skip
        extract_patches([slide], notes, tmp_path / "out", settings())
    assert not (tmp_path / "out").exists()
    right = write_geojson(tmp_path / "right.geojson", found)
    result = extract_patches([slide], right, tmp_path / "out", settings())
    assert result.patches > 0


def test_glomeruli_of_a_size_no_glomerulus_has_warn_about_the_pixel_size(annotated, tmp_path):
    """A wrong --mpp poisons a fine-tune (one BUPT image taught glomeruli twice their size):
    glomeruli whose median diameter lies outside 40-400 µm at the given pixel size are named."""
    slide, found = annotated
    notes = write_geojson(tmp_path / "a.geojson", found)
    right = extract_patches([slide], notes, tmp_path / "right", settings())
    assert not any("median diameter" in w for w in right.warnings)
    wrong = extract_patches([slide], notes, tmp_path / "wrong", settings(mpp=2.0))
    [warning] = [w for w in wrong.warnings if "median diameter" in w]
    assert "kidney.tif (a.geojson): its 2 glomeruli have a median diameter of" in warning
    assert "at 2 µm/px, outside the 40-400 µm" in warning and "--mpp" in warning
