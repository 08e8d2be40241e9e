"""Per-task foreground thresholds chosen on labelled patches (saved in the model folder): the
train rows held back by ``data.threshold_holdout``, or else the val split.

Dice per image is accumulated for a small grid of thresholds around 0.5, one pass over the
images, no probability maps kept. A task moves off its current threshold only when that gains at
least ``min_gain`` mean Dice, so a tiny val set cannot push thresholds around on noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from omniseg.catalogue import tissues
from omniseg.data import PatchRecord, load_labelled
from omniseg.models import OmniSeg
from omniseg.runtime import Predictor, TorchPredictor, image_to_tensor

GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(9))  # 0.30 ... 0.70
MIN_GAIN = 0.005


def dice_per_threshold(prob: np.ndarray, gt: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """Foreground Dice of ``prob > t`` for every t (empty prediction vs empty truth = 1)."""
    pred = prob[None] > np.asarray(grid)[:, None, None]
    inter = (pred & gt[None]).sum(axis=(1, 2))
    denom = pred.sum(axis=(1, 2)) + gt.sum()
    return np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0)


def tune_thresholds(
    model: OmniSeg,
    records: Sequence[PatchRecord],
    *,
    predictor: Predictor | None = None,
    grid: Sequence[float] = GRID,
    min_gain: float = MIN_GAIN,
) -> tuple[tuple[float, ...], dict]:
    """(thresholds for all tasks, report {task name: {threshold, dice, dice_at_previous, n}})."""
    predictor = predictor or TorchPredictor(model)
    current = list(model.inference.thresholds)
    grid = sorted({*grid, *current})
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for record in records:
        image, mask, known = load_labelled(record)
        if known is not None and not (known & ~mask).any():
            continue  # no known background: any threshold looks best at 0 (partial labels)
        x = image_to_tensor(image)[None]
        prob = predictor.predict_probability(x, [record.task_id], [record.scale_id], tta=False)
        prob = prob[0].cpu().numpy()
        if known is not None:  # unlabelled pixels never count (p = 0 is below every threshold)
            prob = np.where(known, prob, 0.0)
        scores = dice_per_threshold(prob, mask, grid)
        sums[record.task_id] = sums.get(record.task_id, 0.0) + scores
        counts[record.task_id] = counts.get(record.task_id, 0) + 1
    report = {}
    for task, total in sums.items():
        mean = total / counts[task]
        at_current = float(mean[grid.index(current[task])])
        best = int(np.argmax(mean))
        if mean[best] - at_current >= min_gain:
            current[task] = float(grid[best])
        report[tissues()[task].name] = {
            "threshold": current[task],
            "dice": float(mean[grid.index(current[task])]),
            "dice_at_previous": at_current,
            "n": counts[task],
        }
    return tuple(current), report
