"""Supervised loss on each sample's own task: BCE + soft Dice on the foreground margin l1 - l0.

The model's foreground probability is softmax(l)[1] = sigmoid(l1 - l0), so both terms act on the
margin ``d = l1 - l0``: BCE-with-logits on d and soft Dice on sigmoid(d). This fixes the original's
defects (the original Omni-Seg training code): sigmoid applied to each channel independently, the edge weight only in
the Dice numerator, and +1 smoothing that swamps small objects. Here the per-pixel edge weight
multiplies numerator and denominator alike and the BCE term, and the smoothing is a config value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from omniseg.data.negatives import IGNORE


def margin(logits: Tensor) -> Tensor:
    """(..., 2, H, W) logits -> (..., H, W) foreground margin l1 - l0 (float32)."""
    return logits[..., 1, :, :].float() - logits[..., 0, :, :].float()


def edge_weight_map(mask: Tensor, weight: float, width: int) -> Tensor:
    """Per-pixel weight: ``weight`` on background pixels within city-block distance ``width`` of
    an object, 1 elsewhere (the original's 2-iteration cross dilation ring).

    mask: (N, H, W) in {0, 1}. Works on any device (a convolution, not scipy).
    """
    if weight == 1.0 or width <= 0:
        return torch.ones_like(mask, dtype=torch.float32)
    cross = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float32, device=mask.device)
    grown = mask.float()[:, None]
    for _ in range(width):
        grown = (F.conv2d(grown, cross[None, None], padding=1) > 0).float()
    ring = (grown[:, 0] > 0) & (mask <= 0.5)
    return torch.where(ring, torch.full_like(mask, weight, dtype=torch.float32), 1.0)


def soft_dice_loss(
    prob: Tensor, target: Tensor, weight: Tensor, smooth: float, fn_weight: float = 0.5
) -> Tensor:
    """Per-sample 1 - weighted soft Dice of the foreground: (N, H, W) -> (N,).

    ``fn_weight`` != 0.5 makes it the Tversky loss, TP / (TP + (1 - b) FP + b FN): b > 0.5
    charges missed pixels more than extra ones, for thin structures (vessel walls, PTC) that
    Dice lets a model drop.
    """
    dims = tuple(range(1, prob.ndim))
    inter = (weight * prob * target).sum(dims)
    predicted, true = (weight * prob).sum(dims), (weight * target).sum(dims)
    if fn_weight == 0.5:
        return 1.0 - (2.0 * inter + smooth) / (predicted + true + smooth)
    fp, fn = predicted - inter, true - inter
    half = smooth / 2.0
    return 1.0 - (inter + half) / (inter + (1.0 - fn_weight) * fp + fn_weight * fn + half)


def weighted_bce(d: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Per-sample weighted mean BCE-with-logits on the margin: (N, H, W) -> (N,).

    A sample whose weights are all zero (every pixel ignored) contributes 0.
    """
    bce = F.binary_cross_entropy_with_logits(d, target, reduction="none")
    dims = tuple(range(1, d.ndim))
    return (weight * bce).sum(dims) / weight.sum(dims).clamp_min(1e-6)


def supervised_loss(
    logits: Tensor,
    mask: Tensor,
    *,
    dice_weight: float = 1.0,
    bce_weight: float = 1.0,
    smooth: float = 1.0,
    edge_weight: float = 1.0,
    edge_width: int = 2,
    fn_weight: float = 0.5,
) -> Tensor:
    """Mean over the batch of dice_weight * Dice + bce_weight * BCE.

    logits: (N, 2, H, W) from ``model(x, task_ids, scale_ids)``, i.e. already the head of each
    sample's own task, so tasks a sample is not labelled for get no gradient from this term.
    Pixels whose mask is ``IGNORE`` (known-negative samples: unknown there) add nothing.
    """
    valid = mask != IGNORE
    target = (mask == 1).float()
    weight = edge_weight_map(target, edge_weight, edge_width) * valid
    d = margin(logits)
    dice = soft_dice_loss(torch.sigmoid(d), target, weight, smooth, fn_weight)
    # Partly labelled samples without foreground (known-negative samples) get BCE only: the
    # soft Dice of an empty target is ~1 for any predicted mass, a pull to predict nothing
    # anywhere that erased whole tasks (capsule fg Dice 0.90 -> 0.00 with data.negatives 0.25;
    # docs/model-card.md). Partly labelled samples with foreground keep Dice over known pixels.
    empty_partial = (~valid).flatten(1).any(1) & ~(target > 0).flatten(1).any(1)
    dice = torch.where(empty_partial, torch.zeros_like(dice), dice)
    bce = weighted_bce(d, target, weight)
    return (dice_weight * dice + bce_weight * bce).mean()


def hard_dice(logits: Tensor, mask: Tensor) -> Tensor:
    """Per-sample foreground Dice of the 0.5 decision (l1 > l0); empty vs empty counts as 1."""
    pred = (margin(logits) > 0).float()
    target = mask.float()
    dims = tuple(range(1, pred.ndim))
    inter = (pred * target).sum(dims)
    denom = pred.sum(dims) + target.sum(dims)
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))
