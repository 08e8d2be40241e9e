"""The stages of one slide run, each returning a typed value: tissue -> per-scale predictions ->
merged label map -> objects -> outputs (``slide_summary.SlideSummary`` is built from them).

:class:`SlideRun` carries what every stage reads (slide, settings, model, predictor, store,
timings), so no stage takes a dozen arguments; ``pipeline.segment_slide`` runs them in order.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniseg.catalogue import Catalogue, catalogue_of, tissue
from omniseg.inference.anatomy import GlomerulusSize
from omniseg.inference.assemble import (
    Assembly,
    MergeSpec,
    assemble,
    iter_objects,
    label_tile_reader,
)
from omniseg.inference.chunk_cache import ChunkCache
from omniseg.inference.gates import Gates, GlassGate, TissueGate, grow_mask
from omniseg.inference.interstitium import gates_fine_pass, interstitium_work, structure_mask
from omniseg.inference.outputs import (
    UM2_PER_MM2,
    ClassTally,
    LabelImage,
    ModelSource,
    label_thumbnail,
    write_outputs,
)
from omniseg.inference.scale import ScalePlan, ScaleStage
from omniseg.inference.scale_runner import TileLoop, run_scale
from omniseg.inference.settings import SegmentSettings
from omniseg.inference.spool import ObjectSpool
from omniseg.inference.store import WorkStore
from omniseg.inference.tiling import Tile
from omniseg.io import thumbnail
from omniseg.io.base import SlideReader
from omniseg.io.raster import Window, roi_mask
from omniseg.io.tissue import glass_background, tissue_and_thresholds
from omniseg.models import InferenceSettings
from omniseg.runtime import Predictor
from omniseg.runtime.predictor import SegmentModel

log = logging.getLogger(__name__)
OBJECT_SPOOL_NAME = "objects.spool"  # in the work dir: objects stream through it to the writers


@dataclass
class SlideRun:
    """Everything the stages of one slide share; ``timings`` and ``warnings`` fill as they run."""

    slide: Path
    reader: SlideReader
    folder: Path  # where the result is built (the final folder, or its --overwrite staging)
    settings: SegmentSettings
    model: SegmentModel
    predictor: Predictor
    source: ModelSource | None
    roi: object | None
    plans: Sequence[ScalePlan]
    store: WorkStore
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def inference(self) -> InferenceSettings:
        """The model's inference settings with this run's tile overrides."""
        return self.settings.effective_inference(self.model.inference)

    @property
    def catalogue(self) -> Catalogue:
        return catalogue_of(self.model)

    @property
    def mpp0(self) -> float:
        return float(self.reader.info.mpp)

    @property
    def shape0(self) -> tuple[int, int]:
        width, height = self.reader.info.dimensions
        return height, width

    def bar(self, stage: str) -> str | None:
        return f"{self.slide.name}: {stage}" if self.settings.progress else None

    def warn(self, message: str) -> None:
        log.warning("%s: %s", self.slide.name, message)
        self.warnings.append(message)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        clock = time.perf_counter()
        yield
        self.timings[stage] = time.perf_counter() - clock


@dataclass(frozen=True)
class TissueStage:
    """The thumbnail, where to work on it (tissue ∩ ROI), and the full-resolution gates."""

    thumb: np.ndarray
    downsample: float  # level-0 px per thumbnail px
    work: np.ndarray  # bool thumbnail mask
    area_mm2: float
    gates: Gates


def upsampling_warnings(run: SlideRun) -> None:
    cat = run.catalogue
    for plan in run.plans:
        if plan.upsampled:
            run.warn(
                f"{cat.scales[plan.scale_id].magnification}x ({plan.mpp} µm/px) is finer than "
                f"the slide's level 0 ({run.mpp0:.4g} µm/px): tasks "
                f"{', '.join(cat.tissue(t).name for t in plan.tasks)} read upsampled from level 0"
            )


def find_tissue(run: SlideRun) -> TissueStage:
    """Tissue on a thumbnail (inside the ROI), and the gates that keep labels off glass."""
    settings, mpp0 = run.settings, run.mpp0
    thumb, downsample = thumbnail(run.reader, settings.thumbnail_side, settings.reader_threads)
    found, cut_offs = tissue_and_thresholds(thumb)
    work = found.copy()
    if run.roi is not None:
        work &= _roi_on_thumbnail(run.roi, work.shape, downsample)
    if not work.any():
        run.warn("no tissue found on the thumbnail (inside the ROI): nothing was segmented")
    gates = Gates(roi=run.roi)
    if settings.tissue_margin_um is not None:
        radius = math.ceil(settings.tissue_margin_um / (downsample * mpp0))
        open_glass = glass_background(found, downsample * mpp0)
        gates = Gates(
            roi=run.roi,
            tissue=TissueGate(grow_mask(work, radius), downsample),
            glass=GlassGate(run.reader, cut_offs, open_glass, downsample),
        )
    area = float(work.sum()) * (downsample * mpp0) ** 2 / UM2_PER_MM2
    return TissueStage(thumb, downsample, work, area, gates)


def infer_scale(
    run: SlideRun, plan: ScalePlan, found: TissueStage, earlier: Sequence[ScaleStage] = ()
) -> ScaleStage:
    """Every tissue tile of one scale through the predictor into the work store (the PTC pass
    only in tubulointerstitium, from the ``earlier`` coarser passes, unless ``ptc_region`` is
    ``tissue``)."""
    inference, settings = run.inference, run.settings
    name = f"{run.catalogue.scales[plan.scale_id].magnification}x"
    loop = TileLoop(settings.batch_size, settings.reader_threads, settings.tile_order_seed)
    work, gated = found.work, 0
    if settings.ptc_region == "interstitium" and gates_fine_pass(plan) and earlier:
        with run.timed(f"interstitium_{name}"):
            structures = structure_mask(
                [s.source for s in earlier], inference, work.shape, found.downsample
            )
            work = interstitium_work(work, structures, found.downsample, run.mpp0)
            gated = _count_gated(plan, inference, found, work)
    needs = _needs_tile(work, found.downsample)
    with run.timed(f"inference_{name}"):
        stats, source = run_scale(
            run.reader, plan, run.predictor, inference, run.store, needs, loop,
            run.bar(f"inference {name}"),
        )  # fmt: skip
    stats.outside_interstitium = gated  # not background: tissue the gate left out
    stats.background -= gated
    return ScaleStage(name, source, stats)


def _count_gated(
    plan: ScalePlan, inference: InferenceSettings, found: TissueStage, work: np.ndarray
) -> int:
    """Tissue tiles the interstitium gate skips."""
    on_tissue = _needs_tile(found.work, found.downsample)
    in_interstitium = _needs_tile(work, found.downsample)
    return sum(on_tissue(plan, t) and not in_interstitium(plan, t) for t in plan.grid)


def merge_scales(run: SlideRun, found: TissueStage, stages: Sequence[ScaleStage]) -> Assembly:
    inference = run.inference
    spec = MergeSpec(
        thresholds=inference.thresholds,
        min_area_um2=inference.min_area_um2,
        mpp=run.mpp0,
        tile=inference.tile_size,
        overlap=inference.tile_overlap,
        chunk=run.settings.merge_chunk,
        glomerulus_size=checked_size(run.settings),
    )
    with run.timed("merge"):
        sources = [s.source for s in stages]
        return assemble(
            sources, run.store, run.shape0, spec, found.gates, run.bar("merge"),
            threads=run.settings.reader_threads,
        )  # fmt: skip


def checked_size(settings: SegmentSettings) -> GlomerulusSize | None:
    """The glomerulus size range to enforce, or None when the check is off or cannot apply: a
    run without the tuft task (or the capsule task) has no tufts to look for."""
    both = {tissue("capsule").id, tissue("tuft").id} <= set(settings.tasks)
    return settings.glomerulus_size if settings.glomerulus_check == "on" and both else None


def trace_objects(run: SlideRun, assembly: Assembly, spool: ObjectSpool) -> ClassTally:
    """Objects traced one at a time into the on-disk spool; only per-class tallies stay in
    memory, never a whole slide's polygons."""
    tally = ClassTally(run.catalogue)
    with run.timed("objects"):
        for obj in iter_objects(assembly, run.mpp0, threads=run.settings.reader_threads):
            spool.append(obj)
            tally.add(obj)
    return tally


