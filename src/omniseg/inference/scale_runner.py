"""The tile loop of one scale: background reader threads -> batches -> one backbone pass per tile.

Batches are fixed groups of consecutive tissue tiles (row-major), so a resumed run recomputes
exactly the same batches as an uninterrupted one; a group is skipped only when all its tiles are
flagged done. Reads run ahead in a thread pool with a bounded number of batches in flight, so the
network never waits for decoding and memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from omniseg.inference.merge import probability_codes
from omniseg.inference.scale import ScalePlan, ScaleSource, TileStats
from omniseg.inference.store import WorkStore
from omniseg.inference.tiling import Tile
from omniseg.io.base import SlideReader
from omniseg.io.levels import read_at_mpp
from omniseg.models import InferenceSettings
from omniseg.runtime import Predictor
from omniseg.runtime.memory import HeapCreepTrim
from omniseg.runtime.predictor import images_to_batch
from omniseg.threads import OrderedWriter, ordered_group_map

PREFETCH_BATCHES = 2  # batches being read while the current one runs
MAX_PENDING_WRITES = 2  # computed batches waiting to be coded and stored
# Hand freed heap back to the OS only every this many batches: trimming after each one made the
# next batch page-fault its activations in again (40x stage of a 3000² slide: 12.6 s trimming
# every batch, 9.9 s without, +188 MB peak RSS), while never trimming lets per-thread arenas
# creep on a long slide. Every 64 batches: on a 6000² slide never trimming saved 1.1 s of the 40x
# stage's 28.6 s against every 16 (the 30 mm² slide's 849 40x batches trimmed 53 times).
TRIM_EVERY_BATCHES = 64
TRIM_ON_GROWTH_MB = 48  # ... or sooner, once the heap crept this far (runtime.memory.HeapCreepTrim)


@dataclass(frozen=True)
class TileLoop:
    """How tiles are fed: batch size, reader threads, and (tests only) a shuffled batch order
    (results must not depend on it)."""

    batch_size: int
    workers: int
    order_seed: int | None = None


def predict_tiles(predictor: Predictor, images: list[np.ndarray], plan: ScalePlan, tta: bool):
    """(N, T, H, W) float32 probabilities of a batch; the backbone runs once per tile."""
    x = images_to_batch(images)
    return predictor.predict_tasks(x, plan.tasks, plan.scale_id, tta=tta).cpu().numpy()


def _pending_batches(
    plan: ScalePlan,
    needs_tile: Callable[[ScalePlan, Tile], bool],
    done: np.ndarray,
    loop: TileLoop,
) -> tuple[np.ndarray, np.ndarray, TileStats]:
    """(tissue tiles as an (n, 2) array of (row, col) in grid order, start index of each batch
    still to run, tile counts). Batches are fixed groups of consecutive tissue tiles, so a
    resumed run recomputes exactly the batches an uninterrupted one would."""
    batch_size = loop.batch_size
    stats = TileStats()
    # A grid-sized mask then an array: a huge slide has ~10^5 tiles, too many for tuples.
    wanted = np.zeros(done.shape, dtype=bool)
    for t in plan.grid:
        stats.total += 1
        wanted[t.row, t.col] = needs_tile(plan, t)
    stats.background = stats.total - int(wanted.sum())
    needed = np.argwhere(wanted)  # row-major, like the grid
    starts = np.array(
        [
            s
            for s in range(0, len(needed), batch_size)
            if not done[needed[s : s + batch_size, 0], needed[s : s + batch_size, 1]].all()
        ],
        dtype=np.int64,
    )
    if loop.order_seed is not None:
        np.random.default_rng(loop.order_seed).shuffle(starts)
    stats.resumed = len(needed) - sum(len(needed[s : s + batch_size]) for s in starts)
    stats.processed = len(needed)
    return needed, starts, stats


def run_scale(
    reader: SlideReader,
    plan: ScalePlan,
    predictor: Predictor,
    inference: InferenceSettings,
    store: WorkStore,
    needs_tile: Callable[[ScalePlan, Tile], bool],
    loop: TileLoop,
    progress: str | None = None,
) -> tuple[TileStats, ScaleSource]:
    """Predict every tissue tile of one scale into the store; returns the tile counts and what
    the merge reads (the codes and which tiles hold them)."""
    batch_size, tile = loop.batch_size, plan.grid.tile
    windows = store.window_codes(plan.scale_id, len(plan.tasks), plan.grid.shape, tile)
    flags_array = store.done_flags(plan.scale_id, plan.grid.shape)
    done = np.asarray(flags_array[:])
    thresholds = [inference.thresholds[t] for t in plan.tasks]
    needed, starts, stats = _pending_batches(plan, needs_tile, done, loop)

    def read(t: Tile) -> np.ndarray:
        w = t.window
        return read_at_mpp(reader, plan.mpp, w.x, w.y, w.w, w.h)

    tile_groups = (
        tuple(plan.grid.tile_at(int(r), int(c)) for r, c in needed[s : s + batch_size])
        for s in starts
    )
    bar = tqdm(
        total=len(needed),
        initial=stats.resumed,
        desc=progress,
        disable=progress is None,
        unit="tile",
        leave=False,
    )

    def write(group: tuple[Tile, ...], prob: np.ndarray) -> None:
        """Codes of each tile into its own chunk, then the batch's done flags (a crash between
        the two only recomputes the batch)."""
        for t, p in zip(group, prob, strict=True):
            slot_y, slot_x = t.row * tile, t.col * tile
            windows[:, slot_y : slot_y + t.window.h, slot_x : slot_x + t.window.w] = (
                probability_codes(p, thresholds)
            )
        rows = [t.row for t in group]
        for t in group:
            done[t.row, t.col] = 1
        top, bottom = min(rows), max(rows) + 1
        flags_array[top:bottom, :] = done[top:bottom, :]

    trim = HeapCreepTrim(TRIM_EVERY_BATCHES, TRIM_ON_GROWTH_MB)
    reads = ordered_group_map(
        read, tile_groups, loop.workers, name="omniseg-read", groups_ahead=PREFETCH_BATCHES
    )
    with bar, OrderedWriter(MAX_PENDING_WRITES) as writer:
        for group, images in reads:
            prob = predict_tiles(predictor, images, plan, inference.tta)
            writer.submit(write, group, prob)
            bar.update(len(group))
            trim.batch_done()
    return stats, ScaleSource(plan, windows, done > 0)
