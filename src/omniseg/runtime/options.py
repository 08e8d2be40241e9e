"""How a model runs: device, number format, backend and batch size, checked once, here.

``segment`` (``SegmentSettings``), ``evaluate`` and the cohort workers build one; a bad value is
one clear line naming the option before any model loads. ``device`` is checked by name here (a
CUDA index is checked where the device is resolved, on the machine that runs it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from omniseg.errors import OmnisegError
from omniseg.runtime.backends import BACKEND_CHOICES
from omniseg.runtime.device import DEVICE_CHOICES
from omniseg.runtime.precision import AUTO, PRECISIONS

_CUDA_INDEX = re.compile(r"^cuda:\d+$")


@dataclass(frozen=True)
class RunOptions:
    device: str = "auto"
    precision: str = AUTO
    backend: str = "auto"
    batch_size: int = 4

    def __post_init__(self) -> None:
        device = str(self.device).strip().lower()
        if device not in DEVICE_CHOICES and not _CUDA_INDEX.match(device):
            raise OmnisegError(
                f"--device {self.device}: unknown device; valid: {', '.join(DEVICE_CHOICES)}, "
                "cuda:N"
            )
        if self.precision not in (*PRECISIONS, AUTO):
            raise OmnisegError(
                f"--precision {self.precision}: unknown; valid: {', '.join((*PRECISIONS, AUTO))}"
            )
        if self.backend not in BACKEND_CHOICES:
            raise OmnisegError(
                f"--backend {self.backend}: unknown; valid: {', '.join(BACKEND_CHOICES)}"
            )
        if self.batch_size < 1:
            raise OmnisegError(f"--batch-size must be >= 1, got {self.batch_size}")
