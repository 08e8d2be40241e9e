"""``segment_slide`` / ``segment_slides``: the whole-slide pipeline behind ``omniseg segment``.

Opens the slide, takes the result folder's lock, handles --resume/--overwrite, then runs the
stages of :mod:`omniseg.inference.stages` (each timed in summary.json): tissue detection on a
thumbnail -> per-scale tile inference into native-scale zarr stores -> chunked merge +
connected components at level 0 -> objects -> outputs (labels.ome.tif, objects.geojson,
objects.csv, overlay.png, summary.json last).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omniseg.atomic import DiskFullError, is_disk_full
from omniseg.catalogue import catalogue_of
from omniseg.errors import OmnisegError
from omniseg.inference.identity import check_finished_matches, check_same_slide, slide_identity
from omniseg.inference.outputs import ModelSource, write_summary
from omniseg.inference.results import (
    SUMMARY_NAME,
    WORK_NAME,
    claimed_result_dir,
    final_dir,
    has_content,
    prepare_result_dir,
    renamed_note,
    result_dir,
    staging_dir,
    swap_in,
)
from omniseg.inference.scale import plan_scales
from omniseg.inference.settings import SegmentSettings
from omniseg.inference.slide_summary import SlideSummary
from omniseg.inference.spool import ObjectSpool
from omniseg.inference.stages import (
    OBJECT_SPOOL_NAME,
    SlideRun,
    find_tissue,
    infer_scale,
    merge_scales,
    trace_objects,
    upsampling_warnings,
    write_result_files,
)
from omniseg.inference.store import WorkStore
from omniseg.io import open_slide
from omniseg.io.roi import load_roi
from omniseg.runtime import Predictor
from omniseg.runtime.backends import make_predictor
from omniseg.runtime.memory import tune_allocator
from omniseg.runtime.predictor import SegmentModel

log = logging.getLogger(__name__)


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


def _work_key(
    settings: SegmentSettings, model, source: ModelSource | None, predictor: Predictor
) -> dict:
    return {
        **settings.work_key(),
        "precision": predictor.precision,  # what ``auto`` resolved to on this machine
        "inference": settings.effective_inference(model.inference).to_dict(),
        "weights_sha256": source.sha256 if source else None,
    }


def segment_slide(
    path: str | Path,
    out_dir: str | Path,
    settings: SegmentSettings,
    model: SegmentModel,
    *,
    model_source: ModelSource | None = None,
    result_folder: Path | None = None,
    predictor: Predictor | None = None,
) -> SlideResult:
    """Segment one slide into ``out_dir/<stem>/`` (or ``result_folder``); raises OmnisegError.

    Bad inputs (unreadable slide, unknown resolution, bad ROI) fail before anything is written.
    ``predictor`` (default: the one ``settings.backend`` names) lets several slides share one
    ONNX Runtime session or compiled OpenVINO model.
    """
    slide = Path(path)
    settings.effective_inference(
        model.inference
    )  # a tile override the model cannot take fails here
    predictor = predictor or build_predictor(model, settings, model_source)  # fails up front
    tune_allocator()
    started = time.perf_counter()
    reader = open_slide(slide, mpp=settings.mpp, magnification=settings.magnification)
    try:
        with _output_errors(out_dir):
            return _segment_open_slide(
                slide, reader, out_dir=out_dir, settings=settings, model=model,
                predictor=predictor, source=model_source, result_folder=result_folder,
                started=started,
            )  # fmt: skip
    finally:
        reader.close()


def build_predictor(model, settings: SegmentSettings, source: ModelSource | None) -> Predictor:
    """The predictor ``settings.backend`` names (an ONNX Runtime session, an OpenVINO compile
    or torch), built once and shared by every slide of a run."""
    return make_predictor(
        model, settings.backend, settings.precision,
        model_dir=source.path if source else None, sha256=source.sha256 if source else None,
    )  # fmt: skip


@contextlib.contextmanager
def _output_errors(out_dir) -> Iterator[None]:
    """A non-writable or full output disk becomes one clear line (with the resume advice)."""
    try:
        yield
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


def _segment_open_slide(
    slide: Path,
    reader,
    *,
    out_dir,
    settings: SegmentSettings,
    model: SegmentModel,
    predictor: Predictor,
    source: ModelSource | None,
    result_folder: Path | None,
    started: float,
) -> SlideResult:
    """Lock the result folder, honour --resume/--overwrite, run the stages."""
    info = reader.info
    roi = load_roi(settings.roi, info) if settings.roi is not None else None
    plans = plan_scales(
        info, settings.tasks, catalogue_of(model), settings.effective_inference(model.inference)
    )
    # chosen and locked together: under the lock it is checked to be this slide's
    with claimed_result_dir(Path(out_dir), slide, result_folder) as folder:
        note = renamed_note(final_dir(folder), slide)
        if note:
            log.warning(note)
        # --overwrite builds the new result beside the old one and swaps at the end, so a
        # failure (disk full, a crash) never costs the user both.
        staging = staging_dir(folder) if settings.overwrite and has_content(folder) else None
        work_folder = staging or folder
        orphan = staging_dir(folder)  # a stopped --overwrite's half-built result (we hold the lock)
        if orphan.exists():
            shutil.rmtree(orphan, ignore_errors=True)
        identity = slide_identity(slide)
        if settings.resume:
            check_same_slide(work_folder, slide, identity)
        if prepare_result_dir(
            work_folder,
            slide,
            resume=settings.resume,
            overwrite=settings.overwrite and staging is None,
            identity=identity,
        ):
            summary = json.loads((folder / SUMMARY_NAME).read_text(encoding="utf-8"))
            check_finished_matches(
                folder, summary, source.sha256 if source else None, settings.tasks
            )
            log.info("%s: finished result found in %s; kept (--resume)", slide.name, folder)
            return SlideResult(slide, folder, summary, skipped=True)
        store = WorkStore(
            work_folder / WORK_NAME,
            _work_key(settings, model, source, predictor),
            resume=settings.resume,
        )
        run = SlideRun(
            slide, reader, work_folder, settings, model, predictor, source, roi,
            plans, store, timings={"open": time.perf_counter() - started},
        )  # fmt: skip
        summary = _run(run)
        if staging is not None:
            swap_in(staging, folder)
    return SlideResult(slide, folder, summary.to_dict(), warnings=summary.warnings)


def _run(run: SlideRun) -> SlideSummary:
    """The stages in order; summary.json is written last and marks the result finished."""
    upsampling_warnings(run)
    with run.timed("tissue"):
        found = find_tissue(run)
    stages: list = []
    for plan in run.plans:  # coarse to fine: the PTC pass reads what 5x and 10x found
        stages.append(infer_scale(run, plan, found, earlier=tuple(stages)))
    assembly = merge_scales(run, found, stages)
    with ObjectSpool(run.store.work_dir / OBJECT_SPOOL_NAME) as objects:
        tally = trace_objects(run, assembly, objects)
        write_result_files(run, found, assembly, objects)
    summary = SlideSummary.build(run, found, stages, tally)
    write_summary(run.folder, summary.to_dict())
    if not run.settings.keep_intermediate:
        run.store.remove()
    return summary


def _naming(slide: Path, message: str) -> str:
    """The message, starting with the slide's path unless it already names the file."""
    return message if str(slide) in message or slide.name in message else f"{slide}: {message}"


def segment_slides(
    paths: Sequence[str | Path],
    out: str | Path,
    settings: SegmentSettings,
    model: SegmentModel,
    *,
    model_source: ModelSource | None = None,
) -> list[SlideResult]:
    """Segment several slides; a failing slide is reported and the others go on. A bad backend
    or precision fails once, before any slide."""
    out = Path(out)
    predictor = build_predictor(model, settings, model_source)  # one session for every slide
    taken: set[str] = set()
    results = []
    for path in paths:
        slide = Path(path)
        folder = result_dir(out, slide, taken)
        taken.add(folder.name)
        try:
            results.append(
                segment_slide(
                    slide,
                    out,
                    settings,
                    model,
                    model_source=model_source,
                    result_folder=folder,
                    predictor=predictor,
                )
            )
        except OmnisegError as exc:  # reported once, by the caller (the CLI prints one line)
            results.append(SlideResult(slide, None, error=_naming(slide, str(exc))))
        except Exception as exc:
            log.debug("%s: unexpected failure", slide, exc_info=True)
            message = f"unexpected failure: {type(exc).__name__}: {exc} (rerun with --debug)"
            results.append(SlideResult(slide, None, error=_naming(slide, message)))
    return results
