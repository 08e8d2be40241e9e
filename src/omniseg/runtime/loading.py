"""The one model loader: ``--weights`` (a folder, or ``default`` / nothing for the bundled
model) -> the model on its device, with the folder and SHA-256 that summaries record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from omniseg.models import OmniSeg, load_pretrained
from omniseg.models.bundled import require_model_dir
from omniseg.models.pretrained import WEIGHTS_NAME, sha256_of
from omniseg.runtime.device import resolve_device
from omniseg.runtime.precision import resolve_precision


@dataclass(frozen=True)
class LoadedModel:
    model: OmniSeg
    folder: Path
    sha256: str
    label: str  # what the user named: the path, or bundled:<name>


def load_model(
    weights: str | Path | None,
    device: str | torch.device = "auto",
    *,
    verify: bool = True,
    precision: str | None = None,
) -> LoadedModel:
    """Load in eval mode on ``device`` (``auto``: the GPU when usable). With ``precision`` it is
    checked first (emulated bf16 is refused before the weights load), and bf16 switches the
    weights to channels_last (the fast CPU path; same maths). An OmnisegError names --weights
    when there is no model."""
    folder = require_model_dir(weights)
    torch_device = resolve_device(device)
    chosen = None if precision is None else resolve_precision(precision, torch_device)
    model = load_pretrained(folder, device=torch_device, verify=verify)
    if chosen == "bf16":
        model = model.to(memory_format=torch.channels_last)
    label = str(weights) if weights not in (None, "default") else f"bundled:{folder.name}"
    return LoadedModel(model, Path(folder), sha256_of(Path(folder) / WEIGHTS_NAME), label)
