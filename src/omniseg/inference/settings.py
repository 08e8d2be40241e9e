"""User-facing parameters of ``omniseg segment`` (all recorded in summary.json)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omniseg.catalogue import tissues
from omniseg.errors import OmnisegError
from omniseg.runtime.backends import BACKENDS
from omniseg.runtime.precision import AUTO, PRECISIONS

OBJECT_TYPES = ("annotation", "detection")


@dataclass(frozen=True)
class SegmentSettings:
    """How to segment a slide. Tile size, overlap and thresholds come from the model instead."""

    tasks: tuple[int, ...] = field(default_factory=lambda: tuple(t.id for t in tissues()))
    mpp: float | None = None
    magnification: float | None = None
    roi: Path | None = None
    device: str = "auto"
    batch_size: int = 4
    precision: str = "auto"  # bf16 where native (AVX512-BF16/AMX CPU, GPU), else fp32
    backend: str = "torch"  # or "onnxruntime" / "openvino" (CPU, fp32; docs/performance.md)
    workers: int = 2  # background reader threads (0 = read in the main thread)
    object_type: str = "annotation"
    resume: bool = False
    overwrite: bool = False
    keep_intermediate: bool = False
    merge_chunk: int = 1024  # level-0 px per side of a merge / label chunk
    thumbnail_side: int = 2000  # longest side of the tissue-detection thumbnail and overlay
    # Labels only inside the detected tissue grown by this margin (µm); None = no tissue gate.
    # Without it a kidney model may call bright glass "tubule" inside tiles that touch tissue.
    tissue_margin_um: float | None = 25.0
    progress: bool = True
    tile_order_seed: int | None = None  # shuffle batch order (tests of order independence)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise OmnisegError("--tasks: choose at least one task (e.g. --tasks dt,pt)")
        if self.batch_size < 1:
            raise OmnisegError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise OmnisegError(f"--workers must be >= 0, got {self.workers}")
        if self.precision not in (*PRECISIONS, AUTO):
            raise OmnisegError(
                f"--precision {self.precision}: valid: {', '.join((*PRECISIONS, AUTO))}"
            )
        if self.backend not in BACKENDS:
            raise OmnisegError(f"--backend {self.backend}: valid: {', '.join(BACKENDS)}")
        if self.object_type not in OBJECT_TYPES:
            raise OmnisegError(
                f"--object-type {self.object_type}: valid: {', '.join(OBJECT_TYPES)}"
            )
        if self.mpp is not None and self.magnification is not None:
            raise OmnisegError("give either --mpp or --magnification, not both")
        for name, value in (("--mpp", self.mpp), ("--magnification", self.magnification)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise OmnisegError(f"{name} must be a positive number, got {value}")
        if self.resume and self.overwrite:
            raise OmnisegError("give either --resume or --overwrite, not both")
        if self.tissue_margin_um is not None and not (
            math.isfinite(self.tissue_margin_um) and self.tissue_margin_um >= 0
        ):
            raise OmnisegError(f"--tissue-margin must be >= 0 µm, got {self.tissue_margin_um}")
        if self.merge_chunk < 64 or self.thumbnail_side < 64:
            raise OmnisegError("merge_chunk and thumbnail_side must be >= 64 px")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tasks"] = list(self.tasks)
        out["roi"] = None if self.roi is None else str(Path(self.roi).resolve())
        return out

    def work_key(self) -> dict:
        """Parameters that change intermediate results: a resume must match them."""
        keep = (
            "tasks",
            "mpp",
            "magnification",
            "roi",
            "precision",
            "backend",
            "merge_chunk",
            "thumbnail_side",
            "tissue_margin_um",
        )
        return {k: v for k, v in self.to_dict().items() if k in keep}
