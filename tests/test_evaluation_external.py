"""Other-labs evaluation: metric maths on known masks, a synthetic COCO run with a pointwise model
double, and (only where ../shared is present) a 2-image run on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omniseg.errors import OmnisegError
from omniseg.evaluation.external import (
    VARIANTS,
    PixelCounts,
    bupt_mpp,
    bupt_stain,
    evaluate_bupt,
    evaluate_mouse,
    evaluate_other_labs,
    match_objects,
    require_data,
)
from omniseg.testing import PointwiseModel

DARK = (60, 60, 90)  # the stand-in's capsule and tuft; not black, which segment takes for ink
OTHER_LABS = Path(__file__).resolve().parents[2] / "shared" / "data" / "other-labs"


def _square(shape, y, x, size):
    mask = np.zeros(shape, bool)
    mask[y : y + size, x : x + size] = True
    return mask


def test_pixel_counts_on_known_masks():
    pred = _square((10, 10), 0, 0, 4)  # 16 px
    truth = _square((10, 10), 2, 0, 4)  # 16 px, 8 shared
    r = PixelCounts().add(pred, truth).report()
    assert r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(0.5)
    assert r["dice"] == pytest.approx(0.5)
    assert r["pred_fraction"] == pytest.approx(0.16)
    empty = PixelCounts().add(np.zeros((3, 3)), np.zeros((3, 3))).report()
    assert empty["precision"] is None and empty["dice"] == 1.0


def test_object_matching_at_iou_half():
    shape = (40, 40)
    truths = [_square(shape, 0, 0, 10), _square(shape, 20, 20, 10), _square(shape, 0, 30, 4)]
    pred = _square(shape, 0, 0, 10) | _square(shape, 20, 25, 10)  # IoU 1 and 50/150 = 0.33
    pred |= _square(shape, 35, 0, 3)  # a false positive
    r = match_objects(pred, truths)
    assert (r.matched, r.predicted, r.true) == (1, 3, 3)
    # IoU exactly 0.5 counts: 10x10 truth vs 10x5 prediction inside it
    half = match_objects(_square(shape, 0, 0, 10) & (np.arange(40) < 5)[None, :], truths[:1])
    assert half.matched == 1
    # two touching truths, one prediction covering both: at most one match
    pair = [_square(shape, 0, 0, 10), _square(shape, 0, 10, 10)]
    both = match_objects(pair[0] | pair[1], pair)  # IoU 0.5 with each
    assert (both.matched, both.predicted, both.true) == (1, 1, 2)


def test_names_give_stain_and_pixel_size():
    assert bupt_stain("20181346-PASM.jpg") == "silver"
    assert bupt_stain("K20173336-PASM0002.jpg") == "silver"
    assert bupt_stain("K20173336-PAS0001.jpg") == "pas"
    assert bupt_stain("20180022-Masson.JPG") == "trichrome"
    assert bupt_mpp("20181462-PAS-0400-0003.jpg")[0] == 0.22
    assert bupt_mpp("20181472-PAS-200-1.jpg")[0] == 0.5
    assert bupt_mpp("20180002-PASM.jpg")[1].startswith("estimate")


def _fake_bupt(root: Path) -> None:
    (root / "JPEGImages").mkdir(parents=True)
    images, annotations = [], []
    for i, name in enumerate(["a-PASM-200.jpg", "b-Masson.jpg"]):
        rgb = np.full((160, 200, 3), 240, np.uint8)
        rgb[40:120, 60:140] = DARK
        Image.fromarray(rgb).save(root / "JPEGImages" / name, quality=95)
        images.append({"id": i, "file_name": f"x/JPEGImages/{name}", "height": 160, "width": 200})
        poly = [60, 40, 139, 40, 139, 119, 60, 119]
        annotations.append({"id": i, "image_id": i, "category_id": i, "segmentation": [poly]})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "JPEGImages" / "c-PAS.jpg")
    coco = {"images": images, "annotations": annotations, "categories": []}
    (root / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")


def test_bupt_on_synthetic_coco(tmp_path):
    _fake_bupt(tmp_path / "bupt")
    report = evaluate_bupt(PointwiseModel(), tmp_path / "bupt")
    assert report["images_scored"] == 2 and report["images_unlabelled_skipped"] == 1
    assert set(report["stains"]) == {"all", "silver", "trichrome"}
    assert set(report["stains"]["all"]) == {"images", *VARIANTS}
    for variant in VARIANTS:  # segment's own label map too: merge, gates, minimum area
        scores = report["stains"]["all"][variant]
        assert scores["object"]["counts"] == {"matched": 2, "predicted": 2, "true": 2}, variant
        assert scores["pixel"]["dice"] > 0.9, variant
    # 80 px at 0.5 µm/px: 1600 µm² (above the 500 µm² minimum) and a 45 µm equivalent diameter
    # with a tuft inside, so the glomerulus check keeps both


def test_bupt_segment_variants_drop_what_segment_drops(tmp_path):
    """A 20 px square (100 µm², below the 500 µm² minimum) is a raw object, never segment's."""
    _fake_bupt(tmp_path / "bupt")
    path = tmp_path / "bupt" / "JPEGImages" / "a-PASM-200.jpg"
    rgb = np.asarray(Image.open(path)).copy()
    rgb[130:150, 160:180] = DARK
    Image.fromarray(rgb).save(path, quality=95)
    report = evaluate_bupt(PointwiseModel(), tmp_path / "bupt")
    silver = report["stains"]["silver"]
    assert silver["raw"]["object"]["counts"]["predicted"] == 2
    assert silver["as_segment"]["object"]["counts"]["predicted"] == 1
    assert silver["as_segment_glomerulus_check"]["object"]["counts"]["predicted"] == 1


def test_mouse_scores_only_the_labelled_centre(tmp_path):
    rgb = np.full((200, 200, 3), 240, np.uint8)
    rgb[60:150, 60:150] = 40
    rgb[0:10, 90:110] = 40  # dark in the margin: must not count
    label = np.zeros((140, 140), np.uint8)
    label[30:120, 30:120] = 3  # the same square in centre coordinates (margin 30)
    Image.fromarray(rgb).save(tmp_path / "m.png")
    Image.fromarray(label, mode="L").save(tmp_path / "m-labels.png")
    report = evaluate_mouse(PointwiseModel(), tmp_path)
    assert report["per_image"]["m"]["margin_px"] == [30, 30]
    capsule = report["pooled"]["capsule"]
    assert capsule["dice"] > 0.9 and capsule["precision"] > 0.9
    assert capsule["counts"]["pixels"] == 140 * 140
    assert report["pooled"]["vessel"]["pred_fraction"] == 0.0


def test_missing_data_is_one_clear_error(tmp_path):
    with pytest.raises(OmnisegError, match="other-labs evaluation data not found"):
        require_data(tmp_path / "absent")


def test_real_other_labs_two_bupt_images():
    if not OTHER_LABS.is_dir():
        pytest.skip("../shared/data/other-labs is not available")
    from omniseg.models.bundled import default_model_dir

    model_dir = default_model_dir()
    if model_dir is None:
        pytest.skip("no bundled model in this build")
    report = evaluate_other_labs(model_dir, OTHER_LABS, bupt_limit=2)
    assert report["bupt"]["images_scored"] == 2
    assert report["mouse"]["images"] == 4
    assert report["weights_sha256"]
    for variant in VARIANTS:
        pixel = report["bupt"]["stains"]["all"][variant]["pixel"]
        assert 0.0 <= pixel["dice"] <= 1.0
