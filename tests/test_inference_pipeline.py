"""End-to-end whole-slide pipeline on tiny synthetic slides (stand-in and tiny real models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from omniseg.catalogue import tissue
from omniseg.data.synthetic import synthetic_tissue, write_tiff
from omniseg.errors import OmnisegError
from omniseg.inference import SegmentSettings, segment_slide, segment_slides
from omniseg.models import InferenceSettings, create_model
from omniseg.runtime import image_to_tensor, predict_probability
from omniseg.testing import PointwiseModel

OUTPUTS = ("labels.ome.tif", "objects.geojson", "objects.csv", "overlay.png")
WHITE = 245
NO_MIN_AREA = (0.0,) * 6


def tiny_inference(tile=64, overlap=16, min_area=NO_MIN_AREA) -> InferenceSettings:
    return InferenceSettings(tile_size=tile, tile_overlap=overlap, min_area_um2=min_area)


def quiet(**kw) -> SegmentSettings:
    # fp32 unless a test asks: auto picks bf16 on CPUs with AVX512-BF16/AMX, and these tests
    # compare with fp32 predictions
    return SegmentSettings(**{"progress": False, "merge_chunk": 64, "precision": "fp32", **kw})


def output_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def level0_labels(folder: Path) -> np.ndarray:
    return tifffile.imread(folder / "labels.ome.tif", level=0)


@pytest.fixture
def slide(tmp_path) -> Path:
    return write_tiff(tmp_path / "slide.tif", synthetic_tissue(160, 224), 0.25)


def test_pointwise_output_is_bitwise_identical_for_any_tiling(slide, tmp_path):
    runs = [
        (tiny_inference(64, 16), dict(batch_size=1, reader_threads=0)),
        (tiny_inference(96, 8), dict(batch_size=3, reader_threads=2, tile_order_seed=1)),
        (tiny_inference(48, 12), dict(batch_size=7, reader_threads=1, tile_order_seed=2)),
    ]
    results = []
    for i, (inference, options) in enumerate(runs):
        result = segment_slide(
            slide, tmp_path / f"out{i}", quiet(**options), PointwiseModel(inference)
        )
        results.append(output_bytes(result.out_dir))
        assert result.summary["tiles_processed"] > 1
    assert results[0] == results[1] == results[2]
    labels = level0_labels(tmp_path / "out0" / "slide")
    assert set(np.unique(labels)) > {0}


def test_minimum_area_filter_gives_identical_outputs_for_any_merge_chunk(tmp_path):
    """Specks erased early (chunk-interior) or late (cut by a chunk edge): same outputs."""
    img = synthetic_tissue(160, 224, seed=2)
    specks = np.random.default_rng(9).random(img.shape[:2]) > 0.99
    img[specks] = (225, 110, 120)
    path = write_tiff(tmp_path / "specks.tif", img, 0.25)
    inference = tiny_inference(min_area=(20.0, 20.0, 500.0, 300.0, 50.0, 5.0))
    runs = {}
    for chunk in (64, 100, 1024):
        settings = SegmentSettings(progress=False, merge_chunk=chunk)
        result = segment_slide(path, tmp_path / f"c{chunk}", settings, PointwiseModel(inference))
        runs[chunk] = output_bytes(result.out_dir)
    assert runs[64] == runs[100] == runs[1024]
    raw = segment_slide(path, tmp_path / "raw", quiet(), PointwiseModel(tiny_inference()))
    filtered = level0_labels(tmp_path / "c64" / "specks")
    assert (level0_labels(raw.out_dir) > 0).sum() > (filtered > 0).sum() > 0


def test_pointwise_model_stitches_back_the_whole_image_prediction(tmp_path):
    img = synthetic_tissue(150, 190, seed=4)
    path = write_tiff(tmp_path / "s.tif", img, tissue("ptc").mpp)
    model = PointwiseModel(tiny_inference())
    ptc = tissue("ptc").id
    ungated = quiet(tasks=(ptc,), tissue_margin_um=None)  # stitching maths only: no tissue gate
    result = segment_slide(path, tmp_path / "out", ungated, model)
    with torch.no_grad():
        logits = model.predict_tasks(image_to_tensor(img)[None], [ptc], tissue("ptc").scale_id)
    expected = (logits[0, 0, 1] > logits[0, 0, 0]).numpy()
    assert np.array_equal(level0_labels(result.out_dir) == ptc + 1, expected)
    assert expected.any()


def test_object_across_tiles_and_chunks_is_one_polygon_with_hole(tmp_path):
    img = np.full((200, 220, 3), WHITE, dtype=np.uint8)
    yy, xx = np.mgrid[:200, :220]
    d = np.hypot(yy - 100, xx - 110)
    img[(d < 80) & (d >= 40)] = (225, 110, 120)
    path = write_tiff(tmp_path / "ring.tif", img, tissue("dt").mpp)
    result = segment_slide(
        path, tmp_path / "out", quiet(tasks=(tissue("dt").id,)), PointwiseModel(tiny_inference())
    )
    features = json.loads((result.out_dir / "objects.geojson").read_text())["features"]
    assert len(features) == 1
    geometry = features[0]["geometry"]
    assert geometry["type"] == "Polygon" and len(geometry["coordinates"]) == 2  # shell + lumen
    assert result.summary["classes"]["dt"]["count"] == 1


@pytest.mark.parametrize(
    ("name", "size_hw", "tile"),
    [
        ("omniseg-tiny", (64, 64), 64),
        ("omniseg-lite0-tiny", (64, 64), 64),
        ("omniseg-tiny", (64, 64), 128),  # image smaller than a tile: no white padding
        ("omniseg-lite0-tiny", (48, 64), 64),  # smaller along one axis only
    ],
)
def test_segment_on_a_patch_equals_evaluate_prediction(tmp_path, name, size_hw, tile):
    rng = np.random.default_rng(7)
    img = np.clip(rng.normal((200, 120, 160), 30, (*size_hw, 3)), 0, 255).astype(np.uint8)
    dt = tissue("dt")
    path = write_tiff(tmp_path / "patch.tif", img, dt.mpp)
    torch.manual_seed(0)
    model = create_model(name).eval()
    prob = predict_probability(model, image_to_tensor(img)[None], [dt.id], [dt.scale_id], tta=False)
    threshold = float(np.median(prob.numpy()))  # random weights: put the cut where pixels are
    model.inference = InferenceSettings(
        tile_size=tile, tile_overlap=16, min_area_um2=NO_MIN_AREA, thresholds=(threshold,) * 6
    )
    result = segment_slide(path, tmp_path / "out", quiet(tasks=(dt.id,)), model)
    expected = prob[0].numpy() > threshold
    assert 0 < expected.sum() < expected.size  # a meaningful comparison
    assert np.array_equal(level0_labels(result.out_dir) == dt.label_value, expected)


class CrashingModel(PointwiseModel):
    def __init__(self, inference, crash_after: int) -> None:
        super().__init__(inference)
        self.crash_after = crash_after

    def predict_tasks(self, x, task_ids, scale_id):
        if self.calls >= self.crash_after:
            raise RuntimeError("simulated crash")
        return super().predict_tasks(x, task_ids, scale_id)


def test_resume_after_crash_gives_byte_identical_outputs(slide, tmp_path):
    inference = tiny_inference(min_area=(1.0,) * 6)
    reference = segment_slide(
        slide, tmp_path / "ref", quiet(batch_size=2), PointwiseModel(inference)
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_slide(slide, tmp_path / "run", quiet(batch_size=2), CrashingModel(inference, 5))
    assert not (tmp_path / "run" / "slide" / "summary.json").exists()
    with pytest.raises(OmnisegError, match="--resume"):
        segment_slide(slide, tmp_path / "run", quiet(batch_size=2), PointwiseModel(inference))
    model = PointwiseModel(inference)
    resumed = segment_slide(slide, tmp_path / "run", quiet(batch_size=2, resume=True), model)
    assert output_bytes(resumed.out_dir) == output_bytes(reference.out_dir)
    tiles = resumed.summary["tiles"]
    assert sum(t["resumed"] for t in tiles.values()) >= 8  # 5 batches of 2 were kept
    assert not (resumed.out_dir / ".work").exists()
    again = segment_slide(slide, tmp_path / "run", quiet(resume=True), CrashingModel(inference, 0))
    assert again.skipped


def test_existing_result_is_never_clobbered(slide, tmp_path):
    model = PointwiseModel(tiny_inference())
    first = segment_slide(slide, tmp_path / "out", quiet(), model)
    before = output_bytes(first.out_dir)
    with pytest.raises(OmnisegError, match="--overwrite"):
        segment_slide(slide, tmp_path / "out", quiet(), model)
    assert output_bytes(first.out_dir) == before
    redone = segment_slide(slide, tmp_path / "out", quiet(overwrite=True), model)
    assert output_bytes(redone.out_dir) == before


def test_batch_goes_on_after_a_failing_slide_and_names_do_not_collide(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_tiff(a / "case.tif", synthetic_tissue(96, 96, 1), 0.5)
    write_tiff(b / "case.tif", synthetic_tissue(96, 96, 2), 0.5)
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide at all" * 10)
    tasks = (tissue("dt").id, tissue("pt").id)
    results = segment_slides(
        [a / "case.tif", broken, b / "case.tif"],
        tmp_path / "out",
        quiet(tasks=tasks),
        PointwiseModel(tiny_inference()),
    )
    assert [r.ok for r in results] == [True, False, True]
    assert "broken.svs" in results[1].error
    assert results[0].out_dir != results[2].out_dir
    assert results[0].out_dir.name == "case" and results[2].out_dir.name.startswith("case-")
    assert not (tmp_path / "out" / "broken").exists()
    for r in (results[0], results[2]):
        assert json.loads((r.out_dir / "summary.json").read_text())["slide"] == str(
            r.slide.resolve()
        )


def test_bad_inputs_give_one_clear_error_and_no_output(tmp_path, slide):
    model = PointwiseModel(tiny_inference())
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt.svs"
    corrupt.write_bytes(b"\x00" * 500)
    with pytest.raises(OmnisegError, match="corrupt"):
        segment_slide(corrupt, out, quiet(), model)
    no_res = tmp_path / "nores.png"
    Image.fromarray(synthetic_tissue(64, 64)).save(no_res)
    with pytest.raises(OmnisegError, match="--mpp"):
        segment_slide(no_res, out, quiet(), model)
    bad_roi = tmp_path / "roi.geojson"
    bad_roi.write_text(
        json.dumps(
            {
                "type": "Polygon",
                "coordinates": [[[1e6, 1e6], [1e6 + 5, 1e6], [1e6, 1e6 + 5], [1e6, 1e6]]],
            }
        )
    )
    with pytest.raises(OmnisegError, match="roi.geojson"):
        segment_slide(slide, out, quiet(roi=bad_roi), model)
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(OmnisegError, match="--batch-size"):
        SegmentSettings(batch_size=0)


def test_roi_restricts_the_labels(slide, tmp_path):
    roi = tmp_path / "roi.geojson"
    roi.write_text(
        json.dumps(
            {"type": "Polygon", "coordinates": [[[0, 0], [100, 0], [100, 80], [0, 80], [0, 0]]]}
        )
    )
    model = PointwiseModel(tiny_inference())
    full = level0_labels(segment_slide(slide, tmp_path / "a", quiet(), model).out_dir)
    part = level0_labels(segment_slide(slide, tmp_path / "b", quiet(roi=roi), model).out_dir)
    assert not part[80:].any() and not part[:, 100:].any()
    assert part[:80, :100].any()
    # inside the ROI the labels agree except where a component was cut by the ROI border
    assert (part[:70, :90] == full[:70, :90]).mean() > 0.95


def test_upsampled_scale_is_warned_in_summary(tmp_path):
    path = write_tiff(tmp_path / "coarse.tif", synthetic_tissue(64, 80), 0.5)
    result = segment_slide(
        path, tmp_path / "out", quiet(tasks=(tissue("ptc").id,)), PointwiseModel(tiny_inference())
    )
    assert any("upsampled" in w for w in result.summary["warnings"])
    assert level0_labels(result.out_dir).shape == (64, 80)
    summary = result.summary
    for key in ("mpp", "mpp_source", "tissue_area_mm2", "timings_s", "omniseg_version", "model"):
        assert key in summary
    assert summary["model"]["tile_size"] == 64 and summary["model"]["tile_overlap"] == 16


def test_real_model_agrees_across_batch_sizes_and_threads(tmp_path):
    """The network sees the same tiles either way; only float summation order may differ.

    Stated tolerance: at most 0.1 % of level-0 pixels change label.
    """
    path = write_tiff(tmp_path / "s.tif", synthetic_tissue(96, 112, seed=5), tissue("dt").mpp)
    model = create_model("omniseg-tiny").eval()
    model.inference = tiny_inference()
    dt = tissue("dt")
    probe = predict_probability(
        model, image_to_tensor(synthetic_tissue(64, 64, 5))[None], [dt.id], [dt.scale_id], tta=False
    )
    model.inference = InferenceSettings(
        tile_size=64,
        tile_overlap=16,
        min_area_um2=NO_MIN_AREA,
        thresholds=(float(probe.median()),) * 6,
    )
    tasks = (dt.id,)
    a = segment_slide(
        path, tmp_path / "a", quiet(tasks=tasks, batch_size=1, reader_threads=0), model
    )
    b = segment_slide(
        path, tmp_path / "b", quiet(tasks=tasks, batch_size=5, reader_threads=3), model
    )
    la, lb = level0_labels(a.out_dir), level0_labels(b.out_dir)
    assert la.any()
    assert (la != lb).mean() <= 1e-3


def test_demo_slide_runs_end_to_end_and_cli_needs_weights(tmp_path, capsys, monkeypatch):
    from omniseg.cli.main import main
    from omniseg.inference.demo import DEMO_NAME, DemoSlideSpec, run_demo
    from omniseg.io import open_slide
    from omniseg.models import bundled

    monkeypatch.setattr(bundled, "default_model_dir", lambda: None)  # a build without weights
    assert main(["demo", "-o", str(tmp_path / "x")]) == 2
    assert "--weights" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    spec = DemoSlideSpec(width=640, height=480, downsamples=(4,), thumbnail_side=128)
    (result,) = run_demo(
        tmp_path / "demo",
        quiet(tasks=(tissue("dt").id,)),
        PointwiseModel(tiny_inference(96, 16)),
        synthetic=True,
        spec=spec,
    )
    slide = open_slide(tmp_path / "demo" / DEMO_NAME)
    assert slide.info.mpp == pytest.approx(spec.mpp) and slide.info.level_count == 2
    slide.close()
    for name in (*OUTPUTS, "summary.json"):
        assert (result.out_dir / name).is_file()
    assert level0_labels(result.out_dir).shape == (480, 640)


def test_demo_segments_the_bundled_real_tiles_at_their_pixel_size(tmp_path):
    """The default demo: four real PAS tiles (JPEG, no pixel size in the files: 0.5 µm/px)."""
    from PIL import Image

    from omniseg.inference.demo import DEMO_TISSUE_MPP, demo_attribution, demo_tiles, run_demo

    tiles = demo_tiles()
    assert len(tiles) == 4 and "CC BY 4.0" in demo_attribution().read_text(encoding="utf-8")
    results = run_demo(
        tmp_path, quiet(tasks=(tissue("capsule").id,)), PointwiseModel(tiny_inference(96, 16))
    )
    assert [r.slide for r in results] == tiles and all(r.ok for r in results)
    for tile, result in zip(tiles, results, strict=True):
        summary = json.loads((result.out_dir / "summary.json").read_text(encoding="utf-8"))
        assert summary["mpp"] == DEMO_TISSUE_MPP and summary["mpp_source"] == "override"
        with Image.open(tile) as image:
            assert level0_labels(result.out_dir).shape == image.size[::-1]


def test_cli_segment_with_weights(tmp_path, capsys):
    from omniseg.cli.main import main
    from omniseg.models import save_pretrained

    model = create_model("omniseg-tiny")
    model.inference = tiny_inference()
    save_pretrained(model, tmp_path / "model")
    slide = write_tiff(tmp_path / "s.tif", synthetic_tissue(96, 96), 1.0)
    args = [
        "segment",
        str(slide),
        "-o",
        str(tmp_path / "out"),
        "--weights",
        str(tmp_path / "model"),
        "--tasks",
        "dt,pt",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "s" / "summary.json").read_text())
    assert len(summary["model"]["weights_sha256"]) == 64
    assert main(args) == 2  # existing result, no --resume/--overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0


KILL_SCRIPT = """
import sys, time
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.testing import PointwiseModel
from omniseg.models import InferenceSettings

