"""``segment_slide`` / ``segment_slides``: the whole-slide pipeline behind ``omniseg segment``.

Stages (each timed in summary.json): tissue detection on a thumbnail -> per-scale tile inference
into native-scale zarr stores -> chunked merge + connected components at level 0 -> objects ->
outputs (labels.ome.tif, objects.geojson, objects.csv, overlay.png, summary.json).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniseg.allocator import tune_allocator
from omniseg.catalogue import scales, tissue
from omniseg.errors import OmnisegError
from omniseg.evaluation.predict import inference_mode_of, model_device
from omniseg.inference.assemble import ScaleSource, assemble, iter_objects, label_tile_reader
from omniseg.inference.gates import GlassGate, TissueGate, grow_mask, roi_mask
from omniseg.inference.results import (
    SUMMARY_NAME,
    WORK_NAME,
    final_dir,
    has_content,
    prepare_result_dir,
    result_dir,
    staging_dir,
    swap_in,
)
from omniseg.inference.settings import SegmentSettings
from omniseg.inference.spool import ObjectSpool
from omniseg.inference.store import WorkStore
from omniseg.inference.summary import (
    ClassTally,
    ModelSource,
    label_thumbnail,
    write_outputs,
)
from omniseg.inference.tiles import ScalePlan, TileStats, processed_flags, run_scale
from omniseg.inference.tiling import Tile, Window, check_tiling, grid_shape
from omniseg.io import open_slide, plan_level, target_shape, thumbnail
from omniseg.io.atomic import DiskFullError, is_disk_full
from omniseg.io.base import SlideInfo, SlideReader
from omniseg.io.roi import load_roi
from omniseg.io.tissue import detect_tissue, glass_background, tissue_thresholds
from omniseg.locks import folder_lock

log = logging.getLogger(__name__)
UM2_PER_MM2 = 1e6
OBJECT_SPOOL_NAME = "objects.spool"  # in the work dir: objects stream through it to the writers


@dataclass
class SlideResult:
    """Outcome of one slide: ``error`` is set when it failed (the others still ran)."""

    slide: Path
    out_dir: Path | None
    summary: dict | None = None
    skipped: bool = False  # --resume found a finished result
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def plan_scales(info: SlideInfo, task_ids: Sequence[int]) -> list[ScalePlan]:
    """One plan per magnification used by the chosen tasks, coarse to fine."""
    plans = []
    for scale in sorted(scales(), key=lambda s: -s.mpp):
        chosen = tuple(t for t in sorted(task_ids) if tissue(t).scale_id == scale.id)
        if not chosen:
            continue
        level = plan_level(info, scale.mpp)
        plans.append(
            ScalePlan(
                scale_id=scale.id,
                mpp=scale.mpp,
                tasks=chosen,
                shape_hw=target_shape(info, scale.mpp),
                to_level0=scale.mpp / float(info.mpp),
                upsampled=level.upsampled,
            )
        )
    return plans


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


def _work_key(settings: SegmentSettings, model, source: ModelSource | None) -> dict:
    return {
        **settings.work_key(),
        "inference": model.inference.to_dict(),
        "weights_sha256": source.sha256 if source else None,
    }


def segment_slide(
    path: str | Path,
    out_dir: str | Path,
    settings: SegmentSettings,
    model,
    *,
    model_source: ModelSource | None = None,
    result_folder: Path | None = None,
) -> SlideResult:
    """Segment one slide into ``out_dir/<stem>/`` (or ``result_folder``); raises OmnisegError.

    Bad inputs (unreadable slide, unknown resolution, bad ROI) fail before anything is written.
    """
    slide = Path(path)
    check_tiling(model.inference.tile_size, model.inference.tile_overlap)
    tune_allocator()
    started = time.perf_counter()
    reader = open_slide(slide, mpp=settings.mpp, magnification=settings.magnification)
    try:
        info = reader.info
        roi = load_roi(settings.roi, info) if settings.roi is not None else None
        plans = plan_scales(info, settings.tasks)
        folder = result_folder or result_dir(Path(out_dir), slide)
        with folder_lock(folder):
            # --overwrite builds the new result beside the old one and swaps at the end, so a
            # failure (disk full, a crash) never costs the user both.
            staging = staging_dir(folder) if settings.overwrite and has_content(folder) else None
            work_folder = staging or folder
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if prepare_result_dir(
                work_folder,
                slide,
                resume=settings.resume,
                overwrite=settings.overwrite and staging is None,
            ):
                summary = json.loads((folder / SUMMARY_NAME).read_text(encoding="utf-8"))
                log.info("%s: finished result found in %s; kept (--resume)", slide.name, folder)
                return SlideResult(slide, folder, summary, skipped=True)
            timings = {"open": time.perf_counter() - started}
            with inference_mode_of(model):
                summary = _run(
                    reader, slide, work_folder, settings, model, model_source, roi, plans, timings
                )
            if staging is not None:
                swap_in(staging, folder)
        return SlideResult(slide, folder, summary, warnings=summary["warnings"])
    except PermissionError as exc:
        raise OmnisegError(
            f"{exc.filename or out_dir}: permission denied; choose an output folder you can write"
        ) from exc
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        where = getattr(exc, "path", None) or getattr(exc, "filename", None) or out_dir
        advice = "finished outputs and tiles are kept: free space and rerun with --resume"
        raise DiskFullError(Path(where), advice) from exc
    finally:
        reader.close()


def _run(reader: SlideReader, slide, folder, settings, model, source, roi, plans, timings) -> dict:
    info = reader.info
    mpp0 = float(info.mpp)
    height0, width0 = info.dimensions[1], info.dimensions[0]
    warnings = [
        f"{tissue(plan.tasks[0]).scale.magnification}x ({plan.mpp} µm/px) is finer than the "
        f"slide's level 0 ({mpp0:.4g} µm/px): tasks "
        f"{', '.join(tissue(t).name for t in plan.tasks)} read upsampled from level 0"
        for plan in plans
        if plan.upsampled
    ]
    for message in warnings:
        log.warning("%s: %s", slide.name, message)
    store = WorkStore(
        folder / WORK_NAME, _work_key(settings, model, source), resume=settings.resume
    )
    bar = (lambda stage: f"{slide.name}: {stage}") if settings.progress else (lambda stage: None)

    clock = time.perf_counter()
    thumb, downsample = thumbnail(reader, settings.thumbnail_side)
    cut_offs = tissue_thresholds(thumb)
    found = detect_tissue(thumb, thresholds=cut_offs)
    work = found.copy()
    if roi is not None:
        thumb_roi = _roi_on_thumbnail(roi, work.shape, downsample)
        work &= thumb_roi
    tissue_area_mm2 = float(work.sum()) * (downsample * mpp0) ** 2 / UM2_PER_MM2
    if not work.any():
        warnings.append("no tissue found on the thumbnail (inside the ROI): nothing was segmented")
        log.warning("%s: %s", slide.name, warnings[-1])
    gate = glass = None
    if settings.tissue_margin_um is not None:
        radius = math.ceil(settings.tissue_margin_um / (downsample * mpp0))
        gate = TissueGate(grow_mask(work, radius), downsample)
        open_glass = glass_background(found, downsample * mpp0)
        glass = GlassGate(reader, cut_offs, open_glass, downsample)
    timings["tissue"] = time.perf_counter() - clock

    device = model_device(model)
    tile, overlap = model.inference.tile_size, model.inference.tile_overlap
    needs = _needs_tile(work, downsample)
    tile_stats: dict[str, TileStats] = {}
    sources = []
    for plan in plans:
        name = f"{scales()[plan.scale_id].magnification}x"
        clock = time.perf_counter()
        tile_stats[name] = run_scale(
            reader,
            plan,
            model,
            store,
            needs,
            device=device,
            batch_size=settings.batch_size,
            precision=settings.precision,
            workers=settings.workers,
            progress=bar(f"inference {name}"),
            order_seed=settings.tile_order_seed,
        )
        timings[f"inference_{name}"] = time.perf_counter() - clock
        grid = grid_shape(plan.shape_hw, tile, overlap)
        windows = store.window_codes(plan.scale_id, len(plan.tasks), grid, tile)
        sources.append(ScaleSource(plan, windows, processed_flags(store, plan, tile, overlap)))

    clock = time.perf_counter()
    assembly = assemble(
        sources,
        store,
        (height0, width0),
        thresholds=model.inference.thresholds,
        min_area_um2=model.inference.min_area_um2,
        mpp=mpp0,
        tile=tile,
        overlap=overlap,
        chunk=settings.merge_chunk,
        roi=roi,
        tissue=gate,
        glass=glass,
        progress=bar("merge"),
    )
    timings["merge"] = time.perf_counter() - clock
    # Objects are traced one at a time into an on-disk spool and replayed to each writer, so
    # memory holds one polygon at a time, never the whole slide's (only per-class tallies).
    with ObjectSpool(store.work_dir / OBJECT_SPOOL_NAME) as objects:
        clock = time.perf_counter()
        tally = ClassTally()
        for obj in iter_objects(assembly, mpp0):
            objects.append(obj)
            tally.add(obj)
        timings["objects"] = time.perf_counter() - clock

        summary = {
            "slide": str(slide.resolve()),
            "result_dir": str(final_dir(folder).resolve()),
            "reader": info.reader,
            "vendor": getattr(info, "vendor", None),
            "dimensions_wh": [width0, height0],
            "levels": info.level_count,
            "mpp": mpp0,
            "mpp_source": getattr(info, "mpp_source", "unknown"),
            "objective_power": info.objective_power,
            "tissue_area_mm2": round(tissue_area_mm2, 6),
            **tally.tables(),
            "scales": [
                {
                    "magnification": scales()[p.scale_id].magnification,
                    "mpp": p.mpp,
                    "tasks": [tissue(t).name for t in p.tasks],
                    "shape_hw": list(p.shape_hw),
                    "upsampled": p.upsampled,
                }
                for p in plans
            ],
            "tiles": {k: vars(v) for k, v in tile_stats.items()},
            "tiles_processed": sum(v.processed for v in tile_stats.values()),
            "tiles_skipped": sum(v.background for v in tile_stats.values()),
            "parameters": settings.to_dict(),
            "warnings": warnings,
        }
        write_outputs(
            folder,
            summary,
            objects,
            labels_shape=(height0, width0),
            read_tile=label_tile_reader(assembly, settings.merge_chunk),
            thumb=thumb,
            thumb_labels=label_thumbnail(assembly.labels, thumb.shape[:2], downsample),
            mpp=mpp0,
            model=model,
            source=source,
            settings=settings,
            timings=timings,
        )
    if not settings.keep_intermediate:
        store.remove()
    return json.loads((folder / SUMMARY_NAME).read_text(encoding="utf-8"))


def _roi_on_thumbnail(roi, shape_hw: tuple[int, int], downsample: float) -> np.ndarray:
    """The ROI rasterised on the thumbnail grid (slightly generous: any touched pixel counts)."""
    from shapely import affinity

    scaled = affinity.scale(roi, 1 / downsample, 1 / downsample, origin=(0, 0))
    inside = roi_mask(scaled, Window(0, 0, *shape_hw))
    touched = roi_mask(scaled.buffer(0.75), Window(0, 0, *shape_hw))
    return inside | touched


def _naming(slide: Path, message: str) -> str:
    """The message, starting with the slide's path unless it already names the file."""
    return message if str(slide) in message or slide.name in message else f"{slide}: {message}"


def segment_slides(
    paths: Sequence[str | Path],
    out: str | Path,
    settings: SegmentSettings,
    model,
    *,
    model_source: ModelSource | None = None,
) -> list[SlideResult]:
    """Segment several slides; a failing slide is reported and the others go on."""
    out = Path(out)
    taken: set[str] = set()
    results = []
    for path in paths:
        slide = Path(path)
        folder = result_dir(out, slide, taken)
        taken.add(folder.name)
        try:
            results.append(
                segment_slide(
                    slide, out, settings, model, model_source=model_source, result_folder=folder
                )
            )
        except OmnisegError as exc:  # reported once, by the caller (the CLI prints one line)
            results.append(SlideResult(slide, None, error=_naming(slide, str(exc))))
        except Exception as exc:
            log.debug("%s: unexpected failure", slide, exc_info=True)
            message = f"unexpected failure: {type(exc).__name__}: {exc} (rerun with --debug)"
            results.append(SlideResult(slide, None, error=_naming(slide, message)))
    return results
