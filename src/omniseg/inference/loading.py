"""The model of ``segment``/``demo``: :func:`omniseg.runtime.loading.load_model`, with the
source that summary.json records."""

from __future__ import annotations

from pathlib import Path

from omniseg.inference.outputs import ModelSource
from omniseg.runtime.loading import load_model


def load_segment_model(
    weights: str | Path | None,
    device: str = "auto",
    precision: str = "fp32",
    *,
    verify: bool = True,
):
    """(model in eval mode on the device, ModelSource with the weights' SHA-256)."""
    loaded = load_model(weights, device, verify=verify, precision=precision)
    return loaded.model, ModelSource(str(loaded.folder.resolve()), loaded.sha256)
