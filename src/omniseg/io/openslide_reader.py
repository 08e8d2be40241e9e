"""Slides that OpenSlide understands: SVS, NDPI, MRXS, SCN, Philips/Ventana and generic tiled TIFF."""

from __future__ import annotations

import os

import numpy as np
import openslide

from omniseg.errors import OmnisegError
from omniseg.io.base import SlideInfo, region_decode_error
from omniseg.io.pixels import to_rgb_uint8
from omniseg.io.resolution import parse_float, resolve_mpp, valid_mpp, valid_power

OPENSLIDE_ERRORS = (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError, OSError)


class OpenSlideReader:
    """SlideReader over openslide.OpenSlide; regions outside the slide come back white."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mpp: float | None = None,
        magnification: float | None = None,
    ) -> None:
        self.path = str(path)
        try:
            self._slide = openslide.OpenSlide(self.path)
        except OPENSLIDE_ERRORS as exc:
            raise OmnisegError(f"{self.path}: OpenSlide cannot open it ({exc})") from exc
        properties = self._slide.properties
        mpps = [
            valid_mpp(parse_float(properties.get(key)))
            for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y)
        ]
        found = [value for value in mpps if value is not None]
        metadata_mpp = sum(found) / len(found) if found else None
        power = valid_power(parse_float(properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)))
        resolved, source = resolve_mpp(metadata_mpp, power, mpp=mpp, magnification=magnification)
        self.info = SlideInfo(
            path=self.path,
            reader="openslide",
            level_dimensions=tuple(tuple(map(int, d)) for d in self._slide.level_dimensions),
            level_downsamples=tuple(float(d) for d in self._slide.level_downsamples),
            mpp=resolved,
            objective_power=float(magnification) if magnification is not None else power,
            mpp_source=source,
            vendor=properties.get(openslide.PROPERTY_NAME_VENDOR),
        )

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """HxWx3 uint8; (x, y) in `level` pixels (OpenSlide itself wants level-0 coordinates)."""
        self.info.check_level(level)
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {width}x{height}")
        downsample = self.info.level_downsamples[level]
        location = (round(x * downsample), round(y * downsample))
        try:
            region = self._slide.read_region(location, level, (int(width), int(height)))
        except OPENSLIDE_ERRORS as exc:
            raise region_decode_error(self.path, level, x, y, exc) from exc
        return to_rgb_uint8(np.asarray(region))  # RGBA, transparent outside -> white

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> OpenSlideReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
