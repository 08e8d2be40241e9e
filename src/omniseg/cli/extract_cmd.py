"""`omniseg extract` (thin shell over omniseg.data.extract)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from omniseg.cli.options import QuietOption, given, invoked_as
from omniseg.errors import printable

SlidesArg = Annotated[list[Path], typer.Argument(help="Annotated slide files.")]
AnnotationsArg = Annotated[
    Path,
    typer.Option(
        "--annotations",
        help="QuPath GeoJSON, ImageScope XML or an aligned label image (TIFF); or a "
        "folder holding <slide name>.geojson/.xml/.tif for each slide.",
    ),
]
OutArg = Annotated[Path, typer.Option("-o", "--out", help="Patch folder to write.")]
ClassesArg = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help='Annotation class -> task, e.g. "Glomerulus=capsule,Distal=dt".',
        show_default="the task names (dt, pt, capsule, tuft, vessel, ptc)",
    ),
]
RegionsClassArg = Annotated[
    str | None,
    typer.Option(
        "--regions-class",
        help="Class of the regions inside which every object is drawn.",
        show_default="Region",
    ),
]
CompleteArg = Annotated[
    bool,
    typer.Option("--complete", help="Every object of the mapped classes is drawn."),
]
PatchArg = Annotated[
    int | None,
    typer.Option("--patch", help="Patch side, px at the task's scale.", show_default="512"),
]
PerClassArg = Annotated[
    int | None,
    typer.Option(
        "--per-class",
        help="Positive patches per task and slide (at most).",
        show_default="50",
    ),
]
NegativesArg = Annotated[
    float | None,
    typer.Option("--negatives", help="Negative patches per positive one.", show_default="0.25"),
]
MppArg = Annotated[float | None, typer.Option("--mpp", help="Override µm/px at level 0.")]
StainArg = Annotated[
    str | None,
    typer.Option("--stain", help="Stain name for the manifest.", show_default="unknown"),
]
ValFractionArg = Annotated[
    float | None,
    typer.Option(
        "--val-fraction",
        help="Share of slides whose patches go to val.",
        show_default="0.25",
    ),
]
SeedArg = Annotated[int | None, typer.Option("--seed", show_default="0")]
WorkersArg = Annotated[
    int | None,
    typer.Option("--workers", help="Threads cutting patches.", show_default="2"),
]
OverwriteArg = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing patch folder.")
]


def extract(
    slides: SlidesArg,
    annotations: AnnotationsArg,
    out: OutArg,
    classes: ClassesArg = None,
    regions_class: RegionsClassArg = None,
    complete: CompleteArg = False,
    patch: PatchArg = None,
    per_class: PerClassArg = None,
    negatives: NegativesArg = None,
    mpp: MppArg = None,
    stain: StainArg = None,
    val_fraction: ValFractionArg = None,
    seed: SeedArg = None,
    workers: WorkersArg = None,
    overwrite: OverwriteArg = False,
    quiet: QuietOption = False,
):
    """Cut native-scale training patches + manifest.csv from annotated slides."""
    from omniseg.data.extract import ExtractSettings, extract_patches
    from omniseg.io.opener import expand_slide_paths

    settings = ExtractSettings(
        classes=classes, complete=complete, overwrite=overwrite, progress=not quiet,
        **given(
            regions_class=regions_class, patch=patch, per_class=per_class,
            negatives=negatives, mpp=mpp, stain=stain, val_fraction=val_fraction, seed=seed,
            workers=workers,
        ),
    )  # fmt: skip
    result = extract_patches(expand_slide_paths(slides), annotations, out, settings)
    for warning in result.warnings:
        typer.echo(f"warning: {printable(warning)}", err=True)
    for report in result.slides:
        counts = ", ".join(
            f"{task} {c['positive']}+{c['negative']}" for task, c in report["patches"].items()
        )
        typer.echo(f"{Path(report['slide']).name}: {counts or 'no patches'}")
    no_val = "" if result.has_val() else " --val-split none"
    typer.echo(
        f"{result.patches} patches in {result.seconds:.1f} s ({result.patches_per_s:.1f}/s) "
        f"-> {result.out} (manifest.csv; train with: {invoked_as()} train --data "
        f"{shlex.quote(str(result.out))} --out RUN{no_val}, or adapt the bundled model: "
        f"{invoked_as()} finetune --data {shlex.quote(str(result.out))} --out RUN)"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("extract")(extract)
