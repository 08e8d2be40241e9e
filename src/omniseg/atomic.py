"""Atomic file writes: a temp file in the target's folder, renamed into place only on success.

A crash or an exception never leaves a partial output behind, and a resumed run never mistakes a
half-written file for a finished one (os.replace is atomic within one file system). The temp file
is flushed to disk (fsync) before the rename, so a power cut cannot leave an empty "finished"
file; a full disk is reported with the file's path, and the earlier file stays as it was.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omniseg.errors import OmnisegError


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to `path`; rename it to `path` on success, delete it on error.

    The temp name keeps the final suffix (some writers choose the format from it) and starts
    with a dot so folder listings and globbing for outputs skip it.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}.tmp{final.suffix}")
    try:
        yield temp
        _fsync(temp)
        os.replace(temp, final)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(final) from exc
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class DiskFullError(OmnisegError):
    """No space left while writing `path`; `advice` says what was kept and what to do."""

    def __init__(self, path: Path, advice: str | None = None) -> None:
        self.path = path
        advice = advice or f"the previous {path.name}, if any, is unchanged: free space and rerun"
        super().__init__(f"{path}: the disk is full (no space left while writing it); {advice}")


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: BaseException | None) -> bool:
    """True when `exc`, or an error it was raised from, is a full disk or quota."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _fsync(path: Path) -> None:
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_temp_of(name: str, final: str) -> bool:
    """True when `name` is a half-written temp file or folder of `final` (this module's
    ``.<stem>.<random>.tmp<suffix>`` or ``.<final>.<random>`` patterns)."""
    stem, suffix = Path(final).stem, Path(final).suffix
    return name.startswith(f".{final}.") or (
        name.startswith(f".{stem}.") and name.endswith(f".tmp{suffix}")
    )


def default_mode(is_dir: bool) -> int:
    """Permissions a plain open()/mkdir() would give (mkstemp/mkdtemp make 0600/0700, which a
    shared model or run folder must not keep)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if is_dir else 0o666) & ~umask


def backup_of(folder: Path) -> Path:
    """Where :func:`atomic_folder` keeps the previous folder during the swap."""
    return folder.with_name(f".{folder.name}.old")


_MKDTEMP_SUFFIX = re.compile(r"^[a-z0-9_]{8}$")


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the temp folders a killed :func:`atomic_folder` of ``target`` left beside it
    (``.<name>.<8 random chars>``; never ``.<name>.old``, which may hold the previous result).
    Call it holding ``target``'s lock: a live writer's temp folder looks the same."""
    removed = []
    prefix = f".{target.name}."
    for entry in target.parent.glob(f".{glob.escape(target.name)}.*"):
        rest = entry.name[len(prefix) :]
        if entry.is_dir() and not entry.is_symlink() and _MKDTEMP_SUFFIX.match(rest):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp sibling folder; on success it replaces `path` (the old one survives until
    the new one is in place, as ``.<name>.old``, so a stop between the renames loses neither);
    on error it is deleted and `path` is untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        temp.chmod(default_mode(True))
        yield temp
        backup = backup_of(target)
        if target.exists():
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
        os.replace(temp, target)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_synced(path: Path, data: bytes | memoryview) -> None:
    """Write bytes and fsync them (a power cut cannot leave an empty 'finished' file)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (LF line endings on every OS)."""
    with atomic_path(path) as temp, open(temp, "w", encoding=encoding, newline="\n") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(
    path: str | os.PathLike[str], data: Any, *, sort_keys: bool = False, indent: int | None = 2
) -> Path:
    """Write `data` as JSON atomically; `sort_keys=True` gives byte-stable files for dicts."""
    text = json.dumps(data, sort_keys=sort_keys, indent=indent, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")
