"""`omniseg train` command (thin shell over the Python API)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the command to the app (filled in by the train stage)."""
    del app
