"""A whole slide made of REAL labelled patches, for checking whole-slide behaviour on real tissue.

Each task gets one island of about ``island_um`` per side: a block of its patches (one 5x patch,
2x2 10x patches, 3x3 40x patches), each resampled from its own scale to the slide's level 0, so every island shows that task's tissue at the size a scanner would record it.
Islands sit on glass, apart, so the slide has tissue edges, glass and tile borders crossing real
tissue: what ``segment`` sees on a biopsy. Patches are taken val split first (then train), in
manifest order, so the slide is the same on every machine with the same patches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from omniseg.catalogue import tissue
from omniseg.data import PatchRecord, read_image
from omniseg.data.synthetic import DemoSlideSpec, write_aperio_slide

GLASS_RGB = (243, 241, 246)
GLASS_NOISE_SD = 3.0
MOSAIC_TITLE = "omniseg mosaic of real labelled kidney patches"


@dataclass(frozen=True)
class MosaicSpec:
    mpp: float = 0.5  # level 0 of a 20x scan
    magnification: int = 20
    island_um: float = 512.0  # side of an island (one 5x patch)
    gap_um: float = 150.0  # glass between islands and around them
    columns: int = 3
    seed: int = 0


def pick_patches(records: Sequence[PatchRecord], task_id: int, count: int) -> list[PatchRecord]:
    """The first ``count`` patches of a task, val split first."""
    rows = [r for r in records if r.task_id == task_id]
    return sorted(rows, key=lambda r: r.split != "val")[:count]


def _island(all_records: Sequence[PatchRecord], task_id: int, spec: MosaicSpec) -> np.ndarray:
    available = [r for r in all_records if r.task_id == task_id]
    patch_um = read_image(available[0].image).shape[0] * tissue(task_id).mpp
    block = max(1, min(round(spec.island_um / patch_um), math.isqrt(len(available))))
    records = pick_patches(available, task_id, block * block)
    tiles = []
    for record in records:
        image = read_image(record.image)
        factor = tissue(record.task_id).mpp / spec.mpp
        size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
        tiles.append(cv2.resize(image, size, interpolation=cv2.INTER_CUBIC))
    side = max(max(t.shape[:2]) for t in tiles)
    island = np.zeros((side * block, side * block, 3), dtype=np.uint8)
    island[:] = GLASS_RGB
    for i, t in enumerate(tiles):
        r, c = divmod(i, block)
        island[r * side : r * side + t.shape[0], c * side : c * side + t.shape[1]] = t
    return island


def mosaic_image(records: Sequence[PatchRecord], spec: MosaicSpec = MosaicSpec()) -> np.ndarray:
    """HxWx3 uint8 level-0 image: one island per task present in ``records``."""
    tasks = sorted({r.task_id for r in records})
    islands = [_island(records, t, spec) for t in tasks]
    gap = round(spec.gap_um / spec.mpp)
    cell = max(max(i.shape[:2]) for i in islands) + gap
    rows = -(-len(islands) // spec.columns)
    height, width = rows * cell + gap, min(len(islands), spec.columns) * cell + gap
    rng = np.random.default_rng(spec.seed)
    noise = rng.normal(0.0, GLASS_NOISE_SD, (height, width, 3))
    image = np.clip(np.asarray(GLASS_RGB, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    for k, island in enumerate(islands):
        r, c = divmod(k, spec.columns)
        y, x = gap + r * cell, gap + c * cell
        image[y : y + island.shape[0], x : x + island.shape[1]] = island
    return image


def write_mosaic_slide(
    path: str | Path, records: Sequence[PatchRecord], spec: MosaicSpec = MosaicSpec()
) -> Path:
    """Write the mosaic as an Aperio-style pyramidal TIFF (mpp and magnification in metadata)."""
    slide = DemoSlideSpec(mpp=spec.mpp, magnification=spec.magnification)
    return write_aperio_slide(path, mosaic_image(records, spec), slide, MOSAIC_TITLE)
