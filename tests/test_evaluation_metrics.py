"""Metric functions against hand-computed cases and an independent brute-force reference."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from omniseg.scoring.metrics import (
    assd,
    boundary,
    dice,
    dice_bg_inclusive,
    hd95,
    iou,
    score_pair,
)

SHAPE = (40, 40)


def blank():
    return np.zeros(SHAPE, bool)


def square(top, left, side):
    m = blank()
    m[top : top + side, left : left + side] = True
    return m


def brute_force_distances(pred, gt):
    """Reference: every boundary pixel's distance to the nearest boundary pixel of the other."""
    bp = np.argwhere(boundary(pred))
    bg = np.argwhere(boundary(gt))
    d = cdist(bp, bg)
    return d.min(axis=1), d.min(axis=0)


# ----------------------------------------------------------------- overlap scores
def test_dice_and_iou_hand_computed():
    pred, gt = blank(), blank()
    pred[0, 0:4] = True  # 4 px
    gt[0, 2:8] = True  # 6 px, overlap 2 px, union 8 px
    assert dice(pred, gt) == pytest.approx(2 * 2 / (4 + 6))
    assert iou(pred, gt) == pytest.approx(2 / 8)


@pytest.mark.parametrize(
    ("pred_px", "gt_px", "expected_dice", "expected_iou"),
    [(0, 0, 1.0, 1.0), (0, 5, 0.0, 0.0), (5, 0, 0.0, 0.0)],
)
def test_empty_masks(pred_px, gt_px, expected_dice, expected_iou):
    pred, gt = blank(), blank()
    pred[1, :pred_px] = True
    gt[3, :gt_px] = True
    assert dice(pred, gt) == expected_dice
    assert iou(pred, gt) == expected_iou
    assert hd95(pred, gt) is None
    assert assd(pred, gt) is None


def test_identical_masks_are_perfect():
    m = square(5, 7, 10)
    assert dice(m, m) == 1.0 and iou(m, m) == 1.0
    assert hd95(m, m) == 0.0 and assd(m, m) == 0.0


def test_dice_bg_inclusive_is_the_original_formula():
    pred, gt = square(0, 0, 4), square(2, 2, 4)  # 16 px each, overlap 2x2 = 4
    n = pred.size
    fg = 2 * 4 / (16 + 16 + 1)
    bg_pred, bg_gt = n - 16, n - 16
    bg_inter = n - int((pred | gt).sum())
    bg = 2 * bg_inter / (bg_pred + bg_gt + 1)
    assert dice_bg_inclusive(pred, gt) == pytest.approx((fg + bg) / 2)
    # Never 0 even for an empty prediction: the background inflates it (why it is not "dice").
    assert dice_bg_inclusive(blank(), gt) > 0.45
    assert dice(blank(), gt) == 0.0


def test_masks_must_match():
    with pytest.raises(ValueError, match="equal shape"):
        dice(np.zeros((3, 4), bool), np.zeros((4, 3), bool))


# ----------------------------------------------------------------- boundary distances
def test_boundary_is_mask_minus_four_connected_erosion():
    m = square(10, 10, 5)
    b = boundary(m)
    assert b.sum() == 5 * 4 - 4  # the ring of a 5x5 square
    assert not b[12, 12] and b[10, 12] and b[10, 10]


def test_parallel_lines_k_apart_have_distance_k():
    for k in (1, 3, 7):
        pred, gt = blank(), blank()
        pred[5, 4:30] = True
        gt[5 + k, 4:30] = True
        assert hd95(pred, gt) == pytest.approx(k)
        assert assd(pred, gt) == pytest.approx(k)


def test_single_pixels_use_euclidean_distance():
    pred, gt = blank(), blank()
    pred[2, 3] = True
    gt[2 + 3, 3 + 4] = True
    assert hd95(pred, gt) == pytest.approx(5.0)
    assert assd(pred, gt) == pytest.approx(5.0)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_offset_squares_match_brute_force(k):
    pred, gt = square(8, 8, 16), square(8, 8 + k, 16)
    d_pg, d_gp = brute_force_distances(pred, gt)
    expected_hd95 = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))
    expected_assd = np.concatenate([d_pg, d_gp]).mean()
    assert hd95(pred, gt) == pytest.approx(expected_hd95)
    assert assd(pred, gt) == pytest.approx(expected_assd)
    # The largest boundary distance of two squares offset by k is exactly k.
    assert max(d_pg.max(), d_gp.max()) == pytest.approx(k)
    assert 0 < assd(pred, gt) < k


def test_hd95_ignores_a_few_outliers_but_is_symmetric():
    gt = blank()
    gt[5, 0:40] = True
    pred = gt.copy()
    pred[35, 0] = True  # one far stray pixel among 41 boundary pixels (< 5 %)
    assert hd95(pred, gt) < 1.0  # the 95th percentile skips the single outlier
    assert hd95(pred, gt) == hd95(gt, pred)
    assert assd(pred, gt) == pytest.approx(assd(gt, pred))
    assert assd(pred, gt) > 0


def test_score_pair_agrees_with_the_single_functions():
    rng = np.random.default_rng(0)
    pred = rng.random(SHAPE) > 0.6
    gt = square(4, 6, 20)
    s = score_pair(pred, gt)
    assert s["dice"] == dice(pred, gt)
    assert s["iou"] == iou(pred, gt)
    assert s["dice_bg_inclusive"] == dice_bg_inclusive(pred, gt)
    assert s["hd95"] == hd95(pred, gt)
    assert s["assd"] == assd(pred, gt)
    assert s["fg_pred"] == int(pred.sum()) and s["fg_gt"] == 400
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in s.values())


def test_dice_and_iou_are_related():
    rng = np.random.default_rng(1)
    for _ in range(5):
        pred, gt = rng.random(SHAPE) > 0.5, rng.random(SHAPE) > 0.5
        d, j = dice(pred, gt), iou(pred, gt)
        assert d == pytest.approx(2 * j / (1 + j))
