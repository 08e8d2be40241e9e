"""A patch seen at another magnification than it was labelled at (PTC at 20x from 40x
patches): the resampling maths, and the records of the tasks a model runs at another scale."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from omniseg.data.patches import PatchRecord


def resampled_size(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """(height, width) of an image of ``shape`` resampled by ``factor`` (at least 1 px)."""
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resample_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Area-averaged down (bilinear up) by ``factor``; dtype kept."""
    import cv2  # here: training runs without the slide-reading packages

    h, w = resampled_size(image.shape, factor)
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interpolation)


def resample_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """A boolean map resampled by area share: True where at least half of the area is."""
    share = resample_image(labels.astype(np.float32), factor)
    return share >= 0.5


def at_model_scales(records: list[PatchRecord], task_scales: dict[int, int]) -> list[PatchRecord]:
    """Records of the tasks in ``task_scales`` ({task id: scale id}) seen at that scale, resampled
    from the scale their files were labelled at; the others unchanged."""
    out = []
    for r in records:
        target = task_scales.get(r.task_id, r.scale_id)
        if target != r.scale_id:
            source = r.scale_id if r.source_scale_id is None else r.source_scale_id
            r = dataclasses.replace(r, scale_id=target, source_scale_id=source)
        out.append(r)
    return out
