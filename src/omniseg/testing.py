"""Test doubles: a cheap pointwise stand-in for the network (tests and memory benchmarks).

Each pixel's logits depend only on its own RGB value, computed with elementwise operations in a
fixed order, so any correct tiling/stitching reproduces the whole-image result bit for bit. It
implements :class:`omniseg.runtime.predictor.SegmentModel`, the interface the pipeline needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from omniseg.models import InferenceSettings

# per task: logit(fg) = gain * (w_r * R + w_g * G + w_b * B - bias); R, G, B in [0, 1]
DEFAULT_RESPONSES: tuple[tuple[float, float, float, float], ...] = (
    (1.0, -1.0, 0.0, 0.10),  # dt: reddish
    (0.0, -1.0, 1.0, 0.10),  # pt: bluish-pink
    (-1.0, -1.0, 0.0, -0.9),  # capsule: dark-ish
    (-1.0, -1.0, -1.0, -1.2),  # tuft: dark
    (1.0, 0.0, -1.0, 0.15),  # vessel
    (0.0, 0.0, -1.0, -0.5),  # ptc: low blue
)
GAIN = 20.0


@dataclass(frozen=True)
class StandinConfig:
    architecture: str = "pointwise-standin"
    in_channels: int = 3
    size_divisor: int = 16


class PointwiseModel(nn.Module):
    """``predict_tasks(x, task_ids, scale_id) -> (N, T, 2, H, W)`` logits, pixel by pixel."""

    def __init__(
        self,
        inference: InferenceSettings | None = None,
        responses: Sequence[Sequence[float]] = DEFAULT_RESPONSES,
        *,
        size_divisor: int = 16,
    ) -> None:
        super().__init__()
        self.inference = inference or InferenceSettings()
        self.config = StandinConfig(size_divisor=size_divisor)
        self.register_buffer("responses", torch.tensor(responses, dtype=torch.float32))
        self.calls = 0

    def predict_tasks(self, x: Tensor, task_ids: Sequence[int], scale_id) -> Tensor:
        del scale_id
        self.calls += 1
        x = x.float()
        out = []
        for task in task_ids:
            w_r, w_g, w_b, bias = (float(v) for v in self.responses[int(task)])
            fg = ((x[:, 0] * w_r + x[:, 1] * w_g) + x[:, 2] * w_b - bias) * GAIN
            out.append(torch.stack([torch.zeros_like(fg), fg], dim=1))
        return torch.stack(out, dim=1)

    def forward(self, x: Tensor, task_ids, scale_ids) -> Tensor:
        tasks = torch.as_tensor(task_ids).reshape(-1).tolist()
        if len(tasks) == 1:
            return self.predict_tasks(x, tasks, scale_ids)[:, 0]
        per_sample = [
            self.predict_tasks(x[i : i + 1], [t], scale_ids)[:, 0] for i, t in enumerate(tasks)
        ]
        return torch.cat(per_sample)
