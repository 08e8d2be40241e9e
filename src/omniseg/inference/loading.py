"""Load the model for ``segment``/``demo``: ``--weights`` or the bundled default, on a device."""

from __future__ import annotations

from pathlib import Path

import torch

from omniseg.errors import OmnisegError
from omniseg.evaluation.devices import resolve_device
from omniseg.evaluation.predict import bf16_supported
from omniseg.inference.summary import ModelSource
from omniseg.models.bundled import require_model_dir
from omniseg.models.pretrained import WEIGHTS_NAME, load_pretrained, sha256_of


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
    if precision == "bf16" and not bf16_supported(torch_device):
        # evaluate refuses this too: without native kernels bf16 is emulated, ~5x slower than fp32
        raise OmnisegError(
            f"--precision bf16: this {torch_device.type} device has no native bf16 support "
            "(needs AVX512-BF16/AMX on CPU, or a GPU); use --precision fp32"
        )
    model = load_pretrained(folder, device=torch_device, verify=verify)
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
    return model, ModelSource(str(Path(folder).resolve()), sha256_of(Path(folder) / WEIGHTS_NAME))
