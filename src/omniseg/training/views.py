"""Cross-scale views of a patch, all at the training patch size (pure tensor maths).

A patch at magnification m seen at magnification m' (factor f = m'/m, a power of two):
* coarser (f < 1): the WHOLE patch area-downsampled by 1/f, centred and padded to the patch size;
* finer (f > 1): the centre crop of size/f, bilinearly upsampled by f;
* same (f = 1): the patch itself.
Predictions on the two grids are compared on the coarser one ("common grid"): the finer map is
area-averaged, the other cropped to the region both views cover.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _check(size: int, factor: float) -> int:
    k = round(1 / factor) if factor < 1 else round(factor)
    if k < 1 or abs((1 / k if factor < 1 else k) - factor) > 1e-9 or size % k:
        raise ValueError(f"scale factor {factor} must be 2**n with the patch size {size} divisible")
    return k


def centre_box(size: int, inner: int) -> slice:
    lo = (size - inner) // 2
    return slice(lo, lo + inner)


def make_view(x: Tensor, factor: float, pad_value: float) -> Tensor:
    """(N, C, S, S) patch -> (N, C, S, S) view at ``factor`` times the magnification."""
    size = x.shape[-1]
    k = _check(size, factor)
    if k == 1:
        return x
    if factor < 1:
        small = F.avg_pool2d(x, k)
        pad = (size - size // k) // 2
        return F.pad(small, (pad, pad, pad, pad), value=pad_value)
    box = centre_box(size, size // k)
    return F.interpolate(x[..., box, box], scale_factor=k, mode="bilinear", align_corners=False)


def view_valid_mask(size: int, factor: float) -> slice:
    """Region of a view (both axes) that holds image, not padding."""
    k = _check(size, factor)
    return centre_box(size, size // k) if factor < 1 else slice(0, size)


def common_grid(patch_map: Tensor, view_map: Tensor, factor: float) -> tuple[Tensor, Tensor]:
    """Bring a map on the patch grid and one on its ``factor`` view to the coarser common grid.

    Maps are (..., S, S) probabilities. Returns two (..., S/k, S/k) maps of the same place.
    """
    size = patch_map.shape[-1]
    k = _check(size, factor)
    if k == 1:
        return patch_map, view_map
    lead = patch_map.shape[:-2]
    flat_p = patch_map.reshape(-1, 1, size, size)
    flat_v = view_map.reshape(-1, 1, size, size)
    box = centre_box(size, size // k)
    if factor < 1:  # the view is coarser: pool the patch, crop the view's image region
        p, v = F.avg_pool2d(flat_p, k), flat_v[..., box, box]
    else:  # the view is finer: crop the patch's centre, pool the view
        p, v = flat_p[..., box, box], F.avg_pool2d(flat_v, k)
    out = size // k
    return p.reshape(*lead, out, out), v.reshape(*lead, out, out)
