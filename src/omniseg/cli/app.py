"""Typer commands. Each one parses options and calls the Python API; no logic lives here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="omniseg",
    help="Scale-aware multi-tissue segmentation of kidney pathology (Omni-Seg).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from omniseg import __version__

        typer.echo(f"omniseg {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """omniseg: segment kidney tissue in pathology images with one scale-aware network."""
    from omniseg.cli.options import set_debug

    set_debug(debug)


@app.command()
def info(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """Show versions, device, registered models and the tissue/scale table."""
    from omniseg.system import system_info

    data = system_info()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from omniseg.cli.render import print_info

    print_info(data)


@app.command("convert-checkpoint")
def convert_checkpoint(
    source: Annotated[Path, typer.Argument(help="Original Omni-Seg .pth state dict.")],
    out_dir: Annotated[Path, typer.Argument(help="Model folder to write.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT_DIR.")] = False,
):
    """Convert an original Omni-Seg checkpoint into an omniseg model folder (never unpickles code)."""
    from omniseg.errors import OmnisegError
    from omniseg.models.convert import convert_checkpoint as convert
    from omniseg.models.pretrained import check_replaceable_model_dir

    if out_dir.exists() and not overwrite:
        raise OmnisegError(f"{out_dir}: already exists; pass --overwrite to replace it")
    if out_dir.exists():
        check_replaceable_model_dir(out_dir)
    path = convert(source, out_dir)
    typer.echo(f"wrote {path}")


@app.command("export-onnx")
def export_onnx_command(
    model_dir: Annotated[
        Path, typer.Argument(help="Model folder (config.json + weights), or default (bundled).")
    ],
    out: Annotated[Path, typer.Argument(help="ONNX file to write.")],
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Load a folder without a recorded SHA-256.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing .onnx file.")
    ] = False,
):
    """Export backbone + controller + dynamic head to ONNX (dynamic batch, size and task count).

    Inputs: images (N, 3, H, W) float in [0, 1] with H, W multiples of the model's size divisor,
    task_ids and scale_ids (N, T) int64; output: logits (N, T, 2, H, W)."""
    from omniseg.errors import OmnisegError
    from omniseg.runtime.loading import load_model
    from omniseg.runtime.onnx_backend import export_onnx

    if out.suffix.lower() != ".onnx":
        raise OmnisegError(f"{out}: the ONNX file must end in .onnx (it would replace any file)")
    if out.exists() and (not overwrite or not out.is_file()):
        raise OmnisegError(
            f"{out}: already exists; pass --overwrite to replace it, or choose another path"
        )
    model = load_model(model_dir, "cpu", verify=not allow_unverified).model
    typer.echo(f"wrote {export_onnx(model, out)}")


@app.command()
def calibrate(
    model_dir: Annotated[Path, typer.Argument(help="Model folder (config.json + weights).")],
    data: Annotated[
        Path, typer.Option("--data", help="Labelled patches: a folder or manifest.csv.")
    ],
    max_patches: Annotated[
        int | None,
        typer.Option(
            "--max-patches", help="Patches to use, round-robin over tasks.", show_default="72"
        ),
    ] = None,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Load a folder without a recorded SHA-256.")
    ] = False,
):
    """Calibrate int8 inference (--backend onnxruntime-int8) on real patches.

    Writes MODEL_DIR/int8-calibration.json: the activation ranges of the decoder's
    convolutions, measured on the training split (or every patch when there is none)."""
    from omniseg.evaluation.int8_calibration import calibrate_model_dir

    limit = {} if max_patches is None else {"max_patches": max_patches}
    out, table = calibrate_model_dir(model_dir, data, verify=not allow_unverified, **limit)
    typer.echo(f"wrote {out} ({table['patches']} patches, {len(table['nodes'])} layers)")


def _register_stage_commands() -> None:
    from omniseg.cli import (
        complete_cmd,
        evaluate_cmd,
        extract_cmd,
        finetune_cmd,
        segment_cmd,
        train_cmd,
        view_cmd,
    )  # fmt: skip

    for module in (
        extract_cmd,
        train_cmd,
        finetune_cmd,
        complete_cmd,
        evaluate_cmd,
        segment_cmd,
        view_cmd,
    ):
        module.register(app)


_register_stage_commands()
