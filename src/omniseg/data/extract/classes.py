"""Annotation class names -> omniseg tasks (``--classes "Glomerulus=capsule,Tubule=dt"``).

Unmapped classes are listed and skipped, never guessed: a class called "Tubule" could be distal
or proximal, and a wrong guess would teach the network the wrong tissue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from omniseg.catalogue import Catalogue, Tissue
from omniseg.errors import OmnisegError

# A glomerular unit (capsule task) includes its tuft: tuft outlines are capsule foreground too.
CONTAINS = {"capsule": ("tuft",)}


def default_class_map(catalogue: Catalogue) -> dict[str, Tissue]:
    """Each task under its short name and its full name (case-insensitive keys)."""
    names: dict[str, Tissue] = {}
    for t in catalogue.tissues:
        names[t.name.lower()] = t
        names[t.full_name.lower()] = t
    if "capsule" in names:  # segment's own GeoJSON calls the glomerular unit "glomerulus"
        names.setdefault("glomerulus", names["capsule"])
    return names


def parse_class_map(spec: str | None, catalogue: Catalogue) -> dict[str, Tissue]:
    """``"Glomerulus=capsule,Tuft=tuft"`` -> {annotation class (lower case): task}; None =
    the catalogue's own names."""
    if spec is None or not spec.strip():
        return default_class_map(catalogue)
    out: dict[str, Tissue] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        name, sep, task = item.partition("=")
        if not sep or not name.strip() or not task.strip():
            raise OmnisegError(
                f"--classes {spec!r}: write CLASS=TASK pairs separated by commas, e.g. "
                '"Glomerulus=capsule,Tubule=dt"'
            )
        key = task.strip()
        out[name.strip().lower()] = catalogue.tissue(int(key) if key.isdigit() else key)
    return out


def mapped_classes(
    classes: Iterable[str | None], mapping: Mapping[str, Tissue]
) -> tuple[dict[int, list[str]], list[str]]:
    """({task id: annotation class names}, unmapped class names) for the classes in a file."""
    tasks: dict[int, list[str]] = {}
    unknown: list[str] = []
    for name in sorted({c for c in classes if c is not None}):
        tissue = mapping.get(name.lower())
        if tissue is None:
            unknown.append(name)
        else:
            tasks.setdefault(tissue.id, []).append(name)
    return tasks, unknown
