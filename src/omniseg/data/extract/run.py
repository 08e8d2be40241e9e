"""``omniseg extract``: annotated slides -> native-scale training patches + manifest.csv.

Per slide and task: patches centred on annotated objects (jittered), plus a share of negatives
drawn on annotated tissue away from the class, each cut at the task's own magnification from
the slide's best level (the readers and resolution code of ``segment``). Masks hold 255 for the
class, 0 for known background and ``UNKNOWN`` where nothing was annotated (the manifest's
``ignore_value``). The folder appears only when complete (built beside it, then renamed).
"""

from __future__ import annotations

import csv
import io
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from omniseg.atomic import atomic_folder, remove_stale_staging
from omniseg.catalogue import Catalogue, GlomerulusSize, default_catalogue
from omniseg.data.dataset import val_groups
from omniseg.data.extract.classes import parse_class_map
from omniseg.data.extract.sampling import centred_window, jittered, negative_points, object_points
from omniseg.data.extract.scale_check import check_annotation_scale, glomerulus_size_warning
from omniseg.data.extract.sources import TaskSource, slide_sources, tissue_test
from omniseg.data.patches import MANIFEST_NAME
from omniseg.errors import OmnisegError
from omniseg.io import open_slide, read_at_mpp, target_shape
from omniseg.io.annotation_formats import holds_many_images
from omniseg.io.raster import Window
from omniseg.locks import folder_lock
from omniseg.models.config import MAX_TILE, MIN_TILE
from omniseg.threads import ordered_map

UNKNOWN = 127  # mask value of unannotated pixels (the manifest's ignore_value)
FOREGROUND = 255
PNG_COMPRESSION = 3  # zlib level: 6 (PIL's default) took ~2x longer for ~5 % smaller files
SUMMARY_NAME = "extract.json"
COLUMNS = (
    "image", "mask", "task_id", "scale_id", "stain", "split", "slide", "group",
    "ignore_value", "kind", "x", "y", "mpp",
)  # fmt: skip
ANNOTATION_SUFFIXES = (".geojson", ".json", ".xml", ".ome.tif", ".ome.tiff", ".tif", ".tiff")
GLOMERULUS_TASK = "capsule"  # the glomerular unit: its outline is the whole glomerulus


@dataclass(frozen=True)
class ExtractSettings:
    """How patches are cut (recorded in extract.json)."""

    classes: str | None = None  # "Glomerulus=capsule,..."; None = the catalogue's names
    regions_class: str = "Region"  # class of the objects that mark fully annotated regions
    complete: bool = False  # every instance of the mapped classes is drawn on the whole slide
    patch: int = 512  # px at each task's native scale
    per_class: int = 50  # at most this many positive patches per task and slide
    negatives: float = 0.25  # negative patches per positive patch
    mpp: float | None = None  # override the slide's level-0 µm/px
    stain: str = "unknown"
    val_fraction: float = 0.25  # share of slides (groups) whose patches go to val
    seed: int = 0
    workers: int = 2  # threads cutting patches (the output does not depend on it)
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not MIN_TILE <= self.patch <= MAX_TILE:
            raise OmnisegError(f"--patch {self.patch}: must lie in [{MIN_TILE}, {MAX_TILE}] px")
        if self.per_class < 1:
            raise OmnisegError(f"--per-class must be >= 1, got {self.per_class}")
        if not 0 <= self.negatives <= 10:
            raise OmnisegError(f"--negatives must lie in [0, 10], got {self.negatives}")
        if not 0 <= self.val_fraction < 1:
            raise OmnisegError(f"--val-fraction must lie in [0, 1), got {self.val_fraction}")
        if self.workers < 0:
            raise OmnisegError(f"--workers must be >= 0, got {self.workers}")
        if self.mpp is not None and not self.mpp > 0:
            raise OmnisegError(f"--mpp must be a positive number, got {self.mpp}")


@dataclass
class ExtractResult:
    out: Path
    patches: int
    seconds: float
    slides: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def patches_per_s(self) -> float:
        return self.patches / self.seconds if self.seconds > 0 else 0.0

    def has_val(self) -> bool:
        """Whether any patch went to the val split (a single slide never does)."""
        manifest = self.out / MANIFEST_NAME
        if not manifest.is_file():
            return False
        with open(manifest, newline="", encoding="utf-8") as fh:
            return any(row.get("split") == "val" for row in csv.DictReader(fh))


