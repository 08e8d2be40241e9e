"""`omniseg finetune` (thin shell over omniseg.training.adapt)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from omniseg.cli.options import (
    QuietOption,
    SetOption,
    WeightsOption,
    dotted_overrides,
    invoked_as,
)


def finetune(
    data: Annotated[
        Path,
        typer.Option("--data", help="Patch folder or manifest (e.g. from omniseg extract)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")],
    weights: WeightsOption = None,
    tasks: Annotated[
        str | None,
        typer.Option(help="Tasks to adapt, e.g. capsule,tuft.", show_default="those labelled"),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Optimiser steps.", show_default="60")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", show_default="0.002")] = None,
    seed: Annotated[int | None, typer.Option("--seed", show_default="0")] = None,
    keep_others: Annotated[
        bool,
        typer.Option(
            "--keep-others/--no-keep-others",
            help="Hold the other tasks to the starting model's predictions (no forgetting).",
        ),
    ] = True,
    train_parts: Annotated[
        str | None,
        typer.Option(
            "--train-parts",
            help="What learns: task (only these tasks' controller blocks: the others stay "
            "bit-identical), decoder (encoder frozen) or all.",
            show_default="task",
        ),
    ] = None,
    set_values: SetOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Fine-tune a model (default: the bundled one) on your lab's corrected patches; writes
    OUT/model, an ordinary model folder for `segment --weights`, and OUT/adapt.json."""
    from omniseg.catalogue import parse_tasks
    from omniseg.errors import OmnisegError
    from omniseg.training.adapt import AdaptSettings
    from omniseg.training.adapt import finetune as run_finetune

    if max_steps is not None and max_steps < 1:
        raise OmnisegError(f"--max-steps must be >= 1, got {max_steps}")
    chosen = tuple(t.id for t in parse_tasks(tasks)) if tasks else ()
    settings = AdaptSettings(
        weights=weights, tasks=chosen, max_steps=max_steps, lr=lr, seed=seed,
        keep_others=keep_others, parts=train_parts, config_overrides=dotted_overrides(set_values), resume=resume, overwrite=overwrite, progress=not quiet,
    )  # fmt: skip
    result = run_finetune(data, out, settings)
    kept = ", ".join(result.kept) or "none"
    typer.echo(
        f"adapted {', '.join(result.tasks)} in {result.steps} steps ({result.seconds:.0f} s); "
        f"held to the starting model: {kept}; model folder: {result.model_dir}; segment with: "
        f"{invoked_as()} segment SLIDE... -o OUT --weights {shlex.quote(str(result.model_dir))}"
    )


def register(app: typer.Typer) -> None:
    """Add `finetune` to the app."""
    app.command("finetune")(finetune)
