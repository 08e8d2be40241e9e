"""Resolution rules, level planning, read_at_mpp resampling and thumbnails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from omniseg.data.synthetic import pyramid, slide_array, write_svs
from omniseg.errors import OmnisegError
from omniseg.io import ArraySlide, open_slide, plan_level, read_at_mpp, target_shape, thumbnail
from omniseg.io.resolution import ome_mpp, resolve_mpp, tiff_tag_mpp

MPP0 = 0.25
RAMP_SIDE = 250  # R = x, G = y exactly (one grey level per level-0 pixel)


def ramp_slide(levels: int = 4) -> ArraySlide:
    """R = x, G = y: the value at any point is its level-0 coordinate, so geometry is checkable."""
    rgb = np.zeros((RAMP_SIDE - 50, RAMP_SIDE, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(RAMP_SIDE)[None, :]
    rgb[..., 1] = np.arange(RAMP_SIDE - 50)[:, None]
    rgb[..., 2] = 128
    return ArraySlide(rgb, MPP0, levels=levels)


def expected_ramp(start: int, size: int, target_mpp: float) -> np.ndarray:
    """Level-0 coordinate (pixel-centre convention) of each output pixel centre."""
    return (np.arange(start, start + size) + 0.5) * target_mpp / MPP0 - 0.5


def gradient_slide(levels: int = 4, width: int = 1000, height: int = 800) -> ArraySlide:
    """A larger uint8 ramp (R = x/4) for planning and thumbnail tests."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = np.rint(np.arange(width) / 4)[None, :]
    rgb[..., 1] = np.rint(np.arange(height) / 4)[:, None]
    return ArraySlide(rgb, MPP0, levels=levels)


# ---- metadata and override rules -------------------------------------------------------------


def test_72_dpi_default_tag_counts_as_missing(tmp_path):
    path = tmp_path / "dpi72.tif"
    tifffile.imwrite(
        path, slide_array(200, 300), photometric="rgb", tile=(128, 128),
        resolution=(72, 72), resolutionunit="INCH",
    )  # fmt: skip
    assert tiff_tag_mpp((72, 1), (72, 1), 2) is None  # 352.8 µm/px is outside the valid range
    with pytest.raises(OmnisegError, match=r"dpi72\.tif.*--mpp"):
        open_slide(path)
    with open_slide(path, require_mpp=False) as reader:
        assert reader.info.mpp is None and reader.info.mpp_source == "unknown"


def test_resolution_tags_in_inch_and_cm_agree():
    assert tiff_tag_mpp((40000, 1), (40000, 1), 3) == pytest.approx(0.25)
    assert tiff_tag_mpp((101600, 1), (101600, 1), 2) == pytest.approx(0.25)
    assert tiff_tag_mpp((40000, 1), (40000, 1), 1) is None  # no absolute unit


def test_ome_physical_size_units():
    xml = '<OME xmlns="x"><Image><Pixels PhysicalSizeX="{}" PhysicalSizeXUnit="{}"/></Image></OME>'
    assert ome_mpp(xml.format(250, "nm")) == pytest.approx(0.25)
    assert ome_mpp(xml.format(0.5, "µm")) == pytest.approx(0.5)
    assert ome_mpp(xml.format(1, "m")) is None  # 1e6 µm/px: implausible


def test_objective_power_fallback(tmp_path):
    path = write_svs(tmp_path / "no_mpp.svs", pyramid(slide_array(300, 400), 2), mpp=None, power=20)
    with open_slide(path) as reader:
        assert reader.info.mpp == pytest.approx(10 / 20)
        assert reader.info.mpp_source == "objective"
    assert resolve_mpp(None, 40.0) == (pytest.approx(0.25), "objective")


def test_overrides_win_over_metadata(tmp_path):
    path = write_svs(tmp_path / "with_mpp.svs", pyramid(slide_array(300, 400), 2))
    with open_slide(path, mpp=0.3) as reader:
        assert (reader.info.mpp, reader.info.mpp_source) == (0.3, "override")
    with open_slide(path, magnification=20) as reader:
        assert reader.info.mpp == pytest.approx(0.5) and reader.info.mpp_source == "override"


