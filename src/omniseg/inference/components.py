"""Connected components of a chunked label map with bounded memory, and their polygons.

Chunks are labelled one at a time (scipy, 8-connectivity) with globally unique ids; ids that touch
across a chunk border (including diagonally) are joined afterwards with a graph union
(scipy.sparse.csgraph). Only one row of ids across the slide width is kept between chunk rows,
so memory grows with the number of objects, never with the number of pixels. Each object's
mask is cut from a crop around its bounding box (:func:`object_mask`); its polygon is traced by
``inference/outlines.py``.

A component that touches no chunk edge can never be joined to another one, so its area is final
when its chunk is labelled: if it is below its class's minimum area it is erased there and then
and never enters the table. Without this, the table (and peak memory) would grow with the number
of sub-minimum specks, i.e. with the slide's area.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
MAX_TRACE_PIXELS = 1 << 26  # objects with a larger bbox are traced on a strided grid


@dataclass
class ComponentTable:
    """Per-id statistics gathered chunk by chunk (id 0 is background)."""

    group: list[np.ndarray]
    area: list[np.ndarray]
    code_sum: list[np.ndarray]
    bbox: list[np.ndarray]  # (n, 4): min y, min x, max y, max x (inclusive)
    pairs: list[np.ndarray]  # (n, 2) ids to join
    next_id: int = 1

    @classmethod
    def empty(cls) -> ComponentTable:
        return cls([], [], [], [], [])


class ChunkLabeller:
    """Label a label map chunk by chunk in row-major order; remembers the borders it needs.

    ``min_area`` maps an object class (group) to its minimum area in the units of ``pixel_area``
    (e.g. µm² and µm² per pixel); chunk-interior components below it are erased at once.
    """

    def __init__(
        self,
        width: int,
        groups: tuple[tuple[int, tuple[int, ...]], ...],
        *,
        min_area: dict[int, float] | None = None,
        pixel_area: float = 1.0,
    ) -> None:
        self.groups = groups
        self.min_area = dict(min_area or {})
        self.pixel_area = pixel_area
        self.erased = 0  # chunk-interior components erased below their minimum area
        self.table = ComponentTable.empty()
        self._prev_bottom = np.zeros(width, dtype=np.int64)
        self._cur_bottom = np.zeros(width, dtype=np.int64)
        self._cur_top = np.zeros(width, dtype=np.int64)
        self._left_col: np.ndarray | None = None
        self._row_y: int | None = None

    def start_row(self, y: int) -> None:
        """Call before the first chunk of each chunk row (also for skipped rows)."""
        if self._row_y is not None:
            self._join_strips(self._prev_bottom, self._cur_top)
            self._prev_bottom = self._cur_bottom
        self._cur_bottom = np.zeros_like(self._prev_bottom)
        self._cur_top = np.zeros_like(self._prev_bottom)
        self._left_col = None
        self._row_y = y

    def finish(self) -> None:
        if self._row_y is not None:
            self._join_strips(self._prev_bottom, self._cur_top)
        self._row_y = None

    def label_chunk(self, y: int, x: int, labels: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Global ids (uint32) of one chunk; records statistics and border contacts.

        ``labels`` is modified in place: chunk-interior components below their class's minimum
        area are set to 0 (write the chunk's labels after this call).

        Each group is labelled on its own (components of different classes never join), into one
        chunk-local id map, group after group; areas, boxes, code sums and erasing then take one
        pass over that map for every group at once.
        """
        h, w = labels.shape
        local, groups = self._label_groups(labels)
        ids = np.zeros((h, w), dtype=np.uint32)
        if len(groups):
            count = len(groups)
            area = np.bincount(local.ravel(), minlength=count + 1)[1:].astype(np.int64)
            boxes = _local_boxes(local, count)
            local, groups, area, boxes = self._erase_small(groups, labels, local, area, boxes)
            if len(groups):
                self._record(groups, local, area, boxes, codes, y, x)
                offset = np.uint32(self.table.next_id - 1)
                np.add(local, offset, out=ids, where=local > 0, casting="unsafe")
                self.table.next_id += len(groups)
        if self._left_col is not None and x > 0:
            self._join_strips(self._left_col, ids[:, 0])
        self._left_col = ids[:, -1].astype(np.int64)
        self._cur_top[x : x + w] = ids[0]
        self._cur_bottom[x : x + w] = ids[-1]
        return ids

    def _label_groups(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int32 chunk-local ids, group of each id 1..n): 8-connected components of each
        group's label values, numbered group after group in ``self.groups`` order."""
        present = np.bincount(labels.ravel(), minlength=256) > 0
        local = None
        groups = []
        for group, values in self.groups:
            if not present[list(values)].any():
                continue
            member = labels == values[0] if len(values) == 1 else np.isin(labels, values)
            part, count = ndimage.label(member, structure=EIGHT_CONNECTED)
            if count == 0:
                continue
            if local is None:
                local = part
            else:
                np.add(part, len(groups), out=local, where=member)
            groups.extend([group] * count)
        if local is None:
            local = np.zeros(labels.shape, dtype=np.int32)
        return local, np.asarray(groups, dtype=np.int16)

    def skip_chunk(self, x: int, w: int) -> None:
        """A chunk with nothing in it: its borders are background."""
        self._left_col = None
        self._cur_top[x : x + w] = 0
        self._cur_bottom[x : x + w] = 0

    def meets_minimum(self, area: np.ndarray, minimum) -> np.ndarray:
        """The one minimum-area rule, applied early (per chunk) and late (per merged object)."""
        return area * self.pixel_area >= minimum

    def kept(self, components: Components) -> np.ndarray:
        """Per merged object: at or above its class's minimum area."""
        minimum = np.array([self.min_area.get(int(g), 0.0) for g in components.group], np.float64)
        return self.meets_minimum(components.area, minimum)

    def _erase_small(self, groups, labels, local, area, boxes):
        """Drop components that touch no chunk edge and are below their class's minimum area."""
        minimum = np.zeros(len(groups), dtype=np.float64)
        for group in np.unique(groups):
            minimum[groups == group] = self.min_area.get(int(group)) or 0.0
        h, w = local.shape
        interior = (boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 2] < h - 1)
        interior &= boxes[:, 3] < w - 1
        drop = interior & (minimum > 0) & ~self.meets_minimum(area, minimum)
        if not drop.any():
            return local, groups, area, boxes
        kept = np.flatnonzero(~drop)
        renumber = np.zeros(len(area) + 1, dtype=local.dtype)
        renumber[kept + 1] = np.arange(1, len(kept) + 1, dtype=local.dtype)
        labels[np.concatenate([[False], drop])[local]] = 0
        local = renumber[local]
        self.erased += int(drop.sum())
        return local, groups[kept], area[kept], boxes[kept]

    def _record(self, groups, local, area, boxes, codes, y, x) -> None:
        """Statistics of one chunk's components (chunk-local ids 1..n)."""
        t = self.table
        count = len(groups)
        t.group.append(groups)
        t.area.append(area)
        weights = codes.ravel().astype(np.float64)
        sums = np.bincount(local.ravel(), weights=weights, minlength=count + 1)
        t.code_sum.append(sums[1:])
        t.bbox.append(boxes + np.array([y, x, y, x], dtype=np.int64))

    def _join_strips(self, before: np.ndarray, after: np.ndarray) -> None:
        """Join ids of two adjacent 1-px strips, straight and diagonal neighbours."""
        found = []
        for shift in (-1, 0, 1):
            a = before[max(shift, 0) : len(before) + min(shift, 0)]
            b = after[max(-shift, 0) : len(after) + min(-shift, 0)]
            both = (a > 0) & (b > 0)
            if both.any():
                found.append(np.stack([a[both], b[both]], axis=1))
        if found:
            pairs = np.unique(np.concatenate(found), axis=0)
            self.table.pairs.append(pairs)


