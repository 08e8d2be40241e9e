"""The result files of one slide, written through ``omniseg.export`` (each one atomically),
and the class names, colours and tallies they share.

Everything except summary.json is a pure function of the slide, the model and the parameters, so
a resumed run reproduces labels.ome.tif, objects.geojson, objects.csv and overlay.png byte for
byte; summary.json is written last and marks the result as finished.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omniseg.atomic import atomic_write_json
from omniseg.catalogue import Catalogue, default_catalogue
from omniseg.export import render_overlay, write_geojson, write_label_ome_tiff, write_objects_csv
from omniseg.export.objects import SlideObject
from omniseg.inference.merge import GLOMERULUS, OBJECT_GROUPS
from omniseg.inference.results import SUMMARY_NAME
from omniseg.runtime.memory import release_free_memory

UM2_PER_MM2 = 1e6
GLOMERULUS_NAME = "glomerulus"
LABELS_NAME = "labels.ome.tif"
GEOJSON_NAME = "objects.geojson"
CSV_NAME = "objects.csv"
OVERLAY_NAME = "overlay.png"
OUTPUT_NAMES = (LABELS_NAME, GEOJSON_NAME, CSV_NAME, OVERLAY_NAME, SUMMARY_NAME)


@dataclass(frozen=True)
class ModelSource:
    """Where the weights came from (recorded in summary.json)."""

    path: str | None
    sha256: str | None


def label_names(catalogue: Catalogue | None = None) -> dict[int, str]:
    """Label value -> name of the label map (0 = background), as a pathologist reads it: the
    glomerular unit's label (the capsule task, outside the tuft) is "glomerulus", as in
    summary.json, the GeoJSON and the CSV; "tuft" is drawn inside it."""
    cat = catalogue or default_catalogue()
    named = {t.label_value: t.name for t in cat.tissues}
    named[GLOMERULUS + 1] = GLOMERULUS_NAME
    return {0: "background", **named}


def label_colors(catalogue: Catalogue | None = None) -> dict[int, tuple[int, int, int]]:
    cat = catalogue or default_catalogue()
    return {t.label_value: t.color for t in cat.tissues}


def object_names(catalogue: Catalogue | None = None) -> dict[int, str]:
    """Object class id -> name. The glomerular unit (capsule ∪ tuft) uses the capsule's id and
    is called "glomerulus" (catalogues are the kidney's: ``catalogue.check_kidney``)."""
    names = {t.id: t.name for t in (catalogue or default_catalogue()).tissues}
    return {
        group: (GLOMERULUS_NAME if group == GLOMERULUS else names[group])
        for group, _ in OBJECT_GROUPS
    }


def object_colors(catalogue: Catalogue | None = None) -> dict[int, tuple[int, int, int]]:
    colours = {t.id: t.color for t in (catalogue or default_catalogue()).tissues}
    return {group: colours[group] for group, _ in OBJECT_GROUPS}


class ClassTally:
    """Per-class object count and summed area, gathered one object at a time (objects themselves
    are not kept: a whole slide's worth does not fit in memory)."""

    def __init__(self, catalogue: Catalogue | None = None) -> None:
        self.names = object_names(catalogue)
        self.count = dict.fromkeys(self.names, 0)
        self.area_um2 = dict.fromkeys(self.names, 0.0)

    def add(self, obj: SlideObject) -> None:
        self.count[obj.class_id] += 1
        self.area_um2[obj.class_id] += obj.area_um2

    def tables(self) -> dict:
        """The ``classes`` and ``objects`` entries of summary.json."""
        table = {
            name: {
                "count": self.count[group],
                "area_mm2": round(self.area_um2[group] / UM2_PER_MM2, 6),
            }
            for group, name in self.names.items()
        }
        return {"classes": table, "objects": sum(self.count.values())}


def class_tables(objects: Iterable[SlideObject]) -> dict:
    """Per-class object count and area (mm²) for summary.json, in one pass over ``objects``."""
    tally = ClassTally()
    for obj in objects:
        tally.add(obj)
    return tally.tables()


def label_thumbnail(labels, shape_hw: tuple[int, int], downsample: float) -> np.ndarray:
    """Nearest samples of the level-0 label map (anything with ``shape`` and ``take(rows,
    cols)``, e.g. a ``ChunkCache``) at the thumbnail's pixel centres."""
    height, width = labels.shape
    rows = np.minimum(((np.arange(shape_hw[0]) + 0.5) * downsample).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(shape_hw[1]) + 0.5) * downsample).astype(np.int64), width - 1)
    return np.asarray(labels.take(rows, cols))


@dataclass(frozen=True)
class LabelImage:
    """The level-0 label map as the writers read it: its shape, a tile reader, and its samples
    on the thumbnail (for the overlay)."""

    shape_hw: tuple[int, int]
    read_tile: Callable
    thumb: np.ndarray
    thumb_labels: np.ndarray


def write_outputs(
    folder: Path,
    objects: Iterable[SlideObject],
    labels: LabelImage,
    *,
    mpp: float,
    object_type: str,
    catalogue: Catalogue | None = None,
    threads: int = 1,
) -> None:
    """labels.ome.tif, objects.geojson, objects.csv and overlay.png (summary.json comes last,
    from :func:`write_summary`, and marks the result finished).

    ``objects`` is iterated twice (GeoJSON, then CSV): a list, or a re-iterable stream in id
    order such as ``spool.ObjectSpool``. ``threads`` compress the label pyramid's tiles."""
    release_free_memory()  # each writer starts from a trimmed heap (bounded peak RSS)
    write_label_ome_tiff(
        folder / LABELS_NAME,
        labels.shape_hw,
        labels.read_tile,
        mpp=mpp,
        class_names=label_names(catalogue),
        threads=threads,
    )
    release_free_memory()
    write_geojson(
        folder / GEOJSON_NAME,
        objects,
        object_type=object_type,
        class_names=object_names(catalogue),
        class_colors=object_colors(catalogue),
    )
    write_objects_csv(folder / CSV_NAME, objects, object_names(catalogue))
    release_free_memory()
    render_overlay(
        folder / OVERLAY_NAME,
        labels.thumb,
        labels.thumb_labels,
        class_names=label_names(catalogue),
        class_colors=label_colors(catalogue),
    )


def write_summary(folder: Path, summary: dict) -> None:
    atomic_write_json(folder / SUMMARY_NAME, summary)
