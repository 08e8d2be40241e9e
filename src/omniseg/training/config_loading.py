"""Reading a training configuration: YAML + dotted overrides -> a checked :class:`TrainConfig`.

A YAML file holds every section (``data``, ``augment``, ``optim``, ``loss``, ``semi``, ``run``); CLI
flags become dotted overrides (``{"optim.lr": 1e-3}``). The resolved configuration is written to
``RUN_DIR/config.yaml`` so a run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from omniseg.errors import OmnisegError
from omniseg.training.config import DEFAULT_SEED, TrainConfig


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