def _local_boxes(local: np.ndarray, count: int) -> np.ndarray:
    """(count, 4) inclusive boxes (min y, min x, max y, max x) of labels 1..count in the chunk."""
    return np.array(
        [
            (s[0].start, s[1].start, s[0].stop - 1, s[1].stop - 1)
            for s in ndimage.find_objects(local, max_label=count)
        ],
        dtype=np.int64,
    ).reshape(count, 4)


@dataclass(frozen=True)
class Components:
    """Merged objects: ``root_of[id]`` -> object index (-1 = background)."""

    root_of: np.ndarray
    group: np.ndarray
    area: np.ndarray
    code_sum: np.ndarray
    bbox: np.ndarray

    @property
    def count(self) -> int:
        return len(self.area)


def resolve(table: ComponentTable) -> Components:
    """Union the ids that touch across chunk borders (only ids of the same group can touch)."""
    n = table.next_id
    if n == 1:
        empty = np.zeros(0, dtype=np.int64)
        return Components(
            np.full(1, -1, np.int64), empty, empty, empty.astype(float), empty.reshape(0, 4)
        )
    group = np.concatenate(table.group)
    pairs = np.concatenate(table.pairs) if table.pairs else np.zeros((0, 2), dtype=np.int64)
    pairs = pairs[group[pairs[:, 0] - 1] == group[pairs[:, 1] - 1]] - 1
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n - 1, n - 1))
    _, root = connected_components(graph, directed=False)
    k = int(root.max()) + 1
    bbox = np.concatenate(table.bbox)
    merged_box = np.empty((k, 4), dtype=np.int64)
    merged_box[:, :2] = np.iinfo(np.int64).max
    merged_box[:, 2:] = -1
    np.minimum.at(merged_box[:, 0], root, bbox[:, 0])
    np.minimum.at(merged_box[:, 1], root, bbox[:, 1])
    np.maximum.at(merged_box[:, 2], root, bbox[:, 2])
    np.maximum.at(merged_box[:, 3], root, bbox[:, 3])
    merged_group = np.zeros(k, dtype=np.int16)
    merged_group[root] = group
    return Components(
        root_of=np.concatenate([[-1], root]).astype(np.int64),
        group=merged_group,
        area=np.bincount(root, weights=np.concatenate(table.area), minlength=k).astype(np.int64),
        code_sum=np.bincount(root, weights=np.concatenate(table.code_sum), minlength=k),
        bbox=merged_box,
    )


