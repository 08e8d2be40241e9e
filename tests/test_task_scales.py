"""A task learnt and run at another magnification than its patches were labelled at (PTC at 20x
from 40x patches): catalogue, resampled records, scoring on the labels' grid, segment's passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from omniseg.catalogue import default_catalogue, moved_tasks, tissue
from omniseg.data import PatchRecord, load_labelled
from omniseg.data.patches import at_model_scales
from omniseg.data.synthetic import synthetic_tissue, write_tiff
from omniseg.errors import OmnisegError
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.models import InferenceSettings
from omniseg.scoring.records import score_records
from omniseg.testing import PointwiseModel
from omniseg.training import load_train_config
from tests._training_synth import FAST, make_patch_set, one_thread  # noqa: F401 - fixture

PTC = tissue("ptc")
AT_20X = default_catalogue().scale_at(20).id
AT_40X = default_catalogue().scale_at(40).id


def test_task_scales_parse_move_and_refuse():
    cat = default_catalogue()
    assert cat.parse_task_scales(("ptc=20",)) == {PTC.id: AT_20X}
    assert cat.parse_task_scales(("PTC=20x",)) == {PTC.id: AT_20X}
    moved = cat.with_task_scales({PTC.id: AT_20X})
    assert moved.tissue("ptc").scale_id == AT_20X
    assert [t.scale_id for t in moved.tissues if t.name != "ptc"] == [
        t.scale_id for t in cat.tissues if t.name != "ptc"
    ]
    assert moved_tasks(moved) == {PTC.id: AT_20X} and moved_tasks(cat) == {}
    for bad in ("ptc", "ptc=15", "nerve=20", "ptc=x"):
        with pytest.raises(OmnisegError):
            cat.parse_task_scales((bad,))
    with pytest.raises(OmnisegError, match="task_scales|ptc=20|TASK=MAGNIFICATION"):
        load_train_config(overrides={"data.task_scales": "ptc:20"})


def _blocky_pair(tmp_path, size=64, block=4):
    """An image whose dark blocks are the mask, in 4x4 blocks so 2x downsampling keeps them."""
    rng = np.random.default_rng(0)
    blocks = rng.random((size // block, size // block)) < 0.3
    mask = np.kron(blocks, np.ones((block, block), dtype=bool))
    image = np.where(mask[..., None], 40, 230).astype(np.uint8).repeat(3, axis=2)
    Image.fromarray(image).save(tmp_path / "im.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "im_mask_PTC_lumen.png")
    record = PatchRecord(
        tmp_path / "im.png", tmp_path / "im_mask_PTC_lumen.png", PTC.id, AT_40X, "pas"
    )
    return record, mask


def test_a_record_seen_at_20x_is_resampled_by_area(tmp_path):
    record, mask = _blocky_pair(tmp_path)
    (seen,) = at_model_scales([record], {PTC.id: AT_20X})
    assert (seen.scale_id, seen.source_scale_id, seen.resample_factor) == (AT_20X, AT_40X, 0.5)
    image, small, known = load_labelled(seen)
    assert image.shape == (32, 32, 3) and small.shape == (32, 32) and known is None
    assert np.array_equal(small, mask[::2, ::2])  # 4x4 blocks: every 2x2 area is pure
    _, full, _ = load_labelled(seen, as_labelled=True)
    assert np.array_equal(full, mask)
    assert at_model_scales([record], {}) == [record]


class _Recorder:
    """A predictor whose probability is the pixel's darkness; remembers what it was shown."""

    precision = "fp32"

    def __init__(self) -> None:
        self.seen: list[tuple[tuple[int, ...], list[int]]] = []

    def predict_probability(self, x, tasks, scale_ids, tta=False):
        self.seen.append((tuple(x.shape[-2:]), list(scale_ids)))
        return (1.0 - x.float().mean(dim=1)).clamp(0, 1)


def test_a_resampled_record_is_predicted_at_20x_and_scored_on_its_40x_labels(tmp_path):
    record, _ = _blocky_pair(tmp_path)
    (seen,) = at_model_scales([record], {PTC.id: AT_20X})
    predictor = _Recorder()
    rows, _ = score_records(predictor, InferenceSettings(), [seen])
    assert predictor.seen == [((32, 32), [AT_20X])]
    (row,) = rows
    assert (row["height"], row["width"], row["scale_id"]) == (64, 64, AT_40X)
    assert row["dice"] > 0.95  # the blocks survive 20x and come back onto the 40x grid
    direct, _ = score_records(_Recorder(), InferenceSettings(), [record])
    assert direct[0]["dice"] == pytest.approx(1.0)


def test_segment_runs_ptc_at_20x_when_the_model_says_so_and_at_40x_otherwise(tmp_path):
    slide = write_tiff(tmp_path / "s.tif", synthetic_tissue(128, 160), 0.25)
    inference = InferenceSettings(tile_size=64, tile_overlap=16, min_area_um2=(0.0,) * 6)
    settings = SegmentSettings(progress=False, merge_chunk=64, precision="fp32")
    magnifications = {}
    for name, catalogue in (
        ("40x", default_catalogue()),
        ("20x", default_catalogue().with_task_scales({PTC.id: AT_20X})),
    ):
        model = PointwiseModel(inference)
        model.catalogue = catalogue
        result = segment_slide(slide, tmp_path / name, settings, model)
        summary = json.loads((result.out_dir / "summary.json").read_text())
        magnifications[name] = {
            s["magnification"]: s["tasks"] for s in summary["scales"] if "ptc" in s["tasks"]
        }
        labels = result.out_dir / "labels.ome.tif"
        assert labels.is_file()
    assert magnifications == {"40x": {40: ["ptc"]}, "20x": {20: ["ptc"]}}


@pytest.mark.usefixtures("one_thread")
def test_training_with_ptc_at_20x_learns_it_there_and_saves_it_in_the_catalogue(
    tmp_path, monkeypatch
):
    from omniseg.training import train
    from omniseg.training.fit import Fit

    data = make_patch_set(tmp_path / "p", size=64, tasks=((1, 1), (PTC.id, AT_40X)))
    seen = {}
    original = Fit.__init__

    def spy(self, config, run_dir, info, device, precision, records, *rest):
        seen.update({r.task_id: (r.scale_id, r.resample_factor) for r in records.fit})
        original(self, config, run_dir, info, device, precision, records, *rest)

    monkeypatch.setattr(Fit, "__init__", spy)
    overrides = {**FAST, "data.path": str(data), "data.val_split": "none",
                 "data.task_scales": "ptc=20", "run.out": str(tmp_path / "run"),
                 "run.max_steps": 2, "run.tune_thresholds": False}  # fmt: skip
    result = train(load_train_config(overrides=overrides))
    assert seen == {1: (tissue("pt").scale_id, 1.0), PTC.id: (AT_20X, 0.5)}
    saved = json.loads((result.model_dir / "config.json").read_text())
    scale_of = {t["name"]: t["scale_id"] for t in saved["catalogue"]["tissues"]}
    assert scale_of["ptc"] == AT_20X and scale_of["pt"] == tissue("pt").scale_id
