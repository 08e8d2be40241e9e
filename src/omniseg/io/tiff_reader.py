"""Any TIFF tifffile can parse: OME-TIFF, SubIFD pyramids OpenSlide sees as one level, plain TIFF.

Regions are decoded through zarr views of each pyramid level (`series.aszarr(level=i)`), so only
the tiles or strips a request touches are read.
"""

from __future__ import annotations

import os
import re

import numpy as np
import tifffile
import zarr

from omniseg.errors import OmnisegError
from omniseg.io.base import SlideInfo, region_decode_error
from omniseg.io.jpeg_tiles import JpegTileCheck
from omniseg.io.pixels import integer_value_max, read_clipped, slide_value_max, to_rgb_uint8
from omniseg.io.resolution import (
    aperio_fields,
    ome_mpp,
    parse_float,
    resolve_mpp,
    tiff_tag_mpp,
    valid_power,
)

ASSOCIATED_IMAGE_NAMES = ("thumbnail", "label", "macro", "overview")
CHANNEL_AXES = "SC"  # samples (interleaved) or channels (planar); both become RGB(A)
MAX_CHANNELS = 4
SAMPLE_LEVEL_MAX_PIXELS = 4096 * 4096  # read a level whole only below this (for 16-bit scaling)
_OME_MAGNIFICATION = re.compile(r'NominalMagnification="([0-9.eE+-]+)"')


class UnreadableTiffError(OmnisegError):
    """The TIFF is corrupt or holds what no reader would read right (a stack, non-RGB channels):
    the opener does not fall back to OpenSlide or Pillow, which would read it wrongly or for
    minutes (missing tiles of a damaged offset table)."""


