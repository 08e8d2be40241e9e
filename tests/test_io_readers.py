"""Slide readers and open_slide: same pixels from every reader, auto-pick, odd inputs, bad files."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from omniseg.data.synthetic import (
    SVS_MPP,
    SVS_POWER,
    pyramid,
    slide_array,
    write_generic_pyramid,
    write_ome_subifds,
    write_svs,
)
from omniseg.errors import OmnisegError
from omniseg.io import ArraySlide, OpenSlideReader, PillowReader, TiffReader, open_slide

REGIONS = [(0, 0, 0, 64, 48), (0, 301, 257, 130, 97), (1, 40, 33, 100, 80), (2, 10, 5, 60, 50)]


@pytest.fixture(scope="module")
def levels():
    return pyramid(slide_array())


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory, levels):
    folder = tmp_path_factory.mktemp("slides")
    return {
        "svs": write_svs(folder / "aperio.svs", levels),
        "generic": write_generic_pyramid(folder / "generic.tif", levels),
        "ome": write_ome_subifds(folder / "subifds.ome.tif", levels),
    }


@pytest.mark.parametrize("kind", ["svs", "generic", "ome"])
@pytest.mark.parametrize("reader_class", [OpenSlideReader, TiffReader])
def test_readers_return_source_pixels(slide_files, levels, kind, reader_class):
    with reader_class(slide_files[kind]) as reader:
        for level, x, y, w, h in REGIONS:
            if level >= reader.info.level_count:
                continue  # OpenSlide sees SubIFD pyramids as one level (openslide reads only the top-level IFDs)
            region = reader.read_region(level, x, y, w, h)
            assert region.dtype == np.uint8 and region.shape == (h, w, 3)
            np.testing.assert_array_equal(region, levels[level][y : y + h, x : x + w])


@pytest.mark.parametrize("kind", ["svs", "generic", "ome"])
def test_open_slide_sees_full_pyramid_and_metadata_mpp(slide_files, levels, kind):
    with open_slide(slide_files[kind]) as reader:
        info = reader.info
        assert info.level_count == len(levels)
        assert info.level_dimensions == tuple((lv.shape[1], lv.shape[0]) for lv in levels)
        assert info.mpp == pytest.approx(SVS_MPP, rel=1e-6)
        assert info.mpp_source == "metadata"
    if kind == "ome":
        assert info.reader == "tifffile"  # OpenSlide would see a single level
    if kind == "svs":  # OpenSlide's metadata, tifffile's exact level pixels
        assert (info.vendor, info.reader, info.objective_power) == ("aperio", "tifffile", SVS_POWER)


def test_region_outside_slide_is_white(slide_files, levels):
    height, width = levels[0].shape[:2]
    for reader_class in (OpenSlideReader, TiffReader):
        with reader_class(slide_files["svs"]) as reader:
            region = reader.read_region(0, width - 10, height - 20, 30, 40)
            np.testing.assert_array_equal(region[:20, :10], levels[0][-20:, -10:])
            assert (region[20:] == 255).all() and (region[:, 10:] == 255).all()
            assert (reader.read_region(0, -50, -50, 20, 20) == 255).all()


def test_array_slide_matches_its_pyramid(levels):
    slide = ArraySlide(levels[0], 0.5, levels=3)
    assert slide.info.level_downsamples == (1.0, 2.0, 4.0)
    np.testing.assert_array_equal(slide.read_region(1, 3, 4, 20, 10), levels[1][4:14, 3:23])


def _save(array: np.ndarray, path, **kwargs):
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_png_named_svs_opens_with_pillow(tmp_path, levels):
    path = _save(levels[1], tmp_path / "region.svs", format="PNG")
    with open_slide(path, mpp=0.5) as reader:
        assert reader.info.reader == "pillow" and reader.info.mpp_source == "override"
        assert reader.info.vendor == "png"
        np.testing.assert_array_equal(reader.read_region(0, 0, 0, 50, 40), levels[1][:40, :50])


def test_plain_png_without_mpp_is_an_error_that_suggests_mpp(tmp_path, levels):
    path = _save(levels[2], tmp_path / "region.png")
    with pytest.raises(OmnisegError, match=r"region\.png.*--mpp"):
        open_slide(path)


def test_greyscale_rgba_and_palette_images_become_rgb(tmp_path, levels):
    grey = levels[1][..., 0]
    rgba = np.dstack([levels[1], np.full(grey.shape, 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent corner -> white
    palette = Image.fromarray(levels[1]).quantize(colors=16)
    paths = {
        "grey": _save(grey, tmp_path / "grey.png"),
        "rgba": _save(rgba, tmp_path / "rgba.png"),
    }
    palette.save(tmp_path / "palette.png")
    with open_slide(paths["grey"], mpp=0.5) as reader:
        region = reader.read_region(0, 0, 0, 30, 20)
        np.testing.assert_array_equal(region, np.repeat(grey[:20, :30, None], 3, axis=2))
    with open_slide(paths["rgba"], mpp=0.5) as reader:
        region = reader.read_region(0, 0, 0, 30, 20)
        assert (region[:10, :10] == 255).all()
        np.testing.assert_array_equal(region[10:, 10:], levels[1][10:20, 10:30])
    with open_slide(tmp_path / "palette.png", mpp=0.5) as reader:
        expected = np.asarray(palette.convert("RGB"))[:20, :30]
        np.testing.assert_array_equal(reader.read_region(0, 0, 0, 30, 20), expected)


@pytest.mark.parametrize("use_tiff", [True, False])
def test_16_bit_images_scale_to_8_bit(tmp_path, levels, use_tiff):
    deep = levels[1].astype(np.uint16) * 257  # exact inverse is /257
    deep[0, 0] = 65535  # the slide-wide maximum is the full 16-bit range
    if use_tiff:
        path = tmp_path / "deep.tif"
        tifffile.imwrite(path, deep, photometric="rgb", tile=(128, 128), compression="zlib")
    else:
        path = _save(deep[..., 0], tmp_path / "deep.png")
    with open_slide(path, mpp=0.5) as reader:
        region = reader.read_region(0, 5, 5, 40, 30)
    expected = levels[1][5:35, 5:45]
    if not use_tiff:
        expected = np.repeat(expected[..., :1], 3, axis=2)
    # scaled by the observed maximum: at most 1 grey level off the exact /257
    assert np.abs(region.astype(int) - expected).max() <= 1


def test_12_bit_data_in_16_bit_container_uses_observed_maximum(tmp_path, levels):
    twelve_bit = (levels[1].astype(np.uint32) * 4095 // 255).astype(np.uint16)
    twelve_bit[0, 0] = 4095
    path = tmp_path / "twelve.tif"
    tifffile.imwrite(path, twelve_bit, photometric="rgb", tile=(128, 128), compression="zlib")
    with open_slide(path, mpp=0.5) as reader:
        region = reader.read_region(0, 5, 5, 40, 30)
    assert np.abs(region.astype(int) - levels[1][5:35, 5:45]).max() <= 1


def test_corrupt_truncated_and_unsupported_files_name_the_file(tmp_path, slide_files):
    garbage = tmp_path / "garbage.svs"
    garbage.write_bytes(b"this is not an image" * 50)
    truncated = tmp_path / "truncated.svs"
    data = slide_files["svs"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    for path in (garbage, truncated, empty):
        with pytest.raises(OmnisegError, match=path.name):
            open_slide(path, mpp=0.5)
    with pytest.raises(OmnisegError, match="no such file"):
        open_slide(tmp_path / "missing.svs")


@pytest.mark.parametrize(
    ("name", "width", "height", "levels", "mpp"),
    [
        ("CMU-1-Small-Region.svs", 2220, 2967, 1, 0.499),
        ("TCGA-CR-7395-01A-01-TS1.svs", None, None, None, None),
    ],
)
def test_real_svs_files_match_openslide(shared_dir, name, width, height, levels, mpp):
    path = shared_dir / "data" / "slides" / name
    if not path.is_file():
        pytest.skip(f"{name} not available")
    reference = openslide.OpenSlide(str(path))
    with open_slide(path, require_mpp=False) as reader:
        info = reader.info
        assert info.level_dimensions == reference.level_dimensions
        assert info.level_downsamples == pytest.approx(reference.level_downsamples)
        expected_mpp = reference.properties.get(openslide.PROPERTY_NAME_MPP_X)
        if expected_mpp is None:
            assert info.mpp is None or info.mpp_source == "objective"
        else:
            assert info.mpp == pytest.approx(float(expected_mpp), rel=1e-6)
        assert info.vendor == "aperio"
        region = reader.read_region(0, 100, 200, 64, 64)
        expected = np.asarray(reference.read_region((100, 200), 0, (64, 64)).convert("RGB"))
        np.testing.assert_array_equal(region, expected)
        top = info.level_count - 1  # coarsest level, read at its origin (no sub-pixel offset)
        region = reader.read_region(top, 0, 0, 32, 32)
        expected = np.asarray(reference.read_region((0, 0), top, (32, 32)).convert("RGB"))
        np.testing.assert_array_equal(region, expected)
    if width is not None:
        assert info.dimensions == (width, height) and info.level_count == levels
        assert info.mpp == pytest.approx(mpp, abs=1e-3)
    if info.mpp is None:
        with pytest.raises(OmnisegError, match="--mpp"):
            open_slide(path)
    reference.close()


def test_level_downsamples_are_consistent(slide_files):
    with open_slide(slide_files["ome"]) as reader:
        width0 = reader.info.dimensions[0]
        for (width, _), downsample in zip(
            reader.info.level_dimensions, reader.info.level_downsamples, strict=True
        ):
            assert math.isclose(width0 / width, downsample, rel_tol=0.01)


def test_pillow_reader_requires_a_decodable_image(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.raises(OmnisegError, match="broken.png"):
        PillowReader(path, mpp=0.5)


@pytest.mark.parametrize("kind", ["svs", "ome"])
def test_concurrent_reads_from_threads_are_correct(slide_files, levels, kind):
    positions = [(x, y) for x in range(0, 800, 100) for y in range(0, 600, 150)]
    with open_slide(slide_files[kind]) as reader, ThreadPoolExecutor(4) as pool:
        regions = list(pool.map(lambda p: reader.read_region(0, p[0], p[1], 96, 96), positions))
    for (x, y), region in zip(positions, regions, strict=True):
        np.testing.assert_array_equal(region, levels[0][y : y + 96, x : x + 96])


def test_stacks_and_non_rgb_channels_are_refused_not_misread(tmp_path):
    """Issue 36 point 10: a Z stack read its first plane only, and a 2-channel (fluorescence)
    TIFF read its second channel as transparency. Grey + alpha still reads."""
    from omniseg.errors import OmnisegError
    from omniseg.io.tiff_reader import TiffReader

    rng = np.random.default_rng(0)
    stack = tmp_path / "z.tif"
    tifffile.imwrite(stack, rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8),
                     photometric="rgb", metadata={"axes": "ZYXS"})  # fmt: skip
    with pytest.raises(OmnisegError, match="3 planes along Z"):
        TiffReader(stack, mpp=0.5)
    two = tmp_path / "two.tif"
    tifffile.imwrite(two, rng.integers(0, 255, (64, 64, 2), dtype=np.uint8),
                     photometric="minisblack", planarconfig="contig")  # fmt: skip
    with pytest.raises(OmnisegError, match="2 channels .*fluorescence"):
        TiffReader(two, mpp=0.5)
    grey_alpha = tmp_path / "ga.tif"
    data = np.stack([np.full((64, 64), 100, np.uint8), np.full((64, 64), 255, np.uint8)], -1)
    tifffile.imwrite(grey_alpha, data, photometric="minisblack", extrasamples=["unassalpha"])
    with TiffReader(grey_alpha, mpp=0.5) as reader:
        assert reader.read_region(0, 0, 0, 8, 8)[0, 0].tolist() == [100, 100, 100]
