"""Tissue detection on a thumbnail: colour (saturation) OR absorbance (optical density), minus ink.

Why both cues: H&E is saturated, but pale stains (PAS counterstain, silver/Jones, faded slides)
are almost grey and only stand out from bright glass by absorbing light. Each cue is thresholded
with Otsu on the non-ink pixels, clamped to [floor, cap] so that an empty slide finds nothing
(floor) and a slide dominated by dark tissue still keeps its pale parts (cap). Marker ink is
removed first: strongly saturated blue/green hues (pen marks; hematoxylin is violet-blue and
less saturated at thumbnail scale) and near-black pixels. Then a morphological closing joins
fragments, an opening removes specks, holes smaller than the minimum object are filled and
objects below a fraction of the image area are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class TissueSettings:
    """Thresholds on a uint8 RGB thumbnail (saturation in 0..255, OD = -log10(I/255) summed)."""

    saturation_floor: float = 15.0
    saturation_cap: float = 40.0
    density_floor: float = 0.15  # summed RGB optical density; clean glass is 0.03-0.12
    density_cap: float = 0.25  # pale PAS/silver tissue starts at ~0.25-0.3
    ink_saturation: float = 140.0  # >= this and a blue/green hue: marker ink
    ink_hue_range: tuple[int, int] = (35, 125)  # OpenCV hue (0..180): green 35-85, blue 85-125
    ink_value_max: float = 45.0  # V below this (near black): black ink or slide-edge debris
    ink_dilation_px: int = 2  # the halo at ink borders is ink-coloured too
    smoothing_px: int = 2  # Gaussian pre-filter: sensor/JPEG noise on glass must not look coloured
    closing_px: int = 5
    opening_px: int = 2
    min_object_fraction: float = 1e-4  # objects / holes smaller than this share of the image
    # Full-resolution glass test (labels are kept off glass; lumens inside tissue are tissue):
    glass_mpp: float = 1.0  # µm/px it runs at (level 0 if that is coarser)
    glass_smoothing_um: float = 2.0  # Gaussian sigma: single pale pixels inside tissue are noise
    glass_min_area_um2: float = 10_000.0  # smaller non-tissue areas are lumens, not open glass
    glass_context_um: float = 100.0  # read around each window: a pale region is followed there


def _disk(radius: int) -> np.ndarray:
    size = 2 * radius + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _otsu_clamped(values: np.ndarray, floor: float, cap: float, scale: float) -> float:
    """Otsu threshold of `values` (computed on values*scale as uint8), clamped to [floor, cap]."""
    if values.size == 0:
        return floor
    as_bytes = np.clip(values * scale, 0, 255).astype(np.uint8).reshape(-1, 1)
    threshold, _ = cv2.threshold(as_bytes, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(np.clip(threshold / scale, floor, cap))


def ink_mask(rgb: np.ndarray, settings: TissueSettings = TissueSettings()) -> np.ndarray:
    """Pixels that look like marker pen (blue/green/black), slightly dilated."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    low, high = settings.ink_hue_range
    coloured = (sat >= settings.ink_saturation) & (hue >= low) & (hue < high)
    ink = (coloured | (val < settings.ink_value_max)).astype(np.uint8)
    if settings.ink_dilation_px > 0:
        ink = cv2.dilate(ink, _disk(settings.ink_dilation_px))
    return ink.astype(bool)


@dataclass(frozen=True)
class TissueThresholds:
    """Per-slide cut-offs found on the thumbnail; the full-resolution glass test reuses them."""

    saturation: float
    density: float


def _optical_density_table() -> np.ndarray:
    """float32 optical density -log10((v + 1) / 256) of every uint8 value v."""
    return -np.log10((np.arange(256, dtype=np.float32) + 1.0) / 256.0)


