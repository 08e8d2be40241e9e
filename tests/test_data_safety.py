"""Data safety: hostile names, giant headers, CMYK, link loops, locks, overwrite."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from omniseg.errors import OmnisegError
from omniseg.inference.results import result_dir, safe_name
from omniseg.io import open_slide
from omniseg.io.base import SlideInfo
from omniseg.io.levels import THUMBNAIL_BAND_BYTES, thumbnail
from omniseg.io.memory_readers import decode_image
from tests._training_synth import one_thread  # noqa: F401 - fixture


@pytest.mark.parametrize("name", ["...tif", "..tif", ".tif", "a/../b.tif", "\x01x.tif"])
def test_result_folders_stay_inside_out_whatever_the_slide_is_called(tmp_path, name):
    slide = Path("/data") / name
    folder = result_dir(tmp_path, slide)
    assert folder.parent == tmp_path and folder.name not in ("", ".", "..")
    assert safe_name("..") == "slide" and safe_name("a/b") == "a_b"


def test_a_symlink_loop_is_named_and_does_not_break_the_folder_choice(tmp_path):
    (tmp_path / "a.svs").symlink_to(tmp_path / "b.svs")
    (tmp_path / "b.svs").symlink_to(tmp_path / "a.svs")
    assert result_dir(tmp_path / "out", tmp_path / "a.svs").name == "a"
    with pytest.raises(OmnisegError, match="link loop"):
        open_slide(tmp_path / "a.svs")


def test_a_cmyk_tiff_is_converted_to_rgb_not_read_as_white(tmp_path):
    """tifffile refuses CMYK (it came out as all-white RGBA); Pillow then converts it."""
    from omniseg.io.tiff_reader import TiffReader

    path = tmp_path / "cmyk.tif"
    ink = np.zeros((64, 64, 4), np.uint8)
    ink[..., 0] = 200  # cyan
    tifffile.imwrite(path, ink, photometric="separated")
    with pytest.raises(OmnisegError, match="CMYK"):
        TiffReader(path, mpp=0.25)
    reader = open_slide(path, mpp=0.25)
    try:
        pixel = reader.read_region(0, 10, 10, 1, 1)[0, 0]
    finally:
        reader.close()
    assert pixel[0] < 100 and pixel[1] > 200 and pixel[2] > 200  # cyan, not white


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose header claims width x height (a decompression bomb's header)."""
    raw = zlib.compress(b"\x00" + b"\x00" * 3)  # one row of one RGB pixel
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    )
    return path


def test_a_png_claiming_giant_dimensions_is_refused_before_decoding(tmp_path):
    bomb = _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(OmnisegError, match="too large to decode whole"):
        decode_image(bomb)


class _WhiteGiant:
    """A single-level 'slide' of any claimed size that records the largest read."""

    def __init__(self, width: int, height: int) -> None:
        self.info = SlideInfo("giant", "fake", ((width, height),), (1.0,), 0.5, None)
        self.largest = 0

    def read_region(self, level, x, y, width, height):
        self.largest = max(self.largest, width * height * 3)
        return np.full((height, width, 3), 255, np.uint8)

    def close(self):
        pass


def test_a_thumbnail_of_a_giant_single_level_image_reads_in_bounded_bands():
    giant = _WhiteGiant(60_000, 3_000)  # one 256-row band used to be 540 MB in one read
    thumb, downsample = thumbnail(giant, 2000)
    assert thumb.shape[1] == 2000 and downsample == 30.0
    assert giant.largest <= 2 * THUMBNAIL_BAND_BYTES  # (a band plus its one-block margin)


# ---- overwrite and locks ------------------------------------------------------------------


def _train_overrides(manifest, out) -> dict:
    from tests._training_synth import FAST

    return {**FAST, "data.path": str(manifest), "run.out": str(out), "run.max_steps": 1}


