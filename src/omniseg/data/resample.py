"""The resampling maths of a patch seen at another magnification than it was labelled at (PTC
at 20x from 40x patches): images by area, labels by area share."""

from __future__ import annotations

import numpy as np


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
