"""One scale of a slide run (5x, 10x, 20x, 40x), in one place.

A scale's life, and where each step lives in this folder:
* planned here: :func:`plan_scales` gives each magnification the model's catalogue uses for the
  chosen tasks a :class:`ScalePlan`, with its native shape and its :class:`TileGrid`;
* predicted in ``scale_runner.py`` (:func:`run_scale`: tissue tiles -> batches -> the network ->
  8-bit probability codes in the work store), and the run stage in ``stages.infer_scale``;
* blended in ``blend.py`` (overlapping tile windows -> one map of the scale);
* merged in ``assemble.py`` / ``merge.py`` (every scale's :class:`ScaleSource`, resampled to
  level 0 -> one label map).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zarr

from omniseg.catalogue import Catalogue, default_catalogue
from omniseg.inference.tiling import TileGrid
from omniseg.io import plan_level, target_shape
from omniseg.io.base import SlideInfo
from omniseg.models import InferenceSettings


@dataclass(frozen=True)
class ScalePlan:
    """One magnification of the run: its tasks, its native shape and its tile grid."""

    scale_id: int
    mpp: float
    tasks: tuple[int, ...]
    shape_hw: tuple[int, int]
    to_level0: float  # level-0 px per native px (mpp / slide mpp)
    upsampled: bool  # even level 0 is coarser than this scale
    grid: TileGrid


@dataclass
class TileStats:
    total: int = 0
    background: int = 0
    processed: int = 0
    resumed: int = 0
    outside_interstitium: int = 0  # tissue tiles the PTC pass skipped (inside glomeruli/arteries)


@dataclass(frozen=True)
class ScaleSource:
    """A scale's per-tile window codes and which of its tiles were processed."""

    plan: ScalePlan
    windows: zarr.Array
    processed: np.ndarray  # (rows, cols) bool


@dataclass(frozen=True)
class ScaleStage:
    name: str  # "10x"
    source: ScaleSource
    stats: TileStats


def plan_scales(
    info: SlideInfo,
    task_ids: Sequence[int],
    catalogue: Catalogue | None = None,
    inference: InferenceSettings | None = None,
) -> list[ScalePlan]:
    """One plan per magnification used by the chosen tasks, coarse to fine; tiles of
    ``inference`` (default: InferenceSettings())."""
    cat = catalogue or default_catalogue()
    tiles = inference or InferenceSettings()
    plans = []
    for scale in sorted(cat.scales, key=lambda s: -s.mpp):
        chosen = tuple(t for t in sorted(task_ids) if cat.tissue(t).scale_id == scale.id)
        if not chosen:
            continue
        shape = target_shape(info, scale.mpp)
        plans.append(
            ScalePlan(
                scale_id=scale.id,
                mpp=scale.mpp,
                tasks=chosen,
                shape_hw=shape,
                to_level0=scale.mpp / float(info.mpp),
                upsampled=plan_level(info, scale.mpp).upsampled,
                grid=TileGrid(shape, tiles.tile_size, tiles.tile_overlap),
            )
        )
    return plans
