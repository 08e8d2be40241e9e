"""Training augmentation for pathology patches: geometry, scale, stain (HED) and colour jitter.

Stain variation across H&E, PAS, silver and trichrome is the main domain shift, so the colour part
perturbs the stain concentrations in HED space (Ruifrok & Johnston's fixed matrix, as in
Tellez et al. 2018) before ordinary brightness/contrast/saturation/gamma jitter. Geometric ops move
the mask with the image (nearest neighbour, never interpolated). Everything draws from one
``numpy.random.Generator``, so a seed fixes the result. Only numpy and torch are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Ruifrok & Johnston (2001) optical densities of haematoxylin, eosin and DAB (rows), as in skimage.
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_OD_FLOOR = 1e-6  # keeps log() finite on pure black pixels
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; 0 (or False) switches one off."""

    enabled: bool = True
    flips: bool = True  # horizontal / vertical flips and rot90 (the 8 dihedral poses)
    scale_prob: float = 0.5
    scale_min: float = 0.8
    scale_max: float = 1.25
    stain_prob: float = 0.8
    stain_sigma: float = 0.05  # HED concentration scale ~ U(1 - s, 1 + s) per stain
    stain_bias: float = 0.05  # HED concentration shift ~ U(-b, b) per stain
    colour_prob: float = 0.8
    brightness: float = 0.1  # additive shift ~ U(-b, b)
    contrast: float = 0.15  # factor ~ U(1 - c, 1 + c) about the mean grey
    saturation: float = 0.15  # factor ~ U(1 - s, 1 + s) against the grey image
    gamma: float = 0.15  # exponent ~ exp(U(-g, g))
    pad_value: float = 1.0  # fill when zooming out (white = slide background)
    # Chance that the crop is forced to contain a random foreground pixel (nnU-Net's foreground
    # oversampling): sparse classes such as vessels are otherwise often cropped away.
    foreground_crop_prob: float = 0.0


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 float RGB in [0, 1] -> stain concentrations (optical density unmixed)."""
    od = np.log(np.maximum(rgb, _OD_FLOOR)) / np.log(_OD_FLOOR)
    return od @ HED_FROM_RGB


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    od = hed @ RGB_FROM_HED
    return np.exp(od * np.log(_OD_FLOOR))


def stain_jitter(rgb: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Scale and shift each stain's concentration: hed' = hed * alpha + beta."""
    hed = rgb_to_hed(rgb.astype(np.float64))
    return np.clip(hed_to_rgb(hed * alpha + beta), 0.0, 1.0).astype(np.float32)


def colour_jitter(
    rgb: np.ndarray, brightness: float, contrast: float, saturation: float, gamma: float
) -> np.ndarray:
    """Brightness shift, contrast and saturation factors, then gamma; result clipped to [0, 1]."""
    out = rgb + brightness
    grey = out @ _LUMA
    out = (out - grey.mean()) * contrast + grey.mean()
    grey = (out @ _LUMA)[..., None]
    out = (out - grey) * saturation + grey
    return np.clip(out, 0.0, 1.0) ** gamma


def dihedral(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """One of the 8 square symmetries on the first two axes (rot90 k times, then optional flip)."""
    out = np.rot90(array, k, axes=(0, 1))
    return out[:, ::-1] if flip else out


def rescale(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Zoom image (bilinear, antialiased) and mask (nearest) by ``factor``."""
    h, w = mask.shape
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)
    msk = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None, None]
    msk = F.interpolate(msk.float(), size=size, mode="nearest-exact")  # pixel-centre aligned
    values = msk[0, 0].numpy()
    # a bool mask stays bool; a label mask (0 / 1 / IGNORE) keeps its values
    out = values > 0.5 if mask.dtype == bool else values.round().astype(mask.dtype)
    return img[0].permute(1, 2, 0).clamp(0, 1).numpy(), out


def crop_or_pad(
    image: np.ndarray,
    mask: np.ndarray,
    size: int,
    rng: np.random.Generator | None,
    pad_value: float,
    keep: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a size x size window (random if rng, else centred); pad with pad_value when smaller.

    ``keep`` = (row, col) of a pixel the window must contain; the window is then drawn uniformly
    among those that do (only along axes longer than ``size``).
    """
    h, w = mask.shape
    out_img = np.full((size, size, 3), pad_value, dtype=np.float32)
    out_msk = np.zeros((size, size), dtype=mask.dtype)

    def offsets(length: int, kept: int | None) -> tuple[int, int]:
        # (source start, destination start) along one axis
        slack = abs(length - size)
        lo, hi = 0, slack
        if kept is not None and length >= size:
            lo, hi = max(0, kept - size + 1), min(slack, kept)
        shift = int(rng.integers(lo, hi + 1)) if rng is not None else slack // 2
        return (shift, 0) if length >= size else (0, shift)

    ky, kx = keep if keep is not None else (None, None)
    (sy, dy), (sx, dx) = offsets(h, ky), offsets(w, kx)
    ch, cw = min(h, size), min(w, size)
    out_img[dy : dy + ch, dx : dx + cw] = image[sy : sy + ch, sx : sx + cw]
    out_msk[dy : dy + ch, dx : dx + cw] = mask[sy : sy + ch, sx : sx + cw]
    return out_img, out_msk


def augment_pair(
    image: np.ndarray,
    mask: np.ndarray,
    size: int,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one HxWx3 float32 [0, 1] image and its HxW mask (bool, or uint8 labels 0 / 1 /
    IGNORE for a partially annotated patch); output is size x size.

    The draw order is fixed so the same generator state always gives the same result.
    """
    c = config
    if not c.enabled:
        return crop_or_pad(image, mask, size, None, c.pad_value)
    if c.flips:
        k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        image, mask = dihedral(image, k, flip), dihedral(mask, k, flip)
    if c.scale_prob > 0 and rng.random() < c.scale_prob:
        factor = float(np.exp(rng.uniform(np.log(c.scale_min), np.log(c.scale_max))))
        image, mask = rescale(image, mask, factor)
    keep = None
    foreground = mask == 1  # a label mask's IGNORE pixels are not foreground
    if c.foreground_crop_prob > 0 and rng.random() < c.foreground_crop_prob and foreground.any():
        rows, cols = np.nonzero(foreground)
        pick = int(rng.integers(0, rows.size))
        keep = (int(rows[pick]), int(cols[pick]))
    image, mask = crop_or_pad(image, mask, size, rng, c.pad_value, keep)
    if c.stain_prob > 0 and rng.random() < c.stain_prob:
        alpha = rng.uniform(1 - c.stain_sigma, 1 + c.stain_sigma, 3)
        beta = rng.uniform(-c.stain_bias, c.stain_bias, 3)
        image = stain_jitter(image, alpha, beta)
    if c.colour_prob > 0 and rng.random() < c.colour_prob:
        image = colour_jitter(
            image,
            float(rng.uniform(-c.brightness, c.brightness)),
            float(rng.uniform(1 - c.contrast, 1 + c.contrast)),
            float(rng.uniform(1 - c.saturation, 1 + c.saturation)),
            float(np.exp(rng.uniform(-c.gamma, c.gamma))),
        )
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(mask)
