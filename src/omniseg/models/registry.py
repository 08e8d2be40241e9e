"""Name -> model configuration registry (``create_model`` / ``list_models``), timm style."""

from __future__ import annotations

import dataclasses

from omniseg.errors import OmnisegError
from omniseg.models.config import HeadSpec, ModelConfig
from omniseg.models.network import OmniSeg

_TINY = {
    "stem_channels": 8,
    "widths": (8, 16, 16, 32, 32),
    "blocks": (1, 1, 1, 1, 1),
    "groups": 4,
    "head": HeadSpec(8, (8, 8), 2),
}

_REGISTRY: dict[str, ModelConfig] = {
    "omniseg": ModelConfig(architecture="omniseg", controller="scale"),
    "omniseg-task": ModelConfig(architecture="omniseg-task", controller="task"),
    "multihead": ModelConfig(architecture="multihead", controller="static"),
    "omniseg-tiny": ModelConfig(architecture="omniseg-tiny", controller="scale", **_TINY),
    "omniseg-task-tiny": ModelConfig(architecture="omniseg-task-tiny", controller="task", **_TINY),
    "multihead-tiny": ModelConfig(architecture="multihead-tiny", controller="static", **_TINY),
}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_config(name: str, **overrides) -> ModelConfig:
    if name not in _REGISTRY:
        raise OmnisegError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    valid = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise OmnisegError(f"unknown option(s) {bad} for model {name!r}; valid: {sorted(valid)}")
    return dataclasses.replace(_REGISTRY[name], **overrides)


def create_model(name: str, **overrides) -> OmniSeg:
    """Build a freshly initialised model by registry name, e.g. ``create_model("omniseg")``."""
    return OmniSeg(model_config(name, **overrides))
