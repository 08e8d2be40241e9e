"""Checks of a training configuration, run whenever a TrainConfig is built (YAML, CLI flags or
Python), so a bad value fails at once with its dotted key instead of hours into a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniseg.catalogue import default_catalogue
from omniseg.errors import OmnisegError
from omniseg.models.config import HEAD_ACTIVATIONS, HEAD_INITS
from omniseg.runtime.device import DEVICE_CHOICES
from omniseg.runtime.precision import AUTO, PRECISIONS

TRAIN_PARTS = ("all", "decoder", "task")  # finetune.train_parts (training/finetune.py)

if TYPE_CHECKING:
    from omniseg.training.config import TrainConfig

CHOICES = {
    "optim.name": ("adamw", "sgd"),
    "optim.schedule": ("cosine", "poly", "constant"),
    "run.device": DEVICE_CHOICES,
    "run.precision": (*PRECISIONS, AUTO),
    "run.head_init": HEAD_INITS,
    "run.head_activation": HEAD_ACTIVATIONS,
}


def validate(config: TrainConfig) -> TrainConfig:
    """Reject values that would fail later (or silently train something else)."""
    plain = config.to_dict()
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        if plain[section][name] not in allowed:
            raise OmnisegError(f"{key}={plain[section][name]!r} is invalid; valid: {allowed}")
    d, s, r = config.data, config.semi, config.run
    if d.batch_size < 1:
        raise OmnisegError(f"data.batch_size={d.batch_size}: must be >= 1")
    if not 0.0 < d.val_fraction < 1.0:
        raise OmnisegError(f"data.val_fraction={d.val_fraction}: must lie in (0, 1)")
    if not 0.0 <= d.negatives < 1.0:
        raise OmnisegError(f"data.negatives={d.negatives}: must lie in [0, 1)")
    if not 0.0 <= d.threshold_holdout < 1.0:
        raise OmnisegError(f"data.threshold_holdout={d.threshold_holdout}: must lie in [0, 1)")
    if d.threshold_holdout > 0 and not r.tune_thresholds:
        raise OmnisegError(
            f"data.threshold_holdout={d.threshold_holdout} holds patches back only to tune "
            "thresholds on: set run.tune_thresholds: true, or data.threshold_holdout: 0"
        )
    if not 0.0 <= s.tau_lo < 0.5 < s.tau_hi <= 1.0:
        raise OmnisegError(
            f"semi.tau_lo/tau_hi={s.tau_lo}/{s.tau_hi}: need 0 <= lo < 0.5 < hi <= 1"
        )
    if not 0.0 <= s.ema_decay < 1.0:
        raise OmnisegError(f"semi.ema_decay={s.ema_decay}: must lie in [0, 1)")
    if d.folds == 1 or d.folds < 0:
        raise OmnisegError(f"data.folds={d.folds}: 0 (off) or at least 2")
    if d.folds and not 0 <= d.fold < d.folds:
        raise OmnisegError(f"data.fold={d.fold}: must lie in 0..{d.folds - 1}")
    if not d.folds and d.fold != -1:
        raise OmnisegError(f"data.fold={d.fold} needs data.folds >= 2 (cross-validation)")
    default_catalogue().parse_task_scales(d.task_scales)  # raises on a bad entry
    if not 0.0 < config.loss.fn_weight < 1.0:
        raise OmnisegError(f"loss.fn_weight={config.loss.fn_weight}: must lie in (0, 1)")
    if not 0.0 <= r.ema_decay < 1.0:
        raise OmnisegError(f"run.ema_decay={r.ema_decay}: must lie in [0, 1)")
    if r.epochs < 1 and r.max_steps < 1:
        raise OmnisegError("run.epochs and run.max_steps are both < 1; set --epochs or --max-steps")
    f = config.finetune
    if f.encoder_lr_scale < 0:
        raise OmnisegError(f"finetune.encoder_lr_scale={f.encoder_lr_scale}: must be >= 0")
    if f.train_parts not in TRAIN_PARTS:
        raise OmnisegError(
            f"finetune.train_parts={f.train_parts!r}: unknown; valid: {', '.join(TRAIN_PARTS)}"
        )
    if f.train_parts == "task" and config.optim.weight_decay:
        raise OmnisegError(
            "finetune.train_parts=task needs optim.weight_decay=0 (decay would move the other "
            "tasks' frozen controller blocks)"
        )
    if f.freeze_encoder_steps < 0:
        raise OmnisegError(f"finetune.freeze_encoder_steps={f.freeze_encoder_steps}: must be >= 0")
    if r.val_every_epochs < 1:
        raise OmnisegError(f"run.val_every_epochs={r.val_every_epochs}: must be >= 1")
    if r.log_every_steps < 1:
        raise OmnisegError(f"run.log_every_steps={r.log_every_steps}: must be >= 1")
    if r.checkpoint_minutes <= 0:
        raise OmnisegError(f"run.checkpoint_minutes={r.checkpoint_minutes}: must be > 0")
    return config
