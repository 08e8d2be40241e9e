"""Where a slide's results go, and the rules that protect existing results.

``OUT/<stem>/`` per slide; a second slide with the same file name (another folder) gets
``OUT/<stem>-<8 hex of sha1(absolute path)>/``. Each result folder records its source slide in
``.source.json`` so a later run can tell "my earlier result" (resume/overwrite rules apply) from
"another slide's result" (never touched).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from omniseg.errors import OmnisegError
from omniseg.io.atomic import atomic_write_json

SOURCE_NAME = ".source.json"
WORK_NAME = ".work"
SUMMARY_NAME = "summary.json"
OUTPUT_NAMES = ("labels.ome.tif", "objects.geojson", "objects.csv", "overlay.png", SUMMARY_NAME)
HASH_CHARS = 8


def _recorded_source(folder: Path) -> str | None:
    try:
        return json.loads((folder / SOURCE_NAME).read_text(encoding="utf-8"))["slide"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def result_dir(out: Path, slide: Path, taken: set[str] | None = None) -> Path:
    """The slide's result folder under ``out`` (not created)."""
    source = str(slide.resolve())
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:HASH_CHARS]
    for name in (slide.stem, f"{slide.stem}-{digest}"):
        folder = out / name
        if taken is not None and name in taken:
            continue
        if not folder.exists() or _recorded_source(folder) in (None, source):
            return folder
    return out / f"{slide.stem}-{digest}"


def is_complete(folder: Path) -> bool:
    return (folder / SUMMARY_NAME).is_file()


def prepare_result_dir(folder: Path, slide: Path, *, resume: bool, overwrite: bool) -> bool:
    """Create or reuse ``folder``; True when it already holds a finished result to keep.

    Without --resume/--overwrite an existing result (finished or interrupted) is an error.
    """
    has_content = folder.exists() and any(folder.iterdir())
    if has_content and not (resume or overwrite):
        state = "a finished" if is_complete(folder) else "an interrupted"
        raise OmnisegError(
            f"{folder}: holds {state} result for {slide.name}; pass --resume to continue/keep it "
            "or --overwrite to redo it (or choose another -o)"
        )
    if has_content and overwrite:
        for name in (*OUTPUT_NAMES, SOURCE_NAME):
            (folder / name).unlink(missing_ok=True)
        shutil.rmtree(folder / WORK_NAME, ignore_errors=True)
    if resume and is_complete(folder):
        shutil.rmtree(folder / WORK_NAME, ignore_errors=True)  # killed after summary.json
        return True
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / SOURCE_NAME, {"slide": str(slide.resolve())})
    return False
