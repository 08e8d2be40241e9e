"""What the viewer shows of one result folder: slide tiles, label tiles, legend, objects.

Only fixed file names inside the folder are opened (``summary.json``, ``labels.ome.tif``,
``objects.csv``), each refused when it is a symlink that leaves the folder, plus the slide that
``summary.json`` names. Tiles are rendered on demand and kept in a bounded LRU cache.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
import zarr
from PIL import Image

from omniseg.catalogue import catalogue_from_dict, default_catalogue
from omniseg.errors import OmnisegError
from omniseg.inference.outputs import label_names
from omniseg.io import open_slide
from omniseg.viewer.tiles import best_level, tile_box

SUMMARY, LABELS, OBJECTS = "summary.json", "labels.ome.tif", "objects.csv"
CACHE_TILES = 1024  # rendered tiles kept per result (about 30 KB each: memory stays bounded)
JPEG_QUALITY = 85


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` if it exists and resolves inside ``folder`` (no symlink escape)."""
    path = folder / name
    root = folder.resolve()
    if not path.is_file() or not path.resolve().is_relative_to(root):
        raise OmnisegError(f"{path}: missing, or a link out of the result folder; not served")
    return path


def is_result(folder: Path) -> bool:
    return (folder / SUMMARY).is_file() and (folder / LABELS).is_file()


@dataclass(frozen=True)
class LegendEntry:
    value: int
    name: str
    colour: tuple[int, int, int]
    count: int | None
    area_mm2: float | None


class ResultSource:
    """One segmentation result: its slide and label pyramid as Deep Zoom tiles."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.summary = json.loads(inside(folder, SUMMARY).read_text(encoding="utf-8"))
        self.width, self.height = (int(v) for v in self.summary["dimensions_wh"])
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._slide = None
        labels = tifffile.TiffFile(inside(folder, LABELS))
        self._label_file = labels
        series = labels.series[0]
        self._label_levels = [
            zarr.open(series.aszarr(level=i), mode="r") for i in range(len(series.levels))
        ]
        self._label_downsamples = tuple(self.width / lv.shape[-1] for lv in series.levels)
        raw = self.summary.get("catalogue")
        self.catalogue = catalogue_from_dict(raw) if raw else default_catalogue()

    @property
    def name(self) -> str:
        return self.folder.name

    def slide(self):
        if self._slide is None:
            mpp = self.summary.get("mpp")
            self._slide = open_slide(self.summary["slide"], mpp=mpp, require_mpp=False)
        return self._slide

    def legend(self) -> list[LegendEntry]:
        classes = self.summary.get("classes", {})
        names = label_names(self.catalogue)  # the overlay's names: glomerulus, tuft, ...
        entries = []
        for t in self.catalogue.tissues:
            name = names[t.label_value]
            stats = classes.get(name) or classes.get(t.name)
            entries.append(LegendEntry(t.label_value, name, tuple(t.color), (stats or {}).get("count"),
                                       (stats or {}).get("area_mm2")))  # fmt: skip
        return entries

    def objects(self) -> list[dict]:
        path = self.folder / OBJECTS
        if not path.is_file():
            return []
        with open(inside(self.folder, OBJECTS), newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def _cached(self, key: tuple, render) -> bytes:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = render()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > CACHE_TILES:
                self._cache.popitem(last=False)
        return data

    def slide_tile(self, level: int, col: int, row: int) -> bytes:
        box = tile_box(self.width, self.height, level, col, row)
        return self._cached(("slide", level, col, row), lambda: self._render_slide(box))

    def _render_slide(self, box) -> bytes:
        with self._lock:
            reader = self.slide()
            info = reader.info
            lv = best_level(info.level_downsamples, box.downsample)
            d = info.level_downsamples[lv]
            w, h = max(1, round(box.width / d)), max(1, round(box.height / d))
            rgb = reader.read_region(lv, box.x, box.y, w, h)
        rgb = cv2.resize(rgb, (box.out_width, box.out_height), interpolation=cv2.INTER_AREA)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()

    def label_tile(self, level: int, col: int, row: int, hidden: frozenset[int]) -> bytes:
        box = tile_box(self.width, self.height, level, col, row)
        key = ("labels", level, col, row, tuple(sorted(hidden)))
        return self._cached(key, lambda: self._render_labels(box, hidden))

    def label_window(self, box) -> np.ndarray:
        """Label values of a tile, nearest neighbour (a pixel keeps its class at every zoom)."""
        lv = best_level(self._label_downsamples, box.downsample)
        d = self._label_downsamples[lv]
        array = self._label_levels[lv]
        x0, y0 = int(box.x / d), int(box.y / d)
        x1 = max(x0 + 1, min(array.shape[-1], round((box.x + box.width) / d)))
        y1 = max(y0 + 1, min(array.shape[-2], round((box.y + box.height) / d)))
        window = np.asarray(array[..., y0:y1, x0:x1]).reshape(y1 - y0, x1 - x0)
        return cv2.resize(window, (box.out_width, box.out_height), interpolation=cv2.INTER_NEAREST)

    def _render_labels(self, box, hidden: frozenset[int]) -> bytes:
        values = self.label_window(box)
        rgba = np.zeros((*values.shape, 4), np.uint8)
        for entry in self.legend():
            if entry.value in hidden:
                continue
            where = values == entry.value
            rgba[where, :3] = entry.colour
            rgba[where, 3] = 255
        buffer = io.BytesIO()
        Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
        self._label_file.close()


def find_results(folder: Path) -> list[Path]:
    """A result folder, or the result folders one level inside a cohort / demo folder."""
    if is_result(folder):
        return [folder]
    found = sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and is_result(p)
    )
    if not found:
        raise OmnisegError(
            f"{folder}: no segmentation result here ({SUMMARY} + {LABELS}) nor in its subfolders; "
            "pass the -o folder of omniseg segment or demo"
        )
    return found
