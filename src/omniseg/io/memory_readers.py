"""Readers that hold the whole image in memory: Pillow (region PNG/JPEG/TIFF) and ArraySlide.

Plain images carry no trustworthy resolution (a 72-dpi default is common), so PillowReader needs
an explicit `mpp` or `magnification`. ArraySlide is the in-memory test double: a NumPy array plus a
pyramid built with cv2.INTER_AREA, behaving like any other SlideReader.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps

from omniseg.errors import OmnisegError
from omniseg.io.base import SlideInfo
from omniseg.io.pixels import read_clipped, slide_value_max, to_rgb_uint8
from omniseg.io.resolution import resolve_mpp, valid_power

# Images decoded whole (PNG/JPEG/plain TIFF region images): larger ones must be a tiled pyramid.
# 100 MP is 300 MB as RGB; the header is checked before any pixel is decoded (decompression bombs).
MAX_DECODED_PIXELS = 100_000_000
PALETTE_AND_BILEVEL_MODES = {"P": "RGBA", "PA": "RGBA", "1": "L", "CMYK": "RGB", "YCbCr": "RGB"}


def decode_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a whole image file with Pillow into HxWx3 uint8 (EXIF orientation applied)."""
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # region images of tens of megapixels are legitimate here
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_DECODED_PIXELS:
                raise OmnisegError(
                    f"{path}: {width}x{height} px is too large to decode whole (limit "
                    f"{MAX_DECODED_PIXELS // 1_000_000} MP); convert it to a tiled pyramidal TIFF "
                    "(e.g. `vips tiffsave in.png out.tif --tile --pyramid`)"
                )
            image.load()
            oriented = ImageOps.exif_transpose(image)
            mode = oriented.mode
            if mode in PALETTE_AND_BILEVEL_MODES or mode.startswith(("LAB", "HSV")):
                oriented = oriented.convert(PALETTE_AND_BILEVEL_MODES.get(mode, "RGB"))
            array = np.asarray(oriented)
    except OmnisegError:
        raise
    except Exception as exc:  # Pillow raises many types for bad input
        raise OmnisegError(f"{path}: Pillow cannot decode it ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    return to_rgb_uint8(array, slide_value_max(array))


class ArraySlide:
    """In-memory SlideReader; `levels` = number of 2x levels or explicit integer downsamples."""

    def __init__(
        self,
        array: np.ndarray,
        mpp: float | None,
        *,
        levels: int | Sequence[int] = 1,
        objective_power: float | None = None,
        path: str = "<array>",
        reader: str = "array",
        mpp_source: str | None = None,
        vendor: str | None = None,
    ) -> None:
        base = to_rgb_uint8(array, slide_value_max(np.asarray(array)))
        downsamples = [2**i for i in range(levels)] if isinstance(levels, int) else list(levels)
        if not downsamples or downsamples[0] != 1 or any(d < 1 for d in downsamples):
            raise ValueError(f"levels must start at downsample 1, got {downsamples}")
        height, width = base.shape[:2]
        self._levels = [base]
        for factor in downsamples[1:]:
            size = (max(1, width // factor), max(1, height // factor))
            self._levels.append(cv2.resize(base, size, interpolation=cv2.INTER_AREA))
        if mpp_source is None:
            resolved, source = resolve_mpp(mpp, objective_power)
        else:  # the caller (PillowReader) already applied the resolution rules
            resolved, source = mpp, mpp_source
        self.info = SlideInfo(
            path=path,
            reader=reader,
            level_dimensions=tuple((lv.shape[1], lv.shape[0]) for lv in self._levels),
            level_downsamples=tuple(
                (width / lv.shape[1] + height / lv.shape[0]) / 2 for lv in self._levels
            ),
            mpp=resolved,
            objective_power=valid_power(objective_power),
            mpp_source=source,
            vendor=vendor,
        )

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """HxWx3 uint8; (x, y) in `level` pixels, white outside."""
        self.info.check_level(level)
        pixels = self._levels[level]
        return read_clipped(
            pixels.shape[:2],
            lambda x0, y0, x1, y1: pixels[y0:y1, x0:x1].copy(),  # callers may write
            x,
            y,
            width,
            height,
        )

    def close(self) -> None:
        self._levels = []

    def __enter__(self) -> ArraySlide:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PillowReader(ArraySlide):
    """A single-level PNG/JPEG/TIFF region image decoded with Pillow."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mpp: float | None = None,
        magnification: float | None = None,
    ) -> None:
        array = decode_image(path)
        with Image.open(path) as image:  # header only: the format name for SlideInfo.vendor
            image_format = (image.format or "image").lower()
        resolved, source = resolve_mpp(None, None, mpp=mpp, magnification=magnification)
        super().__init__(
            array,
            resolved,
            path=str(path),
            reader="pillow",
            objective_power=magnification,
            mpp_source=source,
            vendor=image_format,
        )
