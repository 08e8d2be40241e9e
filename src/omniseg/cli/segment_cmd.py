"""`omniseg segment` and `omniseg demo` (thin shells over omniseg.inference)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from omniseg.cli.options import (
    AllowUnverifiedOption,
    BackendOption,
    BatchOption,
    DeviceOption,
    OutFolderOption,
    OverwriteRunOption,
    PrecisionOption,
    QuietOption,
    ReaderThreadsOption,
    ResumeRunOption,
    WeightsOption,
    given,
)

# Loggers of the libraries a cohort runs on: their INFO lines ("Lost all workers", "Closing
# scheduler") are Dask's bookkeeping, not omniseg's news. Errors still show; --debug shows all.
LIBRARY_LOGGERS = ("distributed", "tornado", "asyncio", "bokeh")


def _setup_logging() -> None:
    import logging
    import os

    from omniseg.cli.options import debug_requested

    logging.basicConfig(level=logging.INFO, format="omniseg: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_printable_record)
    if debug_requested():
        return
    # Dask sets its loggers' levels when it is imported (and in every worker): say it in its
    # config, inherited by the workers, and drop what still comes through below ERROR.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_omniseg_or_error)


def _printable_record(record) -> bool:
    """Slide names and paths reach the terminal escaped, never as control sequences."""
    from omniseg.errors import printable

    record.msg, record.args = printable(record.getMessage()), ()
    return True


def _omniseg_or_error(record) -> bool:
    import logging

    library = record.name.split(".")[0] in LIBRARY_LOGGERS
    return not library or record.levelno >= logging.ERROR


def _report(results) -> None:
    from omniseg.errors import OmnisegError, printable

    for r in results:
        if r.ok:
            state = "kept (already finished)" if r.skipped else "done"
            counts = ", ".join(
                f"{k} {v['count']}" for k, v in (r.summary or {}).get("classes", {}).items()
            )
            typer.echo(f"{r.slide.name}: {state} -> {r.out_dir}  [{counts}]")
    failed = [r for r in results if not r.ok]
    first = next((r for r in results if r.ok and r.out_dir is not None), None)
    if first is not None:
        from omniseg.cli.options import invoked_as

        geojson = shlex.quote(str(first.out_dir / "objects.geojson"))
        summary = first.summary or {}
        mpp = f" --mpp {summary['mpp']}" if summary.get("mpp_source") == "override" else ""
        typer.echo(
            f"to teach it your lab: correct {geojson} in QuPath, then {invoked_as()} extract "
            f"{shlex.quote(str(first.slide))} --annotations {geojson}{mpp} -o PATCHES"
        )
    if len(results) == 1 and failed:
        raise OmnisegError(failed[0].error)  # one slide: its one error line, nothing more
    for r in failed:
        typer.echo(f"FAILED: {printable(r.error)}", err=True)
    if failed:
        names = ", ".join(r.slide.name for r in failed)
        raise OmnisegError(f"{len(failed)} of {len(results)} slides failed: {names}")


def _run_cohort(slides, slide_list, out, settings, loaded_model, cluster, quiet):
    """Cohort mode (--workers / --scheduler / --list): cohort.csv + cohort.json in OUT.
    ``loaded_model``: (weights option, allow_unverified, model, source); this process reuses
    the loaded model, Dask workers load their own from the same weights."""
    weights, allow_unverified, model, source = loaded_model
    from omniseg.errors import OmnisegError, printable
    from omniseg.inference.cohort import ClusterSettings, SlideJob, read_slide_list, run_cohort
    from omniseg.inference.cohort.listing import unique_jobs
    from omniseg.inference.cohort.worker import ModelSpec
    from omniseg.io.opener import expand_slide_paths

    jobs = [SlideJob(p) for p in expand_slide_paths(slides)] if slides else []
    if slide_list is not None:
        jobs += read_slide_list(slide_list)
    if not jobs:
        raise OmnisegError("no slides: give slide files or folders, or --list FILE")
    jobs, repeats = unique_jobs(jobs)
    for path in repeats:
        typer.echo(
            f"warning: {printable(str(path))} is listed more than once; it runs once", err=True
        )
    spec = ModelSpec(weights, allow_unverified, settings.device, settings.precision)
    result = run_cohort(
        jobs, out, settings, spec, ClusterSettings(**cluster), progress=not quiet,
        on_dashboard=lambda link: typer.echo(f"Dask dashboard: {link}"),
        loaded=(model, source),
    )  # fmt: skip
    counts = {s: sum(r["status"] == s for r in result.rows) for s in ("done", "kept", "failed")}
    for row in result.failed:
        typer.echo(f"FAILED: {row['error']}", err=True)
    typer.echo(
        f"{len(result.rows)} slides in {result.wall_s:.1f} s: {counts['done']} done, "
        f"{counts['kept']} kept (finished before), {counts['failed']} failed -> {result.table}"
    )
    if result.failed:
        raise OmnisegError(
            f"{counts['failed']} of {len(result.rows)} slides failed: see {result.table}"
        )


def _settings_and_model(weights, allow_unverified: bool, **settings):
    """(SegmentSettings from the given options, the model on its device, its source)."""
    from omniseg.inference import SegmentSettings
    from omniseg.inference.loading import load_segment_model

    chosen = SegmentSettings(**settings)
    model, source = load_segment_model(
        weights, chosen.device, chosen.precision, verify=not allow_unverified
    )
    return chosen, model, source


TasksOption = Annotated[
    str | None, typer.Option("--tasks", help="Comma list: dt,pt,capsule,tuft,vessel,ptc.")
]
MppOption = Annotated[float | None, typer.Option("--mpp", help="Override µm/px at level 0.")]
MagnificationOption = Annotated[
    float | None, typer.Option("--magnification", help="Override objective power (40).")
]
RoiOption = Annotated[
    Path | None, typer.Option("--roi", help="ImageScope XML, GeoJSON or mask image.")
]
ObjectTypeOption = Annotated[
    str, typer.Option("--object-type", help="GeoJSON objectType: annotation or detection.")
]
KeepOption = Annotated[
    bool, typer.Option("--keep-intermediate", help="Keep OUT/<slide>/.work (zarr maps).")
]
MarginOption = Annotated[
    float | None,
    typer.Option(
        "--tissue-margin",
        help="Keep labels within this many µm of detected tissue (negative: no gate).",
        show_default="25",
    ),
]
TileSizeOption = Annotated[
    int | None,
    typer.Option(
        "--tile-size",
        help="Network tile side in px (each scale); larger wastes less on overlap but "
        "needs more memory.",
        show_default="the model's (512)",
    ),
]
TileOverlapOption = Annotated[
    int | None,
    typer.Option(
        "--tile-overlap",
        help="Context px dropped at each inner tile edge.",
        show_default="the model's (64)",
    ),
]
PtcRegionOption = Annotated[
    str | None,
    typer.Option(
        "--ptc-region",
        help="Run the capillary pass in 'interstitium' (skip tiles inside glomeruli/arteries "
        "found at 5x/10x) or on all 'tissue'.",
        show_default="interstitium",
    ),
]
GlomerulusCheckOption = Annotated[
    str | None,
    typer.Option(
        "--glomerulus-check",
        help="'on': drop glomeruli that hold no tuft or whose equivalent diameter is "
        "implausible (SegmentSettings.glomerulus_size, docs/wsi.md); needs the capsule "
        "and tuft tasks.",
        show_default="on",
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Run the slides on a local Dask cluster of N worker processes (each loads "
        "the model once; the cores are split between them).",
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Run on an existing Dask cluster: its address (tcp://host:8786) or "
        "scheduler file (dask-jobqueue, dask-mpi).",
    ),
]
ListOption = Annotated[
    Path | None,
    typer.Option(
        "--list",
        help="Slides from a .txt (one path per line) or .csv file (path, optional mpp, "
        "roi, tasks columns).",
    ),
]
FailFastOption = Annotated[
    bool, typer.Option("--fail-fast", help="Stop a cohort at its first failed slide.")
]
SlidesArgument = Annotated[
    list[Path] | None,
    typer.Argument(help="Slide files (SVS, TIFF, NDPI, ...) or folders of them."),
]
SyntheticOption = Annotated[
    bool, typer.Option("--synthetic", help="Segment a generated kidney-like slide instead (tests).")
]


def segment(
    out: OutFolderOption, slides: SlidesArgument = None, weights: WeightsOption = None,
    allow_unverified: AllowUnverifiedOption = False, tasks: TasksOption = None,
    mpp: MppOption = None, magnification: MagnificationOption = None, roi: RoiOption = None,
    device: DeviceOption = None, batch_size: BatchOption = None,
    precision: PrecisionOption = None, backend: BackendOption = None,
    reader_threads: ReaderThreadsOption = None, object_type: ObjectTypeOption = "annotation",
    resume: ResumeRunOption = False, overwrite: OverwriteRunOption = False,
    keep_intermediate: KeepOption = False, tissue_margin: MarginOption = None,
    tile_size: TileSizeOption = None, tile_overlap: TileOverlapOption = None,
    ptc_region: PtcRegionOption = None, glomerulus_check: GlomerulusCheckOption = None,
    workers: WorkersOption = None, scheduler: SchedulerOption = None,
    slide_list: ListOption = None, fail_fast: FailFastOption = False, quiet: QuietOption = False,
):  # fmt: skip
    """Segment whole slides: labels.ome.tif, objects.geojson/.csv, overlay.png, summary.json."""
    from dataclasses import replace

    from omniseg.catalogue import catalogue_of
    from omniseg.errors import OmnisegError
    from omniseg.inference import segment_slides
    from omniseg.io.opener import expand_slide_paths

    paths = expand_slide_paths(slides) if slides else []  # every slide exists, before any work
    runtime = given(
        device=device, batch_size=batch_size, precision=precision, reader_threads=reader_threads,
        backend=backend, tile_size=tile_size, tile_overlap=tile_overlap, ptc_region=ptc_region,
        glomerulus_check=glomerulus_check,
    )  # fmt: skip
    settings, model, source = _settings_and_model(
        weights, allow_unverified, mpp=mpp, magnification=magnification, roi=roi,
        object_type=object_type, resume=resume, overwrite=overwrite,
        keep_intermediate=keep_intermediate, progress=not quiet, **runtime,
        **_margin(tissue_margin),
    )  # fmt: skip
    # --tasks names the model's own classes (its catalogue travels in its config.json)
    chosen = catalogue_of(model).parse_tasks(tasks)
    settings = replace(settings, tasks=tuple(t.id for t in chosen))
    _setup_logging()
    if workers is not None or scheduler is not None or slide_list is not None or fail_fast:
        cluster = dict(workers=workers, scheduler=scheduler, fail_fast=fail_fast)
        loaded = (weights, allow_unverified, model, source)
        _run_cohort(slides, slide_list, out, settings, loaded, cluster, quiet)
        return
    if not slides:
        raise OmnisegError("no slides: give slide files or folders, or --list FILE")
    _report(segment_slides(paths, out, settings, model, model_source=source))


def _margin(tissue_margin: float | None) -> dict:
    """--tissue-margin as a setting; a negative margin switches the tissue gate off."""
    if tissue_margin is None:
        return {}
    return {"tissue_margin_um": None if tissue_margin < 0 else tissue_margin}


def demo(
    out: OutFolderOption, weights: WeightsOption = None,
    allow_unverified: AllowUnverifiedOption = False, device: DeviceOption = None,
    batch_size: BatchOption = None, precision: PrecisionOption = None,
    backend: BackendOption = None, reader_threads: ReaderThreadsOption = None,
    resume: ResumeRunOption = False, overwrite: OverwriteRunOption = False,
    synthetic: SyntheticOption = False, quiet: QuietOption = False,
):  # fmt: skip
    """Run the whole pipeline on four real human PAS biopsy tiles shipped in the package."""
    from omniseg.cli.options import invoked_as
    from omniseg.inference.demo import DEMO_NAME, demo_attribution, demo_tiles, run_demo

    runtime = given(
        device=device, batch_size=batch_size, precision=precision, reader_threads=reader_threads,
        backend=backend,
    )  # fmt: skip
    settings, model, source = _settings_and_model(
        weights, allow_unverified, resume=resume, overwrite=overwrite, progress=not quiet,
        **runtime,
    )  # fmt: skip
    _setup_logging()
    if synthetic:
        typer.echo(
            f"writing a SYNTHETIC demo slide (generated, not real tissue): {out / DEMO_NAME}"
        )
    else:
        typer.echo(
            f"segmenting {len(demo_tiles())} real human PAS biopsy tiles (AIDPATH, CC BY 4.0, "
            f"0.5 µm/px; credits: {demo_attribution()})"
        )
    _report(run_demo(out, settings, model, model_source=source, synthetic=synthetic))
    typer.echo(
        f"outputs: {out}/<tile>/ (labels.ome.tif, objects.geojson, objects.csv, "
        f"overlay.png, summary.json); look at them with: {invoked_as()} view {shlex.quote(str(out))}"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("segment")(segment)
    app.command("demo")(demo)
