"""``omniseg view`` in a real headless browser (Debian's chromium + chromedriver, Selenium).

Opens a result, flies to the largest object from the object table, and checks the overlay
pixels on screen against the label map at the image coordinates OpenSeadragon reports; then
hides that class and checks its colour is gone. Skips with the reason when no browser is here.
"""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import pytest
import tifffile
from PIL import Image

from omniseg.catalogue import default_catalogue
from omniseg.data.synthetic import synthetic_tissue, write_tiff
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.models import InferenceSettings
from omniseg.testing import PointwiseModel
from omniseg.viewer.server import Viewer
from tests._viewer_server import serving

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="no chromium + chromedriver on PATH (Debian: apt-get install chromium chromium-driver)",
    ),
]
COLOUR_TOLERANCE = 12  # per channel: the label overlay is drawn at opacity 1, resampled


def wait_for(driver, script: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}")


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                "--disable-dev-shm-usage", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def settle(driver) -> None:
    """Both layers fully drawn after the last move."""
    wait_for(driver, "const w = state.viewers.a.world; return w.getItemCount() === 2 && "
                     "w.getItemAt(0).getFullyLoaded() && w.getItemAt(1).getFullyLoaded();")  # fmt: skip
    time.sleep(0.8)  # the animation's last frame


def screen_to_image(driver) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (level-0) x and y under every pixel of the view, from OpenSeadragon's own mapping
    of two corners (the view is an axis-aligned scaling), plus the view's size."""
    js = """
    const v = state.viewers.a, el = document.getElementById('view-a');
    const r = el.getBoundingClientRect();
    const a = v.viewport.viewerElementToImageCoordinates(new OpenSeadragon.Point(0, 0));
    const b = v.viewport.viewerElementToImageCoordinates(new OpenSeadragon.Point(r.width, r.height));
    return [r.width, r.height, a.x, a.y, b.x, b.y];"""
    w, h, ax, ay, bx, by = driver.execute_script(js)
    w, h = round(w), round(h)
    xs = ax + (np.arange(w) + 0.5) * (bx - ax) / w
    ys = ay + (np.arange(h) + 0.5) * (by - ay) / h
    return xs, ys, np.array([h, w])


def overlay_agreement(driver, labels, hidden: set[int]) -> tuple[int, int, float]:
    """(pixels compared, of them labelled with a shown class, share that agree): on screen, a pixel shows a class's colour exactly
    where the label map under it holds that (visible) class. Pixels within 2 screen px of a
    class boundary are left out (resampling blends colours there)."""
    shot = np.asarray(Image.open(io.BytesIO(
        driver.find_element("id", "view-a").screenshot_as_png)).convert("RGB")).astype(int)  # fmt: skip
    xs, ys, _ = screen_to_image(driver)
    h, w = min(shot.shape[0], len(ys)), min(shot.shape[1], len(xs))
    shot, xs, ys = shot[:h, :w], xs[:w], ys[:h]
    inside_x = (xs >= 0) & (xs < labels.shape[1])
    inside_y = (ys >= 0) & (ys < labels.shape[0])
    expected = np.zeros((h, w), np.int32)
    sub = labels[np.clip(ys.astype(int), 0, labels.shape[0] - 1)][
        :, np.clip(xs.astype(int), 0, labels.shape[1] - 1)
    ]
    expected[:] = np.where(inside_y[:, None] & inside_x[None, :], sub, 0)
    for value in hidden:
        expected[expected == value] = 0
    shown = np.zeros((h, w), np.int32)
    for t in default_catalogue().tissues:
        if t.label_value in hidden:
            continue
        close = (np.abs(shot - np.array(t.color)) <= COLOUR_TOLERANCE).all(axis=-1)
        shown[close] = t.label_value
    steady = np.ones((h, w), bool)
    for dy in (-2, 0, 2):
        for dx in (-2, 0, 2):
            steady &= np.roll(np.roll(expected, dy, 0), dx, 1) == expected
    steady[:, :60] = steady[:60, :] = False  # navigation buttons and the navigator overlap
    steady[:, -120:] = False
    n, coloured = int(steady.sum()), int((steady & (expected > 0)).sum())
    return n, coloured, float((shown[steady] == expected[steady]).mean())


def test_view_page_overlay_matches_the_label_map(browser, tmp_path):
    slide = write_tiff(tmp_path / "slide.tif", synthetic_tissue(700, 900), 0.5)
    settings = SegmentSettings(progress=False, merge_chunk=64, precision="fp32")
    model = PointwiseModel(
        InferenceSettings(tile_size=128, tile_overlap=16, min_area_um2=(0.0,) * 6)
    )
    out = segment_slide(slide, tmp_path / "out", settings, model).out_dir
    labels = tifffile.imread(out / "labels.ome.tif", level=0)
    with serving(Viewer(out)) as url:
        browser.get(url + "/")
        wait_for(browser, "return document.body.dataset.ready === '1';")
        browser.execute_script("const o = document.getElementById('opacity'); o.value = 100;"
                               "o.dispatchEvent(new Event('input'));")  # fmt: skip
        header = browser.find_element("css selector", "#objects th[data-key='area_um2']")
        header.click()
        header = browser.find_element("css selector", "#objects th[data-key='area_um2']")
        header.click()  # descending: the largest object first
        first = browser.find_element("css selector", "#objects tbody tr")
        biggest = first.get_attribute("data-id")
        first.click()
        assert browser.execute_script("return document.body.dataset.flewTo;") == biggest
        settle(browser)
        n, coloured, agree = overlay_agreement(browser, labels, hidden=set())
        assert n > 50_000 and coloured > 5_000 and agree >= 0.998, (n, coloured, agree)
        browser.save_screenshot(str(tmp_path / "view.png"))
        # hide the class of the object we flew to: its colour leaves the screen
        klass = browser.find_element("css selector", "#objects tbody tr td:nth-child(2)").text
        value = default_catalogue().tissue(klass).label_value
        box = browser.find_element("css selector", f"#legend input[data-value='{value}']")
        box.click()
        time.sleep(0.5)
        settle(browser)
        n, after, agree = overlay_agreement(browser, labels, hidden={value})
        assert n > 50_000 and agree >= 0.998 and after < coloured, (n, after, coloured, agree)
    assert (tmp_path / "view.png").stat().st_size > 10_000
