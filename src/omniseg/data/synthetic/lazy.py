"""A virtual slide of any size whose pixels are computed per requested region (no file):
memory benchmarks run the whole pipeline on 100k x 80k px without a 20 GB file."""

from __future__ import annotations

import numpy as np

from omniseg.io.base import SlideInfo

MPP = 0.25
CORE_PERIOD_UM = 1500.0  # tissue "cores" on a lattice: same tissue fraction at every slide size
CORE_RADIUS_UM = 300.0
TUBULE_PERIOD_UM = 60.0
TUBULE_OUTER_UM, TUBULE_INNER_UM = 22.0, 10.0
GLASS = np.array([243, 241, 246], dtype=np.uint8)
STROMA = np.array([225, 205, 222], dtype=np.uint8)  # no task fires on it with the stand-in
TUBULE = np.array([225, 110, 120], dtype=np.uint8)
THUMBNAIL_LEVEL_SIDE = 2000
READ_BAND_ROWS = 64  # rows per step of the virtual slide's pixel generator


class LazySyntheticSlide:
    """A SlideReader whose pixels are a procedural pattern evaluated per region (any size)."""

    def __init__(self, width: int, height: int, mpp: float = MPP) -> None:
        downsamples = [1]
        while max(width, height) / downsamples[-1] > THUMBNAIL_LEVEL_SIDE:
            downsamples.append(downsamples[-1] * 4)
        self.info = SlideInfo(
            path=f"<synthetic {width}x{height}>",
            reader="synthetic",
            level_dimensions=tuple((width // d, height // d) for d in downsamples),
            level_downsamples=tuple(float(d) for d in downsamples),
            mpp=mpp,
            objective_power=10 * 0.25 / mpp * 4,
            mpp_source="metadata",
        )

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Pixels of a region, computed in bands of rows so that, like a real tile decoder, the
        reader's own scratch memory is small next to the region it returns."""
        out = np.empty((height, width, 3), dtype=np.uint8)
        for top in range(0, height, READ_BAND_ROWS):
            rows = min(READ_BAND_ROWS, height - top)
            out[top : top + rows] = self._band(level, x, y + top, width, rows)
        w0, h0 = self.info.level_dimensions[level]
        out[max(h0 - y, 0) :, :] = 255  # outside the slide: white, like real readers
        out[:, max(w0 - x, 0) :] = 255
        return out

    def _band(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        um = self.info.mpp * self.info.level_downsamples[level]
        ys = (np.arange(y, y + height, dtype=np.float64) + 0.5) * um
        xs = (np.arange(x, x + width, dtype=np.float64) + 0.5) * um

        def lattice(values: np.ndarray, period: float) -> np.ndarray:
            return values - (np.floor(values / period) + 0.5) * period

        cy, cx = lattice(ys, CORE_PERIOD_UM)[:, None], lattice(xs, CORE_PERIOD_UM)[None, :]
        in_core = cy**2 + cx**2 < CORE_RADIUS_UM**2
        ty, tx = lattice(ys, TUBULE_PERIOD_UM)[:, None], lattice(xs, TUBULE_PERIOD_UM)[None, :]
        r2 = ty**2 + tx**2
        ring = (r2 < TUBULE_OUTER_UM**2) & (r2 >= TUBULE_INNER_UM**2) & in_core
        band = np.empty((height, width, 3), dtype=np.uint8)
        band[:] = GLASS
        band[in_core] = STROMA
        band[ring] = TUBULE
        return band

    def close(self) -> None:
        pass
