"""Human-readable terminal output (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_info(data: dict) -> None:
    console = Console()
    console.print(f"omniseg {data['omniseg']}  torch {data['torch']}  device {data['device']}")
    bundled = data.get("bundled_model")
    console.print(
        "bundled model: none in this build (pass --weights MODEL_DIR)"
        if bundled is None
        else f"bundled model: {bundled['name']} (--weights default)  {bundled['folder']}  "
        f"sha256 {bundled['sha256']}",
        soft_wrap=True,
    )
    models = Table(title="registered models")
    models.add_column("name")
    models.add_column("parameters", justify="right")
    for name, n in data["models"].items():
        models.add_row(name, f"{n:,}")
    console.print(models)
    tissues = Table(title="tissues (label value = id + 1)")
    for col in ("id", "name", "full name", "scale id", "magnification", "µm/px", "colour"):
        tissues.add_column(col)
    for t in data["tissues"]:
        r, g, b = t["color"]
        tissues.add_row(
            str(t["id"]),
            t["name"],
            t["full_name"],
            str(t["scale_id"]),
            f"{t['magnification']}x",
            f"{t['mpp']:g}",
            f"[rgb({r},{g},{b})]■[/] {r},{g},{b}",
        )
    console.print(tissues)
    scales = Table(title="scales")
    for col in ("scale id", "magnification", "µm/px"):
        scales.add_column(col)
    for s in data["scales"]:
        scales.add_row(str(s["id"]), f"{s['magnification']}x", f"{s['mpp']:g}")
    console.print(scales)
