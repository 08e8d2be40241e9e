"""The original Omni-Seg whole-slide strategy (SPIE 2023 GPU pipeline, Step 1 + Step 2 + Step 3),
re-implemented here ONLY to measure what it costs next to omniseg's pipeline.

Step 1: pad the 40x image by 2048, cut 4096² tiles at stride 2048 (kept if they hold tissue).
Step 2, per tile and per task, the full network separately: the tile resized (bilinear, no
antialiasing) to the task's scale (5x: 512², 10x: 1024², 40x: 4096²), zero-padded, 512² windows
at stride 64 (5x, 10x) or 256 (40x), the central 384² of each window votes, a pixel is positive
with >= 4 votes (>= 1 at 40x); the vote mask is upsampled back to 4096². Step 3: the tiles'
central regions add up per task and the argmax over tasks (ties to the lower id) is the label.
That is 3 x 441 + 2 x 169 + 256 = 1,917 network passes of 512² per 4096² tile (the random
jitter of the original is left out: it changes which pixels are covered, not the cost).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TILE_40X, STRIDE_40X, PAD_40X = 4096, 2048, 2048
WINDOW, CORE_TRIM = 512, 64
# task id -> (side of the tile at the task's scale, window stride, zero pad, votes needed)
TASK_PLAN = {
    0: (1024, 64, 384, 4), 1: (1024, 64, 384, 4), 4: (1024, 64, 384, 4),
    2: (512, 64, 384, 4), 3: (512, 64, 384, 4),
    5: (4096, 256, 192, 1),
}  # fmt: skip
SCALE_OF_SIDE = {512: 0, 1024: 1, 4096: 3}


def window_starts(padded: int, stride: int) -> list[int]:
    return list(range(0, padded - WINDOW + 1, stride))


def passes_per_tile() -> int:
    total = 0
    for side, stride, pad, _ in TASK_PLAN.values():
        total += len(window_starts(side + 2 * pad, stride)) ** 2
    return total


def tile_origins(height: int, width: int) -> list[tuple[int, int]]:
    """Top-left corners (in padded 40x pixels) of the 4096² tiles of Step 1."""
    rows = range(0, max(1, math.floor((height + 2 * PAD_40X) / STRIDE_40X) - 1))
    cols = range(0, max(1, math.floor((width + 2 * PAD_40X) / STRIDE_40X) - 1))
    return [(r * STRIDE_40X, c * STRIDE_40X) for r in rows for c in cols]


@dataclass
class ReferenceTiming:
    tiles: int
    passes_total: int
    passes_run: int
    seconds: float  # measured, or extrapolated from passes_run when a cap was set
    extrapolated: bool


def task_votes(predict, tile: torch.Tensor, task: int, batch: int, cap: int | None):
    """(positive mask at 4096², passes run, seconds, passes this task needs)."""
    side, stride, pad, needed = TASK_PLAN[task]
    scaled = F.interpolate(tile[None], size=(side, side), mode="bilinear", antialias=False)
    padded = F.pad(scaled, (pad, pad, pad, pad))
    starts = window_starts(side + 2 * pad, stride)
    corners = [(y, x) for y in starts for x in starts]
    votes = torch.zeros(side + 2 * pad, side + 2 * pad, dtype=torch.int16)
    run = corners if cap is None else corners[:cap]
    clock = time.perf_counter()
    for i in range(0, len(run), batch):
        group = run[i : i + batch]
        windows = torch.cat([padded[..., y : y + WINDOW, x : x + WINDOW] for y, x in group])
        positive = predict(windows, task, SCALE_OF_SIDE[side]) > 0.5
        for (y, x), mask in zip(group, positive, strict=True):
            core = mask[CORE_TRIM:-CORE_TRIM, CORE_TRIM:-CORE_TRIM]
            votes[
                y + CORE_TRIM : y + WINDOW - CORE_TRIM, x + CORE_TRIM : x + WINDOW - CORE_TRIM
            ] += core
    seconds = time.perf_counter() - clock
    mask = (votes[pad : pad + side, pad : pad + side] >= needed).float()
    up = F.interpolate(mask[None, None], size=(TILE_40X, TILE_40X), mode="bilinear") > 0
    return up[0, 0], len(run), seconds, len(corners)


def run_reference(predict, image40x: np.ndarray, *, batch: int = 4, cap: int | None = None):
    """Label map of ``image40x`` (H, W, 3 uint8) by the original strategy, and its timing.

    ``predict(windows (N, 3, 512, 512) float, task, scale) -> (N, 512, 512) probabilities``.
    ``cap`` runs only the first ``cap`` windows of each task and extrapolates the time."""
    started = time.perf_counter()
    h, w = image40x.shape[:2]
    x = torch.from_numpy(image40x).permute(2, 0, 1).float() / 255.0
    background = x[:, :2, :2].mean(dim=(1, 2))
    padded = background[:, None, None].expand(3, h + 2 * PAD_40X, w + 2 * PAD_40X).clone()
    padded[:, PAD_40X : PAD_40X + h, PAD_40X : PAD_40X + w] = x
    counts = torch.zeros(len(TASK_PLAN), h + 2 * PAD_40X + TILE_40X, w + 2 * PAD_40X + TILE_40X,
                         dtype=torch.uint8)  # fmt: skip
    measured = extrapolated = 0.0
    run_total = need_total = 0
    origins = tile_origins(h, w)
    for y0, x0 in origins:
        tile = padded[:, y0 : y0 + TILE_40X, x0 : x0 + TILE_40X]
        if tile.shape[1:] != (TILE_40X, TILE_40X):
            tile = F.pad(tile, (0, TILE_40X - tile.shape[2], 0, TILE_40X - tile.shape[1]))
        for task in sorted(TASK_PLAN):
            mask, done, spent, need = task_votes(predict, tile, task, batch, cap)
            measured += spent
            extrapolated += spent if cap is None else spent * need / max(done, 1)
            run_total, need_total = run_total + done, need_total + need
            core = slice(256, TILE_40X - 256)
            counts[task, y0 + 256 : y0 + TILE_40X - 256, x0 + 256 : x0 + TILE_40X - 256] += mask[
                core, core
            ].to(torch.uint8)
    votes = counts[:, PAD_40X : PAD_40X + h, PAD_40X : PAD_40X + w]
    labels = torch.where(votes.amax(0) > 0, votes.argmax(0) + 1, 0).to(torch.uint8)
    # the whole wall time, with the capped network loops replaced by their extrapolation
    seconds = time.perf_counter() - started - measured + extrapolated
    timing = ReferenceTiming(len(origins), need_total, run_total, seconds, cap is not None)
    return labels.numpy(), timing
