"""Bounded fuzzing (seconds): hostile bytes into the manifest, ROI and slide parsers must give an
OmnisegError naming the file, or a valid result; never another exception, a hang or a crash."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from omniseg.data import discover_patches
from omniseg.errors import OmnisegError
from omniseg.io import load_roi, open_slide
from omniseg.io.base import SlideInfo

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
INFO = SlideInfo("s", "fake", ((200, 150),), (1.0,), 0.5, None)


def _tiff_like() -> st.SearchStrategy[bytes]:
    """Valid TIFF/PNG magic followed by junk, and plain junk."""
    heads = st.sampled_from(
        [b"II*\x00", b"MM\x00*", b"II+\x00", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b""]
    )
    return st.builds(lambda h, t: h + t, heads, st.binary(max_size=400))


@FUZZ
@given(data=_tiff_like())
def test_slide_readers_refuse_junk_with_one_error(tmp_path, data):
    path = tmp_path / "fuzz.tif"
    path.write_bytes(data)
    try:
        reader = open_slide(path, mpp=0.5)
    except OmnisegError as exc:
        assert "fuzz.tif" in str(exc)
        return
    reader.close()  # a tiny valid image is fine


@FUZZ
@given(text=st.text(max_size=300))
def test_roi_parser_refuses_junk_with_one_error(tmp_path, text):
    for suffix, body in ((".geojson", "{" + text), (".xml", "<" + text)):
        path = tmp_path / f"fuzz{suffix}"
        path.write_text(body, encoding="utf-8")
        try:
            load_roi(path, INFO)
        except OmnisegError as exc:
            assert path.name in str(exc)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.text(max_size=20), st.text(max_size=20), st.text(max_size=3), st.text(max_size=3)
        ),
        max_size=4,
    )
)
def test_manifest_parser_refuses_junk_with_one_error(tmp_path, rows):
    manifest = tmp_path / "manifest.csv"
    lines = ["image,mask,task_id,scale_id,stain,split"]
    lines += [
        ",".join(v.replace(",", " ").replace("\n", " ") for v in row) + ",he,train" for row in rows
    ]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        discover_patches(manifest)
    except OmnisegError as exc:
        assert "manifest.csv" in str(exc)


def test_manifest_paths_cannot_escape_their_folder_unless_allowed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    image = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "outside.png")
    Image.fromarray(image[..., 0]).save(tmp_path / "outside_mask.png")
    manifest = data / "manifest.csv"
    for row in (
        "../outside.png,../outside_mask.png",
        f"{tmp_path}/outside.png,{tmp_path}/outside_mask.png",
    ):
        manifest.write_text(f"image,mask,task_id,scale_id\n{row},0,1\n")
        with pytest.raises(OmnisegError, match="outside the manifest's folder"):
            discover_patches(manifest)
        assert len(discover_patches(manifest, allow_outside=True)) == 1