def write_result_files(
    run: SlideRun, found: TissueStage, assembly: Assembly, objects: ObjectSpool
) -> None:
    labels = LabelImage(
        shape_hw=run.shape0,
        read_tile=label_tile_reader(assembly),
        thumb=found.thumb,
        thumb_labels=label_thumbnail(
            ChunkCache(assembly.labels, nonempty=assembly.nonempty),
            found.thumb.shape[:2],
            found.downsample,
        ),
    )
    with run.timed("outputs"):
        write_outputs(
            run.folder, objects, labels, mpp=run.mpp0, object_type=run.settings.object_type,
            catalogue=run.catalogue, threads=max(1, run.settings.reader_threads),
        )  # fmt: skip


def _needs_tile(work: np.ndarray, downsample: float):
    """Tile filter: the tile's core touches tissue (and the ROI) on the thumbnail."""
    height, width = work.shape

    def needs(plan: ScalePlan, tile: Tile) -> bool:
        f = plan.to_level0 / downsample
        core = tile.core
        y0 = min(math.floor(core.y * f), height - 1)
        x0 = min(math.floor(core.x * f), width - 1)
        y1 = max(math.ceil(core.y1 * f), y0 + 1)
        x1 = max(math.ceil(core.x1 * f), x0 + 1)
        return bool(work[y0:y1, x0:x1].any())

    return needs


def _roi_on_thumbnail(roi, shape_hw: tuple[int, int], downsample: float) -> np.ndarray:
    """The ROI rasterised on the thumbnail grid (slightly generous: any touched pixel counts)."""
    from shapely import affinity

    scaled = affinity.scale(roi, 1 / downsample, 1 / downsample, origin=(0, 0))
    inside = roi_mask(scaled, Window(0, 0, *shape_hw))
    touched = roi_mask(scaled.buffer(0.75), Window(0, 0, *shape_hw))
    return inside | touched
