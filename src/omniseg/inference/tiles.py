"""The tile loop of one scale: background reader threads -> batches -> one backbone pass per tile.

Batches are fixed groups of consecutive tissue tiles (row-major), so a resumed run recomputes
exactly the same batches as an uninterrupted one; a group is skipped only when all its tiles are
flagged done. Reads run ahead in a thread pool with a bounded number of batches in flight, so the
network never waits for decoding and memory stays bounded.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from omniseg.evaluation.predict import dihedral_transforms, image_to_tensor, reflect_pad
from omniseg.inference.merge import probability_codes
from omniseg.inference.store import WorkStore, release_free_memory
from omniseg.inference.tiling import Tile, grid_shape, iter_tiles, tile_at
from omniseg.io.base import SlideReader
from omniseg.io.levels import read_at_mpp
from omniseg.models import foreground_probability

PREFETCH_BATCHES = 2  # batches being read while the current one runs


@dataclass(frozen=True)
class ScalePlan:
    """One magnification of the run: its tasks and its native grid."""

    scale_id: int
    mpp: float
    tasks: tuple[int, ...]
    shape_hw: tuple[int, int]
    to_level0: float  # level-0 px per native px (mpp / slide mpp)
    upsampled: bool  # even level 0 is coarser than this scale


@dataclass
class TileStats:
    total: int = 0
    background: int = 0
    processed: int = 0
    resumed: int = 0


def predict_tiles(model, images: list[np.ndarray], plan: ScalePlan, device, precision: str):
    """(N, T, H, W) float32 probabilities of a batch; the backbone runs once per tile."""
    x = torch.stack([image_to_tensor(img) for img in images]).to(device)
    h, w = x.shape[-2:]
    divisor = model.config.size_divisor
    x = reflect_pad(x, -h % divisor, -w % divisor)
    if precision == "bf16":  # the fast oneDNN path on CPU (docs: dependencies.md, ~1.3x)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    transforms = dihedral_transforms(bool(getattr(model.inference, "tta", False)))
    total = None
    with torch.no_grad(), autocast:
        for k, flip in transforms:
            xt = torch.flip(x, (-1,)) if flip else x
            xt = torch.rot90(xt, k, (-2, -1)) if k else xt
            prob = foreground_probability(model.predict_tasks(xt, list(plan.tasks), plan.scale_id))
            prob = torch.rot90(prob, -k, (-2, -1)) if k else prob
            prob = torch.flip(prob, (-1,)) if flip else prob
            total = prob if total is None else total + prob
    return (total / len(transforms))[..., :h, :w].float().cpu().numpy()


def _prefetched(
    groups: Iterable[tuple[Tile, ...]], read: Callable[[Tile], np.ndarray], workers: int
) -> Iterator[tuple[tuple[Tile, ...], list[np.ndarray]]]:
    if workers == 0:
        for group in groups:
            yield group, [read(t) for t in group]
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omniseg-read") as pool:
        pending: deque = deque()
        source = iter(groups)
        for group in source:
            pending.append((group, [pool.submit(read, t) for t in group]))
            if len(pending) > PREFETCH_BATCHES:
                done_group, futures = pending.popleft()
                yield done_group, [f.result() for f in futures]
        while pending:
            done_group, futures = pending.popleft()
            yield done_group, [f.result() for f in futures]


def run_scale(
    reader: SlideReader,
    plan: ScalePlan,
    model,
    store: WorkStore,
    needs_tile: Callable[[ScalePlan, Tile], bool],
    *,
    device: torch.device,
    batch_size: int,
    precision: str,
    workers: int,
    progress: str | None,
    order_seed: int | None = None,
) -> TileStats:
    """Predict every tissue tile of one scale into the store; returns tile counts.

    ``order_seed`` processes the batches in a shuffled order (tests: results must not change).
    """
    tile, overlap = model.inference.tile_size, model.inference.tile_overlap
    grid = grid_shape(plan.shape_hw, tile, overlap)
    windows = store.window_codes(plan.scale_id, len(plan.tasks), grid, tile)
    flags_array = store.done_flags(plan.scale_id, grid)
    done = np.asarray(flags_array[:])
    thresholds = [model.inference.thresholds[t] for t in plan.tasks]
    stats = TileStats()
    # Which tiles to run, as a grid-sized mask then an (n, 2) array of (row, col): a huge slide
    # has ~10^5 tiles, too many to hold as Python tuples.
    wanted = np.zeros(done.shape, dtype=bool)
    for t in iter_tiles(plan.shape_hw, tile, overlap):
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
    if order_seed is not None:
        np.random.default_rng(order_seed).shuffle(starts)
    stats.resumed = len(needed) - sum(len(needed[s : s + batch_size]) for s in starts)
    stats.processed = len(needed)

    def read(t: Tile) -> np.ndarray:
        w = t.window
        return read_at_mpp(reader, plan.mpp, w.x, w.y, w.w, w.h)

    tile_groups = (
        tuple(
            tile_at(plan.shape_hw, tile, overlap, int(r), int(c))
            for r, c in needed[s : s + batch_size]
        )
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
    with bar:
        for group, images in _prefetched(tile_groups, read, workers):
            prob = predict_tiles(model, images, plan, device, precision)
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
            bar.update(len(group))
            release_free_memory()
    return stats


def processed_flags(store: WorkStore, plan: ScalePlan, tile: int, overlap: int) -> np.ndarray:
    """(rows, cols) bool: tiles whose probabilities exist (used to skip empty merge chunks)."""
    return (
        np.asarray(store.done_flags(plan.scale_id, grid_shape(plan.shape_hw, tile, overlap))[:]) > 0
    )
