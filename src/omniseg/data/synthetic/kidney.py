"""A small SYNTHETIC whole-slide image for ``omniseg demo`` (numpy + tifffile, no download).

It looks vaguely like H&E/PAS kidney at 40x: pink stroma, tubule-like rings with pale lumens and
purple nuclei, glomerulus-like purple discs in a pale Bowman's space, on white glass. It is not
real tissue: the demo shows the pipeline and its outputs, not segmentation quality. The file is an
Aperio-style pyramidal TIFF (level 0 + 4x + 16x tiled JPEG, a thumbnail page, ``MPP``/``AppMag``
in the description) so its resolution is read from metadata like a real scan.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import tifffile

from omniseg.atomic import atomic_path

GLASS = (243, 241, 246)
STROMA = (232, 178, 205)
EPITHELIUM = (205, 115, 168)
LUMEN = (246, 228, 238)
NUCLEUS = (112, 58, 148)
GLOMERULUS = (168, 84, 168)
BOWMAN = (247, 236, 242)
NOISE_SD = 6.0


@dataclass(frozen=True)
class DemoSlideSpec:
    width: int = 4000
    height: int = 3000
    mpp: float = 0.25
    magnification: int = 40
    tile: int = 256
    downsamples: tuple[int, ...] = (4, 16)
    thumbnail_side: int = 768
    jpeg_quality: int = 90
    seed: int = 0


def synthetic_kidney(spec: DemoSlideSpec) -> np.ndarray:
    """HxWx3 uint8 image (held in RAM: the demo slide is small by design)."""
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = GLASS
    tissue = np.zeros((h, w), dtype=np.uint8)
    centre = (w // 2, h // 2)
    cv2.ellipse(tissue, centre, (int(w * 0.42), int(h * 0.38)), 8, 0, 360, 1, -1)
    img[tissue > 0] = STROMA
    px_per_um = 1.0 / spec.mpp
    taken = np.zeros((h, w), dtype=np.uint8)

    def free(cx: int, cy: int, r: int) -> bool:
        return (
            bool(tissue[cy, cx])
            and not taken[max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + r].any()
        )

    for _ in range(4):  # glomeruli: ~150 µm tuft in a pale Bowman's space
        r = min(int(rng.uniform(70, 85) * px_per_um), min(h, w) // 6)
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        if not free(cx, cy, int(r * 1.3)):
            continue
        cv2.circle(taken, (cx, cy), int(r * 1.3), 1, -1)
        cv2.circle(img, (cx, cy), int(r * 1.2), EPITHELIUM, max(2, int(3 * px_per_um)))
        cv2.circle(img, (cx, cy), int(r * 1.15), BOWMAN, -1)
        cv2.circle(img, (cx, cy), r, GLOMERULUS, -1)
        for _ in range(400):
            a, d = rng.uniform(0, 2 * np.pi), r * np.sqrt(rng.uniform(0, 0.95))
            cv2.circle(img, (int(cx + d * np.cos(a)), int(cy + d * np.sin(a))), 6, NUCLEUS, -1)
    for _ in range(220):  # tubules: ~50 µm rings with a lumen and nuclei
        r = min(int(rng.uniform(20, 32) * px_per_um), min(h, w) // 8)
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        if not free(cx, cy, r + 4):
            continue
        cv2.circle(taken, (cx, cy), r + 4, 1, -1)
        cv2.circle(img, (cx, cy), r, EPITHELIUM, -1)
        cv2.circle(img, (cx, cy), int(r * rng.uniform(0.35, 0.55)), LUMEN, -1)
        for k in range(12):
            a = 2 * np.pi * k / 12 + rng.uniform(0, 0.3)
            cv2.circle(
                img,
                (int(cx + 0.75 * r * np.cos(a)), int(cy + 0.75 * r * np.sin(a))),
                7,
                NUCLEUS,
                -1,
            )
    for row in range(0, h, 512):  # texture, band by band to bound the temporary memory
        band = img[row : row + 512].astype(np.int16)
        band += rng.normal(0, NOISE_SD, band.shape).astype(np.int16)
        img[row : row + 512] = np.clip(band, 0, 255).astype(np.uint8)
    return img


DEMO_TITLE = "omniseg synthetic demo slide (not real tissue)"


def _aperio(spec: DemoSlideSpec, w: int, h: int, note: str, title: str) -> str:
    return (
        f"Aperio Image Library v12.0.15 \r\n{spec.width}x{spec.height} [0,0 {w}x{h}] "
        f"({spec.tile}x{spec.tile}) JPEG/RGB Q={spec.jpeg_quality}{note}|AppMag = "
        f"{spec.magnification}|MPP = {spec.mpp:.4f}|Title = {title}"
    )


def write_demo_slide(path: str | Path, spec: DemoSlideSpec = DemoSlideSpec()) -> Path:
    """Write the synthetic pyramidal TIFF atomically and return its path."""
    return write_aperio_slide(path, synthetic_kidney(spec), spec, DEMO_TITLE)


def write_aperio_slide(path: str | Path, img: np.ndarray, spec: DemoSlideSpec, title: str) -> Path:
    """An Aperio-style pyramidal TIFF of ``img`` (spec: mpp, magnification, tile, levels)."""
    spec = replace(spec, height=img.shape[0], width=img.shape[1])
    jpeg = {"compression": "jpeg", "compressionargs": {"level": spec.jpeg_quality}}
    target = Path(path)
    with atomic_path(target) as temp, tifffile.TiffWriter(temp) as tif:
        tif.write(
            img,
            tile=(spec.tile, spec.tile),
            photometric="rgb",
            metadata=None,
            description=_aperio(spec, spec.width, spec.height, "", title),
            **jpeg,
        )
        side = spec.thumbnail_side / max(spec.width, spec.height)
        thumb = cv2.resize(
            img, (int(spec.width * side), int(spec.height * side)), interpolation=cv2.INTER_AREA
        )
        tif.write(
            thumb,
            photometric="rgb",
            metadata=None,
            description=_aperio(spec, thumb.shape[1], thumb.shape[0], " -> thumbnail", title),
            **jpeg,
        )
        for factor in spec.downsamples:
            level = cv2.resize(
                img, (spec.width // factor, spec.height // factor), interpolation=cv2.INTER_AREA
            )
            tif.write(
                level,
                tile=(spec.tile, spec.tile),
                photometric="rgb",
                metadata=None,
                subfiletype=1,
                description=_aperio(spec, level.shape[1], level.shape[0], "", title),
                **jpeg,
            )
    return target
