"""Where a slide's results go, and the rules that protect existing results.

``OUT/<stem>/`` per slide; a second slide with the same file name (another folder) gets
``OUT/<stem>-<8 hex of sha1(absolute path)>/``. Each result folder records its source slide in
``.source.json`` so a later run can tell "my earlier result" (resume/overwrite rules apply) from
"another slide's result" (never touched).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from omniseg.atomic import atomic_write_json, is_temp_of
from omniseg.errors import OmnisegError
from omniseg.locks import FolderBusyError, folder_lock

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


def safe_name(stem: str) -> str:
    """A folder name that stays inside OUT whatever the slide is called (``...tif`` has the stem
    ``..``): path separators and control characters become ``_``, leading dots are dropped."""
    cleaned = "".join("_" if c in "/\\" or ord(c) < 32 else c for c in stem).lstrip(".").strip()
    return cleaned or "slide"


def source_path(slide: Path) -> str:
    """The slide's absolute path, resolved where possible (a symlink loop stays unresolved, so
    the error is reported by the slide's own handler, not here)."""
    try:
        return str(slide.resolve())
    except (OSError, RuntimeError):
        return str(Path(os.path.abspath(slide)))


def result_dir(out: Path, slide: Path, taken: set[str] | None = None) -> Path:
    """The slide's result folder directly under ``out`` (not created)."""
    source = source_path(slide)
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:HASH_CHARS]
    stem = safe_name(slide.stem)
    for name in (stem, f"{stem}-{digest}"):
        folder = out / name
        if taken is not None and name in taken:
            continue
        if not folder.exists() or _recorded_source(folder) in (None, source):
            return folder
    return out / f"{stem}-{digest}"


def folder_candidates(out: Path, slide: Path, preferred: Path | None = None) -> list[Path]:
    """Where a slide's result may go, in order: the preferred (or the plain) folder, then the
    one named with a digest of the slide's path, which no other slide shares."""
    digest = hashlib.sha1(source_path(slide).encode("utf-8")).hexdigest()[:HASH_CHARS]
    first = preferred or result_dir(out, slide)
    fallback = first.parent / f"{safe_name(slide.stem)}-{digest}"
    return [first] if first == fallback else [first, fallback]


@contextlib.contextmanager
def claimed_result_dir(out: Path, slide: Path, preferred: Path | None = None) -> Iterator[Path]:
    """The slide's result folder, locked, and checked under the lock to be this slide's: a
    folder another slide claimed between the choice and the lock (another process's result of
    a slide with the same file name) is left to it, and the next candidate is taken. A folder
    busy with another slide is not an error either; busy with this slide, it is."""
    source = source_path(slide)
    for folder in folder_candidates(out, slide, preferred):
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(folder_lock(folder, owner=source))
            except FolderBusyError as busy:
                if busy.holder.get("owner") in (None, source):
                    raise
                continue
            if _recorded_source(folder) not in (None, source):
                continue  # another slide's result: released on leaving this block
            yield folder
            return
    raise OmnisegError(
        f"{slide}: every result folder it may use under {out} belongs to another slide; "
        "choose another -o"
    )


def renamed_note(folder: Path, slide: Path) -> str | None:
    """One line when a slide's result folder is not ``OUT/<stem>`` (that name holds another
    slide's result, or another slide of this run took it), so the user is not surprised."""
    plain = safe_name(slide.stem)
    if folder.name == plain:
        return None
    return (
        f"{slide.name}: {folder.parent / plain} holds another slide's result (same file name), so "
        f"this one goes to {folder}; rule: docs/wsi.md, 'Result folders'"
    )


STAGING_SUFFIX = ".overwrite"
RETIRED_SUFFIX = ".replaced"


def staging_dir(folder: Path) -> Path:
    """Where ``--overwrite`` builds the new result, beside the old one (hidden)."""
    return folder.parent / f".{folder.name}{STAGING_SUFFIX}"


def final_dir(folder: Path) -> Path:
    """The result folder a (possibly staging) folder will become."""
    name = folder.name
    if name.startswith(".") and name.endswith(STAGING_SUFFIX):
        return folder.parent / name[1 : -len(STAGING_SUFFIX)]
    return folder


def has_content(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def swap_in(staging: Path, folder: Path) -> None:
    """Replace ``folder`` by the finished ``staging`` folder: two renames, then the old one goes.

    Until the first rename the old result is complete; after the second the new one is. A
    crash between them leaves the old one as ``.<name>.replaced`` (said in the log and kept).
    """
    retired = folder.parent / f".{folder.name}{RETIRED_SUFFIX}"
    shutil.rmtree(retired, ignore_errors=True)
    os.replace(folder, retired)
    os.replace(staging, folder)
    shutil.rmtree(retired, ignore_errors=True)


def is_complete(folder: Path) -> bool:
    return (folder / SUMMARY_NAME).is_file()


def remove_half_written(folder: Path) -> None:
    """Temp files of the result files a killed run was writing (``.objects.<random>.tmp.geojson``):
    a resumed result holds only finished files."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_file() and any(is_temp_of(entry.name, n) for n in (*OUTPUT_NAMES, SOURCE_NAME)):
            entry.unlink(missing_ok=True)


def prepare_result_dir(
    folder: Path, slide: Path, *, resume: bool, overwrite: bool, identity: dict | None = None
) -> bool:
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
    if resume:
        remove_half_written(folder)
    if resume and is_complete(folder):
        shutil.rmtree(folder / WORK_NAME, ignore_errors=True)  # killed after summary.json
        return True
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / SOURCE_NAME, {"slide": source_path(slide), "identity": identity})
    return False
