"""One optimisation step: supervised loss on each sample's own task, plus the semi terms."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from omniseg.models import OmniSeg
from omniseg.runtime import autocast
from omniseg.training.config import TrainConfig
from omniseg.training.losses import supervised_loss
from omniseg.training.optim import encoder_parameters
from omniseg.training.semi import (
    build_views,
    ema_update,
    rampup,
    semi_losses,
    teacher_probabilities,
)


@dataclass
class StepContext:
    """What a step needs besides the batch (built once per run)."""

    config: TrainConfig
    model: OmniSeg  # the bare student (for EMA); ``student`` may wrap it in DDP
    student: nn.Module  # StudentStep, possibly DistributedDataParallel
    teacher: OmniSeg | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    precision: str
    tasks: tuple[int, ...]  # trained task ids (the semi terms cover these)
    total_steps: int


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    image = batch["image"].to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return {
        "image": image,
        "mask": batch["mask"].to(device, non_blocking=True),
        "task_id": batch["task_id"].to(device),
        "scale_id": batch["scale_id"].to(device),
    }


def semi_weights(ctx: StepContext, step: int) -> tuple[float, float]:
    s = ctx.config.semi
    if not s.enabled or ctx.teacher is None or len(ctx.tasks) < 2:
        return 0.0, 0.0
    ramp = rampup(step, ctx.total_steps, s.rampup_fraction)
    return s.pseudo_weight * ramp, s.match_weight * ramp


def compute_losses(ctx: StepContext, batch: dict, step: int) -> dict[str, Tensor]:
    """Forward pass(es) and every loss term of one batch (already on the device)."""
    c = ctx.config
    x, mask = batch["image"], batch["mask"]
    task_ids, scale_ids = batch["task_id"], batch["scale_id"]
    w_pseudo, w_match = semi_weights(ctx, step)
    loss_kw = {
        "dice_weight": c.loss.dice_weight,
        "bce_weight": c.loss.bce_weight,
        "smooth": c.loss.dice_smooth,
        "edge_weight": c.loss.edge_weight,
        "edge_width": c.loss.edge_width,
        "fn_weight": c.loss.fn_weight,
    }
    if w_pseudo == 0.0 and w_match == 0.0:
        with autocast(ctx.device, ctx.precision):
            logits = ctx.student(x, task_ids, scale_ids)
        sup = supervised_loss(logits, mask, **loss_kw)
        zero = sup.new_zeros(())
        return {"loss": sup, "supervised": sup, "pseudo": zero, "match": zero}
    groups = build_views(x, scale_ids, ctx.tasks, c.semi.pad_value)
    with autocast(ctx.device, ctx.precision):
        t_patch, t_views = teacher_probabilities(ctx.teacher, x, scale_ids, ctx.tasks, groups)
        s_patch, s_views = ctx.student(x, task_ids, scale_ids, ctx.tasks, groups)
    lut = torch.full((max(ctx.tasks) + 1,), -1, dtype=torch.long, device=x.device)
    lut[list(ctx.tasks)] = torch.arange(len(ctx.tasks), device=x.device)
    own = s_patch[torch.arange(x.shape[0], device=x.device), lut[task_ids]]
    sup = supervised_loss(own, mask, **loss_kw)
    pseudo, match = semi_losses(
        s_patch, s_views, t_patch, t_views, groups, task_ids, scale_ids, ctx.tasks,
        c.semi.tau_lo, c.semi.tau_hi,
    )  # fmt: skip
    loss = sup + w_pseudo * pseudo + w_match * match
    return {"loss": loss, "supervised": sup, "pseudo": pseudo, "match": match}


def train_step(ctx: StepContext, batch: dict, step: int) -> dict[str, float]:
    """Losses, backward, optimiser + scheduler step, EMA update. Returns float metrics."""
    start = time.perf_counter()
    batch = to_device(batch, ctx.device, ctx.config.run.channels_last)
    ctx.optimizer.zero_grad(set_to_none=True)
    losses = compute_losses(ctx, batch, step)
    if not torch.isfinite(losses["loss"]):
        raise FloatingPointError(f"non-finite loss at step {step}: {losses['loss'].item()}")
    losses["loss"].backward()
    if step < ctx.config.finetune.freeze_encoder_steps:
        for p in encoder_parameters(ctx.model):
            p.grad = None  # the optimiser skips parameters without a gradient
    if ctx.config.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.config.optim.grad_clip)
    lr = ctx.optimizer.param_groups[0]["lr"]
    ctx.optimizer.step()
    ctx.scheduler.step()
    if ctx.teacher is not None:
        ema_update(ctx.teacher, ctx.model, ctx.config.semi.ema_decay, step)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    metrics = {k: float(v.detach()) for k, v in losses.items()}
    metrics["lr"] = lr
    metrics["step_seconds"] = time.perf_counter() - start
    return metrics
