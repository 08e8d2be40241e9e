"""Which slides a cohort holds: paths on the command line, or a list file (``--list``).

A ``.txt`` list holds one path per line (blank lines and ``#`` comments skipped); a ``.csv``
list has a ``path`` column and optional ``mpp``, ``roi`` and ``tasks`` columns for per-slide
overrides. Relative paths are read from the list's folder.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from omniseg.errors import OmnisegError

LIST_COLUMNS = ("path", "mpp", "roi", "tasks")


@dataclass(frozen=True)
class SlideJob:
    """One slide of a cohort with its own overrides (None = the command's setting)."""

    path: Path
    mpp: float | None = None
    roi: Path | None = None
    tasks: str | None = None  # "dt,pt" as --tasks takes it


def read_slide_list(path: str | Path) -> list[SlideJob]:
    """Slides of a ``.txt`` or ``.csv`` list; raises OmnisegError naming the file and line."""
    source = Path(path)
    if not source.is_file():
        raise OmnisegError(f"{source}: slide list not found; check the --list path")
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise OmnisegError(
            f"{source}: unreadable slide list ({exc}); save it as UTF-8 text"
        ) from exc
    jobs = _csv_jobs(source, text) if source.suffix.lower() == ".csv" else _txt_jobs(source, text)
    if not jobs:
        raise OmnisegError(f"{source}: the slide list is empty; put one slide path per line")
    return jobs


def unique_jobs(jobs: list[SlideJob]) -> tuple[list[SlideJob], list[Path]]:
    """(each slide once, in first-seen order; the repeats dropped). A slide listed twice ran
    twice and was counted twice; listed twice with other settings it is an error."""
    seen: dict[Path, SlideJob] = {}
    repeats: list[Path] = []
    for job in jobs:
        key = Path(os.path.abspath(job.path))
        first = seen.get(key)
        if first is None:
            seen[key] = job
        elif (first.mpp, first.roi, first.tasks) == (job.mpp, job.roi, job.tasks):
            repeats.append(job.path)
        else:
            raise OmnisegError(
                f"{job.path}: listed twice with different settings; keep one line per slide"
            )
    return list(seen.values()), repeats


def _txt_jobs(source: Path, text: str) -> list[SlideJob]:
    jobs = []
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            jobs.append(SlideJob(_resolve(source, entry)))
    return jobs


def _csv_jobs(source: Path, text: str) -> list[SlideJob]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted newlines stay in their cell
    columns = [c.strip() for c in reader.fieldnames or []]
    if "path" not in columns:
        raise OmnisegError(
            f"{source}: a CSV slide list needs a 'path' column (optional: mpp, roi, tasks); "
            f"found {columns}"
        )
    jobs = []
    for row in reader:
        line = reader.line_num  # the row's last physical line (a quoted cell may span lines)
        if None in row:  # more cells than columns: an unquoted "dt,pt"
            raise OmnisegError(
                f'{source}:{line}: more cells than columns; quote a task list ("dt,pt")'
            )
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("path"):
            continue
        jobs.append(
            SlideJob(
                _resolve(source, row["path"]),
                mpp=_mpp(row.get("mpp"), f"{source}:{line}"),
                roi=_resolve(source, row["roi"]) if row.get("roi") else None,
                tasks=row.get("tasks") or None,
            )
        )
    return jobs


def _resolve(source: Path, entry: str) -> Path:
    candidate = Path(entry).expanduser()
    return candidate if candidate.is_absolute() else source.parent / candidate


def _mpp(text: str | None, where: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise OmnisegError(f"{where}: mpp must be a number (µm/px), got {text!r}") from exc
    if not (math.isfinite(value) and value > 0):
        raise OmnisegError(f"{where}: mpp must be a positive number, got {text!r}")
    return value