def annotation_for(slide: Path, annotations: Path, n_slides: int) -> Path:
    """The annotation file of one slide: ``annotations`` itself, or ``<stem>.<ext>`` in it."""
    if annotations.is_file():
        if n_slides > 1 and not holds_many_images(annotations):
            raise OmnisegError(
                f"{annotations}: one annotation file for {n_slides} slides; pass a folder "
                "holding <slide name>.geojson (or .xml, .tif) for each slide, or one COCO file"
            )
        return annotations
    if not annotations.is_dir():
        raise OmnisegError(f"{annotations}: not found; pass an annotation file or folder")
    for suffix in ANNOTATION_SUFFIXES:
        candidate = annotations / f"{slide.stem}{suffix}"
        if candidate.is_file() and candidate.resolve() != slide.resolve():
            return candidate
    raise OmnisegError(
        f"{slide}: no annotation file {slide.stem}.geojson / .xml / .tif in {annotations}"
    )


def extract_patches(
    slides: Sequence[str | Path],
    annotations: str | Path,
    out: str | Path,
    settings: ExtractSettings = ExtractSettings(),
    catalogue: Catalogue | None = None,
) -> ExtractResult:
    """Cut every slide's patches into ``out`` (manifest.csv, extract.json); raises OmnisegError."""
    cat = catalogue or default_catalogue()
    mapping = parse_class_map(settings.classes, cat)
    out = Path(out)
    paths = [Path(s) for s in slides]
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise OmnisegError("two slides share a file name; their patches would collide")
    pairs = [(p, annotation_for(p, Path(annotations), len(paths))) for p in paths]
    with folder_lock(out):  # one writer: a second run to the same OUT is refused, not raced
        remove_stale_staging(out)  # a killed run's half-cut patch folder beside OUT
        if out.exists() and any(out.iterdir()) and not settings.overwrite:
            raise OmnisegError(
                f"{out}: exists and is not empty; choose a new folder or --overwrite"
            )
        return _extract_locked(pairs, annotations, out, settings, cat, mapping)


def _extract_locked(pairs, annotations, out: Path, settings, cat, mapping) -> ExtractResult:
    started = time.perf_counter()
    result = ExtractResult(out, 0, 0.0)
    rows: list[dict] = []
    with atomic_folder(out) as staging:
        for slide, note in pairs:
            slide_rows, report = _extract_slide(slide, note, staging, settings, cat, mapping)
            rows += slide_rows
            result.slides.append(report)
            result.warnings += report["warnings"]
        if not rows:
            raise OmnisegError(
                f"{annotations}: no patches could be cut: no annotated object of a mapped class "
                "(see the warnings above; map classes with --classes)"
            )
        _assign_splits(rows, settings, result)
        _write_manifest(staging / MANIFEST_NAME, rows)
        result.patches, result.seconds = len(rows), time.perf_counter() - started
        summary = {
            "settings": asdict(settings),
            "patches": result.patches,
            "seconds": round(result.seconds, 2),
            "patches_per_s": round(result.patches_per_s, 2),
            "slides": result.slides,
        }
        (staging / SUMMARY_NAME).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return result


