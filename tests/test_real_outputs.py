"""Whole-slide outputs of the bundled model on REAL tissue (the shared kidney patches).

Skipped where ``../shared`` is absent. These check what a pathologist sees: every object is its
true outline (never a box), labels stay off glass, and ``segment`` on a patch scores what
``evaluate`` scores on it.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import tifffile

from omniseg.catalogue import tissue
from omniseg.data import discover_patches, read_mask
from omniseg.data.synthetic import DemoSlideSpec, write_demo_slide
from omniseg.evaluation.mosaic import write_mosaic_slide
from omniseg.evaluation.output_quality import glass_share, outline_report, slide_glass
from omniseg.evaluation.predict import predict_record
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.inference.loading import load_segment_model
from omniseg.scoring.metrics import dice

NO_PTC = tuple(t.id for t in map(tissue, ("dt", "pt", "capsule", "tuft", "vessel")))


@pytest.fixture(scope="module")
def bundled():
    model, _ = load_segment_model(None, device="cpu")
    return model


@pytest.fixture
def records(kidney_patches):
    return discover_patches(kidney_patches / "manifest.csv")


def _labels(folder) -> np.ndarray:
    labels = tifffile.imread(folder / "labels.ome.tif", level=0)
    return labels.reshape(labels.shape[-2:])


def _check_outputs(folder, mpp: float) -> None:
    report = outline_report(json.loads((folder / "objects.geojson").read_text()), mpp)
    assert report.features > 0
    assert report.rectangles == 0 and report.invalid == 0 and report.area_mismatches == 0
    assert report.worst_area_error < 1e-3  # pixel-edge outlines: the polygon IS the pixels (the
    # area in the GeoJSON is rounded to 0.001 µm²)


def test_mosaic_of_real_patches_gives_true_outlines_and_no_labels_on_glass(
    tmp_path, bundled, records
):
    slide = write_mosaic_slide(tmp_path / "mosaic.tif", records)
    settings = SegmentSettings(progress=False, tasks=NO_PTC)
    result = segment_slide(slide, tmp_path / "out", settings, bundled)
    _check_outputs(result.out_dir, result.summary["mpp"])
    glass = slide_glass(slide, settings.thumbnail_side)
    assert glass.mean() > 0.3  # the mosaic is mostly glass: a meaningful check
    assert glass_share(_labels(result.out_dir), glass) < 0.01


def test_demo_slide_gives_true_outlines(tmp_path, bundled):
    slide = write_demo_slide(tmp_path / "demo.tif", DemoSlideSpec(width=1600, height=1200))
    result = segment_slide(slide, tmp_path / "out", SegmentSettings(progress=False), bundled)
    _check_outputs(result.out_dir, result.summary["mpp"])


@pytest.mark.slow
def test_segment_scores_what_evaluate_scores_on_every_shared_patch(tmp_path, bundled, records):
    """Each patch segmented alone at its own scale: the network sees the same pixels as in
    ``evaluate`` (no white padding), so with segment's post-processing off (no tissue/glass
    gate, no minimum object area) the Dice is the same. (With them on, the gap was at most
    0.063 over the 88 patches, mean 0.005: the gates and the area filter change masks.)"""
    raw = replace(bundled.inference, min_area_um2=(0.0,) * len(bundled.inference.min_area_um2))
    shipped, bundled.inference = bundled.inference, raw
    gaps = []
    try:
        for i, record in enumerate(records):
            task = tissue(record.task_id)
            truth = read_mask(record.mask) > 0
            cut = bundled.inference.thresholds[task.id]
            evaluated = dice(predict_record(bundled, record, tta=False) > cut, truth)
            settings = SegmentSettings(
                progress=False,
                tasks=(task.id,),
                mpp=task.mpp,
                reader_threads=0,
                tissue_margin_um=None,
                precision="fp32",  # as evaluate (auto is bf16 on AVX512-BF16/AMX CPUs)
            )
            result = segment_slide(record.image, tmp_path / str(i), settings, bundled)
            segmented = dice(_labels(result.out_dir) == task.label_value, truth)
            gaps.append(abs(segmented - evaluated))
    finally:
        bundled.inference = shipped
    assert len(gaps) == len(records) and max(gaps) <= 1e-3, sorted(gaps)[-5:]
