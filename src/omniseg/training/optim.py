"""Optimiser and learning-rate schedule (linear warm-up, then cosine / poly / constant)."""

from __future__ import annotations

import math

import torch
from torch import nn

from omniseg.training.config import OptimConfig

ENCODER_PREFIX = "backbone.encoder."  # parameters of a pretrained encoder (lite0 models)


def encoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if name.startswith(ENCODER_PREFIX)]


def build_optimizer(
    model: nn.Module, config: OptimConfig, encoder_lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on norms and biases (1-D tensors), as is usual for U-Nets.

    Encoder parameters (if any) learn at ``lr * encoder_lr_scale``; the schedule scales every
    group by the same factor, so the ratio holds throughout.
    """
    groups = []
    for is_encoder in (False, True):
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad and name.startswith(ENCODER_PREFIX) == is_encoder:
                (no_decay if p.ndim <= 1 else decay).append(p)
        lr = config.lr * (encoder_lr_scale if is_encoder else 1.0)
        for params, wd in ((decay, config.weight_decay), (no_decay, 0.0)):
            if params or not is_encoder:  # models without an encoder keep their two groups
                groups.append({"params": params, "weight_decay": wd, "lr": lr})
    if config.name == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
        )
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(step: int, total_steps: int, config: OptimConfig) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based) of ``total_steps``."""
    warmup = int(config.warmup_fraction * total_steps)
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if config.schedule == "poly":
        return (1.0 - progress) ** config.poly_power
    floor = config.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, config: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config)
    )