@pytest.mark.usefixtures("one_thread")
def test_train_overwrite_deletes_only_what_omniseg_created(tmp_path):
    from omniseg.training import load_train_config, train
    from tests._training_synth import make_patch_set

    manifest = make_patch_set(tmp_path / "data")
    project = tmp_path / "project"  # a user's folder that happens to hold a config.yaml
    project.mkdir()
    (project / "config.yaml").write_text("mine: true\n")
    (project / "notes.txt").write_text("precious")
    config = load_train_config(None, _train_overrides(manifest, project))
    with pytest.raises(OmnisegError, match="nothing was deleted"):
        train(config, overwrite=True)
    assert (project / "notes.txt").read_text() == "precious"
    run = tmp_path / "run"
    train(load_train_config(None, _train_overrides(manifest, run)))
    assert (run / ".omniseg-run").is_file()
    train(load_train_config(None, _train_overrides(manifest, run)), overwrite=True)  # ours: fine
    (run / "mine.txt").write_text("x")
    with pytest.raises(OmnisegError, match=r"mine\.txt"):
        train(load_train_config(None, _train_overrides(manifest, run)), overwrite=True)
    assert (run / "mine.txt").is_file() and (run / "model").is_dir()


@pytest.mark.usefixtures("one_thread")
def test_a_resumed_run_removes_the_half_written_temp_files(tmp_path):
    from omniseg.training import load_train_config, train
    from tests._training_synth import make_patch_set

    manifest = make_patch_set(tmp_path / "data")
    run = tmp_path / "run"
    train(load_train_config(None, _train_overrides(manifest, run)))
    (run / ".metrics.csv.k3j2").write_text("half")
    (run / ".last.x8").mkdir()
    (run / ".config.0f3a9c2b1d4e.tmp.yaml").write_text("half")  # omniseg.atomic's own pattern
    overrides = {**_train_overrides(manifest, run), "run.max_steps": 2}
    train(load_train_config(None, overrides), resume=True)
    assert not any(
        p.name.startswith((".metrics.csv.", ".last.", ".config.")) for p in run.iterdir()
    )


