"""Which slide a result was made from, so ``--resume`` never mixes two slides.

A slide's identity is its size, its modification time and the SHA-256 of a sample of its bytes
(the first and last MiB, where the header and the tile offsets live, and eight 64 KiB pieces
spread over the rest): replacing the file at the same path changes it, reading it costs a few
milliseconds even for a 3 GB slide. It is recorded in the result's ``.source.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from omniseg.errors import OmnisegError
from omniseg.inference.results import SOURCE_NAME

HEAD_TAIL = 1 << 20  # bytes hashed at each end
PIECE = 1 << 16  # bytes of each piece in between
PIECES = 8


def slide_identity(path: Path) -> dict:
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        digest.update(fh.read(HEAD_TAIL))
        for i in range(1, PIECES + 1):
            fh.seek(stat.st_size * i // (PIECES + 1))
            digest.update(fh.read(PIECE))
        fh.seek(max(0, stat.st_size - HEAD_TAIL))
        digest.update(fh.read(HEAD_TAIL))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample_sha256": digest.hexdigest()}


def _describe(identity: dict) -> str:
    return f"{identity['size']} bytes, sample SHA-256 {identity['sample_sha256'][:12]}"


def check_same_slide(folder: Path, slide: Path, identity: dict) -> None:
    """Refuse to resume ``folder`` from another slide than the one it was started from."""
    try:
        recorded = json.loads((folder / SOURCE_NAME).read_text(encoding="utf-8")).get("identity")
    except (OSError, ValueError, AttributeError):
        return  # nothing recorded (a result of an older version): nothing to compare
    if not recorded:
        return
    same = (recorded.get("size"), recorded.get("sample_sha256")) == (
        identity["size"], identity["sample_sha256"])  # fmt: skip
    if not same:
        raise OmnisegError(
            f"{folder}: --resume, but {slide} is not the slide this result was made from "
            f"(then: {_describe(recorded)}; now: {_describe(identity)}); pass --overwrite to "
            "redo it, or choose another -o"
        )


def check_finished_matches(folder: Path, summary: dict, weights_sha256, tasks) -> None:
    """A finished result is kept on --resume only if it was made with these weights and tasks."""
    made_with = summary.get("model", {}).get("weights_sha256")
    made_tasks = summary.get("parameters", {}).get("tasks")
    if weights_sha256 and made_with and made_with != weights_sha256:
        raise OmnisegError(
            f"{folder}: --resume would keep a result made with other weights (SHA-256 "
            f"{made_with[:12]}, now {weights_sha256[:12]}); pass --overwrite to redo it"
        )
    if made_tasks is not None and list(made_tasks) != list(tasks):
        raise OmnisegError(
            f"{folder}: --resume would keep a result made for tasks {made_tasks}, not {list(tasks)}; "
            "pass --overwrite to redo it"
        )
