"""Training configuration: one frozen dataclass with nested sections, loaded from YAML + overrides.

A YAML file holds every section (``data``, ``augment``, ``optim``, ``loss``, ``semi``, ``run``); CLI
flags become dotted overrides (``{"optim.lr": 1e-3}``). The resolved configuration is written to
``RUN_DIR/config.yaml`` so a run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from omniseg.data.augment import AugmentConfig
from omniseg.errors import OmnisegError

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
        from omniseg.training.config_checks import validate

        validate(self)  # Python callers get the CLI's checks too

    def to_dict(self) -> dict:
        return _to_plain(self)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise a clear error."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise OmnisegError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1]
        return tuple(_coerce(v, item, where) for v in value)
    try:
        if annotation is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool | int):
                return bool(value)
            raise ValueError(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return "" if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise OmnisegError(f"{where}: expected {annotation.__name__}, got {value!r}") from exc
    return value


def _build(cls: type, raw: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise OmnisegError(
            f"{source}: unknown key(s) {[prefix + k for k in unknown]}; valid: {sorted(known)}"
        )
    kwargs = {}
    for name, value in raw.items():
        annotation = hints[name]
        where = f"{source}: {prefix}{name}"
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise OmnisegError(f"{where}: expected a mapping of {annotation.__name__} fields")
            kwargs[name] = _build(annotation, value, f"{prefix}{name}.", source)
        else:
            kwargs[name] = _coerce(value, annotation, where)
    return cls(**kwargs)


def _merge(base: dict, dotted: dict[str, Any]) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in dotted.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise OmnisegError(f"override {key}: {part} is not a section")
        node[parts[-1]] = value
    return out


def config_from_dict(raw: dict, source: str = "config") -> TrainConfig:
    return _build(TrainConfig, raw or {}, "", source)  # validated on construction


def with_legacy_split_seed(raw: dict) -> dict:
    """A run's saved config from before ``data.split_seed`` existed: its splits were seeded by
    ``run.seed``, so resuming it must keep that seed, not take the new default."""
    data = raw.get("data")
    if not isinstance(data, dict) or "split_seed" in data:
        return raw
    run = raw.get("run") if isinstance(raw.get("run"), dict) else {}
    return {**raw, "data": {**data, "split_seed": run.get("seed", DEFAULT_SEED)}}


def load_train_config(
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    saved_run: bool = False,
) -> TrainConfig:
    """Read a YAML config (optional) and apply dotted overrides such as ``{"run.epochs": 5}``.

    ``saved_run``: the file is a run's own ``config.yaml`` (resume), read as that run was made.
    """
    raw: dict = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except FileNotFoundError as exc:
            raise OmnisegError(
                f"{p}: config file not found; pass an existing --config YAML"
            ) from exc
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise OmnisegError(f"{p}: unreadable YAML config ({exc})") from exc
        if not isinstance(raw, dict):
            raise OmnisegError(f"{p}: top level must be a mapping of sections (data, optim, ...)")
    if saved_run:
        raw = with_legacy_split_seed(raw)
    merged = _merge(raw, {k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(merged, source)


def replace_config(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted overrides applied (and checked again)."""
    return config_from_dict(_merge(config.to_dict(), overrides), "overrides")


def dump_train_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
