"""`omniseg complete-labels` (thin shell over omniseg.training.complete)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# What complete-labels writes; --overwrite removes only a folder holding nothing else.
OUR_ENTRIES = {"real", "teacher", "manifest.csv", "completion.json"}


def complete_labels_cmd(
    data: Annotated[Path, typer.Argument(help="Manifest CSV or patch folder (one task each).")],
    teacher: Annotated[
        list[Path],
        typer.Option(help="Teacher model folder; repeat it for an ensemble (their mean)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="New patch folder to write.")],
    confidence: Annotated[
        str | None,
        typer.Option(
            help="LO,HI: teacher probability <= LO is background, >= HI foreground, "
            "unlabelled between.",
            show_default="0.2,0.8",
        ),
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Complete only these tasks, e.g. capsule,tuft.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT.")] = False,
) -> None:
    """Label every patch for the tasks it carries no label for, by a teacher: a patch folder
    to train a student on (`omniseg train --data OUT`)."""
    import dataclasses
    import shutil

    from omniseg.atomic import atomic_write_json
    from omniseg.cli.options import completion_settings
    from omniseg.data import discover_patches
    from omniseg.errors import OmnisegError
    from omniseg.models import load_pretrained
    from omniseg.training.complete import CompletionSettings, complete_labels

    settings = completion_settings(confidence, tasks) or CompletionSettings()
    records = discover_patches(data)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        ours = out.is_dir() and {p.name for p in out.iterdir()} <= OUR_ENTRIES
        if not (overwrite and ours):
            raise OmnisegError(
                f"{out}: already exists; pass --overwrite to replace a folder this command "
                "wrote, or choose another --out"
            )
        shutil.rmtree(out)
    models = [load_pretrained(t) for t in teacher]
    manifest = complete_labels(records, models, out, settings)
    record = {"data": str(data), "teachers": [str(t) for t in teacher],
              "settings": dataclasses.asdict(settings)}  # fmt: skip
    atomic_write_json(out / "completion.json", record)
    typer.echo(f"completed {len(records)} patches with {len(models)} teacher(s): {manifest}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("complete-labels")(complete_labels_cmd)
