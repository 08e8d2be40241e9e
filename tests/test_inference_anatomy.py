"""The glomerulus check (``--glomerulus-check``): the rule on its own, and through the whole-slide
pipeline on a tiny synthetic slide whose glomeruli span merge chunks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from omniseg.catalogue import tissue
from omniseg.data.synthetic import write_tiff
from omniseg.errors import OmnisegError
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.inference.anatomy import GlomerulusSize, TuftContacts, glomerulus_keep, plausible
from omniseg.inference.components import Components
from omniseg.inference.merge import DT, GLOMERULUS
from omniseg.models import InferenceSettings
from omniseg.testing import PointwiseModel

OUTPUTS = ("labels.ome.tif", "objects.geojson", "objects.csv", "overlay.png")
MPP = tissue("capsule").mpp  # the glomerulus scale: the slide is read as it is
CHUNK = 64  # merge chunk: the kept glomerulus is centred on a chunk corner
SIZE = GlomerulusSize(min_um=40.0, max_um=120.0)  # a small range keeps the slide small
CAPSULE_RGB = (100, 100, 170)  # the stand-in model's capsule, not its tuft (and not ink)
TUFT_RGB = (60, 60, 90)  # capsule and tuft
DT_RGB = (225, 110, 120)
GLASS = 245
CAPSULE_LABEL, TUFT_LABEL = tissue("capsule").label_value, tissue("tuft").label_value


def _disc(img: np.ndarray, centre: tuple[int, int], radius: int, rgb) -> None:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    img[np.hypot(yy - centre[0], xx - centre[1]) <= radius] = rgb


def glomeruli_slide(path: Path) -> Path:
    """Four glomerulus candidates at 2 µm/px: kept (60 µm, tuft in one of its four chunks),
    tuftless (60 µm), too small (about 25 µm, with tuft) and too large (about 160 µm, with tuft)."""
    img = np.full((200, 260, 3), GLASS, dtype=np.uint8)
    _disc(img, (CHUNK, CHUNK), 15, CAPSULE_RGB)
    _disc(img, (CHUNK - 8, CHUNK - 8), 4, TUFT_RGB)
    _disc(img, (30, 150), 15, CAPSULE_RGB)
    _disc(img, (30, 220), 6, CAPSULE_RGB)
    _disc(img, (30, 220), 3, TUFT_RGB)
    _disc(img, (140, 190), 40, CAPSULE_RGB)
    _disc(img, (140, 190), 8, TUFT_RGB)
    return write_tiff(path, img, MPP)


def run(slide: Path, out: Path, **kw):
    """Capsule and tuft (unless ``tasks`` says otherwise) with the stand-in model, no gates."""
    kw.setdefault("tasks", (tissue("capsule").id, tissue("tuft").id))
    settings = SegmentSettings(
        progress=False, merge_chunk=CHUNK, tissue_margin_um=None, glomerulus_size=SIZE, **kw
    )
    inference = InferenceSettings(tile_size=64, tile_overlap=16, min_area_um2=(0.0,) * 6)
    return segment_slide(slide, out, settings, PointwiseModel(inference))


def labels_of(result) -> np.ndarray:
    return tifffile.imread(result.out_dir / "labels.ome.tif", level=0)


def test_pipeline_check_keeps_only_the_plausible_glomerulus(tmp_path):
    slide = glomeruli_slide(tmp_path / "glom.tif")
    off = run(slide, tmp_path / "off", glomerulus_check="off")
    on = run(slide, tmp_path / "on", glomerulus_check="on")
    assert off.summary["classes"]["glomerulus"]["count"] == 4
    assert on.summary["classes"]["glomerulus"]["count"] == 1
    features = json.loads((on.out_dir / "objects.geojson").read_text())["features"]
    assert [f["properties"]["object_id"] for f in features] == [1]
    before, after = labels_of(off), labels_of(on)
    inside = np.zeros(before.shape, bool)
    inside[CHUNK - 15 : CHUNK + 16, CHUNK - 15 : CHUNK + 16] = True
    assert np.array_equal(after[inside], before[inside])  # the kept one is untouched
    assert (after[inside] == TUFT_LABEL).any()
    assert not after[~inside].any()  # removed ones leave neither capsule nor tuft pixels
    assert {CAPSULE_LABEL, TUFT_LABEL} <= set(np.unique(before[~inside]))
    assert on.summary["parameters"]["glomerulus_check"] == "on"
    assert on.summary["parameters"]["glomerulus_size"] == {"min_um": 40.0, "max_um": 120.0}


def test_the_check_is_the_default_and_needs_the_tuft_task(tmp_path):
    slide = glomeruli_slide(tmp_path / "glom.tif")
    default = run(slide, tmp_path / "default")
    on = run(slide, tmp_path / "on", glomerulus_check="on")
    for name in OUTPUTS:
        assert (default.out_dir / name).read_bytes() == (on.out_dir / name).read_bytes()
    off = run(slide, tmp_path / "off", glomerulus_check="off")
    assert "glomerulus_check" not in off.summary["parameters"]  # summaries stay as they were
    # without the tuft task there is no tuft to look for: nothing is removed
    capsule_only = run(slide, tmp_path / "capsule", tasks=(tissue("capsule").id,))
    assert capsule_only.summary["classes"]["glomerulus"]["count"] == 4


def test_check_on_changes_nothing_where_every_glomerulus_is_plausible(tmp_path):
    """Other classes and plausible glomeruli keep their pixels, ids and outlines."""
    img = np.full((160, 200, 3), GLASS, dtype=np.uint8)
    _disc(img, (80, 140), 30, DT_RGB)
    _disc(img, (80, 140), 20, GLASS)  # a tubule ring beside the glomerulus
    _disc(img, (CHUNK, CHUNK), 15, CAPSULE_RGB)
    _disc(img, (CHUNK, CHUNK), 5, TUFT_RGB)
    slide = write_tiff(tmp_path / "s.tif", img, MPP)
    tasks = (DT, tissue("capsule").id, tissue("tuft").id)
    off = run(slide, tmp_path / "off", tasks=tasks, glomerulus_check="off")
    on = run(slide, tmp_path / "on", tasks=tasks, glomerulus_check="on")
    assert off.summary["classes"]["glomerulus"]["count"] == 1
    assert off.summary["classes"]["dt"]["count"] == 1
    for name in OUTPUTS:
        assert (off.out_dir / name).read_bytes() == (on.out_dir / name).read_bytes()


def test_rule_at_a_given_pixel_size():
    size = GlomerulusSize()  # 40-400 µm
    area_px = np.array([np.pi * 50**2, np.pi * 50**2, np.pi * 10**2, np.pi * 300**2])
    has_tuft = np.array([True, False, True, True])
    # 0.5 µm/px: diameters 50, 50, 10 and 300 µm
    assert plausible(area_px, has_tuft, 0.25, size).tolist() == [True, False, False, True]
    # 2 µm/px: diameters 200, 200, 40 (the bound is kept) and 1200 µm
    assert plausible(area_px, has_tuft, 4.0, size).tolist() == [True, False, True, False]


def test_tuft_in_one_piece_counts_for_the_joined_object():
    """Pieces 1-3 (chunk ids) join into object 0; piece 4 is a tuftless object 1; piece 5 a DT."""
    contacts = TuftContacts()
    ids = np.array([[1, 2], [4, 5]], np.uint32)
    labels = np.array([[TUFT_LABEL, CAPSULE_LABEL], [CAPSULE_LABEL, DT + 1]], np.uint8)
    contacts.add(ids, labels)
    contacts.add(np.array([[3]], np.uint32), np.array([[CAPSULE_LABEL]], np.uint8))
    big = np.pi * 50**2
    components = Components(
        root_of=np.array([-1, 0, 0, 0, 1, 2]),
        group=np.array([GLOMERULUS, GLOMERULUS, DT], np.int16),
        area=np.array([big, big, 1.0]),
        code_sum=np.zeros(3),
        bbox=np.zeros((3, 4), np.int64),
    )
    assert contacts.per_object(components).tolist() == [True, False, False]
    keep = glomerulus_keep(components, contacts, 1.0, GlomerulusSize())
    assert keep.tolist() == [True, False, True]  # a DT is never judged as a glomerulus


def test_bad_settings_are_one_clear_error():
    with pytest.raises(OmnisegError, match="--glomerulus-check yes: valid: off, on"):
        SegmentSettings(glomerulus_check="yes")
    with pytest.raises(OmnisegError, match="glomerulus diameters need 0 < min < max"):
        GlomerulusSize(min_um=400.0, max_um=40.0)
