"""One writer per output folder: an advisory lock file beside the folder.

``OUT/.<name>.lock`` is held with ``flock`` while a slide's result folder or a training run
folder is written. The kernel drops the lock when its process dies (even on ``kill -9``), so a
lock left by a dead process is stale by construction: the next run takes it over and says so.
A second live process is refused at once with the holder's pid; its message must not suggest
``--resume`` (the first run is not interrupted, it is running).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from omniseg.errors import OmnisegError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks (documented in docs/robustness.md)
    fcntl = None

log = logging.getLogger("omniseg")


def lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def require_writable(parent: Path, folder: Path) -> None:
    """The folder that holds ``folder`` must take new files: its lock, and the staging folder
    of an atomic replace, live beside it. A read-only parent (``/scratch/$USER`` itself, say) is
    one clear line, before any work."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".omniseg-probe-"):
            pass
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise OmnisegError(
            f"{folder}: its parent folder {parent} is not writable ({exc.strerror}); omniseg "
            f"keeps a lock file and a staging folder beside {folder.name}: choose an output "
            f"inside a folder you can write to, e.g. {folder / 'run'}"
        ) from None


class FolderBusyError(OmnisegError):
    """Another live process holds the folder's lock; ``holder`` is what it recorded."""

    def __init__(self, message: str, holder: dict) -> None:
        super().__init__(message)
        self.holder = holder


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], owner: str | None = None) -> Iterator[None]:
    """Hold the lock of ``folder`` (created beside it) for the block; refuse a live holder.

    ``owner`` (e.g. the slide a result folder is for) is recorded with the holder, so a process
    that finds the folder busy can tell whether it is busy with the same work."""
    folder = Path(folder)
    if fcntl is None:
        yield
        return
    path = lock_path(folder)
    require_writable(path.parent, folder)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(path)
            raise FolderBusyError(
                f"{folder}: being written by another running omniseg process (pid "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                f"{holder.get('started', '?')}); wait for it to finish or stop it first",
                holder,
            ) from None
        try:  # the file may have been unlinked by its previous holder meanwhile: retry then
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    previous = _holder(path)
    if previous.get("pid"):
        log.info(
            "%s: took over a stale lock of pid %s (no longer running)", folder, previous["pid"]
        )
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        **({"owner": owner} if owner is not None else {}),
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(record).encode("utf-8"))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
