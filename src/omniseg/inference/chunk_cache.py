"""Read-through cache of a 2-D zarr array's decoded chunks, bounded in bytes.

zarr decodes a whole chunk for every read, however small: object tracing read each object's box
on its own and the label pyramid read each 512² tile of a 1024² chunk, so the same chunk was
decoded again and again (3.3 ms for a 100² read of a 1024² uint32 id chunk here). Chunks the run
never wrote are known to be empty and cost nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection

import numpy as np
import zarr

# Decoded chunks kept per cache: 8 uint32 or 32 uint8 chunks of 1024². Small on purpose: the
# caches live in the objects and label-pyramid stages, which must stay under the merge's and the
# inference's peak memory (benchmarks/wsi_memory.py); tracing objects chunk by chunk makes 8 enough.
CHUNK_CACHE_BYTES = 32 * 2**20


class ChunkCache:
    """``read`` (boxes) and ``take`` (orthogonal samples) of a 2-D zarr array through its
    decoded chunks, least recently used out first, at most ``max_bytes`` kept (at least one
    chunk). ``nonempty``, when given, is every (row, col) chunk that may hold a value other than
    the fill value; the others are never read. Safe to share between threads."""

    def __init__(
        self,
        array: zarr.Array,
        max_bytes: int = CHUNK_CACHE_BYTES,
        nonempty: Collection[tuple[int, int]] | None = None,
    ) -> None:
        if array.ndim != 2:
            raise ValueError(f"ChunkCache needs a 2-D array, got shape {array.shape}")
        self._array = array
        self._chunk_hw = tuple(int(v) for v in array.chunks)
        self._fill = array.fill_value
        chunk_bytes = self._chunk_hw[0] * self._chunk_hw[1] * array.dtype.itemsize
        self._capacity = max(1, max_bytes // chunk_bytes)
        self._nonempty = None if nonempty is None else frozenset(nonempty)
        self._chunks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.decoded = 0  # chunks decoded so far (tests and benchmarks)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(v) for v in self._array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    def _chunk(self, row: int, col: int) -> np.ndarray | None:
        """Decoded chunk (row, col), or None when it holds only the fill value."""
        key = (row, col)
        if self._nonempty is not None and key not in self._nonempty:
            return None
        with self._lock:
            block = self._chunks.get(key)
            if block is not None:
                self._chunks.move_to_end(key)
                return block
        ch, cw = self._chunk_hw
        block = np.asarray(self._array[row * ch : (row + 1) * ch, col * cw : (col + 1) * cw])
        block.flags.writeable = False  # shared by every reader of this chunk
        with self._lock:
            self.decoded += 1
            self._chunks[key] = block
            self._chunks.move_to_end(key)
            while len(self._chunks) > self._capacity:
                self._chunks.popitem(last=False)
        return block

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """array[y0:y1, x0:x1] (inside the array)."""
        self._check_box(y0, y1, x0, x1)
        out = np.full((y1 - y0, x1 - x0), self._fill, dtype=self.dtype)
        ch, cw = self._chunk_hw
        for row in range(y0 // ch, -(-y1 // ch)):
            top, bottom = max(y0, row * ch), min(y1, (row + 1) * ch)
            for col in range(x0 // cw, -(-x1 // cw)):
                block = self._chunk(row, col)
                if block is None:
                    continue
                left, right = max(x0, col * cw), min(x1, (col + 1) * cw)
                out[top - y0 : bottom - y0, left - x0 : right - x0] = block[
                    top - row * ch : bottom - row * ch, left - col * cw : right - col * cw
                ]
        return out

    def take(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """array[rows][:, cols] (zarr's ``oindex``) for in-range index arrays."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        out = np.full((len(rows), len(cols)), self._fill, dtype=self.dtype)
        if len(rows) == 0 or len(cols) == 0:
            return out
        self._check_box(int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
        ch, cw = self._chunk_hw
        row_of, col_of = rows // ch, cols // cw
        for row in np.unique(row_of):
            in_row = np.flatnonzero(row_of == row)
            for col in np.unique(col_of):
                block = self._chunk(int(row), int(col))
                if block is None:
                    continue
                in_col = np.flatnonzero(col_of == col)
                out[np.ix_(in_row, in_col)] = block[
                    np.ix_(rows[in_row] - row * ch, cols[in_col] - col * cw)
                ]
        return out

    def _check_box(self, y0: int, y1: int, x0: int, x1: int) -> None:
        height, width = self.shape
        if not (0 <= y0 <= y1 <= height and 0 <= x0 <= x1 <= width):
            raise IndexError(f"box y {y0}:{y1}, x {x0}:{x1} outside an array of {self.shape}")
