"""Pointwise bilinear resampling of a native-scale grid onto a window of another grid.

Each output pixel is computed from its own centre coordinate only, with the same arithmetic
wherever the window starts, so resampling chunk by chunk gives bitwise the same result as
resampling the whole image at once (cv2.resize would not: its sampling depends on the image
size). Probabilities are resampled, never masks: a threshold on the result is the smooth boundary
at the target resolution instead of a blocky or dilated mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from omniseg.io.raster import Window

ReadBlock = Callable[[int, int, int, int], np.ndarray]  # (y0, y1, x0, x1) -> (..., h, w)


@dataclass(frozen=True)
class AxisSamples:
    """Source indices and weights of one axis: out = (1 - frac) * src[lo] + frac * src[hi]."""

    lo: np.ndarray
    hi: np.ndarray
    frac: np.ndarray

    @property
    def start(self) -> int:
        return int(self.lo.min())

    @property
    def stop(self) -> int:
        return int(self.hi.max()) + 1


def axis_samples(start: int, length: int, scale: float, source_length: int) -> AxisSamples:
    """Samples for target pixels [start, start + length); ``scale`` = target px per source px.

    Pixel centres are aligned (target centre d + 0.5 sits at source (d + 0.5) / scale); outside
    the source the edge value is repeated.
    """
    centres = (np.arange(start, start + length, dtype=np.float64) + 0.5) / scale - 0.5
    base = np.floor(centres)
    frac = (centres - base).astype(np.float32)
    last = source_length - 1
    lo = np.clip(base, 0, last).astype(np.int64)
    hi = np.clip(base + 1, 0, last).astype(np.int64)
    return AxisSamples(lo, hi, frac)


def resample_bilinear(
    read_block: ReadBlock,
    source_hw: tuple[int, int],
    scale_yx: tuple[float, float],
    window: Window,
) -> np.ndarray:
    """Bilinear values of the source grid on ``window`` of the target grid, float32 (..., h, w).

    Only the source block under the window (plus one pixel) is read.
    """
    ys = axis_samples(window.y, window.h, scale_yx[0], source_hw[0])
    xs = axis_samples(window.x, window.w, scale_yx[1], source_hw[1])
    block = np.asarray(read_block(ys.start, ys.stop, xs.start, xs.stop), dtype=np.float32)
    rows = _interpolate_axis(block, ys, axis=-2)
    return np.ascontiguousarray(_interpolate_axis(rows, xs, axis=-1))


def _interpolate_axis(block: np.ndarray, samples: AxisSamples, axis: int) -> np.ndarray:
    """Linear interpolation of ``block`` along ``axis`` (which starts at ``samples.start``).

    Where every sample sits on a source pixel (the same grid, e.g. the 40x pass on a 0.25 µm/px
    slide) the result is that pixel exactly, so the second gather and the blend are skipped
    (bitwise the same for finite values: ``v * 1 + w * 0 == v``), and a run of consecutive
    pixels is a slice. A 1024² identity resample took 1.7 against 21.5 ms; the 6000² demo-style
    slide's merge spent 0.84 against 0.97 s resampling.
    """
    lo = samples.lo - samples.start
    if not samples.frac.any():
        if (np.diff(lo) == 1).all():
            index = [slice(None)] * block.ndim
            index[axis] = slice(int(lo[0]), int(lo[-1]) + 1)
            return block[tuple(index)]
        return np.take(block, lo, axis=axis)
    # np.take keeps the result C-ordered; ``rows[..., index]`` came back Fortran-ordered, and
    # every later whole-chunk pass (the merge) ran about 2x slower over it
    near = np.take(block, lo, axis=axis)
    far = np.take(block, samples.hi - samples.start, axis=axis)
    frac = samples.frac if axis == -1 else samples.frac[:, None]
    return near * (1.0 - frac) + far * frac


def source_window(window: Window, scale_yx: tuple[float, float], source_hw: tuple[int, int]):
    """The source-grid window that ``resample_bilinear`` reads for ``window`` (for skip tests)."""
    ys = axis_samples(window.y, window.h, scale_yx[0], source_hw[0])
    xs = axis_samples(window.x, window.w, scale_yx[1], source_hw[1])
    return Window(ys.start, xs.start, ys.stop - ys.start, xs.stop - xs.start)