@pytest.mark.parametrize("bad", [0, -0.25, math.nan, math.inf])
def test_bad_overrides_name_the_option(tmp_path, bad):
    path = write_svs(tmp_path / "s.svs", pyramid(slide_array(200, 200), 1))
    with pytest.raises(OmnisegError, match="--mpp"):
        open_slide(path, mpp=bad)
    with pytest.raises(OmnisegError, match="--magnification"):
        open_slide(path, magnification=bad)


# ---- level planning --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "level", "upsampled"),
    [(0.25, 0, False), (0.5, 1, False), (0.7, 1, False), (1.0, 2, False), (4.0, 3, False),
     (0.2490, 0, False), (0.1, 0, True)],
)  # fmt: skip
def test_plan_level_picks_coarsest_fine_enough_level(target, level, upsampled):
    info = gradient_slide().info
    plan = plan_level(info, target)
    assert (plan.level, plan.upsampled) == (level, upsampled)
    assert plan.level_mpp == pytest.approx(MPP0 * info.level_downsamples[level])
    assert plan.scale == pytest.approx(plan.level_mpp / target)
    coarser = [MPP0 * d for d in info.level_downsamples if MPP0 * d > plan.level_mpp]
    assert all(mpp > target * 1.01 for mpp in coarser)


@pytest.mark.parametrize("target", [0.25, 0.5, 0.6, 1.3, 0.1])
def test_target_shape_is_ceil_of_scaled_size(target):
    info = gradient_slide().info
    assert target_shape(info, target) == (
        math.ceil(800 * MPP0 / target),
        math.ceil(1000 * MPP0 / target),
    )


# ---- resampling ------------------------------------------------------------------------------


def test_integer_ratio_reproduces_pyramid_level_exactly():
    slide = gradient_slide()
    region = read_at_mpp(slide, 0.5, 17, 9, 70, 50)
    np.testing.assert_array_equal(region, slide.read_region(1, 17, 9, 70, 50))
    single = ArraySlide(slide.read_region(0, 0, 0, 1000, 800), MPP0, levels=1)
    np.testing.assert_array_equal(read_at_mpp(single, 0.5, 17, 9, 70, 50), region)


# Shrinking reads pyramid levels and block means whose uint8 rounding of exact .5 values adds up
# to +0.5 grey level of bias; a half-output-pixel geometry error would add >= 1.2 here.
@pytest.mark.parametrize(
    ("target", "max_bias", "max_error"),
    [(0.6, 0.6, 1.5), (0.9, 0.6, 1.5), (1.3, 0.6, 1.5), (2.2, 0.6, 1.5),
     (0.35, 0.1, 0.6), (0.17, 0.1, 0.6), (0.1, 0.15, 0.6)],
)  # fmt: skip
def test_resampled_ramp_matches_geometry(target, max_bias, max_error):
    slide = ramp_slide()
    size = int((RAMP_SIDE - 50) * MPP0 / target) - 4
    region = read_at_mpp(slide, target, 2, 1, size, size)
    assert region.shape == (size, size, 3) and region.dtype == np.uint8
    error_x = region[..., 0].astype(float) - expected_ramp(2, size, target)[None, :]
    error_y = region[..., 1].astype(float) - expected_ramp(1, size, target)[:, None]
    for error in (error_x, error_y):
        assert abs(error.mean()) <= max_bias
        assert np.abs(error).max() <= max_error
    assert (region[..., 2] == 128).all()


@pytest.mark.parametrize("target", [0.5, 0.6, 0.9, 1.3, 0.17, 0.37])
def test_any_tiling_gives_identical_pixels(target):
    slide = ArraySlide(slide_array(600, 700), MPP0, levels=3)
    big = read_at_mpp(slide, target, 0, 0, 120, 100)
    for ty in range(0, 100, 25):
        for tx in range(0, 120, 30):
            tile = read_at_mpp(slide, target, tx, ty, 30, 25)
            np.testing.assert_array_equal(tile, big[ty : ty + 25, tx : tx + 30])


