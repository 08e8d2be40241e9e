"""Typer options shared by several commands. Tuning options default to None, which means "the
library's default": the CLI passes only what the user gave (see :func:`given`), so defaults
live in one place, the settings dataclasses (``show_default`` only displays them)."""

from __future__ import annotations

import os
import shutil
import sys
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
AllowOutsideOption = Annotated[
    bool,
    typer.Option(
        "--allow-outside-paths",
        help="Let manifest rows point outside the manifest's folder.",
    ),
]
WeightsOption = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="Model folder (config.json + model.safetensors); default: the bundled model.",
    ),
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="auto, cpu or cuda[:N].", show_default="auto")
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="auto, fp32 or bf16; auto = bf16 where it runs natively (AVX512-BF16/AMX CPU, or a "
        "GPU), else fp32.",
        show_default="auto (segment, demo), fp32 (evaluate)",
    ),
]
BatchOption = Annotated[
    int | None, typer.Option("--batch-size", help="Images per network batch.", show_default="4")
]
ReaderThreadsOption = Annotated[
    int | None,
    typer.Option("--reader-threads", help="Background tile-reading threads.", show_default="2"),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="auto (the hardware picks: torch bf16 on AVX512-BF16/AMX or a bf16 GPU, else fp32; "
        "summary.json says which and why); torch; onnxruntime or openvino (CPU fp32, from one "
        "ONNX export cached beside the model); onnxruntime-int8 (decoder in int8, from the "
        "model's int8-calibration.json; see omniseg calibrate). evaluate's default: torch.",
        show_default="auto",
    ),
]
# segment and demo: the one option group of a run that writes a result folder
OutFolderOption = Annotated[
    Path, typer.Option("-o", "--out", help="Output folder (one subfolder per slide).")
]
ResumeRunOption = Annotated[bool, typer.Option("--resume", help="Continue interrupted work.")]
OverwriteRunOption = Annotated[bool, typer.Option("--overwrite", help="Redo existing results.")]
# One meaning on every command: no progress bars (the two names are synonyms everywhere)
QuietOption = Annotated[
    bool, typer.Option("--quiet", "--no-progress", help="No progress bars (same as --no-progress).")
]


def given(**options) -> dict:
    """The options the user actually passed (None = not given: the library default applies)."""
    return {k: v for k, v in options.items() if v is not None}


def completion_settings(confidence: str | None, tasks: str | None = None):
    """LO,HI cut-offs and task names -> CompletionSettings (None: the defaults)."""
    from omniseg.catalogue import tissue
    from omniseg.errors import OmnisegError
    from omniseg.training.complete import CompletionSettings

    if confidence is None and tasks is None:
        return None
    cutoffs = {}
    if confidence is not None:  # else the dataclass's defaults
        try:
            cutoffs["tau_lo"], cutoffs["tau_hi"] = (float(v) for v in confidence.split(","))
        except ValueError:
            raise OmnisegError(f"confidence {confidence!r}: use LO,HI, e.g. 0.2,0.8") from None
    ids = tuple(tissue(t.strip()).id for t in (tasks or "").split(",") if t.strip())
    return CompletionSettings(**cutoffs, tasks=ids)


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any training config value, as section.key=value (repeatable): "
        "e.g. --set loss.fn_weight=0.7.",
    ),
]


def dotted_overrides(pairs: list[str] | None) -> dict[str, str]:
    """--set section.key=value pairs (values are typed and checked by the config loader)."""
    from omniseg.errors import OmnisegError

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or key.count(".") != 1:
            raise OmnisegError(f"--set {pair!r}: use section.key=value, e.g. loss.fn_weight=0.7")
        out[key.strip()] = value.strip()
    return out


def invoked_as(argv0: str | None = None) -> str:
    """The program as the user typed it (``.venv/bin/omniseg`` when that is not on PATH), so a
    printed command can be pasted."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    name = os.path.basename(argv0)
    if name == "__main__.py":
        return "python -m omniseg"
    if name == "omniseg" and os.sep in argv0 and shutil.which("omniseg") != os.path.abspath(argv0):
        return argv0
    return "omniseg"


_DEBUG = {"on": False}  # set once per invocation by the root callback (--debug anywhere)


def set_debug(on: bool) -> None:
    _DEBUG["on"] = on


def debug_requested() -> bool:
    return _DEBUG["on"]