def _extract_slide(slide, note, staging, settings, cat, mapping) -> tuple[list[dict], dict]:
    reader = open_slide(slide, mpp=settings.mpp)
    sources = None
    try:
        sources = slide_sources(
            note, reader, cat, mapping, settings.regions_class, settings.complete
        )
        on_tissue = tissue_test(reader)
        mpp = float(reader.info.mpp)
        check_annotation_scale(note, [g for t in sources.tasks for g in t.objects], on_tissue,
                               reader.info.dimensions, mpp)  # fmt: skip
        glomeruli = [
            g for t in sources.tasks if t.tissue.name == GLOMERULUS_TASK for g in t.objects
        ]
        where = f"{slide.name} ({note.name})"  # one COCO file may hold many images
        size_warning = glomerulus_size_warning(where, glomeruli, mpp, GlomerulusSize())
        if size_warning:
            sources.warnings.append(size_warning)
        counts: dict[str, dict[str, int]] = {}
        jobs = []
        for task in sources.tasks:
            plans = _plan(task, slide, reader, settings, on_tissue)
            counts[task.tissue.name] = {
                k: sum(1 for p in plans if p[0] == k) for k in ("positive", "negative")
            }
            jobs += [(task, kind, index, window) for index, (kind, window) in enumerate(plans)]

        def cut(job) -> dict:
            task, kind, index, window = job
            return _write_patch(reader, slide, task, kind, index, window, staging, settings)

        bar = tqdm(
            total=len(jobs), desc=f"{slide.name}: extract", disable=not settings.progress,
            unit="patch",
        )  # fmt: skip
        rows = []
        with bar:
            for row in ordered_map(cut, jobs, settings.workers, name="omniseg-extract"):
                rows.append(row)
                bar.update(1)
        report = {
            "slide": str(slide),
            "annotations": str(note),
            "patches": counts,
            "unmapped_classes": sources.unmapped,
            "skipped_objects": sources.skipped,
            "warnings": sources.warnings,
        }
        return rows, report
    finally:
        if sources is not None and sources.closer is not None:
            sources.closer()
        reader.close()


def _plan(task: TaskSource, slide: Path, reader, settings, on_tissue) -> list[tuple[str, Window]]:
    """(kind, native window) of every patch of one task on one slide, seeded by slide + task."""
    cat_mpp = task.tissue.mpp
    to_level0 = cat_mpp / float(reader.info.mpp)
    shape = target_shape(reader.info, cat_mpp)
    rng = np.random.default_rng([settings.seed, zlib.crc32(slide.name.encode()), task.tissue.id])
    centres = jittered(
        [(x / to_level0, y / to_level0) for x, y in object_points(task.objects, settings.per_class, rng)],
        settings.patch, rng,
    )  # fmt: skip
    wanted = round(settings.negatives * len(centres))
    negatives = negative_points(task.negative_region, task.avoid, wanted, rng, on_tissue)
    plans = [("positive", centred_window(x, y, settings.patch, shape)) for x, y in centres]
    plans += [
        ("negative", centred_window(x / to_level0, y / to_level0, settings.patch, shape))
        for x, y in negatives
    ]
    return plans


def _write_patch(reader, slide, task, kind, index, window, staging, settings) -> dict:
    tissue = task.tissue
    folder = Path(f"{tissue.id}_{tissue.scale_id}_{tissue.name}") / settings.stain
    (staging / folder).mkdir(parents=True, exist_ok=True)
    stem = f"{slide.stem}_{kind[:3]}{index:04d}"
    image = read_at_mpp(reader, tissue.mpp, window.x, window.y, window.w, window.h)
    fg, known = task.labels.masks(window)
    mask = np.where(known, np.where(fg, FOREGROUND, 0), UNKNOWN).astype(np.uint8)
    image_name = folder / f"{stem}.png"
    mask_name = folder / f"{stem}_mask_{tissue.mask_suffix}.png"
    _save_png(staging / image_name, image)
    _save_png(staging / mask_name, mask)
    to_level0 = tissue.mpp / float(reader.info.mpp)
    return {
        "image": image_name.as_posix(),
        "mask": mask_name.as_posix(),
        "task_id": tissue.id,
        "scale_id": tissue.scale_id,
        "stain": settings.stain,
        "split": "",
        "slide": slide.name,
        "group": slide.stem,
        "ignore_value": UNKNOWN,
        "kind": kind,
        "x": round(window.x * to_level0),
        "y": round(window.y * to_level0),
        "mpp": tissue.mpp,
    }


def _save_png(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=PNG_COMPRESSION)
    path.write_bytes(buffer.getvalue())


def _assign_splits(rows: list[dict], settings: ExtractSettings, result: ExtractResult) -> None:
    """Whole slides go to train or val (never both), as ``omniseg train`` splits by group."""
    groups = sorted({r["group"] for r in rows})
    if len(groups) < 2:
        result.warnings.append(
            "all patches come from one slide: no validation split by slide is possible "
            "(train with --val-split none, or extract more slides)"
        )
        val: set[str] = set()
    else:
        val = val_groups(groups, settings.val_fraction, settings.seed)
    for row in rows:
        row["split"] = "val" if row["group"] in val else "train"


def _write_manifest(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
