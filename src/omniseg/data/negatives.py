"""Known-negative samples: other tasks' labelled pixels, shown to a task that cannot be there.

Every training patch of a task is centred on that tissue, so a head can learn "tissue" instead of
"this tissue" (vessel marked over most of a tubule patch, glomerulus over tubulointerstitium). The
pixels another task labelled are certain negatives for a task that anatomy excludes there: a
distal-tubule pixel is not proximal tubule, artery or glomerulus. A negative sample is such a
patch, resampled to the target task's magnification, whose mask is 0 (background) on the source
task's labelled pixels and ``IGNORE`` everywhere else, where the target may or may not be present.
"""

from __future__ import annotations

import numpy as np

from omniseg.catalogue import scales, tissue
from omniseg.data.augment import rescale

IGNORE = 255  # mask value of pixels without a label: losses and metrics skip them


def _table() -> dict[int, tuple[int, ...]]:
    """target task id -> source task ids whose labelled pixels it never occupies."""
    tubules_arteries = ("dt", "pt", "vessel")
    pairs = {
        "dt": ("pt", "vessel"),
        "pt": ("dt", "vessel"),
        "vessel": ("dt", "pt"),
        "capsule": tubules_arteries,  # glomeruli lie outside tubules and arteries
        "tuft": tubules_arteries,
    }
    return {tissue(t).id: tuple(tissue(s).id for s in src) for t, src in pairs.items()}


NEGATIVE_SOURCES = _table()


def negative_sources(target: int, available: set[int]) -> tuple[int, ...]:
    return tuple(s for s in NEGATIVE_SOURCES.get(target, ()) if s in available)


def zoom_factor(source_scale: int, target_scale: int) -> float:
    """Resampling factor from one scale slot to another (0.5 = 10x to 5x)."""
    return scales()[source_scale].mpp / scales()[target_scale].mpp


def to_negative(
    image: np.ndarray, mask: np.ndarray, source_scale: int, target_scale: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a source pair to the target's scale; the mask becomes "known negative" (bool).

    image: HxWx3 float [0, 1]; mask: HxW bool (the source task's label). Returns the image and a
    bool map of known-negative pixels (the resampled source label).
    """
    factor = zoom_factor(source_scale, target_scale)
    if factor != 1.0:
        image, mask = rescale(image, mask, factor)
    return image, mask


def negative_target(known_negative: np.ndarray) -> np.ndarray:
    """Augmented known-negative map -> training mask: 0 there, ``IGNORE`` elsewhere."""
    return np.where(known_negative, 0, IGNORE).astype(np.float32)
