"""A PNG preview: class outlines drawn over the slide thumbnail, with a legend to its right.

The legend sits in a white panel beside the image, never on it: on a 256 px patch a legend in
the corner hid ~12% of the tissue.

Deterministic bytes: OpenCV drawing (no anti-aliasing, Hershey font) and Pillow's PNG encoder,
which writes no timestamp. `class_names` / `class_colors` are keyed by LABEL VALUE (the values in
`label_thumbnail`; 0 = background is never drawn).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from omniseg.atomic import atomic_path

OUTLINE_PX_PER_1000 = 2  # outline thickness: 2 px per 1000 px of the longest side (min 1)
LEGEND_FONT = cv2.FONT_HERSHEY_SIMPLEX
LEGEND_MARGIN = 8
LEGEND_TEXT_SCALE_PER_1000 = 0.5
LEGEND_BORDER = (0, 0, 0)
LEGEND_FILL = (255, 255, 255)
BACKGROUND_LABEL = 0


def _fit_labels(label_thumbnail: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    labels = np.asarray(label_thumbnail, dtype=np.uint8)
    if labels.shape != shape_hw:
        labels = cv2.resize(labels, shape_hw[::-1], interpolation=cv2.INTER_NEAREST)
    return labels


def draw_outlines(
    rgb: np.ndarray, labels: np.ndarray, class_colors: dict[int, Sequence[int]], thickness: int
) -> np.ndarray:
    """Copy of `rgb` with each class's contours (outer and holes) in its colour."""
    canvas = np.ascontiguousarray(rgb.copy())
    for value in sorted(class_colors):
        if value == BACKGROUND_LABEL:
            continue
        mask = (labels == value).astype(np.uint8)
        if not mask.any():
            continue
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        colour = tuple(int(c) for c in class_colors[value])
        cv2.drawContours(canvas, contours, -1, colour, thickness, lineType=cv2.LINE_8)
    return canvas


def draw_legend(
    canvas: np.ndarray, class_names: dict[int, str], class_colors: dict[int, Sequence[int]]
) -> np.ndarray:
    """``canvas`` with a white legend panel (colour swatch + name per class) on its right; the
    image pixels are unchanged (the canvas grows at the bottom only if the legend is taller)."""
    entries = [(v, class_names[v]) for v in sorted(class_names) if v != BACKGROUND_LABEL]
    if not entries:
        return canvas
    scale = max(0.35, LEGEND_TEXT_SCALE_PER_1000 * max(canvas.shape[:2]) / 1000)
    text_thickness = max(1, round(scale * 2))
    (_, text_h), baseline = cv2.getTextSize("Ag", LEGEND_FONT, scale, text_thickness)
    row_h = text_h + baseline + LEGEND_MARGIN // 2
    swatch = text_h
    text_w = max(cv2.getTextSize(n, LEGEND_FONT, scale, text_thickness)[0][0] for _, n in entries)
    box_w = 3 * LEGEND_MARGIN + swatch + text_w
    box_h = LEGEND_MARGIN + row_h * len(entries)
    height, width = canvas.shape[:2]
    out_h = max(height, box_h + 2 * LEGEND_MARGIN + 1)
    out = np.empty((out_h, width + box_w + 2 * LEGEND_MARGIN + 1, 3), dtype=np.uint8)
    out[:] = LEGEND_FILL
    out[:height, :width] = canvas
    x0, y0 = width + LEGEND_MARGIN, LEGEND_MARGIN
    cv2.rectangle(out, (x0, y0), (x0 + box_w, y0 + box_h), LEGEND_BORDER, 1)
    for row, (value, name) in enumerate(entries):
        top = y0 + LEGEND_MARGIN + row * row_h
        colour = tuple(int(c) for c in class_colors.get(value, LEGEND_BORDER))
        left = x0 + LEGEND_MARGIN
        cv2.rectangle(out, (left, top), (left + swatch, top + swatch), colour, -1)
        cv2.putText(
            out,
            name,
            (left + swatch + LEGEND_MARGIN, top + text_h),
            LEGEND_FONT,
            scale,
            LEGEND_BORDER,
            text_thickness,
            cv2.LINE_8,
        )
    return out


# zlib level 1 with run-length matching: on a 2174 x 2000 overlay 0.41 s and 4.1 MB, against
# 1.84 s and 4.2 MB for Pillow's default (level 6); the same pixels.
PNG_FAST = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)


def render_overlay(
    path: str | os.PathLike[str],
    thumbnail_rgb: np.ndarray,
    label_thumbnail: np.ndarray,
    *,
    class_names: dict[int, str],
    class_colors: dict[int, Sequence[int]],
) -> np.ndarray:
    """Write the overlay PNG atomically and return its pixels (HxWx3 uint8).

    `label_thumbnail` is resized (nearest) to the thumbnail if their sizes differ.
    """
    rgb = np.asarray(thumbnail_rgb, dtype=np.uint8)
    labels = _fit_labels(label_thumbnail, rgb.shape[:2])
    thickness = max(1, OUTLINE_PX_PER_1000 * max(rgb.shape[:2]) // 1000)
    canvas = draw_outlines(rgb, labels, class_colors, thickness)
    canvas = draw_legend(canvas, class_names, class_colors)
    ok, png = cv2.imencode(".png", canvas[..., ::-1], PNG_FAST)  # OpenCV wants BGR
    if not ok:
        raise OSError(f"{path}: the PNG encoder failed")
    with atomic_path(path) as temp:
        temp.write_bytes(png.tobytes())
    return canvas
