"""One slide of a cohort, run the same way in this process or on a Dask worker.

A Dask worker loads the model once (``dask_plugin.ModelPlugin``, re-run on a worker the nanny
restarts) and keeps it for every slide it is given. Torch threads are set inside each task:
dask's nanny environment and ``client.run`` do not carry them to the task thread
(../shared/docs/dependencies.md, trap T5).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from omniseg.catalogue import catalogue_of
from omniseg.errors import OmnisegError
from omniseg.inference.cohort.listing import SlideJob
from omniseg.inference.cohort.table import DONE, FAILED, KEPT, slide_row, summary_values
from omniseg.inference.loading import load_segment_model
from omniseg.inference.pipeline import build_predictor, segment_slide
from omniseg.inference.settings import SegmentSettings

PLUGIN_NAME = "omniseg-model"  # each cohort run adds its own suffix
OUT_OF_MEMORY = "out of memory: run fewer workers per machine, or give each more memory"
STATE: dict[str, WorkerState] = {}  # this process's loaded model (one per worker process)


@dataclass(frozen=True)
class ModelSpec:
    """Which model every worker loads, and how it runs."""

    weights: Path | None
    allow_unverified: bool
    device: str
    precision: str


@dataclass
class WorkerState:
    model: object
    source: object
    predictor: object
    threads: int
    name: str


def load_state(spec: ModelSpec, settings: SegmentSettings, threads: int, name: str, gpu: int = 0):
    """The model on this worker's device (GPU ``gpu`` modulo the GPUs present) + its predictor."""
    device = spec.device
    if device == "auto" and torch.cuda.is_available():
        device = f"cuda:{gpu % torch.cuda.device_count()}"
    model, source = load_segment_model(
        spec.weights, device, spec.precision, verify=not spec.allow_unverified
    )
    return WorkerState(model, source, build_predictor(model, settings, source), threads, name)


def segment_job(
    plugin: str, job: SlideJob, out: str, folder: str, settings: SegmentSettings
) -> dict:
    """The Dask task: one slide with the model plugin ``plugin`` loaded; returns a cohort row."""
    state = STATE.get(plugin)
    if state is None:
        raise RuntimeError("omniseg worker plugin missing: register ModelPlugin first")
    torch.set_num_threads(state.threads)
    return run_job(state, job, Path(out), Path(folder), settings)


def run_job(state: WorkerState, job: SlideJob, out: Path, folder: Path, settings) -> dict:
    """Segment one slide; a failure becomes a 'failed' row (the cohort goes on)."""
    clock = time.perf_counter()
    error = None
    try:
        chosen = job_settings(settings, job, state.model)
        result = segment_slide(
            job.path, out, chosen, state.model, model_source=state.source,
            result_folder=folder, predictor=state.predictor,
        )  # fmt: skip
    except OmnisegError as exc:
        error = str(exc)
    except MemoryError:
        error = OUT_OF_MEMORY
    except Exception as exc:
        error = f"unexpected failure: {type(exc).__name__}: {exc} (rerun with --debug)"
    wall = round(time.perf_counter() - clock, 2)
    if error is not None:
        if str(job.path) not in error and job.path.name not in error:
            error = f"{job.path}: {error}"
        return slide_row(job.path, FAILED, error=error, worker=state.name, wall_s=wall)
    return slide_row(
        job.path, KEPT if result.skipped else DONE, error="", result_dir=str(result.out_dir),
        worker=state.name, wall_s=wall, **summary_values(result.summary),
    )  # fmt: skip


def job_settings(settings: SegmentSettings, job: SlideJob, model) -> SegmentSettings:
    """The command's settings with this slide's list overrides (mpp, roi, tasks)."""
    changes: dict = {}
    if job.mpp is not None:
        changes.update(mpp=job.mpp, magnification=None)
    if job.roi is not None:
        changes["roi"] = job.roi
    if job.tasks:
        changes["tasks"] = tuple(t.id for t in catalogue_of(model).parse_tasks(job.tasks))
    return replace(settings, **changes) if changes else settings


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
