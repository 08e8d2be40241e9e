"""Load the model for ``segment``/``demo``: ``--weights`` or the bundled default, on a device."""

from __future__ import annotations

from pathlib import Path

import torch

from omniseg.inference.outputs import ModelSource
from omniseg.models.bundled import require_model_dir
from omniseg.models.pretrained import WEIGHTS_NAME, load_pretrained, sha256_of
from omniseg.runtime import resolve_device, resolve_precision


def load_segment_model(
    weights: str | Path | None,
    device: str = "auto",
    precision: str = "fp32",
    *,
    verify: bool = True,
):
    """(model in eval mode on the device, ModelSource with the weights' SHA-256).

    Without ``weights`` and without a bundled model this is an OmnisegError naming --weights.
    bf16 also switches the weights to channels_last (the fast CPU path; same maths).
    """
    folder = require_model_dir(weights)
    torch_device = resolve_device(device)
    chosen = resolve_precision(precision, torch_device)  # emulated bf16 refused, as in evaluate
    model = load_pretrained(folder, device=torch_device, verify=verify)
    if chosen == "bf16":
        model = model.to(memory_format=torch.channels_last)
    return model, ModelSource(str(Path(folder).resolve()), sha256_of(Path(folder) / WEIGHTS_NAME))
