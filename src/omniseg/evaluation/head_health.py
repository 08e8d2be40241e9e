"""Are a model's generated heads alive? Hidden-unit activity of each task's dynamic head.

Omni-Seg's heads are tiny generated MLPs (8-8-2 by default). On small data a whole head can
die: its hidden ReLUs never fire, so the task predicts nothing whatever the image (seen for DT in
a calibration run of the faithful network). This measures, per task on that task's own labelled
patches at their own scale, how many hidden units never fire and how often units fire at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from omniseg.catalogue import tissues
from omniseg.data import PatchRecord, load_pair
from omniseg.models import OmniSeg, foreground_probability
from omniseg.models.heads import head_preactivations
from omniseg.runtime import image_to_tensor, inference_mode_of, model_device
from omniseg.runtime.predictor import reflect_pad


@dataclass(frozen=True)
class HeadHealth:
    """Activity of one task's head over that task's patches (per hidden layer where a tuple)."""

    task: str
    images: int
    pixels: int
    units: tuple[int, ...]  # hidden units per layer
    dead: tuple[int, ...]  # units > 0 on no pixel of any image (a dead unit)
    active_fraction: tuple[float, ...]  # share of (unit, pixel) pairs > 0
    predicted_foreground: float  # share of pixels predicted foreground at the model's threshold
    true_foreground: float  # share of pixels labelled foreground (what a healthy head nears)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def _image_activity(model: OmniSeg, record: PatchRecord) -> tuple[list, list, int, int, int]:
    """Per hidden layer: (units,) ever-active flags and (units,) active pixel counts; then the
    image's predicted and labelled foreground pixel counts and its pixel count."""
    image, mask = load_pair(record)  # checks the mask's size against the image
    device = model_device(model)
    x = image_to_tensor(image)[None].to(device)
    h, w = x.shape[-2:]
    divisor = model.config.size_divisor
    x = reflect_pad(x, -h % divisor, -w % divisor)
    tasks = torch.tensor([[record.task_id]], device=device)
    scales = torch.tensor([[record.scale_id]], device=device)
    features, gap = model.encode(x)
    params = model.head_params(gap, tasks, scales).to(features.dtype)
    *hidden, logits = head_preactivations(features, params, model.config.head)
    size = x.shape[-2:]

    def crop(z: Tensor) -> Tensor:  # (1, 1, C, H'*W') -> (C, h*w): drop the reflect padding
        return z[0, 0].reshape(z.shape[2], *size)[:, :h, :w].reshape(z.shape[2], h * w)

    fired = [(crop(z) > 0).any(dim=1).cpu() for z in hidden]
    counts = [(crop(z) > 0).sum(dim=1).cpu() for z in hidden]
    prob = foreground_probability(crop(logits).reshape(-1, h, w))  # (h, w)
    predicted = int((prob > model.inference.thresholds[record.task_id]).sum())
    return fired, counts, predicted, int(mask.sum()), h * w


def head_health(model: OmniSeg, records: Sequence[PatchRecord]) -> list[HeadHealth]:
    """One row per task present in ``records``, in catalogue order."""
    names = {t.id: t.name for t in tissues()}
    rows = []
    with inference_mode_of(model):
        for task_id in sorted({r.task_id for r in records}):
            mine = [r for r in records if r.task_id == task_id]
            fired = counts = None
            pixels, fg_pixels, true_pixels = 0, 0, 0
            for record in mine:
                f, c, fg, true, n = _image_activity(model, record)
                fired = f if fired is None else [a | b for a, b in zip(fired, f, strict=True)]
                counts = c if counts is None else [a + b for a, b in zip(counts, c, strict=True)]
                pixels, fg_pixels, true_pixels = pixels + n, fg_pixels + fg, true_pixels + true
            rows.append(HeadHealth(
                task=names[task_id], images=len(mine), pixels=pixels,
                units=tuple(int(f.numel()) for f in fired),
                dead=tuple(int((~f).sum()) for f in fired),
                active_fraction=tuple(float(c.sum()) / (c.numel() * pixels) for c in counts),
                predicted_foreground=fg_pixels / pixels, true_foreground=true_pixels / pixels,
            ))  # fmt: skip
    return rows
