"""Turn any decoded raster (grey, RGBA, 16-bit, float, planar) into the HxWx3 uint8 RGB the models expect."""

from __future__ import annotations

import cv2
import numpy as np

WHITE = 255  # fill value for areas outside the slide and for transparent pixels


def integer_value_max(dtype: np.dtype) -> float:
    """Full-scale value of an integer dtype (65535 for uint16); 1.0 for floats."""
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def to_rgb_uint8(array: np.ndarray, value_max: float | None = None) -> np.ndarray:
    """HxW, HxWx1..4 (grey, grey+alpha, RGB, RGBA) of any numeric dtype -> HxWx3 uint8.

    Values above 8 bits are scaled linearly so that `value_max` maps to 255 (default: the
    dtype's full scale). The reader passes one slide-wide `value_max`, so every region of one
    slide is scaled the same way (no per-tile contrast stretch). Alpha is composited over white,
    the same colour as areas outside the slide.
    """
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected HxW or HxWxC with C in 1..4, got shape {data.shape}")
    data = _scale_to_uint8(data, value_max)
    channels = data.shape[2]
    if channels == 4 and data.flags.c_contiguous and data[:, :, 3].min() >= WHITE:
        return cv2.cvtColor(data, cv2.COLOR_RGBA2RGB)  # drops alpha; one SIMD pass, not a gather
    if channels in (2, 4):
        colour, alpha = data[:, :, : channels - 1], data[:, :, channels - 1 :]
        if alpha.min(initial=WHITE) < WHITE:
            weight = alpha.astype(np.float32) / 255.0
            blended = colour.astype(np.float32) * weight + WHITE * (1.0 - weight)
            colour = np.rint(blended).astype(np.uint8)
        data = colour
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    return np.ascontiguousarray(data)


def _scale_to_uint8(data: np.ndarray, value_max: float | None) -> np.ndarray:
    if data.dtype == np.uint8:
        return data
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255
    top = float(value_max) if value_max else integer_value_max(data.dtype)
    if top <= 0:
        top = 1.0
    scaled = data.astype(np.float32) * (255.0 / top)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def read_clipped(
    source_shape_hw: tuple[int, int],
    read_inside,
    x: int,
    y: int,
    width: int,
    height: int,
) -> np.ndarray:
    """Read a window that may overlap the image border: outside pixels are white.

    `read_inside(x0, y0, x1, y1)` must return the RGB uint8 pixels of a window that lies fully
    inside the image; only that part is decoded, so memory is bounded by the request.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"region size must be positive, got {width}x{height}")
    img_h, img_w = source_shape_hw
    if x >= 0 and y >= 0 and x + width <= img_w and y + height <= img_h:
        return read_inside(x, y, x + width, y + height)  # fully inside: no canvas copy
    out = np.full((height, width, 3), WHITE, dtype=np.uint8)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, img_w), min(y + height, img_h)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = read_inside(x0, y0, x1, y1)
    return out


def slide_value_max(sample: np.ndarray) -> float | None:
    """One slide-wide full-scale value for rasters deeper than 8 bits, from a representative sample.

    12-bit data stored as uint16 (max ~4095) would look black if scaled by 65535, so the observed
    maximum of the sample (the coarsest level, or the whole image) is used; floats in [0, 1] keep 1.
    """
    if sample.dtype in (np.uint8, np.bool_):
        return None
    observed = float(np.max(sample)) if sample.size else 0.0
    if np.issubdtype(sample.dtype, np.floating) and observed <= 1.0:
        return 1.0
    return max(observed, 1.0)
