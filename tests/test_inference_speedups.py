"""Less work for the same labels: the interstitium gate of the PTC pass, and tile overrides."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from omniseg.data.synthetic import write_tiff
from omniseg.errors import OmnisegError
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.inference.interstitium import interstitium_work, structure_mask
from omniseg.models import InferenceSettings
from omniseg.testing import PointwiseModel

OUTPUTS = ("labels.ome.tif", "objects.geojson", "objects.csv", "overlay.png")
PINK, DARK, RED = (225, 150, 170), (60, 40, 90), (225, 110, 120)


def glomerulus_slide(path, side=512, radius=170):
    """Pink tissue with one large dark disc (the stand-in calls it capsule, tuft and PTC) and
    red rings (tubules) around it."""
    img = np.full((side, side, 3), PINK, dtype=np.uint8)
    yy, xx = np.mgrid[:side, :side]
    img[np.hypot(yy - side / 2, xx - side / 2) < radius] = DARK
    for cy, cx in ((40, 40), (40, side - 40), (side - 40, 60)):
        d = np.hypot(yy - cy, xx - cx)
        img[(d < 30) & (d >= 14)] = RED
    return write_tiff(path, img, 0.25)


def settings(**kw) -> SegmentSettings:
    return SegmentSettings(progress=False, merge_chunk=64, tissue_margin_um=None, **kw)


def model(tile=64, overlap=16) -> PointwiseModel:
    return PointwiseModel(
        InferenceSettings(tile_size=tile, tile_overlap=overlap, min_area_um2=(0.0,) * 6)
    )


def outputs(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def test_ptc_pass_skips_tiles_inside_glomeruli_and_labels_do_not_change(tmp_path):
    slide = glomerulus_slide(tmp_path / "slide.tif")
    gated = segment_slide(slide, tmp_path / "gated", settings(), model())
    everywhere = segment_slide(slide, tmp_path / "all", settings(ptc_region="tissue"), model())
    fine_gated, fine_all = gated.summary["tiles"]["40x"], everywhere.summary["tiles"]["40x"]
    assert fine_gated["outside_interstitium"] >= 9  # the disc covers a 3 x 3 block of cores
    assert fine_all["outside_interstitium"] == 0
    assert fine_gated["processed"] + fine_gated["outside_interstitium"] == fine_all["processed"]
    assert fine_gated["background"] == fine_all["background"]
    # PTC is never labelled inside a glomerulus, so skipping those tiles changes nothing
    assert outputs(gated.out_dir) == outputs(everywhere.out_dir)
    labels = tifffile.imread(gated.out_dir / "labels.ome.tif", level=0)
    assert (labels == 4).sum() > 0  # the disc is a glomerulus (tuft)


def test_structure_mask_is_shrunk_before_it_gates_work():
    from omniseg.inference.merge import CAPSULE, DT
    from omniseg.inference.scale import ScalePlan, ScaleSource
    from omniseg.inference.tiling import TileGrid

    inference = InferenceSettings(tile_size=32, tile_overlap=0)
    plan = ScalePlan(0, 2.0, (DT, CAPSULE), (32, 32), to_level0=8.0, upsampled=False,
                     grid=TileGrid((32, 32), 32, 0))  # fmt: skip
    windows = np.zeros((2, 32, 32), dtype=np.uint8)
    windows[1, 8:24, 8:24] = 255  # capsule: a 16 x 16 native-px square
    windows[0] = 255  # DT everywhere: not a structure, never gates
    source = ScaleSource(plan, windows, np.ones((1, 1), dtype=bool))
    found = structure_mask([source], inference, (128, 128), downsample=2.0)
    expected = np.zeros((128, 128), dtype=bool)
    expected[32:96, 32:96] = True  # 4 thumbnail px per native px
    np.testing.assert_array_equal(found, expected)
    work = interstitium_work(np.ones((128, 128), bool), found, downsample=2.0, mpp0=0.25)
    # 10 µm margin = 20 thumbnail px at 0.5 µm/px: the structure's rim is still searched
    assert work[32:52, 32:96].all() and not work[53:75, 53:75].any()


def test_tile_override_equals_a_model_configured_with_that_tile(tmp_path):
    slide = glomerulus_slide(tmp_path / "slide.tif", side=300, radius=60)
    override = segment_slide(
        slide, tmp_path / "a", settings(tile_size=96, tile_overlap=8), model(64, 16)
    )
    native = segment_slide(slide, tmp_path / "b", settings(), model(96, 8))
    assert outputs(override.out_dir) == outputs(native.out_dir)
    assert override.summary["model"]["tile_size"] == 96
    assert override.summary["model"]["tile_overlap"] == 8


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(tile_size=8), "--tile-size 8"),
        (dict(tile_size=64, tile_overlap=32), "--tile-overlap 32"),
        (dict(tile_overlap=-1), "--tile-overlap must be >= 0"),
        (dict(ptc_region="glomeruli"), "--ptc-region glomeruli"),
    ],
)
def test_bad_tile_and_region_options_are_refused(options, words):
    with pytest.raises(OmnisegError, match=words):
        settings(**options)


def test_overlap_too_large_for_the_model_tile_is_refused_before_any_output(tmp_path):
    slide = glomerulus_slide(tmp_path / "slide.tif", side=128, radius=20)
    with pytest.raises(OmnisegError, match="give a smaller --tile-overlap"):
        segment_slide(slide, tmp_path / "out", settings(tile_overlap=40), model(64, 16))
    assert not (tmp_path / "out").exists()


def test_ordered_writer_runs_jobs_in_order_and_reports_failures():
    import threading
    import time

    from omniseg.threads import OrderedWriter

    done, threads = [], set()

    def job(i):
        time.sleep(0.01 * (i % 3))  # uneven job times must not reorder them
        threads.add(threading.current_thread().name)
        done.append(i)

    with OrderedWriter() as writer:
        for i in range(8):
            writer.submit(job, i)
    assert done == list(range(8))  # all finished on leaving the block, in order
    assert len(threads) == 1 and threading.current_thread().name not in threads

    def failing(i):
        if i == 2:
            raise OSError("disk full")
        done.append(i)

    done.clear()
    with pytest.raises(OSError, match="disk full"), OrderedWriter() as writer:
        for i in range(6):
            writer.submit(failing, i)
    assert done[:2] == [0, 1] and 2 not in done
