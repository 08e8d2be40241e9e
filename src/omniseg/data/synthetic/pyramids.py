"""Small pyramidal TIFFs in the layouts real scanners write (Aperio SVS, generic tiled pyramid,
OME-TIFF with SubIFDs), tiny, lossless and deterministic: for reader tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

SVS_MPP = 0.2520
SVS_POWER = 40
TILE = 128
MICRONS_PER_CM = 10_000.0


def slide_array(height: int = 700, width: int = 900, seed: int = 0) -> np.ndarray:
    """Smooth colour field plus fine texture: every pixel differs, so misalignment shows."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 50 + 2, width // 50 + 2, 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    texture = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    return np.clip(smooth.astype(np.int16) + texture - 20, 0, 255).astype(np.uint8)


def pyramid(base: np.ndarray, count: int = 3, factor: int = 2) -> list[np.ndarray]:
    levels = [base]
    for _ in range(count - 1):
        h, w = levels[-1].shape[:2]
        levels.append(
            cv2.resize(levels[-1], (w // factor, h // factor), interpolation=cv2.INTER_AREA)
        )
    return levels


def write_svs(
    path: Path,
    levels: list[np.ndarray],
    mpp: float | None = SVS_MPP,
    power: int = SVS_POWER,
    compression: str = "zlib",
) -> Path:
    """Aperio layout: tiled level 0, a stripped thumbnail page, tiled reduced levels.

    `mpp=None` leaves the MPP field out (only AppMag remains)."""
    height, width = levels[0].shape[:2]
    head = "Aperio Image Library v12.0.15 \r\n"
    fields = f"|AppMag = {power}" + (f"|MPP = {mpp:.4f}" if mpp is not None else "")
    options = {"photometric": "rgb", "compression": compression, "metadata": None}
    with tifffile.TiffWriter(path) as writer:
        writer.write(
            levels[0],
            tile=(TILE, TILE),
            description=f"{head}{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}){fields}",
            **options,
        )
        thumb = cv2.resize(levels[0], (width // 8, height // 8), interpolation=cv2.INTER_AREA)
        writer.write(thumb, description=f"{head}{width}x{height} -> thumbnail{fields}", **options)
        for level in levels[1:]:
            h, w = level.shape[:2]
            writer.write(
                level,
                tile=(TILE, TILE),
                description=f"{head}{width}x{height} -> {w}x{h}{fields}",
                **options,
            )
    return path


def write_generic_pyramid(path: Path, levels: list[np.ndarray], mpp: float = SVS_MPP) -> Path:
    """Levels as consecutive top-level tiled pages with resolution tags (OpenSlide: multi-level)."""
    with tifffile.TiffWriter(path) as writer:
        for index, level in enumerate(levels):
            level_mpp = mpp * levels[0].shape[1] / level.shape[1]
            writer.write(
                level,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="zlib",
                subfiletype=1 if index else 0,
                resolution=(MICRONS_PER_CM / level_mpp, MICRONS_PER_CM / level_mpp),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    return path


def write_ome_subifds(path: Path, levels: list[np.ndarray], mpp: float = SVS_MPP) -> Path:
    """OME-TIFF with the pyramid in SubIFDs (OpenSlide sees only level 0 of such files; our
    tifffile reader sees them all)."""
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(
            levels[0],
            tile=(TILE, TILE),
            photometric="rgb",
            compression="zlib",
            subifds=len(levels) - 1,
            resolution=(MICRONS_PER_CM / mpp, MICRONS_PER_CM / mpp),
            resolutionunit="CENTIMETER",
            metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp},
        )
        for level in levels[1:]:
            writer.write(
                level, tile=(TILE, TILE), photometric="rgb", compression="zlib", subfiletype=1
            )
    return path


def synthetic_tissue(h: int, w: int, seed: int = 0, glass: int = 245) -> np.ndarray:
    """Glass with red rings (tubule-like, with lumens) and purple discs."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), glass, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(12, 40)
        d = np.hypot(yy - cy, xx - cx)
        img[(d < r) & (d >= r * 0.45)] = (225, 110, 120)
    for _ in range(3):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(8, 20)
        img[np.hypot(yy - cy, xx - cx) < r] = (110, 60, 140)
    return img


def write_tiff(path: Path, img: np.ndarray, mpp: float) -> Path:
    """A single-level TIFF with its resolution in the standard tags."""
    tifffile.imwrite(path, img, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return path
