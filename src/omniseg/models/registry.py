"""Name -> model configuration registry (``create_model`` / ``list_models``), timm style."""

from __future__ import annotations

import dataclasses

from omniseg.errors import OmnisegError
from omniseg.models.config import HeadSpec, ModelConfig
from omniseg.models.encoders import load_encoder_weights
from omniseg.models.network import OmniSeg

_TINY = {
    "stem_channels": 8,
    "widths": (8, 16, 16, 32, 32),
    "blocks": (1, 1, 1, 1, 1),
    "groups": 4,
    "head": HeadSpec(8, (8, 8), 2),
}

# EfficientNet-Lite0 (ImageNet) encoder + U-Net decoder under the same controller and head.
_LITE0 = {
    "encoder": "efficientnet-lite0",
    "encoder_weights": "imagenet",
    "stem_channels": 32,
    "widths": (16, 24, 40, 112, 320),
    "blocks": (),
    "decoder_channels": (128, 64, 32, 16, 16),
    "groups": 8,
}
_LITE_TINY = {
    "encoder": "efficientnet-lite-tiny",
    "stem_channels": 8,
    "widths": (8, 8, 16, 16, 32),
    "blocks": (),
    "decoder_channels": (16, 16, 8, 8, 8),
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
    "omniseg-lite0": ModelConfig(architecture="omniseg-lite0", controller="scale", **_LITE0),
    "omniseg-lite0-task": ModelConfig(
        architecture="omniseg-lite0-task", controller="task", **_LITE0
    ),
    "omniseg-lite1": ModelConfig(
        architecture="omniseg-lite1",
        controller="scale",
        **{**_LITE0, "encoder": "efficientnet-lite1"},
    ),
    "omniseg-lite0-tiny": ModelConfig(
        architecture="omniseg-lite0-tiny", controller="scale", **_LITE_TINY
    ),
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


def create_model(name: str, *, pretrained_encoder: bool = True, **overrides) -> OmniSeg:
    """Build a freshly initialised model by registry name, e.g. ``create_model("omniseg")``.

    ``pretrained_encoder``: start the encoder from the bundled weights its registry entry names
    (ImageNet for ``omniseg-lite0*``); False gives random init. Models without any are unaffected.
    """
    if not pretrained_encoder:
        overrides["encoder_weights"] = ""
    config = model_config(name, **overrides)
    model = OmniSeg(config)
    on_meta = any(p.is_meta for p in model.parameters())  # shapes only (omniseg info)
    if config.encoder_weights and not on_meta:
        load_encoder_weights(model.backbone.encoder, config.encoder, config.encoder_weights)
    return model
