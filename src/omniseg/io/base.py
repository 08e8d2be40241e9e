"""The small protocol every slide reader implements (OpenSlide, tifffile, Pillow, in-memory)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from omniseg.errors import OmnisegError

MPP_VALID_RANGE = (0.05, 20.0)  # µm/px; outside it a metadata value counts as missing


@dataclass(frozen=True)
class SlideInfo:
    """Geometry and resolution of an opened slide. Level 0 is the full resolution."""

    path: str
    reader: str
    level_dimensions: tuple[tuple[int, int], ...]  # (width, height) per level
    level_downsamples: tuple[float, ...]
    mpp: float | None  # µm/px at level 0, None when unknown
    objective_power: float | None
    mpp_source: str = "unknown"  # "metadata", "objective", "override" or "unknown"
    vendor: str | None = None  # format as detected (e.g. "aperio", "ome", "png"), informational

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def check_level(self, level: int) -> None:
        """ValueError unless ``level`` exists (every reader's read_region starts here)."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} outside 0..{self.level_count - 1}")


@runtime_checkable
class SlideReader(Protocol):
    """Read RGB regions. Coordinates (x, y) are in the pixels of the requested level."""

    info: SlideInfo

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """HxWx3 uint8 RGB; areas outside the slide are filled with white (255)."""
        ...

    def close(self) -> None: ...


def region_decode_error(path: str, level: int, x: int, y: int, exc: Exception) -> OmnisegError:
    """The one message every reader gives for an undecodable region (corrupt/truncated file)."""
    return OmnisegError(
        f"{path}: cannot decode level {level} region at ({x}, {y}) ({exc}); "
        "the file may be corrupt or truncated"
    )
