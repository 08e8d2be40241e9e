"""Run ``omniseg view``'s app on a free local port in a background thread (tests)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from omniseg.viewer.server import Viewer, make_app


@contextlib.contextmanager
def serving(viewer: Viewer):
    """Yield the base URL of the running app; stop it and close the viewer afterwards."""
    app = make_app(viewer)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box = {}

    def run():
        asyncio.set_event_loop(loop)

        async def start():
            box["server"] = app.listen(0, address="127.0.0.1")
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    port = next(iter(box["server"]._sockets.values())).getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        viewer.close()