def _tiny_slide(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, img, resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    return path


class _Broken:
    """A stand-in whose network fails mid-run (like a full disk or an out-of-memory)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_tasks(self, *args):
        raise RuntimeError("no space left on device")


def test_segment_overwrite_keeps_the_old_result_until_the_new_one_is_complete(tmp_path):
    from omniseg.inference import SegmentSettings, segment_slide
    from omniseg.models import InferenceSettings
    from omniseg.testing import PointwiseModel

    slide = _tiny_slide(tmp_path)
    model = PointwiseModel(InferenceSettings(tile_size=64, tile_overlap=16))
    quiet = {"progress": False, "tasks": (0,)}
    first = segment_slide(slide, tmp_path / "out", SegmentSettings(**quiet), model)
    before = {p.name: p.read_bytes() for p in first.out_dir.iterdir() if p.is_file()}
    with pytest.raises(RuntimeError, match="no space"):
        segment_slide(
            slide, tmp_path / "out", SegmentSettings(overwrite=True, **quiet), _Broken(model)
        )
    after = {p.name: p.read_bytes() for p in first.out_dir.iterdir() if p.is_file()}
    assert after == before  # the old result survived the failed overwrite
    again = segment_slide(slide, tmp_path / "out", SegmentSettings(overwrite=True, **quiet), model)
    assert again.out_dir == first.out_dir and (again.out_dir / "summary.json").is_file()
    assert again.summary["result_dir"] == str(first.out_dir.resolve())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s"]  # no staging left


def test_a_live_writer_locks_the_folder_and_a_dead_ones_lock_is_taken_over(tmp_path):
    import json as _json

    from omniseg.inference import SegmentSettings, segment_slide
    from omniseg.locks import folder_lock, lock_path
    from omniseg.models import InferenceSettings
    from omniseg.testing import PointwiseModel

    slide = _tiny_slide(tmp_path)
    model = PointwiseModel(InferenceSettings(tile_size=64, tile_overlap=16))
    settings = SegmentSettings(progress=False, tasks=(0,), resume=True)
    folder = tmp_path / "out" / "s"
    with folder_lock(folder):  # another process writing this result right now
        with pytest.raises(OmnisegError, match="another running omniseg") as refused:
            segment_slide(slide, tmp_path / "out", settings, model)
        assert "--resume" not in str(refused.value) and "interrupted" not in str(refused.value)
    lock_path(folder).write_text(_json.dumps({"pid": 999_999_999, "host": "gone"}))  # stale
    result = segment_slide(slide, tmp_path / "out", settings, model)
    assert (result.out_dir / "summary.json").is_file() and not lock_path(folder).exists()


@pytest.mark.usefixtures("one_thread")
def test_a_live_training_run_locks_its_run_folder(tmp_path):
    from omniseg.locks import folder_lock
    from omniseg.training import load_train_config, train
    from tests._training_synth import make_patch_set

    manifest = make_patch_set(tmp_path / "data")
    run = tmp_path / "run"
    with folder_lock(run), pytest.raises(OmnisegError, match="another running omniseg"):
        train(load_train_config(None, _train_overrides(manifest, run)))


# ---- model folders --------------------------------------------------------------------------


def _saved_tiny(tmp_path) -> Path:
    from omniseg.models import create_model, save_pretrained

    folder = tmp_path / "model"
    save_pretrained(create_model("omniseg-tiny"), folder)
    return folder


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tile_size", 100_000, "tile_size"),
        ("tile_overlap", 300, "tile_overlap"),
        ("thresholds", [0.5, 0.5, 1.5, 0.5, 0.5, 0.5], "thresholds"),
        ("min_area_um2", [-1, 0, 0, 0, 0, 0], "min_area"),
    ],
)
def test_model_folder_inference_settings_are_validated(tmp_path, key, value, message):
    import json as _json

    from omniseg.models import load_pretrained

    folder = _saved_tiny(tmp_path)
    config = _json.loads((folder / "config.json").read_text())
    config["inference"][key] = value
    (folder / "config.json").write_text(_json.dumps(config))
    with pytest.raises(OmnisegError, match=message) as error:
        load_pretrained(folder)
    assert "config.json" in str(error.value)


def test_a_model_folder_without_a_recorded_hash_needs_an_explicit_flag(tmp_path, capsys):
    import json as _json

    from omniseg.cli.main import main
    from omniseg.models import load_pretrained

    folder = _saved_tiny(tmp_path)
    config = _json.loads((folder / "config.json").read_text())
    del config["sha256"]
    (folder / "config.json").write_text(_json.dumps(config))
    with pytest.raises(OmnisegError, match="allow-unverified"):
        load_pretrained(folder)
    assert load_pretrained(folder, verify=False) is not None
    slide = _tiny_slide(tmp_path)
    args = ["segment", str(slide), "-o", str(tmp_path / "o"), "--weights", str(folder)]
    assert main([*args, "--tasks", "dt", "--quiet"]) == 2
    assert "allow-unverified" in capsys.readouterr().err
    assert main([*args, "--tasks", "dt", "--quiet", "--allow-unverified"]) == 0


def test_convert_checkpoint_overwrite_replaces_only_a_model_folder(tmp_path, capsys):
    from omniseg.cli.main import main

    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    assert main(["convert-checkpoint", str(tmp_path / "x.pth"), str(precious), "--overwrite"]) == 2
    assert "refused" in capsys.readouterr().err
    assert (precious / "chapter1.tex").read_text() == "years of work"


# ---- smaller defects --------------------------------------------------------------------------


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    from omniseg.atomic import atomic_write_text

    target = tmp_path / "summary.json"
    target.write_text("old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OmnisegError, match="disk is full") as error:
        atomic_write_text(target, "new")
    assert str(target) in str(error.value) and target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left


def test_noise_masks_are_refused_and_binary_masks_of_any_value_read(tmp_path):
    from PIL import Image

    from omniseg.data import read_mask

    noisy = np.zeros((8, 8), np.uint8)
    noisy[2:5, 2:5] = 255
    noisy[6, 6] = 37  # JPEG-like debris
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    with pytest.raises(OmnisegError, match="two values"):
        read_mask(tmp_path / "noisy.png")
    ones = (noisy == 255).astype(np.uint8)  # a 0/1 mask
    Image.fromarray(ones).save(tmp_path / "ones.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "ones.png"), noisy == 255)


@pytest.mark.usefixtures("one_thread")
def test_a_mismatched_pair_fails_before_any_run_folder_exists(tmp_path):
    from PIL import Image

    from omniseg.training import load_train_config, train
    from tests._training_synth import make_patch_set

    manifest = make_patch_set(tmp_path / "data", per_task=3)
    mask = next((tmp_path / "data").rglob("im_2_mask_x.png"))
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(mask)
    run = tmp_path / "run"
    with pytest.raises(OmnisegError, match="does not match image"):
        train(load_train_config(None, _train_overrides(manifest, run)))
    assert not run.exists()


def test_a_deeply_nested_roi_is_one_clear_error(tmp_path):
    from omniseg.io import load_roi

    roi = tmp_path / "deep.geojson"
    roi.write_text('{"type": "GeometryCollection", "geometries": ' * 3000 + "[]" + "}" * 3000)
    info = SlideInfo("s", "fake", ((100, 100),), (1.0,), 0.5, None)
    with pytest.raises(OmnisegError, match=str(roi.name)):
        load_roi(roi, info)


def test_a_tiff_with_a_short_offset_table_is_corrupt_not_sparse(tmp_path):
    from omniseg.io.tiff_reader import TiffReader

    path = tmp_path / "short.tif"
    tifffile.imwrite(path, np.zeros((300, 500, 3), np.uint8), tile=(256, 256), photometric="rgb")
    with tifffile.TiffFile(path, mode="r+b") as tif:  # 4 tiles, but only 2 listed
        for name in ("TileOffsets", "TileByteCounts"):
            tag = tif.pages[0].tags[name]
            tag.overwrite(tag.value[:2])
    with pytest.raises(OmnisegError, match="corrupt TIFF"):
        TiffReader(path, mpp=0.5)
    # ... and the opener does not fall back to OpenSlide, which read the missing tiles for
    # minutes on a large header (issue 36 point 3): corrupt means corrupt, whoever noticed.
    with pytest.raises(OmnisegError, match="corrupt TIFF"):
        open_slide(path, mpp=0.5)


# ---- more bad inputs ---------------------------------------------------------------------------


def test_float_and_one_bit_images_become_rgb(tmp_path):
    ramp = np.linspace(0.0, 1.0, 64 * 48, dtype=np.float32).reshape(48, 64)
    tifffile.imwrite(tmp_path / "float.tif", ramp)
    with open_slide(tmp_path / "float.tif", mpp=0.5) as reader:
        region = reader.read_region(0, 0, 0, 64, 48)
    assert region.dtype == np.uint8 and region.shape == (48, 64, 3)
    assert region[0, 0, 0] < region[-1, -1, 0]  # the ramp survives
    from PIL import Image

    bits = Image.fromarray((np.indices((40, 40)).sum(axis=0) % 2).astype(bool))
    bits.save(tmp_path / "bits.png")
    with open_slide(tmp_path / "bits.png", mpp=0.5) as reader:
        region = reader.read_region(0, 0, 0, 40, 40)
    assert set(np.unique(region)) == {0, 255}


def test_a_zero_size_image_is_one_clear_error(tmp_path):
    path = tmp_path / "empty.tif"
    tifffile.imwrite(path, np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(OmnisegError, match="empty.tif"):
        open_slide(path, mpp=0.5)


def test_self_intersecting_roi_is_repaired_not_refused(tmp_path):
    from omniseg.io import load_roi

    bowtie = tmp_path / "bowtie.geojson"
    bowtie.write_text(
        '{"type": "Polygon", "coordinates": [[[10, 10], [90, 90], [90, 10], [10, 90], [10, 10]]]}'
    )
    info = SlideInfo("s", "fake", ((100, 100),), (1.0,), 0.5, None)
    roi = load_roi(bowtie, info)
    assert roi.is_valid and roi.area > 0


def test_slide_names_with_spaces_and_non_ascii_work(tmp_path):
    from omniseg.inference import SegmentSettings, segment_slide
    from omniseg.models import InferenceSettings
    from omniseg.testing import PointwiseModel

    slide = _tiny_slide(tmp_path).rename(tmp_path / "Niere Übersicht 腎臓.tif")
    model = PointwiseModel(InferenceSettings(tile_size=64, tile_overlap=16))
    result = segment_slide(slide, tmp_path / "out dir", SegmentSettings(progress=False), model)
    assert result.out_dir.name == "Niere Übersicht 腎臓"
    assert (result.out_dir / "summary.json").is_file()


def test_a_read_only_output_folder_is_one_clear_error(tmp_path, monkeypatch):
    """Simulated (tests may run as root, who writes anywhere): the first write is refused."""
    from omniseg.inference import SegmentSettings, results, segment_slide
    from omniseg.models import InferenceSettings
    from omniseg.testing import PointwiseModel

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(results, "atomic_write_json", refuse)
    slide = _tiny_slide(tmp_path)
    model = PointwiseModel(InferenceSettings(tile_size=64, tile_overlap=16))
    with pytest.raises(OmnisegError, match="permission denied") as error:
        segment_slide(slide, tmp_path / "ro", SegmentSettings(progress=False), model)
    assert ".source.json" in str(error.value)


def test_a_patch_folder_without_manifest_does_not_follow_links_out_of_it(tmp_path):
    """Issue 36 point 11: the folder layout followed symlinks out of the folder (a manifest row
    pointing out is refused); now both are refused unless allowed."""
    from omniseg.data import discover_patches

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (16, 16)).save(outside / "secret.png")
    folder = tmp_path / "patches" / "0_1_dt" / "he"
    folder.mkdir(parents=True)
    (folder / "a.png").symlink_to(outside / "secret.png")
    Image.new("L", (16, 16)).save(folder / "a_mask_x.png")
    with pytest.raises(OmnisegError, match="links outside the patch folder"):
        discover_patches(tmp_path / "patches")
    assert len(discover_patches(tmp_path / "patches", allow_outside=True)) == 1


def _jpeg_tiled_tiff(path: Path) -> tuple[int, int]:
    """A 512 x 768 JPEG-tiled RGB TIFF (256 px tiles); returns tile (0, 1)'s offset and size."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(170, 30, (512, 768, 3)), 0, 255).astype(np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), compression="jpeg", photometric="rgb",
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return int(page.dataoffsets[1]), int(page.databytecounts[1])


def test_a_jpeg_tile_whose_second_half_was_zeroed_is_corrupt_not_grey(tmp_path):
    """libjpeg decodes a tile cut off or overwritten as grey, with a warning nobody sees (a real
    SVS in the audit: 27,476 grey px, 195,641 labels changed, exit 0). The tile is refused, by position."""
    path = tmp_path / "slide.tif"
    offset, size = _jpeg_tiled_tiff(path)
    with open_slide(path) as reader:
        whole = reader.read_region(0, 0, 0, 768, 512)
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 2)
        fh.write(bytes(size - size // 2))
    with open_slide(path) as reader:
        with pytest.raises(OmnisegError, match=r"slide.tif: corrupt JPEG tile at level 0, pixels "
                           r"\(256, 0\) to \(512, 256\)"):  # fmt: skip
            reader.read_region(0, 200, 0, 100, 100)
        untouched = reader.read_region(0, 0, 256, 768, 256)  # the row below reads as before
    np.testing.assert_array_equal(untouched, whole[256:])


def test_zero_padding_after_a_complete_jpeg_tile_is_not_corruption(tmp_path):
    path = tmp_path / "padded.tif"
    offset, size = _jpeg_tiled_tiff(path)
    with tifffile.TiffFile(path) as tif:
        counts_tag = tif.pages[0].tags["TileByteCounts"]
        counts, at = list(counts_tag.value), counts_tag.valueoffset
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(size)
    with open(path, "ab") as fh:  # tile 1 moved to the end, followed by 64 zero bytes
        moved = fh.tell()
        fh.write(data + bytes(64))
    with tifffile.TiffFile(path) as tif:
        offsets_at = tif.pages[0].tags["TileOffsets"].valueoffset
    with open(path, "r+b") as fh:
        fh.seek(offsets_at + 4)
        fh.write(struct.pack("<I", moved))
        fh.seek(at + 4)
        fh.write(struct.pack("<I", counts[1] + 64))
    with open_slide(path) as reader:
        assert reader.read_region(0, 256, 0, 256, 256).mean() > 100