class CountingReader:
    """Wraps a reader and records the largest window requested (memory bound check)."""

    def __init__(self, reader):
        self.inner, self.info, self.largest, self.levels = reader, reader.info, 0, set()

    def read_region(self, level, x, y, width, height):
        self.largest = max(self.largest, width * height)
        self.levels.add(level)
        return self.inner.read_region(level, x, y, width, height)

    def close(self):
        self.inner.close()


def test_read_at_mpp_reads_only_the_needed_window():
    slide = CountingReader(ArraySlide(np.zeros((4000, 4000, 3), np.uint8), MPP0, levels=1))
    read_at_mpp(slide, 2.0, 100, 100, 64, 64)  # 8x shrink from level 0
    assert slide.largest <= (64 * 8 + 4 * 8) ** 2


def test_thumbnail_uses_coarsest_suitable_level_and_exact_size():
    slide = CountingReader(gradient_slide(levels=4))
    rgb, downsample = thumbnail(slide, 300)
    assert downsample == pytest.approx(1000 / 300)
    assert rgb.shape == (math.ceil(800 / downsample), 300, 3)
    assert slide.levels == {1}  # downsample 2 <= 3.33 < 4
    expected = ((np.arange(300) + 0.5) * downsample - 0.5) / 4
    assert np.abs(rgb[0, :, 0].astype(float) - expected).max() <= 1.5


def test_thumbnail_never_enlarges():
    rgb, downsample = thumbnail(gradient_slide(levels=1, width=120, height=90), 500)
    assert rgb.shape == (90, 120, 3) and downsample == 1.0


@pytest.mark.parametrize("target", [0.6, 0.17])
def test_pixels_beyond_the_slide_are_white_without_bleeding(target):
    slide = ramp_slide()
    height, width = target_shape(slide.info, target)
    region = read_at_mpp(slide, target, width - 5, height - 4, 10, 8)
    assert (region[:, 5:] == 255).all() and (region[4:, :] == 255).all()
    inside = region[:4, :5, 0].astype(float)
    expected = expected_ramp(width - 5, 5, target)[None, :]
    assert np.abs(inside - expected).max() <= 1.5  # edge pixels replicate, no white mixed in
    assert (read_at_mpp(slide, target, width + 20, 0, 6, 6) == 255).all()


# ---- property tests (hypothesis) -------------------------------------------------------------


def _pyramid_info(mpp0: float, width: int, height: int, factors: list[float]):
    from omniseg.io.base import SlideInfo

    downsamples = [1.0]
    for factor in factors:
        downsamples.append(downsamples[-1] * factor)
    dims = tuple((max(1, round(width / d)), max(1, round(height / d))) for d in downsamples)
    return SlideInfo("x.tif", "test", dims, tuple(downsamples), mpp0, None)


@settings(max_examples=200, deadline=None)
@given(
    mpp0=st.floats(0.05, 4.0),
    size=st.tuples(st.integers(1, 200_000), st.integers(1, 200_000)),
    factors=st.lists(st.floats(1.5, 8.0), max_size=6),
    target=st.floats(0.01, 50.0),
)
def test_level_plan_and_shape_hold_for_any_pyramid(mpp0, size, factors, target):
    """The level is fine enough and the coarsest such; scales and shapes follow from it."""
    info = _pyramid_info(mpp0, *size, factors)
    plan = plan_level(info, target)
    level_mpps = [mpp0 * d for d in info.level_downsamples]
    fits = [m for m in level_mpps if m <= target * 1.01]
    assert plan.upsampled == (not fits)
    if fits:
        assert plan.level_mpp == max(fits) and plan.scale <= 1.01
    else:
        assert plan.level == 0 and plan.scale > 1.0
    assert plan.scale == pytest.approx(plan.level_mpp / target)
    height, width = target_shape(info, target)
    assert height >= 1 and width >= 1
    exact_h, exact_w = size[1] * mpp0 / target, size[0] * mpp0 / target
    assert exact_h - 1e-6 <= height < exact_h + 1 and exact_w - 1e-6 <= width < exact_w + 1
