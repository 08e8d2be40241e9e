"""The glomerulus check (``--glomerulus-check on``): drop glomerulus objects that cannot be one.

On biopsies from other labs the model can outline inflamed interstitium or a tubule cluster as a
glomerular unit. A real one holds a tuft, and its size in a section is bounded: a glomerulus
object (capsule ∪ tuft, one connected component at level 0) is removed, tuft pixels included,
when no tuft pixel lies in it or its equivalent diameter 2·sqrt(area/π) is outside
:class:`GlomerulusSize`.

Objects may span merge chunks, so the rule runs where whole objects are known: after the chunk
components are joined (``assemble``), beside the minimum-area rule, on the same keep flags.
While chunks are labelled, :class:`TuftContacts` remembers which chunk ids hold a tuft pixel
(memory grows with the number of glomerulus pieces, never with pixels).
"""

from __future__ import annotations

import numpy as np

from omniseg.catalogue import GlomerulusSize, equivalent_diameter_um
from omniseg.inference.components import Components
from omniseg.inference.merge import GLOMERULUS, TUFT

TUFT_LABEL = TUFT + 1
GLOMERULUS_CHECKS = ("off", "on")


def plausible(
    area_px: np.ndarray, has_tuft: np.ndarray, pixel_area_um2: float, size: GlomerulusSize
) -> np.ndarray:
    """Per glomerulus object: holds a tuft and its equivalent diameter lies in the size range."""
    diameter = equivalent_diameter_um(area_px, pixel_area_um2)
    return np.asarray(has_tuft, bool) & (diameter >= size.min_um) & (diameter <= size.max_um)


class TuftContacts:
    """Which chunk-level component ids hold a tuft pixel, gathered chunk by chunk."""

    def __init__(self) -> None:
        self._ids: list[np.ndarray] = []

    def add(self, chunk_ids: np.ndarray, labels: np.ndarray) -> None:
        """``chunk_ids``/``labels`` of one chunk after the labeller erased its specks."""
        found = np.unique(chunk_ids[labels == TUFT_LABEL])
        found = found[found > 0]
        if found.size:
            self._ids.append(found.astype(np.int64))

    def per_object(self, components: Components) -> np.ndarray:
        """Per merged object: True when any of its pieces held a tuft pixel."""
        has = np.zeros(components.count, dtype=bool)
        if self._ids:
            has[components.root_of[np.concatenate(self._ids)]] = True
        return has


def glomerulus_keep(
    components: Components, contacts: TuftContacts, pixel_area_um2: float, size: GlomerulusSize
) -> np.ndarray:
    """Per merged object: False for an implausible glomerulus, True for everything else."""
    glomerulus = components.group == GLOMERULUS
    ok = plausible(components.area, contacts.per_object(components), pixel_area_um2, size)
    return ~glomerulus | ok
