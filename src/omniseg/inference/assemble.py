"""From native-scale probability stores to the final level-0 label map and its objects.

Chunk by chunk on the level-0 grid: resample every task's probability codes bilinearly to level 0,
merge them (``merge.merge_labels``), gate by the ROI, the (grown) tissue mask and the
full-resolution glass test (``gates``), label connected
components (erasing chunk-interior ones below their class's minimum area at once); then join
components across chunk borders, drop the remaining objects below their class's minimum area (and,
with the glomerulus check, implausible glomeruli: ``anatomy``), and rewrite the label chunks
without them. Chunks that no processed tile touches are skipped without any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import zarr
from shapely import prepared
from shapely.geometry import box
from tqdm import tqdm

from omniseg.export.objects import SlideObject
from omniseg.inference.anatomy import GlomerulusSize, TuftContacts, glomerulus_keep
from omniseg.inference.blend import blended_codes, tiles_seeing
from omniseg.inference.chunk_cache import ChunkCache
from omniseg.inference.components import ChunkLabeller, Components, object_mask, resolve
from omniseg.inference.gates import Gates
from omniseg.inference.merge import CODE_MAX, OBJECT_GROUPS, merge_labels, threshold_code
from omniseg.inference.outlines import mask_outline, outline_perimeter
from omniseg.inference.resample import resample_bilinear, source_window
from omniseg.inference.scale import ScaleSource
from omniseg.inference.tiling import core_size, iter_chunk_windows
from omniseg.io.raster import Window, roi_mask
from omniseg.runtime.memory import release_free_memory
from omniseg.threads import ordered_map

TRIM_EVERY_OBJECTS = 256  # hand freed heap back to the OS this often while tracing objects


@dataclass(frozen=True)
class Assembly:
    labels: zarr.Array
    ids: zarr.Array
    components: Components
    keep: np.ndarray  # per object: above its class's minimum area (and passes the glomerulus check)
    nonempty: frozenset[tuple[int, int]]  # chunk (row, col) holding any label


def _chunk_codes(sources: Sequence[ScaleSource], window: Window, tile: int, overlap: int):
    """{task: float codes on window} from every scale whose processed tiles reach the window."""
    codes = {}
    for src in sources:
        plan = src.plan
        scale = (plan.to_level0, plan.to_level0)
        native = source_window(window, scale, plan.shape_hw)
        rows, cols = tiles_seeing(native, plan.shape_hw, tile, overlap)
        if not src.processed[rows.start : rows.stop, cols.start : cols.stop].any():
            continue
        block = blended_codes(src.windows, src.processed, plan.shape_hw, tile, overlap, native)
        for i, task in enumerate(plan.tasks):
            if not block[i].any():  # nothing above zero: this task cannot win any pixel here
                continue
            codes[task] = resample_bilinear(
                lambda y0, y1, x0, x1, b=block[i], o=native: b[
                    y0 - o.y : y1 - o.y, x0 - o.x : x1 - o.x
                ],
                plan.shape_hw,
                scale,
                window,
            )
    return codes


@dataclass(frozen=True)
class MergeSpec:
    """How per-scale probabilities become one label map: the model's per-task thresholds and
    minimum object areas, the slide's level-0 µm/px, the tile grid, and the merge chunk side."""

    thresholds: Sequence[float]
    min_area_um2: Sequence[float]
    mpp: float
    tile: int
    overlap: int
    chunk: int
    glomerulus_size: GlomerulusSize | None = None  # None: the glomerulus check is off


