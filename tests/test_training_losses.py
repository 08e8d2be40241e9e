"""Loss maths: partial labels (no gradient to other tasks), edge weights, semi terms, schedule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from omniseg.models import create_model
from omniseg.training.config import OptimConfig
from omniseg.training.losses import (
    edge_weight_map,
    margin,
    soft_dice_loss,
    supervised_loss,
)
from omniseg.training.optim import lr_factor
from omniseg.training.semi import (
    StudentStep,
    build_views,
    ema_update,
    make_teacher,
    rampup,
    semi_losses,
    teacher_probabilities,
)
from omniseg.training.thresholds import dice_per_threshold
from tests._training_synth import one_thread  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    mask = (torch.rand(n, size, size, generator=g) > 0.7).float()
    return x, mask


def test_supervised_loss_gives_zero_gradient_to_unlabelled_task_heads():
    model = create_model("multihead-tiny")
    x, mask = _batch()
    tasks = torch.tensor([0, 0, 2, 2])
    loss = supervised_loss(model(x, tasks, torch.tensor([1, 1, 0, 0])), mask, edge_weight=1.2)
    loss.backward()
    grad = model.heads.params.grad
    assert grad is not None
    labelled, other = grad[[0, 2]], grad[[1, 3, 4, 5]]
    assert labelled.abs().sum(dim=1).min() > 0  # each labelled task's head learns
    assert torch.count_nonzero(other) == 0  # the others get exactly nothing


def test_semi_terms_give_gradient_to_unlabelled_task_heads_and_change_the_loss():
    model = create_model("multihead-tiny")
    teacher = make_teacher(model)
    with torch.no_grad():  # make the teacher confident somewhere so pseudo labels exist
        teacher.heads.params.mul_(8.0)
    x, mask = _batch()
    tasks, scale_ids = torch.tensor([0, 0, 2, 2]), torch.tensor([1, 1, 0, 0])
    trained = (0, 1, 2, 5)
    groups = build_views(x, scale_ids, trained, pad_value=1.0)
    assert sorted(g.scale_id for g in groups) == [0, 1, 3]
    t_patch, t_views = teacher_probabilities(teacher, x, scale_ids, trained, groups)
    s_patch, s_views = StudentStep(model)(x, tasks, scale_ids, trained, groups)
    lut = {t: i for i, t in enumerate(trained)}
    own = s_patch[torch.arange(4), torch.tensor([lut[int(t)] for t in tasks])]
    sup = supervised_loss(own, mask)
    pseudo, match = semi_losses(
        s_patch, s_views, t_patch, t_views, groups, tasks, scale_ids, trained, 0.1, 0.9
    )
    assert pseudo > 0 and match > 0
    total = sup + 0.1 * pseudo + 0.1 * match
    assert not torch.isclose(total, sup)
    total.backward()
    grad = model.heads.params.grad
    assert grad[[1, 5]].abs().sum() > 0  # unlabelled types now learn from the teacher
    assert torch.count_nonzero(grad[[3, 4]]) == 0  # types not trained at all stay untouched
    # own-task logits from predict_tasks equal the plain forward (same supervised loss)
    with torch.no_grad():
        assert torch.allclose(model(x, tasks, scale_ids), own, atol=1e-5)


def test_confidence_thresholds_select_pixels():
    model = create_model("omniseg-tiny")
    x, _ = _batch(2)
    tasks, scale_ids = torch.tensor([0, 1]), torch.tensor([1, 1])
    trained = (0, 1)
    s_patch, s_views = StudentStep(model)(x, tasks, scale_ids, trained, [])
    unsure = torch.full((2, 2, 32, 32), 0.5)
    pseudo, match = semi_losses(
        s_patch, s_views, unsure, [], [], tasks, scale_ids, trained, 0.1, 0.9
    )
    assert pseudo == 0 and match == 0  # nothing confident, no other scales
    sure = torch.ones(2, 2, 32, 32)
    pseudo, _ = semi_losses(s_patch, s_views, sure, [], [], tasks, scale_ids, trained, 0.1, 0.9)
    expected = torch.nn.functional.softplus(-margin(s_patch[[0, 1], [1, 0]])).mean()
    assert torch.isclose(pseudo, expected, rtol=1e-5)


def test_edge_weight_is_a_two_pixel_outer_ring_and_enters_dice_consistently():
    mask = torch.zeros(1, 9, 9)
    mask[0, 4, 4] = 1
    w = edge_weight_map(mask, 1.2, 2)
    ys, xs = torch.nonzero(w[0] > 1, as_tuple=True)
    dist = (ys - 4).abs() + (xs - 4).abs()
    assert set(dist.tolist()) == {1, 2} and len(dist) == 12  # city-block ring, centre excluded
    assert w[0, 4, 4] == 1
    # A perfect prediction has zero Dice loss whatever the weights (num and denom weighted alike)
    assert soft_dice_loss(mask, mask, w, smooth=0.0).abs().max() < 1e-6


def test_ema_update_and_rampup():
    student = create_model("omniseg-tiny")
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.99, step=1000)
    for b, t, s in zip(before, teacher.parameters(), student.parameters(), strict=True):
        assert torch.allclose(t, 0.99 * b + 0.01 * s, atol=1e-6)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert rampup(0, 100, 0.2) == 0 and rampup(10, 100, 0.2) == 0.5 and rampup(50, 100, 0.2) == 1
    assert rampup(0, 100, 0.0) == 1


def test_lr_schedule_warms_up_and_decays():
    cfg = OptimConfig(warmup_fraction=0.1, schedule="cosine", min_lr_ratio=0.0)
    f = [lr_factor(s, 100, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert f[-1] < 0.01
    poly = OptimConfig(warmup_fraction=0.0, schedule="poly")
    assert lr_factor(50, 100, poly) == pytest.approx(0.5**0.9)


def test_threshold_grid_dice_finds_the_separating_threshold():
    gt = np.zeros((8, 8), bool)
    gt[2:6, 2:6] = True
    prob = np.where(gt, 0.42, 0.2)  # under-confident model: 0.5 misses everything
    grid = [0.3, 0.35, 0.4, 0.45, 0.5]
    scores = dice_per_threshold(prob, gt, grid)
    np.testing.assert_allclose(scores, [1, 1, 1, 0, 0])
    empty = dice_per_threshold(np.zeros((4, 4)), np.zeros((4, 4), bool), grid)
    np.testing.assert_allclose(empty, 1.0)
