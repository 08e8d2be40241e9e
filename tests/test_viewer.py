"""``omniseg view``: Deep Zoom maths, endpoints, and what the server refuses."""

from __future__ import annotations

import io
import json
import os
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
import tifffile
from PIL import Image

from omniseg.data.synthetic import synthetic_tissue, write_tiff
from omniseg.errors import OmnisegError
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.models import InferenceSettings
from omniseg.testing import PointwiseModel
from omniseg.viewer.server import Viewer
from omniseg.viewer.tiles import best_level, level_size, max_level, tile_box
from tests._viewer_server import serving


def test_tiles_cover_every_level_exactly_once():
    width, height = 1000, 600
    top = max_level(width, height)
    assert top == 10 and level_size(width, height, top) == (1000, 600)
    assert level_size(width, height, 0) == (1, 1)
    for level in (top, top - 1, top - 3):
        lw, lh = level_size(width, height, level)
        covered = np.zeros((height, width), np.int32)
        cols, rows = -(-lw // 256), -(-lh // 256)
        for col in range(cols):
            for row in range(rows):
                box = tile_box(width, height, level, col, row)
                covered[box.y : box.y + box.height, box.x : box.x + box.width] += 1
        assert covered.min() == 1 and covered.max() == 1, level
    for bad in ((top + 1, 0, 0), (-1, 0, 0), (top, 4, 0), (top, 0, 3), (top, -1, 0)):
        with pytest.raises(ValueError):
            tile_box(width, height, *bad)
    assert best_level((1.0, 4.0, 16.0), 8.0) == 1 and best_level((1.0, 4.0), 0.5) == 0


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("view")
    slide = write_tiff(root / "slide.tif", synthetic_tissue(520, 600), 0.5)  # height, width
    settings = SegmentSettings(progress=False, merge_chunk=64, precision="fp32")
    model = PointwiseModel(
        InferenceSettings(tile_size=128, tile_overlap=16, min_area_um2=(0.0,) * 6)
    )
    return segment_slide(slide, root / "out", settings, model).out_dir


@pytest.fixture(scope="module")
def server(result):
    with serving(Viewer(result.parent)) as url:
        yield url


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, b""


def test_metadata_objects_and_page(server, result):
    status, _, body = get(server + "/api/results")
    info = json.loads(body)["results"][0]
    assert (
        status == 200
        and info["name"] == result.name
        and (info["width"], info["height"]) == (600, 520)
    )
    assert [e["name"] for e in info["legend"]][:2] == ["dt", "pt"]
    status, _, body = get(server + "/api/objects/a/0")
    objects = json.loads(body)
    with open(result / "objects.csv", encoding="utf-8") as fh:
        assert status == 200 and len(objects) == sum(1 for _ in fh) - 1
    status, _, body = get(server + "/")
    assert status == 200 and b"openseadragon.min.js" in body
    status, _, body = get(server + "/static/openseadragon/openseadragon.min.js")
    assert status == 200 and body.startswith(b"//! openseadragon")


def test_label_tiles_show_the_label_map(server, result):
    labels = tifffile.imread(result / "labels.ome.tif", level=0)
    top = max_level(600, 520)
    status, headers, body = get(server + f"/tiles/a/0/labels/{top}/1_1.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert "max-age" in headers["Cache-Control"]
    rgba = np.asarray(Image.open(io.BytesIO(body)))
    window = labels[256:512, 256:512]
    assert rgba.shape[:2] == window.shape
    np.testing.assert_array_equal(rgba[..., 3] > 0, window > 0)  # coloured exactly where labelled
    present = [int(v) for v in np.unique(window) if v]
    assert present, "the test slide must have labels in this tile"
    status, _, body = get(
        server + f"/tiles/a/0/labels/{top}/1_1.png?hide=" + ",".join(map(str, present))
    )
    assert status == 200 and not np.asarray(Image.open(io.BytesIO(body)))[..., 3].any()
    status, _, body = get(server + f"/tiles/a/0/slide/{top}/0_0.jpeg")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (256, 256)


@pytest.mark.parametrize(
    "path",
    [
        "/tiles/a/0/slide/99/0_0.jpeg",  # level beyond the pyramid
        "/tiles/a/0/slide/10/99_0.jpeg",  # column beyond the grid
        "/tiles/a/0/slide/10/0_999999999.jpeg",
        "/tiles/a/7/slide/1/0_0.jpeg",  # no result 7
        "/tiles/b/0/slide/1/0_0.jpeg",  # no compare side
        "/tiles/a/0/slide/-1/0_0.jpeg",
        "/static/../sources.py",
        "/static/%2e%2e/sources.py",
        "/static/..%2f..%2fserver.py",
        "/api/objects/a/../../etc/passwd",
        "/tiles/a/0/labels/10/0_0.png?hide=../../x",
    ],
)
def test_traversal_and_absurd_requests_are_refused(server, path):
    status, _, body = get(server + path)
    assert status in (400, 403, 404) and b"import" not in body


def test_a_label_file_linking_out_of_the_folder_is_not_served(result, tmp_path):
    copy = tmp_path / "res"
    copy.mkdir()
    (copy / "summary.json").write_bytes((result / "summary.json").read_bytes())
    outside = tmp_path / "elsewhere.ome.tif"
    outside.write_bytes((result / "labels.ome.tif").read_bytes())
    os.symlink(outside, copy / "labels.ome.tif")
    with pytest.raises(OmnisegError, match="link out of the result folder"):
        Viewer(copy)


def test_compare_mode_and_cohort_status(result, tmp_path):
    cohort = result.parent
    (cohort / "cohort.csv").write_text(
        "slide,status,error,result_dir\n"
        f"/data/slide.tif,done,,{result}\n/data/broken.svs,failed,unreadable tile,\n",
        encoding="utf-8",
    )
    try:
        with serving(Viewer(cohort, compare=cohort)) as url:
            status, _, body = get(url + "/api/results")
            data = json.loads(body)
            assert status == 200 and len(data["compare"]) == len(data["results"]) == 1
            assert data["cohort"] == [
                {"slide": "slide.tif", "status": "done", "error": "", "index": 0},
                {
                    "slide": "broken.svs",
                    "status": "failed",
                    "error": "unreadable tile",
                    "index": None,
                },
            ]
            a = get(url + "/tiles/a/0/labels/9/0_0.png")
            b = get(url + "/tiles/b/0/labels/9/0_0.png")
            assert a[0] == b[0] == 200 and a[2] == b[2]
    finally:
        (cohort / "cohort.csv").unlink()
    for name in ("r1", "r2"):  # two results against one: not the same slides
        shutil.copytree(result, tmp_path / "two" / name)
    with pytest.raises(OmnisegError, match="compare results of the same slides"):
        Viewer(cohort, compare=tmp_path / "two")


def test_cli_view_errors_are_one_line(tmp_path, capsys):
    from omniseg.cli.main import main

    assert main(["view", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a folder" in err
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no segmentation result" in err
    assert main(["view", str(tmp_path), "--port", "0"]) == 2
    assert "--port 0" in capsys.readouterr().err
