"""On-disk intermediate maps (zarr, chunked + compressed) under ``OUT/<stem>/.work/``.

* ``win_s<scale>``: uint8 probability codes of each tile's whole read window at the scale's
  native resolution, tile (r, c) in the chunk at (r * tile, c * tile), so each tile writes
  exactly its own chunk (zarr writes a chunk atomically: a crash never leaves a torn chunk) and
  neighbouring windows can be blended where they overlap (``inference.blend``).
* ``done_s<scale>``: (rows, cols) uint8 per-tile completion flags, set after the tile's chunk is
  written; ``--resume`` skips flagged tiles.
* ``labels`` / ``ids``: the merged level-0 label map and its connected-component ids, chunked by
  ``merge_chunk``; rebuilt from the probability stores on every run (cheap next to inference).
Background chunks are never written (``write_empty_chunks`` off, fill value 0).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import zarr

from omniseg.atomic import atomic_write_json
from omniseg.errors import OmnisegError

STORE_NAME = "work.zarr"
KEY_NAME = "params.json"
FLAG_CHUNK = 256
_NO_EMPTY = {"write_empty_chunks": False}


class WorkStore:
    """The zarr group of one slide's run; reopening it continues where it stopped."""

    def __init__(self, work_dir: Path, key: dict, *, resume: bool) -> None:
        self.work_dir = Path(work_dir)
        key_path = self.work_dir / KEY_NAME
        if resume and key_path.is_file():
            stored = json.loads(key_path.read_text(encoding="utf-8"))
            if stored != key:
                raise OmnisegError(
                    f"{self.work_dir}: --resume with different parameters than the interrupted "
                    f"run (was {stored}, now {key}); rerun with the same options or --overwrite"
                )
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir.mkdir(parents=True)
            atomic_write_json(key_path, key, sort_keys=True)
        self.group = zarr.open_group(self.work_dir / STORE_NAME, mode="a")

    def _array(self, name: str, shape, chunks, dtype) -> zarr.Array:
        if name in self.group.array_keys():
            array = self.group[name]
            if tuple(array.shape) == tuple(shape) and tuple(array.chunks) == tuple(chunks):
                return array
        return self.group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=0,
            config=_NO_EMPTY,
            overwrite=True,
        )

    def window_codes(self, scale_id: int, n_tasks: int, grid_hw, tile: int) -> zarr.Array:
        """(tasks, rows * tile, cols * tile): one tile-sized slot per grid position."""
        shape = (n_tasks, grid_hw[0] * tile, grid_hw[1] * tile)
        return self._array(f"win_s{scale_id}", shape, (n_tasks, tile, tile), "uint8")

    def done_flags(self, scale_id: int, grid_hw) -> zarr.Array:
        chunks = (min(FLAG_CHUNK, grid_hw[0]), min(FLAG_CHUNK, grid_hw[1]))
        return self._array(f"done_s{scale_id}", grid_hw, chunks, "uint8")

    def fresh(self, name: str, shape_hw, chunk: int, dtype: str) -> zarr.Array:
        """A new, empty array (merge results are always recomputed)."""
        return self.group.create_array(
            name,
            shape=shape_hw,
            chunks=(chunk, chunk),
            dtype=dtype,
            fill_value=0,
            config=_NO_EMPTY,
            overwrite=True,
        )

    def remove(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def read_block(array: zarr.Array, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """array[..., y0:y1, x0:x1] as numpy."""
    return np.asarray(array[..., y0:y1, x0:x1])
