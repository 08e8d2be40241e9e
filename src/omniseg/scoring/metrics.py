"""Segmentation metrics on one binary mask pair (pure numpy/scipy, no torch).

Conventions, chosen so that no image is ever skipped or crashes the average:
* ``dice``/``iou``: empty prediction vs empty label scores 1 (a perfect "nothing here").
* ``dice_bg_inclusive``: the original Omni-Seg "Dice" (mean of background and foreground
  ``2|P∩G| / (|P|+|G|+1)``) over the full image, kept only for comparison with published numbers.
* ``hd95``/``assd``: in pixels, on boundaries = mask XOR its 4-connected 1-px erosion (pixels on
  the image edge count as boundary). ``None`` when either mask is empty: a distance to nothing is
  undefined, and the caller reports how many images had no distance instead of inventing one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

HD_PERCENTILE = 95.0
SMOOTH_BG_INCLUSIVE = 1.0  # the +1 of the original formula
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred).astype(bool, copy=False), np.asarray(gt).astype(bool, copy=False)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"masks must be 2-D and of equal shape, got {p.shape} and {g.shape}")
    return p, g


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Foreground Dice 2|P∩G| / (|P|+|G|); 1.0 when both masks are empty."""
    p, g = _pair(pred, gt)
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / total


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Foreground Jaccard |P∩G| / |P∪G|; 1.0 when both masks are empty."""
    p, g = _pair(pred, gt)
    union = int(np.logical_or(p, g).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, g).sum()) / union


def dice_bg_inclusive(pred: np.ndarray, gt: np.ndarray) -> float:
    """The original code's "Dice": mean over {background, foreground} of 2|P∩G| / (|P|+|G|+1)."""
    p, g = _pair(pred, gt)
    scores = []
    for a, b in ((~p, ~g), (p, g)):
        inter = int(np.logical_and(a, b).sum())
        scores.append(2.0 * inter / (int(a.sum()) + int(b.sum()) + SMOOTH_BG_INCLUSIVE))
    return float(np.mean(scores))


def boundary(mask: np.ndarray) -> np.ndarray:
    """Mask XOR its 4-connected 1-px erosion (outside the image counts as background)."""
    m = np.asarray(mask, dtype=bool)
    return m ^ ndimage.binary_erosion(m, structure=_FOUR_CONNECTED, border_value=0)


def _directed_distances(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Distances pred-boundary -> gt-boundary and back, or None if either mask is empty."""
    p, g = _pair(pred, gt)
    if not p.any() or not g.any():
        return None
    bp, bg = boundary(p), boundary(g)
    to_gt = ndimage.distance_transform_edt(~bg)
    to_pred = ndimage.distance_transform_edt(~bp)
    return to_gt[bp], to_pred[bg]


def _hd95_of(d: tuple[np.ndarray, np.ndarray] | None) -> float | None:
    if d is None:
        return None
    return float(max(np.percentile(d[0], HD_PERCENTILE), np.percentile(d[1], HD_PERCENTILE)))


def _assd_of(d: tuple[np.ndarray, np.ndarray] | None) -> float | None:
    return None if d is None else float(np.concatenate(d).mean())


def hd95(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """The larger of the two directed 95th-percentile boundary distances (px); None if empty."""
    return _hd95_of(_directed_distances(pred, gt))


def assd(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """Mean of the pooled symmetric boundary distances (px); None if either mask is empty."""
    return _assd_of(_directed_distances(pred, gt))


def score_pair(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Every per-image metric at once (boundary distances computed a single time)."""
    p, g = _pair(pred, gt)
    d = _directed_distances(p, g)
    return {
        "dice": dice(p, g),
        "iou": iou(p, g),
        "dice_bg_inclusive": dice_bg_inclusive(p, g),
        "hd95": _hd95_of(d),
        "assd": _assd_of(d),
        "fg_pred": int(p.sum()),
        "fg_gt": int(g.sum()),
    }