class TiffReader:
    """SlideReader over tifffile + zarr; regions outside the image come back white."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mpp: float | None = None,
        magnification: float | None = None,
    ) -> None:
        self.path = str(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # tifffile raises many types for non-TIFF input
            raise OmnisegError(f"{self.path}: tifffile cannot open it ({exc})") from exc
        try:
            series = self._main_series()
            for level in series.levels:
                self._check_page(level.keyframe)
            fill = integer_value_max(np.dtype(series.dtype))  # missing (sparse) tiles: white
            self._levels = [
                zarr.open(series.aszarr(level=i, fillvalue=fill), mode="r")
                for i in range(len(series.levels))
            ]
            self._axes = [level.axes for level in series.levels]
            self._jpeg = [
                JpegTileCheck.of(self.path, level.keyframe, i)
                for i, level in enumerate(series.levels)
            ]
            self._check_planes(series)
            shapes = [self._shape_hw(i) for i in range(len(self._levels))]
            self._value_max = self._sample_value_max(shapes)
            metadata_mpp, power = self._metadata(series)
        except OmnisegError:
            self._tif.close()
            raise
        except Exception as exc:
            self._tif.close()
            raise OmnisegError(f"{self.path}: tifffile cannot read its pyramid ({exc})") from exc
        resolved, source = resolve_mpp(metadata_mpp, power, mpp=mpp, magnification=magnification)
        width0, height0 = shapes[0][1], shapes[0][0]
        self.info = SlideInfo(
            path=self.path,
            reader="tifffile",
            level_dimensions=tuple((w, h) for h, w in shapes),
            level_downsamples=tuple((width0 / w + height0 / h) / 2 for h, w in shapes),
            mpp=resolved,
            objective_power=float(magnification) if magnification is not None else power,
            mpp_source=source,
            vendor="ome" if self._tif.is_ome else "aperio" if self._tif.is_svs else "tiff",
        )

    def _main_series(self) -> tifffile.TiffPageSeries:
        for series in self._tif.series:
            name = (series.name or "").lower()
            if "Y" in series.axes and "X" in series.axes and name not in ASSOCIATED_IMAGE_NAMES:
                return series
        raise OmnisegError(f"{self.path}: the TIFF holds no 2-D image series")

    def _check_page(self, page) -> None:
        """Refuse what would be read wrongly: CMYK (came out all white), and an offset table
        shorter than the tile/strip grid (corrupt, not sparse: missing tiles would be glass)."""
        if page.photometric == tifffile.PHOTOMETRIC.SEPARATED:
            raise OmnisegError(
                f"{self.path}: a CMYK (separated) TIFF; omniseg reads RGB slides: convert it to RGB "
                "first (e.g. vips icc_transform, or `convert in.tif -colorspace sRGB out.tif`)"
            )
        expected = int(np.prod(page.chunked)) if page.chunked else 1
        if len(page.dataoffsets) < expected:
            raise UnreadableTiffError(
                f"{self.path}: corrupt TIFF: its offset table lists {len(page.dataoffsets)} "
                f"tiles/strips but its size needs {expected}; the file is damaged (re-export it)"
            )

    def _check_planes(self, series: tifffile.TiffPageSeries) -> None:
        """One brightfield image: refuse Z/T stacks (planes after the first were dropped), and
        channels that are not grey, RGB or an alpha (a second fluorescence channel was read as
        transparency)."""
        for axis, size in zip(series.axes, series.shape, strict=True):
            if axis not in "YX" + CHANNEL_AXES and size > 1:
                raise UnreadableTiffError(
                    f"{self.path}: holds {size} planes along {axis} (axes {series.axes}); omniseg "
                    "reads one 2-D brightfield image: save the plane you want (e.g. the "
                    "in-focus one) as its own TIFF"
                )
        channels = [size for axis, size in zip(series.axes, series.shape, strict=True)
                    if axis in CHANNEL_AXES]  # fmt: skip
        count = int(np.prod(channels)) if channels else 1
        extras = tuple(getattr(series.keyframe, "extrasamples", ()) or ())
        alpha = bool(extras) and int(extras[-1]) in (1, 2)  # associated / unassociated alpha
        if count > MAX_CHANNELS or (count == 2 and not alpha):
            raise UnreadableTiffError(
                f"{self.path}: {count} channels that are not grey, RGB or an alpha (a "
                "fluorescence image?); omniseg segments brightfield RGB slides: export an RGB "
                "rendering first"
            )

    def _shape_hw(self, level: int) -> tuple[int, int]:
        axes, shape = self._axes[level], self._levels[level].shape
        return int(shape[axes.index("Y")]), int(shape[axes.index("X")])

    def _sample_value_max(self, shapes: list[tuple[int, int]]) -> float | None:
        coarsest = len(shapes) - 1
        if np.dtype(self._levels[coarsest].dtype) == np.uint8:
            return None
        height, width = shapes[coarsest]
        if height * width > SAMPLE_LEVEL_MAX_PIXELS:
            return None  # too big to scan: scale by the dtype's full range
        return slide_value_max(self._extract(coarsest, 0, 0, width, height))

    def _metadata(self, series: tifffile.TiffPageSeries) -> tuple[float | None, float | None]:
        page = series.levels[0].keyframe
        mpp = power = None
        if self._tif.is_ome and self._tif.ome_metadata:
            mpp = ome_mpp(self._tif.ome_metadata)
            found = _OME_MAGNIFICATION.search(self._tif.ome_metadata)
            power = valid_power(parse_float(found.group(1))) if found else None
        description = page.description or ""
        if description.startswith("Aperio"):
            aperio_mpp, aperio_power = aperio_fields(description)
            mpp, power = mpp or aperio_mpp, power or aperio_power
        if mpp is None:
            tags = page.tags
            mpp = tiff_tag_mpp(
                tags["XResolution"].value if "XResolution" in tags else None,
                tags["YResolution"].value if "YResolution" in tags else None,
                tags["ResolutionUnit"].value if "ResolutionUnit" in tags else None,
            )
        return mpp, power

    def _extract(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Raw HxWxC (or HxW) window of one level; extra axes (T, Z, ...) take index 0."""
        if self._jpeg[level] is not None:
            self._jpeg[level].check(x0, y0, x1, y1)
        index: list[object] = []
        kept: list[str] = []
        for axis, size in zip(self._axes[level], self._levels[level].shape, strict=True):
            if axis == "Y":
                index.append(slice(y0, y1))
            elif axis == "X":
                index.append(slice(x0, x1))
            elif (
                axis in CHANNEL_AXES
                and size <= MAX_CHANNELS
                and not any(a in CHANNEL_AXES for a in kept)
            ):
                index.append(slice(None))
            else:
                index.append(0)
                continue
            kept.append(axis)
        window = np.asarray(self._levels[level][tuple(index)])
        order = [kept.index("Y"), kept.index("X")] + [
            i for i, axis in enumerate(kept) if axis in CHANNEL_AXES
        ]
        return window.transpose(order)

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """HxWx3 uint8 RGB; (x, y) in `level` pixels."""
        self.info.check_level(level)

        def inside(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
            try:
                window = self._extract(level, x0, y0, x1, y1)
            except OmnisegError:
                raise  # says itself what is wrong, and where
            except Exception as exc:
                raise region_decode_error(self.path, level, x, y, exc) from exc
            return to_rgb_uint8(window, self._value_max)

        return read_clipped(self._shape_hw(level), inside, x, y, width, height)

    def close(self) -> None:
        self._tif.close()

    def __enter__(self) -> TiffReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
