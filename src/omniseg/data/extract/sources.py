"""Per slide: which tasks it labels, where their objects are, and how to mask a window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from omniseg.catalogue import Catalogue, Tissue
from omniseg.data.extract.classes import CONTAINS, mapped_classes
from omniseg.data.extract.labels import (
    LabelImage,
    LabelImageLabels,
    PolygonLabels,
    label_image_objects,
    to_native,
)
from omniseg.io.annotations import AnnotationSet, load_annotations
from omniseg.io.base import SlideReader
from omniseg.io.levels import thumbnail
from omniseg.io.tissue import detect_tissue

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
TISSUE_THUMBNAIL_SIDE = 2000  # px: negatives are drawn on tissue found at this size


@dataclass
class TaskSource:
    """One task's objects (level-0 geometries), the region where negatives may be drawn
    (level 0; None = none can be), and its window masks (native scale)."""

    tissue: Tissue
    objects: list[BaseGeometry]
    negative_region: BaseGeometry | None
    avoid: BaseGeometry | None
    labels: object  # PolygonLabels | LabelImageLabels: .masks(window) -> (fg, known)


@dataclass
class SlideSources:
    tasks: list[TaskSource]
    unmapped: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    closer: Callable[[], None] | None = None


def is_label_image(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in TIFF_MAGIC


def tissue_test(reader: SlideReader) -> Callable[[float, float], bool]:
    """(x, y) level-0 -> on detected tissue (thumbnail lookup)."""
    thumb, downsample = thumbnail(reader, TISSUE_THUMBNAIL_SIDE)
    found = detect_tissue(thumb)
    height, width = found.shape

    def on_tissue(x: float, y: float) -> bool:
        row = min(int(y / downsample), height - 1)
        col = min(int(x / downsample), width - 1)
        return bool(found[row, col])

    return on_tissue


def polygon_sources(
    path: Path,
    reader: SlideReader,
    catalogue: Catalogue,
    mapping,
    regions_class: str,
    complete: bool,
) -> SlideSources:
    """Tasks labelled by a QuPath GeoJSON or ImageScope XML file."""
    found: AnnotationSet = load_annotations(path, reader.info)
    names = [s.class_name for s in found.shapes]
    region_names = {n for n in names if n is not None and n.lower() == regions_class.lower()}
    tasks, unmapped = mapped_classes((n for n in names if n not in region_names), mapping)
    regions = shapely.union_all(
        [s.geometry for s in found.shapes if s.class_name in region_names]
    ) if region_names else None  # fmt: skip
    out = SlideSources([], unmapped=unmapped, skipped=dict(found.skipped))
    if unmapped:
        out.warnings.append(
            f"{path}: classes not mapped to a task, skipped: {', '.join(unmapped)} (map them "
            'with --classes "NAME=task")'
        )
    if not complete and regions is None:
        out.warnings.append(
            f"{path}: no '{regions_class}' objects and no --complete: only the drawn objects "
            "are labelled, every other pixel is unknown, and no negative patches can be cut"
        )
    width, height = reader.info.dimensions
    known = box(0, 0, width, height) if complete else regions
    for task_id, classes in sorted(tasks.items()):
        tissue = catalogue.tissue(task_id)
        shapes = [s.geometry for s in found.shapes if s.class_name in classes]
        inside = list(shapes)  # a capsule's foreground includes its tuft's outline
        for contained in CONTAINS.get(tissue.name, ()):
            extra = tasks.get(catalogue.tissue(contained).id, [])
            inside += [s.geometry for s in found.shapes if s.class_name in extra]
        foreground = shapely.union_all(inside)
        to_level0 = catalogue.scale_of(tissue).mpp / float(reader.info.mpp)
        labels = PolygonLabels(
            to_native(foreground, to_level0),
            None if complete else to_native(known if known is not None else Polygon(), to_level0),
        )
        objects = [p for s in shapes for p in _parts(s)]
        out.tasks.append(TaskSource(tissue, objects, known, foreground, labels))
    return out


def label_image_sources(path: Path, reader: SlideReader, catalogue: Catalogue) -> SlideSources:
    """Tasks labelled by an aligned label image (value = task id + 1): every pixel known."""
    image = LabelImage(path, reader.info.dimensions)
    try:
        return _label_image_tasks(path, image, reader, catalogue)
    except BaseException:
        image.close()
        raise


def _label_image_tasks(path, image: LabelImage, reader, catalogue: Catalogue) -> SlideSources:
    present = image.values() - {0}
    by_value = {t.label_value: t for t in catalogue.tissues}
    unmapped = sorted(str(v) for v in present if v not in by_value)
    out = SlideSources([], unmapped=unmapped, closer=image.close)
    if unmapped:
        out.warnings.append(
            f"{path}: label values not in the catalogue, skipped: {', '.join(unmapped)} "
            f"(values are task id + 1: {', '.join(f'{k}={t.name}' for k, t in by_value.items())})"
        )
    width, height = reader.info.dimensions
    for value in sorted(v for v in present if v in by_value):
        tissue = by_value[value]
        inner = [catalogue.tissue(c).label_value for c in CONTAINS.get(tissue.name, ())]
        values = (value, *inner)
        to_level0 = catalogue.scale_of(tissue).mpp / float(reader.info.mpp)
        objects = label_image_objects(image, (value,))
        labels = LabelImageLabels(image, values, to_level0)
        region = box(0, 0, width, height)
        out.tasks.append(TaskSource(tissue, objects, region, shapely.union_all(objects), labels))
    return out


def slide_sources(
    path: Path, reader: SlideReader, catalogue: Catalogue, mapping, regions_class, complete
) -> SlideSources:
    if is_label_image(path):
        return label_image_sources(path, reader, catalogue)
    return polygon_sources(path, reader, catalogue, mapping, regions_class, complete)


def _parts(geometry: BaseGeometry) -> list[BaseGeometry]:
    geoms = getattr(geometry, "geoms", None)
    return list(geoms) if geoms is not None else [geometry]
