"""`omniseg view` (thin shell over omniseg.viewer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LOCAL = "127.0.0.1"


def view(
    out: Annotated[
        Path, typer.Argument(help="A result folder, or a folder of results (demo, cohort).")
    ],
    compare: Annotated[
        Path | None, typer.Option("--compare", help="Results of the same slides to show beside.")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    host: Annotated[
        str,
        typer.Option("--host", help="Address to bind; other than 127.0.0.1 exposes the results."),
    ] = LOCAL,
) -> None:
    """Serve a local, read-only web viewer of segmentation results (Ctrl-C stops it)."""
    import asyncio

    from omniseg.errors import OmnisegError
    from omniseg.viewer.server import Viewer, make_app

    if not 0 < port < 65536:
        raise OmnisegError(f"--port {port}: must lie in 1..65535")
    if not out.is_dir():
        raise OmnisegError(f"{out}: not a folder; pass the -o folder of omniseg segment or demo")
    viewer = Viewer(out, compare)
    app = make_app(viewer)

    async def serve() -> None:
        try:
            app.listen(port, address=host)
        except OSError as exc:
            raise OmnisegError(
                f"--port {port}: cannot listen on {host} ({exc}); choose another port"
            ) from exc
        where = (
            "only this machine can reach it"
            if host == LOCAL
            else f"reachable on {host}: anyone who can reach it sees the results"
        )
        typer.echo(
            f"omniseg view: http://{host}:{port}/ ({len(viewer.sources)} result(s); {where}; Ctrl-C stops)"
        )
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()


def register(app: typer.Typer) -> None:
    """Add `view` to the app."""
    app.command("view")(view)
