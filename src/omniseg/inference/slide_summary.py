"""summary.json of one slide as a typed value, built once from the stages' results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from omniseg.catalogue import Catalogue
from omniseg.inference.outputs import OUTPUT_NAMES, ClassTally
from omniseg.inference.results import final_dir
from omniseg.inference.scale import ScalePlan

if TYPE_CHECKING:
    from omniseg.inference.scale import ScaleStage
    from omniseg.inference.stages import SlideRun, TissueStage


@dataclass(frozen=True)
class SlideSummary:
    """summary.json of one slide, built once from the stages' results."""

    slide: str
    result_dir: str
    reader: str
    vendor: str | None
    dimensions_wh: list[int]
    levels: int
    mpp: float
    mpp_source: str
    objective_power: float | None
    tissue_area_mm2: float
    classes: dict
    objects: int
    scales: list[dict]
    tiles: dict[str, dict]
    tiles_processed: int
    tiles_skipped: int
    parameters: dict
    warnings: list[str]
    model: dict
    runtime: dict  # backend, precision chosen (and asked for), device, the CPU that decided
    omniseg_version: str
    timings_s: dict[str, float]
    outputs: list[str]

    @classmethod
    def build(
        cls, run: SlideRun, found: TissueStage, stages: Sequence[ScaleStage], tally: ClassTally
    ) -> SlideSummary:
        from omniseg import __version__

        info, source = run.reader.info, run.source
        timings = {**run.timings, "total": sum(run.timings.values())}
        return cls(
            slide=str(run.slide.resolve()),
            result_dir=str(final_dir(run.folder).resolve()),
            reader=info.reader,
            vendor=getattr(info, "vendor", None),
            dimensions_wh=list(info.dimensions),
            levels=info.level_count,
            mpp=run.mpp0,
            mpp_source=getattr(info, "mpp_source", "unknown"),
            objective_power=info.objective_power,
            tissue_area_mm2=round(found.area_mm2, 6),
            **tally.tables(),
            scales=[_scale_row(s.source.plan, run.catalogue) for s in stages],
            tiles={s.name: asdict(s.stats) for s in stages},
            tiles_processed=sum(s.stats.processed for s in stages),
            tiles_skipped=sum(s.stats.background for s in stages),
            parameters=run.settings.to_dict(),
            warnings=list(run.warnings),
            model={
                "architecture": getattr(getattr(run.model, "config", None), "architecture", None),
                "weights": source.path if source else None,
                "weights_sha256": source.sha256 if source else None,
                **run.inference.to_dict(),
            },
            runtime=runtime_record(run),
            omniseg_version=__version__,
            timings_s={k: round(v, 3) for k, v in timings.items()},
            outputs=list(OUTPUT_NAMES),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def runtime_record(run: SlideRun) -> dict:
    import torch

    from omniseg.runtime.cpu import cpu_capabilities

    predictor = run.predictor
    return {
        "backend": getattr(predictor, "backend", type(predictor).__name__),
        "backend_requested": run.settings.backend,
        # --backend auto: what the hardware picked, and why (runtime/choice.py)
        "chosen_because": getattr(getattr(predictor, "choice", None), "reason", None),
        "precision": predictor.precision,
        "precision_requested": run.settings.precision,
        "device": str(predictor.device),
        "torch": torch.__version__,
        "cpu": cpu_capabilities(),
    }


def _scale_row(plan: ScalePlan, catalogue: Catalogue) -> dict:
    return {
        "magnification": catalogue.scales[plan.scale_id].magnification,
        "mpp": plan.mpp,
        "tasks": [catalogue.tissue(t).name for t in plan.tasks],
        "shape_hw": list(plan.shape_hw),
        "upsampled": plan.upsampled,
    }
