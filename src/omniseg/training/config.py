"""Training configuration: one frozen dataclass with nested sections, checked whenever it is
built (YAML, CLI flags or Python), so a bad value fails at once with its dotted key instead of
hours into a run. Reading it from YAML + overrides: ``training/config_loading.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from omniseg.catalogue import default_catalogue
from omniseg.data.augment import AugmentConfig
from omniseg.errors import OmnisegError
from omniseg.models.config import HEAD_ACTIVATIONS, HEAD_INITS
from omniseg.runtime.device import DEVICE_CHOICES
from omniseg.runtime.precision import AUTO, PRECISIONS

# Default of both seeds below; one value, so a run that sets neither splits as it always did.
DEFAULT_SEED = 1234


@dataclass(frozen=True)
class DataConfig:
    """Where the patches come from and how they are split and batched."""

    path: str = ""
    train_split: str = "train"
    val_split: str = "val"  # "none": train on every row, keep the last checkpoint
    val_fraction: float = 0.2  # seeded stratified split when the data have no split column
    # Share of the train rows held back (stratified by task and stain, seeded) to choose the
    # per-task thresholds on, so they are never chosen on val; 0 = tune on val (optimistic).
    threshold_holdout: float = 0.0
    # Seeds both splits above; apart from run.seed so that a fine-tuning stage with fresh
    # augmentation draws (another run.seed) keeps out the rows its first stage never saw.
    split_seed: int = DEFAULT_SEED
    # Cross-validation (data/folds.py): folds >= 2 trains on every fold but ``fold`` (seeded by
    # split_seed, stratified, a source never split) and ignores the split column; 0 = off.
    folds: int = 0
    fold: int = -1
    patch_size: int = 256  # training patch size (px); also saved as model.inference.patch_size
    # Share of each task's samples replaced by a known negative: another task's labelled pixels
    # where anatomy excludes this task (data/negatives.py); 0 = off, as before.
    negatives: float = 0.0
    batch_size: int = 8
    num_workers: int = -1  # loader processes; -1 = auto (0 on CPU, up to 8 with a GPU)
    tasks: tuple[int, ...] = ()  # restrict to these task ids (empty = all present)
    # Tasks learnt (and saved in the model's catalogue) at another magnification than their
    # patches were labelled at, e.g. ("ptc=20",): the patches are resampled by area.
    task_scales: tuple[str, ...] = ()
    allow_outside_paths: bool = False  # manifest rows may point outside the manifest's folder


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (linear warm-up, then cosine or poly decay)."""

    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    schedule: str = "cosine"  # cosine | poly | constant
    poly_power: float = 0.9
    warmup_fraction: float = 0.02  # of all optimiser steps
    min_lr_ratio: float = 0.01  # final lr = lr * min_lr_ratio (cosine)
    grad_clip: float = 0.0  # max global grad norm, 0 = off


@dataclass(frozen=True)
class FinetuneConfig:
    """How a pretrained encoder is fine-tuned (models with one: ``omniseg-lite0*``).

    Batches of 8 are few to estimate BatchNorm statistics from, and a full learning rate may undo
    what ImageNet taught the encoder, so by default the statistics stay frozen and the encoder
    learns at a tenth of the rate (settings taken, not tuned: docs/model-card.md). No effect on
    models without an encoder or BatchNorm.
    """

    encoder_lr_scale: float = 0.1  # encoder lr = optim.lr x this
    freeze_encoder_steps: int = 0  # encoder gets no update for the first N steps (decoder warms up)
    freeze_norm_stats: bool = True  # BatchNorm running statistics stay fixed while training
    # ...after being re-estimated once on every training patch at the start of a run (AdaBN,
    # training/finetune.py): stained tissue is not ImageNet.
    recalibrate_norm_stats: bool = True
    # What learns: "all", "decoder" (encoder frozen) or "task" (only the controller blocks of
    # the tasks in the data: every other task stays bit-identical; training/finetune.py)
    train_parts: str = "all"


@dataclass(frozen=True)
class LossConfig:
    """Supervised Dice + BCE on each sample's own task (see docs/training.md)."""

    dice_weight: float = 1.0
    bce_weight: float = 1.0
    dice_smooth: float = 1.0
    edge_weight: float = 1.2  # per-pixel weight on the 2-px outer ring of objects; 1.0 = off
    edge_width: int = 2
    # Tversky weight of missed pixels in the Dice term (0.5 = Dice; > 0.5 favours recall)
    fn_weight: float = 0.5


@dataclass(frozen=True)
class SemiConfig:
    """Cross-scale pseudo-label and matching terms with an EMA teacher.

    Off by default: the model card measured no gain from them, and they cost 2-3x the step time
    and about twice the memory (docs/training.md). ``--semi`` or ``semi.enabled: true`` turns
    them on."""

    enabled: bool = False
    pseudo_weight: float = 0.1
    match_weight: float = 0.1
    ema_decay: float = 0.99
    tau_hi: float = 0.9
    tau_lo: float = 0.1
    rampup_fraction: float = 0.2  # linear ramp of both weights over this share of all steps
    pad_value: float = 1.0  # fill of the padded border of a coarser view (white = glass)


@dataclass(frozen=True)
class RunConfig:
    """Length, precision, device, checkpoints and logging of one run."""

    out: str = ""
    model: str = "omniseg"
    # Start of a freshly built model's generated heads: "head" (live ReLUs, our fix for dead
    # heads) or "default" (PyTorch's, as the original). Ignored with ``init`` (weights loaded).
    head_init: str = "head"
    # Nonlinearity inside the generated heads of a freshly built model: "relu" (the original) or
    # "leaky_relu" (a dead head can recover). Ignored with ``init`` (weights loaded).
    head_activation: str = "relu"
    # Start the encoder from the bundled ImageNet weights where the model has them (lite0);
    # False = random init (the ablation's control). Ignored with ``init`` (weights loaded).
    pretrained_encoder: bool = True
    init: str = ""  # "" = random init, "default" = bundled model, or a model folder
    epochs: int = 100
    max_steps: int = 0  # 0 = epochs decide; otherwise stop after this many optimiser steps
    seed: int = DEFAULT_SEED  # sampling, augmentation, init (the splits: data.split_seed)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # fp32 | bf16 | auto (bf16 on CUDA with bf16 support, else fp32)
    channels_last: bool = True
    checkpoint_minutes: float = 10.0
    val_every_epochs: int = 1
    val_batch_size: int = 4
    # Pick per-task thresholds for the saved model: on the rows data.threshold_holdout holds
    # back from training when > 0, else on val (optimistic: val then also chose them).
    tune_thresholds: bool = True
    # True: model/ = the checkpoint with the best val Dice. False: val is only logged and model/
    # = the latest weights, so nothing about the model is chosen on val (honest val numbers).
    select_best: bool = True
    log_every_steps: int = 10
    progress: bool = True
    # > 0: model/ holds an exponential moving average of the weights (decay per step, warmed
    # up as min(decay, 1 - 1/(step + 1))); 0 = the latest weights
    ema_decay: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; frozen so a run cannot drift from its config.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        validate(self)  # Python callers get the CLI's checks too

    def to_dict(self) -> dict:
        return _to_plain(self)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


TRAIN_PARTS = ("all", "decoder", "task")  # finetune.train_parts (training/finetune.py)

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
