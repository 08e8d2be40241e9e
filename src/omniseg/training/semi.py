"""Semi-supervised cross-scale consistency with an EMA teacher (design: docs/training.md).

For a patch labelled for task t at scale s_n, every other trained tissue type u is looked at by
the teacher at u's native scale s_u (a view of the patch, see ``views.py``):
* pseudo-label term: the student, fed the same view with scale id s_u, is trained with BCE on
  the pixels where the teacher is confident (p > tau_hi -> 1, p < tau_lo -> 0);
* matching term: the student's prediction of u on the patch itself (scale id s_n, a non-native
  scale for u) must agree (MSE of probabilities) with the teacher's native-scale prediction,
  compared on the coarser of the two grids.
The teacher runs ``predict_tasks`` (one backbone pass per view, several heads) under no_grad.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniseg.catalogue import scales, tissues
from omniseg.models import OmniSeg, foreground_probability
from omniseg.training.losses import margin
from omniseg.training.views import common_grid, make_view, view_valid_mask


@dataclass(frozen=True)
class ViewGroup:
    """The samples whose view at ``scale_id`` differs from the patch, with their inputs."""

    scale_id: int
    tasks: tuple[int, ...]  # trained tasks whose native scale is scale_id
    members: Tensor  # (K,) sample indices into the batch
    factors: tuple[float, ...]  # magnification ratio view / patch, per member
    image: Tensor  # (K, C, S, S)


class StudentStep(nn.Module):
    """One forward for everything the student computes in a step (needed under DDP).

    Without views: own-task logits (N, 2, H, W). With views: (patch logits for ``tasks`` of
    shape (N, T, 2, H, W), [view logits (K, T_s, 2, H, W) per group]).
    """

    def __init__(self, model: OmniSeg) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, task_ids, scale_ids, tasks=None, groups=None):
        if tasks is None:
            return self.model(x, task_ids, scale_ids)
        patch = self.model.predict_tasks(x, tasks, scale_ids)
        views = [self.model.predict_tasks(g.image, g.tasks, g.scale_id) for g in groups or ()]
        return patch, views


def make_teacher(model: OmniSeg) -> OmniSeg:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> None:
    """teacher = d * teacher + (1 - d) * student, with d warmed up as min(decay, 1 - 1/(step+1))."""
    d = min(decay, 1.0 - 1.0 / (step + 1))
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(d).add_(s.detach().to(t.dtype), alpha=1.0 - d)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


def rampup(step: int, total_steps: int, fraction: float) -> float:
    """Linear ramp 0 -> 1 over the first ``fraction`` of the run."""
    span = fraction * total_steps
    return 1.0 if span <= 0 else min(1.0, step / span)


def native_scales(task_list: tuple[int, ...]) -> dict[int, int]:
    table = {t.id: t.scale_id for t in tissues()}
    return {t: table[t] for t in task_list}


def magnification(scale_id: int) -> int:
    return scales()[scale_id].magnification


def build_views(
    x: Tensor, scale_ids: Tensor, tasks: tuple[int, ...], pad_value: float
) -> list[ViewGroup]:
    """Views of every sample at every native scale of ``tasks`` other than its own scale."""
    native = native_scales(tasks)
    groups = []
    sample_scales = scale_ids.tolist()
    for s in sorted(set(native.values())):
        members = [n for n, sn in enumerate(sample_scales) if sn != s]
        if not members:
            continue
        factors = tuple(magnification(s) / magnification(sample_scales[n]) for n in members)
        image = torch.cat(
            [make_view(x[n : n + 1], f, pad_value) for n, f in zip(members, factors, strict=True)]
        )
        group_tasks = tuple(t for t in tasks if native[t] == s)
        index = torch.as_tensor(members, dtype=torch.long, device=x.device)
        groups.append(ViewGroup(s, group_tasks, index, factors, image))
    return groups


@torch.no_grad()
def teacher_probabilities(
    teacher: OmniSeg, x: Tensor, scale_ids: Tensor, tasks: tuple[int, ...], groups: list[ViewGroup]
) -> tuple[Tensor, list[Tensor]]:
    patch = foreground_probability(teacher.predict_tasks(x, tasks, scale_ids))
    views = [
        foreground_probability(teacher.predict_tasks(g.image, g.tasks, g.scale_id)) for g in groups
    ]
    return patch, views


def _confident_bce(
    student_logits: Tensor, teacher_prob: Tensor, keep: Tensor, lo: float, hi: float
):
    """Sum of BCE over confident kept pixels and their count."""
    confident = keep & ((teacher_prob > hi) | (teacher_prob < lo))
    target = (teacher_prob > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(margin(student_logits), target, reduction="none")
    weight = confident.float()
    return (bce * weight).sum(), weight.sum()


def semi_losses(
    student_patch: Tensor,
    student_views: list[Tensor],
    teacher_patch: Tensor,
    teacher_views: list[Tensor],
    groups: list[ViewGroup],
    task_ids: Tensor,
    scale_ids: Tensor,
    tasks: tuple[int, ...],
    tau_lo: float,
    tau_hi: float,
) -> tuple[Tensor, Tensor]:
    """(pseudo-label loss, matching loss) for one batch; see the module docstring."""
    device = student_patch.device
    task_vec = torch.as_tensor(tasks, device=device)
    native = torch.as_tensor([native_scales(tasks)[t] for t in tasks], device=device)
    unlabelled = task_vec[None, :] != task_ids[:, None]  # (N, T)
    size = student_patch.shape[-1]

    # Pseudo labels for the other types at the patch's own scale: the view is the patch itself.
    same_scale = unlabelled & (native[None, :] == scale_ids[:, None])
    keep = same_scale[..., None, None].expand_as(teacher_patch)
    bce_sum, count = _confident_bce(student_patch, teacher_patch, keep, tau_lo, tau_hi)
    match_sum = student_patch.new_zeros((), dtype=torch.float32)
    match_count = student_patch.new_zeros((), dtype=torch.float32)
    student_prob = foreground_probability(student_patch)  # (N, T, S, S)

    for g, s_view, t_view in zip(groups, student_views, teacher_views, strict=True):
        g_tasks = torch.as_tensor(g.tasks, device=device)
        own = g_tasks[None, :] != task_ids[g.members][:, None]  # (K, T_s)
        region = torch.zeros(len(g.factors), 1, size, size, dtype=torch.bool, device=device)
        for i, f in enumerate(g.factors):
            box = view_valid_mask(size, f)
            region[i, :, box, box] = True
        keep = own[..., None, None] & region
        b, c = _confident_bce(s_view, t_view, keep, tau_lo, tau_hi)
        bce_sum, count = bce_sum + b, count + c
        columns = [tasks.index(t) for t in g.tasks]
        for i, f in enumerate(g.factors):
            n = int(g.members[i])
            p, v = common_grid(student_prob[n, columns], t_view[i], f)
            weight = own[i].float()[:, None, None].expand_as(p)
            match_sum = match_sum + (weight * (p - v) ** 2).sum()
            match_count = match_count + weight.sum()
    pseudo = bce_sum / count.clamp_min(1.0)
    match = match_sum / match_count.clamp_min(1.0)
    return pseudo, match