def _saturation_density(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation and summed optical density: the density is looked up per channel (256
    values) instead of taking a logarithm of every pixel, the same float32 values."""
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
    per_channel = cv2.LUT(rgb, _optical_density_table().reshape(-1, 1))  # (H, W, 3) float32
    density = per_channel[..., 0] + per_channel[..., 1]
    density += per_channel[..., 2]
    return saturation, density


def _smoothed(rgb_image: np.ndarray, radius_px: int) -> np.ndarray:
    rgb = np.ascontiguousarray(rgb_image[..., :3], dtype=np.uint8)
    if radius_px > 0:
        size = 2 * radius_px + 1
        rgb = cv2.GaussianBlur(rgb, (size, size), 0)
    return rgb


def tissue_thresholds(
    rgb_thumbnail: np.ndarray, settings: TissueSettings = TissueSettings()
) -> TissueThresholds:
    """Otsu cut-offs of saturation and optical density on the non-ink pixels, clamped."""
    return _thresholds(*_features(rgb_thumbnail, settings), settings)


def _features(rgb_thumbnail: np.ndarray, settings: TissueSettings):
    """(saturation, optical density, not-ink) of the smoothed thumbnail."""
    rgb = _smoothed(rgb_thumbnail, settings.smoothing_px)
    saturation, density = _saturation_density(rgb)
    return saturation, density, ~ink_mask(rgb, settings)


def _thresholds(saturation, density, clean, settings: TissueSettings) -> TissueThresholds:
    od_scale = 255.0 / 3.0  # summed OD spans 0..~7; 0..3 covers tissue and glass
    return TissueThresholds(
        _otsu_clamped(saturation[clean], settings.saturation_floor, settings.saturation_cap, 1.0),
        _otsu_clamped(density[clean], settings.density_floor, settings.density_cap, od_scale),
    )


def detect_tissue(
    rgb_thumbnail: np.ndarray,
    settings: TissueSettings = TissueSettings(),
    thresholds: TissueThresholds | None = None,
) -> np.ndarray:
    """HxW bool mask of tissue in an HxWx3 uint8 thumbnail (see module docstring for the method)."""
    return tissue_and_thresholds(rgb_thumbnail, settings, thresholds)[0]


def tissue_and_thresholds(
    rgb_thumbnail: np.ndarray,
    settings: TissueSettings = TissueSettings(),
    thresholds: TissueThresholds | None = None,
) -> tuple[np.ndarray, TissueThresholds]:
    """``detect_tissue``'s mask and the cut-offs it used (found on the thumbnail unless given),
    from one pass over the thumbnail's features."""
    saturation, density, clean = _features(rgb_thumbnail, settings)
    cut = thresholds or _thresholds(saturation, density, clean, settings)
    tissue = ((saturation > cut.saturation) | (density > cut.density)) & clean
    mask = tissue.astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disk(settings.closing_px))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(settings.opening_px))
    mask = mask.astype(bool) & clean
    min_pixels = max(1, round(settings.min_object_fraction * mask.size))
    mask = _remove_small(mask, min_pixels)
    small_holes = ~mask & ~_remove_small(~mask, min_pixels)
    return mask | small_holes, cut


def _remove_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Keep only the 8-connected components of `mask` with at least `min_pixels` pixels."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def thumbnail_lookup(
    mask: np.ndarray, downsample: float, y0: int, x0: int, h: int, w: int, step: float = 1.0
) -> np.ndarray:
    """(h, w) samples of a thumbnail mask for an image whose pixel (i, j) covers level-0
    ((y0 + i) * step, (x0 + j) * step) onwards: each pixel centre's thumbnail pixel."""
    ys = (((np.arange(y0, y0 + h) + 0.5) * step) / downsample).astype(np.int64)
    xs = (((np.arange(x0, x0 + w) + 0.5) * step) / downsample).astype(np.int64)
    rows = np.clip(ys, 0, mask.shape[0] - 1)
    cols = np.clip(xs, 0, mask.shape[1] - 1)
    return mask[rows][:, cols]


def glass_mask(
    rgb: np.ndarray,
    mpp: float,
    thresholds: TissueThresholds,
    settings: TissueSettings = TissueSettings(),
    background: np.ndarray | None = None,
) -> np.ndarray:
    """HxW bool: glass in an RGB image at ``mpp`` µm/px (a full-resolution view, not a thumbnail).

    A pixel is pale if, after light smoothing, it is below both tissue cut-offs. A pale region
    (4-connected) is glass when it reaches ``background`` (where the thumbnail found no tissue:
    glass next to tissue always does), or, without a background map, when it is large. Pale
    regions enclosed by tissue (lumens, Bowman's space, pale cytoplasm) stay tissue, and the
    decision does not depend on where a window was cut.
    """
    sigma = settings.glass_smoothing_um / mpp
    smooth = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    if sigma >= 0.5:
        smooth = cv2.GaussianBlur(smooth, (0, 0), sigma)
    saturation, density = _saturation_density(smooth)
    pale = (saturation <= thresholds.saturation) & (density <= thresholds.density)
    labels, count = ndimage.label(pale)
    if count == 0:
        return pale
    if background is not None:
        glass = np.zeros(count + 1, dtype=bool)
        glass[np.unique(labels[pale & background])] = True
    else:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        glass = sizes * mpp * mpp >= settings.glass_min_area_um2
    glass[0] = False
    return glass[labels]


def glass_background(
    tissue: np.ndarray, thumbnail_um: float, settings: TissueSettings = TissueSettings()
) -> np.ndarray:
    """Thumbnail pixels that are open glass: non-tissue regions of at least
    ``glass_min_area_um2`` (``thumbnail_um`` µm per thumbnail pixel). Smaller non-tissue regions
    are lumens, Bowman's spaces or capillaries that a fine thumbnail resolves: not glass."""
    labels, count = ndimage.label(~tissue)
    if count == 0:
        return np.zeros_like(tissue, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * thumbnail_um**2
    large = sizes >= settings.glass_min_area_um2
    large[0] = False
    return large[labels]


def full_resolution_glass(
    rgb: np.ndarray,
    mpp: float,
    thumb: np.ndarray,
    downsample: float,
    settings: TissueSettings = TissueSettings(),
) -> np.ndarray:
    """The glass test on a whole level-0 image, with the thumbnail's cut-offs and background
    (as ``segment`` applies it chunk by chunk): for measuring labels on glass."""
    found, cut = tissue_and_thresholds(thumb, settings)
    open_glass = glass_background(found, downsample * mpp, settings)
    h, w = rgb.shape[:2]
    return glass_mask(rgb, mpp, cut, settings, thumbnail_lookup(open_glass, downsample, 0, 0, h, w))
