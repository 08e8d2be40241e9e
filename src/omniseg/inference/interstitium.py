"""Where the fine-scale capillary pass is worth running: tubulointerstitium only.

Peritubular capillaries lie between tubules, never inside a glomerulus or an artery, and the
merge rule already drops PTC labels inside glomeruli (``merge.merge_labels``). The 40x PTC pass
is most of a slide's compute (``docs/performance.md``), so tiles whose whole core lies inside
structures the coarser passes already found (glomerulus = capsule ∪ tuft at 5x, artery at 10x)
are skipped. The structure mask lives on the tissue thumbnail's grid and is shrunk by a margin
before use, so tiles at a structure's edge still run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from omniseg.inference.gates import grow_mask
from omniseg.inference.merge import CAPSULE, PTC, TUFT, VESSEL, threshold_code
from omniseg.inference.scale import ScalePlan, ScaleSource
from omniseg.inference.tiling import tile_at
from omniseg.models import InferenceSettings

STRUCTURES = (CAPSULE, TUFT, VESSEL)  # no capillary runs inside these
# A structure is trusted this far inside its predicted border (µm): a PTC next to a glomerulus
# or artery wall is still searched.
EDGE_MARGIN_UM = 10.0


def gates_fine_pass(plan: ScalePlan) -> bool:
    """The interstitium gate applies to a pass that predicts PTC alone."""
    return tuple(plan.tasks) == (PTC,)


def structure_mask(
    sources: Sequence[ScaleSource],
    inference: InferenceSettings,
    thumb_shape: tuple[int, int],
    downsample: float,
) -> np.ndarray:
    """Thumbnail-grid bool mask of glomerulus/artery foreground found by earlier passes.

    A thumbnail pixel is set when the prediction at its centre is a structure (sampled from
    each processed tile's core, at that scale's native resolution).
    """
    out = np.zeros(thumb_shape, dtype=bool)
    tile, overlap = inference.tile_size, inference.tile_overlap
    for source in sources:
        plan = source.plan
        picks = [i for i, t in enumerate(plan.tasks) if t in STRUCTURES]
        if not picks:
            continue
        cuts = np.array([threshold_code(inference.thresholds[plan.tasks[i]]) for i in picks])
        scale = plan.to_level0 / downsample  # thumbnail px per native px
        for row, col in np.argwhere(source.processed):
            t = tile_at(plan.shape_hw, tile, overlap, int(row), int(col))
            core, inner = t.core, t.core_in_window()
            ys = _centres(core.y, core.y1, scale, thumb_shape[0])
            xs = _centres(core.x, core.x1, scale, thumb_shape[1])
            if ys[0] >= ys[1] or xs[0] >= xs[1]:
                continue
            sy, sx = row * tile + inner.y, col * tile + inner.x
            codes = np.asarray(source.windows[picks, sy : sy + core.h, sx : sx + core.w])
            found = (codes >= cuts[:, None, None]).any(axis=0)
            iy = _native_index(ys, scale, core.y, core.h)
            ix = _native_index(xs, scale, core.x, core.w)
            out[ys[0] : ys[1], xs[0] : xs[1]] |= found[np.ix_(iy, ix)]
    return out


def interstitium_work(
    work: np.ndarray, structures: np.ndarray, downsample: float, mpp0: float
) -> np.ndarray:
    """Tissue (``work``) minus the structures shrunk by ``EDGE_MARGIN_UM``."""
    radius = math.ceil(EDGE_MARGIN_UM / (downsample * mpp0))
    trusted = ~grow_mask(~structures, radius)
    return work & ~trusted


def _centres(start: int, stop: int, scale: float, limit: int) -> tuple[int, int]:
    """Thumbnail pixels [a, b) whose centres fall in native pixels [start, stop)."""
    a = max(0, math.ceil(start * scale - 0.5))
    b = min(limit, math.ceil(stop * scale - 0.5))
    return a, b


def _native_index(span: tuple[int, int], scale: float, start: int, size: int) -> np.ndarray:
    centres = (np.arange(span[0], span[1]) + 0.5) / scale
    return np.clip(np.floor(centres).astype(np.int64) - start, 0, size - 1)
