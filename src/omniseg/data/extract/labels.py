"""What one task's patches are labelled from: classified polygons, or an aligned label image.

Each source answers, for a window at the task's native scale, which pixels are foreground and
which are *known* (annotated). Pixels outside the annotated regions are unknown: the masks mark
them with the ignore value, and losses and metrics skip them (partial annotation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from shapely import affinity
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from omniseg.errors import OmnisegError
from omniseg.io.raster import Window, roi_mask

ALIGN_TOLERANCE = 0.01  # a label image's aspect may differ from the slide's by 1 % (rounding)
OVERVIEW_SIDE = 2048  # px: the label image is searched for objects at about this size


def to_native(geometry: BaseGeometry, to_level0: float) -> BaseGeometry:
    """Level-0 pixels -> pixels of a scale with ``to_level0`` level-0 px per px."""
    return affinity.scale(geometry, 1 / to_level0, 1 / to_level0, origin=(0, 0))


@dataclass(frozen=True)
class PolygonLabels:
    """Foreground = the task's polygons; known = annotated regions (None: the whole slide)."""

    foreground: BaseGeometry  # native-scale pixels
    known: BaseGeometry | None  # native-scale pixels; None = every pixel is annotated

    def masks(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        fg = roi_mask(self.foreground, window)
        if self.known is None:
            return fg, np.ones_like(fg)
        return fg, roi_mask(self.known, window) | fg


class LabelImage:
    """A label map aligned to the slide (value = task id + 1, 0 = background; e.g. a corrected
    ``labels.ome.tif``): every pixel is annotated. Read window by window from its pyramid."""

    def __init__(self, path: Path, slide_dims: tuple[int, int]) -> None:
        import tifffile
        import zarr

        self.path = path
        self._overview: tuple[np.ndarray, float] | None = None
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            self._levels = [
                zarr.open(series.aszarr(level=i), mode="r") for i in range(len(series.levels))
            ]
        except Exception as exc:  # tifffile raises many types for a broken file
            if hasattr(self, "_tif"):
                self._tif.close()
            raise OmnisegError(
                f"{path}: unreadable label image ({exc}); export it as TIFF"
            ) from exc
        try:
            self.scale = self._aligned_scale(slide_dims)
        except OmnisegError:
            self._tif.close()
            raise

    def _aligned_scale(self, slide_dims: tuple[int, int]) -> tuple[float, float]:
        """Label px per level-0 px along x and y; refuses a label image of another aspect."""
        path = self.path
        shape = self._levels[0].shape
        if len(shape) != 2:
            raise OmnisegError(
                f"{path}: a label image must be one 2-D plane of class values, got shape {shape}"
            )
        width, height = slide_dims
        scale = (shape[1] / width, shape[0] / height)
        if abs(scale[0] / scale[1] - 1) > ALIGN_TOLERANCE:
            raise OmnisegError(
                f"{path}: label image is {shape[1]} x {shape[0]} px but the slide is {width} x "
                f"{height}: their aspect ratios differ, so it is not aligned to this slide"
            )
        return scale

    def close(self) -> None:
        self._tif.close()

    def values(self) -> set[int]:
        return {int(v) for v in np.unique(self.overview()[0])}

    def overview(self) -> tuple[np.ndarray, float]:
        """(coarse label map, level-0 slide px per overview px) for finding objects: the finest
        pyramid level of at most 2 x ``OVERVIEW_SIDE`` px, else a strided read of level 0. Read
        once. Objects smaller than one overview pixel may be missed (e.g. capillaries on a
        whole-slide label image): their patches are then fewer."""
        if self._overview is None:
            self._overview = self._read_overview()
        return self._overview

    def _read_overview(self) -> tuple[np.ndarray, float]:
        base = self._levels[0]
        small = [lv for lv in self._levels if max(lv.shape) <= 2 * OVERVIEW_SIDE]
        if small:
            level = small[0]
            return np.asarray(level[:]), base.shape[0] / level.shape[0] / self.scale[1]
        step = math.ceil(max(base.shape) / OVERVIEW_SIDE)
        return np.asarray(base[::step, ::step]), step / self.scale[1]

    def window(self, window: Window, to_level0: float) -> np.ndarray:
        """Labels at the native-scale window's pixel centres (nearest neighbour)."""
        base = self._levels[0]
        ys = ((np.arange(window.y, window.y1) + 0.5) * to_level0 * self.scale[1]).astype(np.int64)
        xs = ((np.arange(window.x, window.x1) + 0.5) * to_level0 * self.scale[0]).astype(np.int64)
        ys = np.clip(ys, 0, base.shape[0] - 1)
        xs = np.clip(xs, 0, base.shape[1] - 1)
        block = np.asarray(base[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1])
        return block[np.ix_(ys - ys[0], xs - xs[0])]


@dataclass(frozen=True)
class LabelImageLabels:
    """One task's view of a label image: foreground = any of ``values``."""

    image: LabelImage
    values: tuple[int, ...]
    to_level0: float

    def masks(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        labels = self.image.window(window, self.to_level0)
        fg = np.isin(labels, self.values)
        return fg, np.ones_like(fg)


def label_image_objects(image: LabelImage, values: tuple[int, ...]) -> list[BaseGeometry]:
    """One level-0 box per connected object of ``values`` on the overview (for centring)."""
    import cv2

    overview, per_px = image.overview()
    found = np.isin(overview, values).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(found, connectivity=8)
    objects = []
    for x, y, w, h, _ in stats[1:count]:
        objects.append(box(x * per_px, y * per_px, (x + w) * per_px, (y + h) * per_px))
    return objects