def assemble(
    sources: Sequence[ScaleSource],
    store,
    shape_hw: tuple[int, int],
    spec: MergeSpec,
    gates: Gates | None = None,
    progress: str | None = None,
    threads: int = 0,
) -> Assembly:
    """Merged, component-labelled and filtered level-0 label map (in the work store).

    Chunks are merged on ``threads`` threads ahead of the labeller, which takes them in raster
    order on this thread (so the result never depends on ``threads``)."""
    gates = gates or Gates()
    chunk = spec.chunk
    core_size(spec.tile, spec.overlap)
    labels = store.fresh("labels", shape_hw, chunk, "uint8")
    ids = store.fresh("ids", shape_hw, chunk, "uint32")
    cuts = {t: threshold_code(thr) for t, thr in enumerate(spec.thresholds)}
    labeller = ChunkLabeller(
        shape_hw[1],
        OBJECT_GROUPS,
        min_area={group: spec.min_area_um2[group] for group, _ in OBJECT_GROUPS},
        pixel_area=spec.mpp * spec.mpp,
    )
    roi_prepared = prepared.prep(gates.roi) if gates.roi is not None else None
    tufts = TuftContacts() if spec.glomerulus_size is not None else None
    nonempty = set()
    windows = list(iter_chunk_windows(shape_hw, chunk))

    def merge(window: Window):
        return window, *_gated_chunk(sources, window, spec, gates, roi_prepared, cuts)

    merged_chunks = ordered_map(merge, windows, threads, name="omniseg-merge")
    bar = tqdm(
        merged_chunks, total=len(windows), desc=progress, disable=progress is None,
        unit="chunk", leave=False,
    )  # fmt: skip
    for window, merged, winner in bar:
        if window.x == 0:
            labeller.start_row(window.y)
            release_free_memory()
        if merged is None or not merged.any():
            labeller.skip_chunk(window.x, window.w)
            continue
        chunk_ids = labeller.label_chunk(window.y, window.x, merged, winner)  # erases specks
        if not merged.any():
            continue
        if tufts is not None:
            tufts.add(chunk_ids, merged)
        labels[window.y : window.y1, window.x : window.x1] = merged
        ids[window.y : window.y1, window.x : window.x1] = chunk_ids
        nonempty.add((window.y // chunk, window.x // chunk))
    labeller.finish()
    components = resolve(labeller.table)
    release_free_memory()
    keep = labeller.kept(components)
    if tufts is not None:
        keep &= glomerulus_keep(components, tufts, labeller.pixel_area, spec.glomerulus_size)
    _remove_small(labels, ids, components, keep, nonempty, chunk)
    return Assembly(labels, ids, components, keep, frozenset(nonempty))


def _gated_chunk(sources, window: Window, spec: MergeSpec, gates: Gates, roi_prepared, cuts):
    """(merged labels, winning codes) of one chunk inside the gates, or (None, None) when the
    chunk is gated out (no I/O then) or no scale predicted there."""
    in_roi = roi_prepared is None or roi_prepared.intersects(
        box(window.x, window.y, window.x1, window.y1)
    )
    on_tissue = gates.tissue.window(window) if gates.tissue is not None else None
    if not in_roi or (on_tissue is not None and not on_tissue.any()):
        return None, None
    codes = _chunk_codes(sources, window, spec.tile, spec.overlap)
    if not codes:
        return None, None
    merged, winner = merge_labels(codes, cuts)
    gate = roi_mask(gates.roi, window)
    if gate is not None:
        merged[~gate] = 0
    if on_tissue is not None:
        merged[~on_tissue] = 0
    if gates.glass is not None and merged.any():
        merged[gates.glass.window(window)] = 0
    return merged, winner


def _remove_small(labels, ids, components: Components, keep, nonempty, chunk: int) -> None:
    if keep.all():
        return
    keep_id = np.concatenate([[True], keep[components.root_of[1:]]])
    for row, col in sorted(nonempty):
        sl = (slice(row * chunk, (row + 1) * chunk), slice(col * chunk, (col + 1) * chunk))
        chunk_ids = np.asarray(ids[sl])
        drop = ~keep_id[chunk_ids]
        if drop.any():
            chunk_labels = np.asarray(labels[sl])
            chunk_labels[drop] = 0
            labels[sl] = chunk_labels


def iter_objects(assembly: Assembly, mpp: float, threads: int = 0) -> Iterator[SlideObject]:
    """One SlideObject per kept component, ids 1.. in (class, top, left) order, traced lazily
    (a whole slide's polygons do not fit in memory together: callers spool or stream them),
    on ``threads`` threads a few objects ahead. They are traced and yielded in the order of the
    id-store chunk holding their top-left corner (raster order), so neighbours share decoded
    chunks in a small cache; ``spool.ObjectSpool`` replays them in id order."""
    comps = assembly.components
    kept = np.flatnonzero(assembly.keep)
    # (class, top, left, index): the index makes the key unique, so the order is total
    order = kept[np.lexsort((kept, comps.bbox[kept, 1], comps.bbox[kept, 0], comps.group[kept]))]
    chunk_rows, chunk_cols = assembly.ids.chunks
    # positions in ``order`` (object number - 1), by id chunk of the top-left corner, then number
    tracing = np.lexsort(
        (
            np.arange(len(order)),
            comps.bbox[order, 1] // chunk_cols,
            comps.bbox[order, 0] // chunk_rows,
        )
    )
    ids = ChunkCache(assembly.ids, nonempty=assembly.nonempty)

    def trace(job: tuple[int, int]) -> SlideObject:
        number, index = job
        y0, x0, y1, x1 = (int(v) for v in comps.bbox[index])
        mask, step = object_mask(
            ids.read, comps.root_of, int(index), comps.bbox[index], block=chunk_rows
        )
        geometry = mask_outline(mask, y0, x0, step)
        centroid = geometry.centroid
        return SlideObject(
            id=number,
            class_id=int(comps.group[index]),
            geometry=geometry,
            area_um2=float(comps.area[index]) * mpp * mpp,
            perimeter_um=outline_perimeter(mask, step) * mpp,
            centroid_xy=(float(centroid.x), float(centroid.y)),
            bbox_xyxy=(x0, y0, x1 + 1, y1 + 1),
            mean_probability=float(comps.code_sum[index] / comps.area[index] / CODE_MAX),
        )

    jobs = ((int(i) + 1, int(order[i])) for i in tracing)
    for traced, obj in enumerate(ordered_map(trace, jobs, threads, name="omniseg-objects"), 1):
        if traced % TRIM_EVERY_OBJECTS == 0:
            release_free_memory()
        yield obj


def label_tile_reader(assembly: Assembly) -> Callable:
    """``read_tile(level, y, x, h, w)`` for the OME-TIFF writer: nearest samples of the level-0
    label map at the centre of each 2**level block, through one chunk cache (each label chunk is
    decoded about once per level; empty chunks cost no I/O)."""
    labels = ChunkCache(assembly.labels, nonempty=assembly.nonempty)
    height, width = labels.shape

    def read_tile(level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        if level == 0:
            return labels.read(y, y + h, x, x + w)
        step = 2**level
        rows = np.minimum(np.arange(y, y + h) * step + step // 2, height - 1)
        cols = np.minimum(np.arange(x, x + w) * step + step // 2, width - 1)
        return labels.take(rows, cols)

    return read_tile
