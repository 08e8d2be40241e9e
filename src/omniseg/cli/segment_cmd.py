"""`omniseg segment` and `omniseg demo` (thin shells over omniseg.inference)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

AllowUnverifiedOption = Annotated[
    bool,
    typer.Option(
        "--allow-unverified",
        help="Load a model folder whose config.json records no SHA-256 of its weights.",
    ),
]
WeightsOption = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="Model folder (config.json + model.safetensors); default: the bundled model.",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")]
BatchOption = Annotated[int, typer.Option("--batch-size", help="Tiles per network batch.")]
WorkersOption = Annotated[int, typer.Option("--workers", help="Background reader threads.")]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="omniseg: %(message)s")


def _report(results) -> None:
    from omniseg.errors import OmnisegError

    for r in results:
        if r.ok:
            state = "kept (already finished)" if r.skipped else "done"
            counts = ", ".join(
                f"{k} {v['count']}" for k, v in (r.summary or {}).get("classes", {}).items()
            )
            typer.echo(f"{r.slide.name}: {state} -> {r.out_dir}  [{counts}]")
    failed = [r for r in results if not r.ok]
    if len(results) == 1 and failed:
        raise OmnisegError(failed[0].error)  # one slide: its one error line, nothing more
    for r in failed:
        typer.echo(f"FAILED: {r.error}", err=True)
    if failed:
        names = ", ".join(r.slide.name for r in failed)
        raise OmnisegError(f"{len(failed)} of {len(results)} slides failed: {names}")


def register(app: typer.Typer) -> None:
    """Add `segment` and `demo` to the app."""

    @app.command("segment")
    def segment(
        slides: Annotated[list[Path], typer.Argument(help="Slide files (SVS, TIFF, NDPI, ...).")],
        out: Annotated[
            Path, typer.Option("-o", "--out", help="Output folder (one subfolder per slide).")
        ],
        weights: WeightsOption = None,
        allow_unverified: AllowUnverifiedOption = False,
        tasks: Annotated[
            str | None, typer.Option("--tasks", help="Comma list: dt,pt,capsule,tuft,vessel,ptc.")
        ] = None,
        mpp: Annotated[
            float | None, typer.Option("--mpp", help="Override µm/px at level 0.")
        ] = None,
        magnification: Annotated[
            float | None, typer.Option("--magnification", help="Override objective power (40).")
        ] = None,
        roi: Annotated[
            Path | None, typer.Option("--roi", help="ImageScope XML, GeoJSON or mask image.")
        ] = None,
        device: DeviceOption = "auto",
        batch_size: BatchOption = 4,
        precision: Annotated[str, typer.Option("--precision", help="fp32 or bf16.")] = "fp32",
        workers: WorkersOption = 2,
        object_type: Annotated[
            str, typer.Option("--object-type", help="GeoJSON objectType: annotation or detection.")
        ] = "annotation",
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue interrupted work.")
        ] = False,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Redo existing results.")
        ] = False,
        keep_intermediate: Annotated[
            bool, typer.Option("--keep-intermediate", help="Keep OUT/<slide>/.work (zarr maps).")
        ] = False,
        tissue_margin: Annotated[
            float,
            typer.Option(
                "--tissue-margin",
                help="Keep labels within this many µm of detected tissue (negative: no gate).",
            ),
        ] = 25.0,
        quiet: QuietOption = False,
    ):
        """Segment whole slides: labels.ome.tif, objects.geojson/.csv, overlay.png, summary.json."""
        from omniseg.catalogue import parse_tasks
        from omniseg.inference import SegmentSettings, segment_slides
        from omniseg.inference.loading import load_segment_model
        from omniseg.io.opener import expand_slide_paths

        settings = SegmentSettings(
            tasks=tuple(t.id for t in parse_tasks(tasks)),
            mpp=mpp,
            magnification=magnification,
            roi=roi,
            device=device,
            batch_size=batch_size,
            precision=precision,
            workers=workers,
            object_type=object_type,
            resume=resume,
            overwrite=overwrite,
            keep_intermediate=keep_intermediate,
            tissue_margin_um=None if tissue_margin < 0 else tissue_margin,
            progress=not quiet,
        )
        model, source = load_segment_model(weights, device, precision, verify=not allow_unverified)
        _setup_logging()
        _report(
            segment_slides(expand_slide_paths(slides), out, settings, model, model_source=source)
        )

    @app.command("demo")
    def demo(
        out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
        weights: WeightsOption = None,
        allow_unverified: AllowUnverifiedOption = False,
        device: DeviceOption = "auto",
        batch_size: BatchOption = 4,
        precision: Annotated[
            str,
            typer.Option(
                "--precision",
                help="fp32 or bf16 (bf16 is fast only on CPUs with AVX512-BF16/AMX, or on a GPU).",
            ),
        ] = "fp32",
        workers: WorkersOption = 2,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue an interrupted demo.")
        ] = False,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Redo an existing demo.")
        ] = False,
        quiet: QuietOption = False,
    ):
        """Run the whole pipeline on a small SYNTHETIC slide generated on the fly (offline)."""
        from omniseg.inference import SegmentSettings
        from omniseg.inference.demo import DEMO_NAME, run_demo
        from omniseg.inference.loading import load_segment_model

        settings = SegmentSettings(
            device=device,
            batch_size=batch_size,
            precision=precision,
            workers=workers,
            resume=resume,
            overwrite=overwrite,
            progress=not quiet,
        )
        model, source = load_segment_model(weights, device, precision, verify=not allow_unverified)
        _setup_logging()
        typer.echo(
            f"writing a SYNTHETIC demo slide (generated, not real tissue): {out / DEMO_NAME}"
        )
        result = run_demo(out, settings, model, model_source=source)
        _report([result])
        typer.echo(
            f"outputs: {result.out_dir} (labels.ome.tif, objects.geojson, objects.csv, "
            "overlay.png, summary.json)"
        )