class Slow(PointwiseModel):
    def predict_tasks(self, x, task_ids, scale_id):
        time.sleep(0.2)
        return super().predict_tasks(x, task_ids, scale_id)

inference = InferenceSettings(tile_size=64, tile_overlap=16, min_area_um2=(1.0,) * 6)
segment_slide(sys.argv[1], sys.argv[2], SegmentSettings(progress=False, merge_chunk=64,
              batch_size=2, resume=True, precision="fp32"), Slow(inference))
"""


@pytest.mark.slow
def test_resume_after_kill_9_gives_byte_identical_outputs(slide, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    inference = tiny_inference(min_area=(1.0,) * 6)
    reference = segment_slide(
        slide, tmp_path / "ref", quiet(batch_size=2), PointwiseModel(inference)
    )
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(slide), str(out)])
    flags = out / "slide" / ".work" / "work.zarr" / "done_s3" / "c"
    deadline = time.monotonic() + 120
    while not flags.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "slide" / "summary.json").exists(), "the run finished before the kill"
    resumed = segment_slide(slide, out, quiet(batch_size=2, resume=True), PointwiseModel(inference))
    assert output_bytes(resumed.out_dir) == output_bytes(reference.out_dir)
    assert sum(t["resumed"] for t in resumed.summary["tiles"].values()) > 0


def test_tissue_gate_keeps_labels_off_glass(tmp_path):
    img = np.full((128, 288, 3), WHITE, dtype=np.uint8)
    img[:, :100] = (225, 110, 120)  # tissue on the left, glass on the right
    path = write_tiff(tmp_path / "half.tif", img, tissue("dt").mpp)
    everywhere = [(0.0, 0.0, 0.0, -1.0)] * 6  # every task fires on every pixel, glass too
    model = PointwiseModel(tiny_inference(128, 16), everywhere)
    dt = (tissue("dt").id,)
    gated = segment_slide(path, tmp_path / "a", quiet(tasks=dt, tissue_margin_um=5.0), model)
    open_ = segment_slide(path, tmp_path / "b", quiet(tasks=dt, tissue_margin_um=None), model)
    with_gate, without = level0_labels(gated.out_dir), level0_labels(open_.out_dir)
    assert (with_gate[:, :98] > 0).all()  # tissue keeps its labels
    assert (without[:, 100:192] > 0).all()  # processed glass tile: labelled without the gate
    # ... and cleared with it: beyond the margin, and inside it too (full-resolution glass test)
    assert not with_gate[:, 102:].any()
    assert gated.summary["parameters"]["tissue_margin_um"] == 5.0


def test_tissue_gate_maps_thumbnail_pixels_to_level0_blocks():
    from omniseg.inference.gates import TissueGate, grow_mask
    from omniseg.io.raster import Window

    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    gate = TissueGate(mask, downsample=8.0)
    got = gate.window(Window(y=0, x=0, h=32, w=40))
    expected = np.zeros((32, 40), bool)
    expected[8:16, 16:24] = True
    np.testing.assert_array_equal(got, expected)
    assert gate.window(Window(y=30, x=36, h=10, w=10)).shape == (10, 10)  # past the edge: clipped
    grown = grow_mask(mask, 1)
    assert grown.sum() == 5 and grown[1, 1:4].all() and grown[0:3, 2].all()
    np.testing.assert_array_equal(grow_mask(mask, 0), mask)


class TileMoodModel(PointwiseModel):
    """A pixel rule plus an offset from the tile's own mean, like a controller that reads
    globally pooled features: neighbouring tiles disagree where their contents differ."""

    def predict_tasks(self, x, task_ids, scale_id):
        grey = x.float().mean(dim=1)
        mood = grey.mean(dim=(-2, -1), keepdim=True) - 0.5
        fg = (0.5 - grey + 1.0 * mood) * 40.0
        logits = torch.stack([torch.zeros_like(fg), fg], dim=1)
        return torch.stack([logits] * len(task_ids), dim=1)


def test_blending_hides_the_tile_grid_of_a_model_whose_tiles_disagree(tmp_path, monkeypatch):
    from scipy import ndimage

    from omniseg.evaluation.output_quality import seam_index
    from omniseg.inference import blend

    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.random((320, 320)), 12)
    grey = np.clip((field - field.mean()) / field.std() * 0.18 + 0.5, 0, 1)
    img = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    dt = tissue("dt")
    path = write_tiff(tmp_path / "mood.tif", img, dt.mpp)
    tile, overlap = 64, 16
    model = TileMoodModel(tiny_inference(tile, overlap))
    settings = quiet(tasks=(dt.id,), tissue_margin_um=None)
    blended = level0_labels(segment_slide(path, tmp_path / "b", settings, model).out_dir)

    def hard_cut(length, overlap_px):  # the old rule: each pixel from the one tile owning it
        inside = (np.arange(length) >= overlap_px) & (np.arange(length) < length - overlap_px)
        return np.where(inside, 4096, 1)  # the owner outweighs any other code by > 255 / 0.5

    monkeypatch.setattr(blend, "edge_weights", hard_cut)
    cut = level0_labels(segment_slide(path, tmp_path / "c", settings, model).out_dir)
    grid = [(float(tile - 2 * overlap), 1)]
    assert 0.05 < (blended > 0).mean() < 0.95
    assert seam_index(cut, grid).index > 2.0  # the hard cut shows the grid (2.45) ...
    assert seam_index(blended, grid).index <= 1.3  # ... blending does not (0.98)


def test_a_second_slide_with_the_same_name_is_told_where_its_result_goes(tmp_path, caplog):
    import logging

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    first = write_tiff(tmp_path / "a" / "s.tif", synthetic_tissue(96, 96), 1.0)
    second = write_tiff(tmp_path / "b" / "s.tif", synthetic_tissue(96, 96, seed=1), 1.0)
    model = PointwiseModel(tiny_inference())
    settings = quiet(tasks=(tissue("dt").id,))
    with caplog.at_level(logging.WARNING):
        one = segment_slide(first, tmp_path / "out", settings, model)
        assert not [r for r in caplog.records if "holds another slide's result" in r.message]
        two = segment_slide(second, tmp_path / "out", settings, model)
    notes = [r.message for r in caplog.records if "holds another slide's result" in r.message]
    assert one.out_dir.name == "s" and two.out_dir.name.startswith("s-") and len(notes) == 1
    assert str(two.out_dir) in notes[0] and "docs/wsi.md" in notes[0]


def test_an_orphaned_overwrite_staging_folder_is_cleaned_by_the_next_run(slide, tmp_path):
    """A stopped --overwrite left OUT/.<name>.overwrite behind for good (issue 36 point 9)."""
    from omniseg.inference.results import staging_dir

    model = PointwiseModel(tiny_inference())
    first = segment_slide(slide, tmp_path / "out", quiet(tasks=(tissue("dt").id,)), model)
    orphan = staging_dir(first.out_dir)
    orphan.mkdir()
    (orphan / "labels.ome.tif").write_bytes(b"half")
    again = segment_slide(
        slide, tmp_path / "out", quiet(tasks=(tissue("dt").id,), resume=True), model
    )
    assert again.skipped and not orphan.exists()


def test_resume_refuses_another_slide_at_the_same_path_and_other_tasks(tmp_path):
    """--resume checked nothing of the slide: replacing it between a kill and the resume gave
    labels of neither (issue 36 point 1); a finished result was kept for other tasks."""
    slide = write_tiff(tmp_path / "s.tif", synthetic_tissue(160, 224), 0.25)
    model = PointwiseModel(tiny_inference())
    dt = quiet(tasks=(tissue("dt").id,))
    result = segment_slide(slide, tmp_path / "out", dt, model)
    (result.out_dir / "summary.json").unlink()  # as if killed before the end
    write_tiff(slide, synthetic_tissue(160, 224, seed=5), 0.25)  # another slide, same path
    with pytest.raises(OmnisegError, match="not the slide this result was made from"):
        segment_slide(slide, tmp_path / "out", quiet(tasks=dt.tasks, resume=True), model)
    done = segment_slide(slide, tmp_path / "again", dt, model)
    with pytest.raises(OmnisegError, match="made for tasks"):
        pt = quiet(tasks=(tissue("pt").id,), resume=True)
        segment_slide(slide, tmp_path / "again", pt, model)
    kept = segment_slide(slide, tmp_path / "again", quiet(tasks=dt.tasks, resume=True), model)
    assert kept.skipped and kept.out_dir == done.out_dir


def test_a_folder_claimed_by_another_slide_is_left_to_it_even_when_chosen_before(tmp_path):
    """Issue 36 point 2: a cohort chose OUT/a for its y/a.tif before any lock; meanwhile another
    run made OUT/a from x/a.tif. The cohort's slide goes to OUT/a-<digest> (it was marked
    'kept' with the other slide's counts). And a folder busy with ANOTHER slide of the same
    file name is not 'being written by another process' for this one."""
    from omniseg.inference.results import source_path
    from omniseg.locks import folder_lock

    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first = write_tiff(tmp_path / "x" / "a.tif", synthetic_tissue(96, 128, seed=1), 0.25)
    second = write_tiff(tmp_path / "y" / "a.tif", synthetic_tissue(96, 128, seed=2), 0.25)
    out = tmp_path / "out"
    model = PointwiseModel(tiny_inference())
    done = segment_slide(first, out, quiet(), model)
    assert done.out_dir == out / "a"
    before = output_bytes(out / "a")
    chosen_earlier = segment_slide(second, out, quiet(resume=True), model, result_folder=out / "a")
    assert not chosen_earlier.skipped and chosen_earlier.out_dir.name.startswith("a-")
    assert output_bytes(out / "a") == before  # the other slide's result is untouched
    other = tmp_path / "other-out"
    with folder_lock(other / "a", owner=source_path(first)):  # x's run holds OTHER/a right now
        busy = segment_slide(second, other, quiet(), model)
    assert busy.out_dir.parent == other and busy.out_dir.name.startswith("a-")
    busy_here = folder_lock(other / "c", owner=source_path(second))  # busy with THIS slide
    with busy_here, pytest.raises(OmnisegError, match="being written by another"):
        segment_slide(second, other, quiet(), model, result_folder=other / "c")


def test_resume_removes_half_written_result_files(slide, tmp_path):
    """Issue 36 point 11: a finished result kept by --resume still held the temp file of a
    GeoJSON a killed run was writing; resume leaves only finished files."""
    model = PointwiseModel(tiny_inference())
    result = segment_slide(slide, tmp_path / "out", quiet(), model)
    stale = result.out_dir / ".objects.0123456789ab.tmp.geojson"
    stale.write_text("{half")
    kept = segment_slide(slide, tmp_path / "out", quiet(resume=True), model)
    assert kept.skipped and not stale.exists()
    assert (result.out_dir / "objects.geojson").is_file()