def object_mask(
    read_ids: Callable[[int, int, int, int], np.ndarray],
    root_of: np.ndarray,
    index: int,
    bbox: np.ndarray,
    block: int = 1024,
) -> tuple[np.ndarray, int]:
    """(mask of object ``index`` on its bounding box, step): step 1 is every pixel; a huge box is
    reduced by ``step`` in blocks where ANY pixel belongs (thin parts never vanish).

    The box is read in blocks of about ``block`` px a side (pass the id store's chunk side): one
    whole-box read of a slide-sized object held its ids as int64 at once, and reading it a band
    of ``step`` rows at a time decoded every chunk of the band again for each band."""
    y0, x0, y1, x1 = (int(v) for v in bbox)
    y1, x1 = y1 + 1, x1 + 1
    step = max(1, int(np.ceil(np.sqrt((y1 - y0) * (x1 - x0) / MAX_TRACE_PIXELS))))
    side = step * -(-block // step)  # a whole number of reduced pixels per block
    mask = np.zeros((-(-(y1 - y0) // step), -(-(x1 - x0) // step)), dtype=bool)
    for top, bottom in _block_spans(y0, y1, side, step):
        for left, right in _block_spans(x0, x1, side, step):
            part = root_of[read_ids(top, bottom, left, right)] == index
            r0, c0 = (top - y0) // step, (left - x0) // step
            if step > 1:
                part = _any_in_blocks(part, step)
            mask[r0 : r0 + part.shape[0], c0 : c0 + part.shape[1]] = part
    return mask, step


def _block_spans(start: int, stop: int, side: int, step: int) -> list[tuple[int, int]]:
    """[begin, end) blocks along one axis: cut on the store's chunk grid at step 1 (each chunk
    is decoded once), on the reduced grid (``start`` + multiples of ``side``) otherwise."""
    first = (start // side + 1) * side if step == 1 else start + side
    cuts = [start, *range(first, stop, side), stop]
    return list(pairwise(cuts))


def _any_in_blocks(part: np.ndarray, step: int) -> np.ndarray:
    """Reduce a bool array by ``step`` per axis: True where any pixel of the block is."""
    rows, cols = -(-part.shape[0] // step), -(-part.shape[1] // step)
    padded = np.pad(part, ((0, rows * step - part.shape[0]), (0, cols * step - part.shape[1])))
    return padded.reshape(rows, step, cols, step).any(axis=(1, 3))
