"""User-facing parameters of ``omniseg segment`` (all recorded in summary.json)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from omniseg.catalogue import tissues
from omniseg.errors import OmnisegError
from omniseg.inference.anatomy import GLOMERULUS_CHECKS, GlomerulusSize
from omniseg.models import InferenceSettings
from omniseg.runtime.options import RunOptions

OBJECT_TYPES = ("annotation", "detection")
# Where the fine-scale capillary (PTC) pass runs: only in tubulointerstitium (tissue the coarser
# passes did not call glomerulus or artery), or on all tissue as the original did.
PTC_REGIONS = ("interstitium", "tissue")


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
    # auto (the hardware picks: runtime/choice.py), torch, onnxruntime / openvino (CPU fp32),
    # onnxruntime-int8
    backend: str = "auto"
    reader_threads: int = 2  # background tile-reading threads (0 = read in the main thread)
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
    # Inference tile and overlap (px at each scale); None = the model's config.json. Larger
    # tiles waste less compute on overlap ((512/384)² = 1.78x, (1024/896)² = 1.31x) but need
    # more memory per batch.
    tile_size: int | None = None
    tile_overlap: int | None = None
    ptc_region: str = "interstitium"
    # "on" (default): drop glomeruli without a tuft pixel or with an equivalent diameter outside
    # ``glomerulus_size`` (``inference.anatomy``), when both capsule and tuft are segmented.
    # Measured on other labs' biopsies before adopting it: docs/wsi.md.
    glomerulus_check: str = "on"
    glomerulus_size: GlomerulusSize = field(default_factory=GlomerulusSize)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise OmnisegError("--tasks: choose at least one task (e.g. --tasks dt,pt)")
        _checked = self.run_options  # device, precision, backend, batch size: checked there
        if self.reader_threads < 0:
            raise OmnisegError(f"--reader-threads must be >= 0, got {self.reader_threads}")
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
        if self.ptc_region not in PTC_REGIONS:
            raise OmnisegError(f"--ptc-region {self.ptc_region}: valid: {', '.join(PTC_REGIONS)}")
        if self.glomerulus_check not in GLOMERULUS_CHECKS:
            raise OmnisegError(
                f"--glomerulus-check {self.glomerulus_check}: valid: {', '.join(GLOMERULUS_CHECKS)}"
            )
        self._check_tile()
        if self.merge_chunk < 64 or self.thumbnail_side < 64:
            raise OmnisegError("merge_chunk and thumbnail_side must be >= 64 px")

    def _check_tile(self) -> None:
        from omniseg.models.config import MAX_TILE, MIN_TILE, check_tile_overlap

        if self.tile_size is not None and not MIN_TILE <= self.tile_size <= MAX_TILE:
            raise OmnisegError(
                f"--tile-size {self.tile_size}: must lie in [{MIN_TILE}, {MAX_TILE}]"
            )
        if self.tile_overlap is not None and self.tile_overlap < 0:
            raise OmnisegError(f"--tile-overlap must be >= 0, got {self.tile_overlap}")
        if self.tile_size is not None and self.tile_overlap is not None:
            check_tile_overlap(self.tile_size, self.tile_overlap, "--tile-overlap")

    @property
    def run_options(self) -> RunOptions:
        """How the model runs (validated on construction)."""
        return RunOptions(self.device, self.precision, self.backend, self.batch_size)

    def effective_inference(self, inference: InferenceSettings) -> InferenceSettings:
        """The model's inference settings with this run's tile overrides applied."""
        tile = inference.tile_size if self.tile_size is None else self.tile_size
        overlap = inference.tile_overlap if self.tile_overlap is None else self.tile_overlap
        return replace(inference, tile_size=tile, tile_overlap=overlap)  # checked there

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tasks"] = list(self.tasks)
        out["roi"] = None if self.roi is None else str(Path(self.roi).resolve())
        # the glomerulus check is recorded where it ran: other runs keep their summary.json as it was
        if self.glomerulus_check == "off":
            del out["glomerulus_check"], out["glomerulus_size"]
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
            "tile_size",
            "tile_overlap",
            "ptc_region",
        )
        return {k: v for k, v in self.to_dict().items() if k in keep}
