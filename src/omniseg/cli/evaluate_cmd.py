"""`omniseg evaluate` command (thin shell over the Python API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omniseg.cli.options import (
    AllowOutsideOption,
    AllowUnverifiedOption,
    BackendOption,
    BatchOption,
    DeviceOption,
    PrecisionOption,
    QuietOption,
    WeightsOption,
    given,
)

# (key, column title, digits). Distances in µm: comparable across the tasks' scales (px in JSON).
TABLE_METRICS = (
    ("dice", "Dice", 3),
    ("iou", "IoU", 3),
    ("dice_bg_inclusive", "Dice±bg", 3),
    ("hd95_um", "HD95 µm", 1),
    ("assd_um", "ASSD µm", 1),
)


def parse_thresholds(text: str | None) -> list[float] | dict[str | int, float] | None:
    """--thresholds: one value for every task, one per task (comma-separated, in task order),
    or some tasks by name or id ("vessel=0.3,dt=0.4"); values are checked by the evaluation API."""
    from omniseg.catalogue import tissues
    from omniseg.errors import OmnisegError

    if text is None:
        return None
    usage = OmnisegError(
        f"--thresholds {text!r}: use one number (all tasks), one per task in task order "
        "(0.5,0.5,...), or task=value pairs (vessel=0.3,dt=0.4)"
    )
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if parts and all("=" in p for p in parts):
            pairs = [(k.strip(), float(v)) for k, v in (p.split("=", 1) for p in parts)]
            if len({k for k, _ in pairs}) != len(pairs):
                raise OmnisegError(f"--thresholds {text!r}: a task is given twice")
            return {int(k) if k.isdigit() else k: v for k, v in pairs}
        values = [float(p) for p in parts]
    except ValueError:
        raise usage from None
    if not values:
        raise usage
    return values * len(tissues()) if len(values) == 1 else values


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_summary(summary: dict, weights: str | None) -> None:
    """Per-task table (+ per-stain rows dimmed) with the mean over tasks as the last row."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    split = summary["split"] or "all"
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"evaluation: {summary['n_images']} images (split {split}), "
        f"TTA {'on' if summary['tta'] else 'off'}, weights {weights}",
    )
    table.add_column("task/stain", no_wrap=True)
    table.add_column("n", justify="right")
    for _, label, _ in TABLE_METRICS:
        table.add_column(label, justify="right", no_wrap=True)
    table.add_column("noHD", justify="right")
    intervals = "bootstrap" in summary
    if intervals:
        table.add_column("Dice 95% CI", justify="right", no_wrap=True)

    def add(name: str, row: dict, style: str | None = None, end: bool = False) -> None:
        cells = [_cell(row[key], digits) for key, _, digits in TABLE_METRICS]
        cells.append(str(row["hd_null"]))
        if intervals:
            ci = row.get("dice_ci")
            cells.append("—" if ci is None else f"{ci[0]:.3f}–{ci[1]:.3f}")
        table.add_row(name, str(row["n"]), *cells, style=style, end_section=end)

    for task, row in summary["tasks"].items():
        stains = {k: v for k, v in summary["stains"].items() if k.split("/", 1)[0] == task}
        add(task, row, end=not stains)
        for i, (key, stain_row) in enumerate(stains.items()):
            add(f"  {key.split('/', 1)[1]}", stain_row, style="dim", end=i == len(stains) - 1)
    add("mean/task", summary["mean"], style="bold")
    Console().print(table)


def training_overlap_note(seen: dict | None) -> str:
    """One line saying whether the scores are on patches the model learned from."""
    if seen is None:
        return (
            "note: this model records no training data, so overlap cannot be checked; if it "
            "learned from these patches, these scores are optimistic"
        )
    if seen["seen"] == 0:
        return f"none of these {seen['of']} patches were in this model's training data"
    return (
        f"WARNING: {seen['seen']} of these {seen['of']} patches were in this model's training "
        "data: these scores do not measure accuracy on unseen tissue (cross-validated scores: "
        "omniseg evaluate --crossval RUN, docs/model-card.md)"
    )


def print_crossval(run: Path) -> None:
    """The out-of-fold report of ``omniseg train --folds`` as evaluate's table."""
    from omniseg.evaluation.crossval import read_report

    report = read_report(run)
    summary = {**report, "split": "out-of-fold", "tta": report.get("tta", False)}
    print_summary(summary, f"{run} ({report['folds']} fold models)")


DataArg = Annotated[
    Path, typer.Argument(help="Manifest CSV, or a folder of patches (original layout).")
]
JsonOutArg = Annotated[
    Path | None, typer.Option("--json", help="Write the summary report (JSON) here.")
]
CsvOutArg = Annotated[
    Path | None, typer.Option("--csv", help="Write one row per image (CSV) here.")
]
TtaArg = Annotated[
    bool | None,
    typer.Option("--tta/--no-tta", help="8-fold flip/rotate averaging (default: the model's)."),
]
SplitArg = Annotated[str | None, typer.Option("--split", help="Only this split of the manifest.")]
ThresholdsArg = Annotated[
    str | None,
    typer.Option(
        "--thresholds",
        help="Override the model's: 0.5 (all tasks), six values, or vessel=0.3,dt=0.4.",
    ),
]
BootstrapArg = Annotated[
    int,
    typer.Option("--bootstrap", help="Add 95% intervals over images from N resamples (0 = off)."),
]
CrossvalArg = Annotated[
    bool,
    typer.Option(
        "--crossval",
        help="DATA is a run of `omniseg train --folds K`: print its out-of-fold report.",
    ),
]


def evaluate(
    data: DataArg,
    weights: WeightsOption = None,
    json_out: JsonOutArg = None,
    csv_out: CsvOutArg = None,
    tta: TtaArg = None,
    split: SplitArg = None,
    thresholds: ThresholdsArg = None,
    device: DeviceOption = None,
    batch_size: BatchOption = None,
    precision: PrecisionOption = None,
    backend: BackendOption = None,
    bootstrap: BootstrapArg = 0,
    allow_unverified: AllowUnverifiedOption = False,
    allow_outside_paths: AllowOutsideOption = False,
    crossval: CrossvalArg = False,
    quiet: QuietOption = False,
):
    """Score a model on labelled patches: Dice, IoU, HD95, ASSD per task and per stain."""
    from omniseg.evaluation.evaluate import evaluate_path

    if crossval:
        print_crossval(data)
        return

    result = evaluate_path(
        data,
        weights,
        split=split,
        tta=tta,
        thresholds=parse_thresholds(thresholds),
        json_path=json_out,
        csv_path=csv_out,
        progress=not quiet,
        allow_unverified=allow_unverified,
        allow_outside_paths=allow_outside_paths,
        bootstrap=bootstrap,
        **given(device=device, batch_size=batch_size, precision=precision, backend=backend),
    )
    print_summary(result.summary, result.weights)
    typer.echo(training_overlap_note(result.summary.get("seen_in_training")))
    for path in (json_out, csv_out):
        if path is not None:
            typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("evaluate")(evaluate)
