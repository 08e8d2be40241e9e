"""Annotations exported at another scale (µm instead of px, or at downsample 2): their objects
miss the tissue, and land on it once scaled back. The 1.5x bounds check of ``io.annotations``
cannot see a file scaled *down*, which stays inside the slide."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from shapely.geometry.base import BaseGeometry

from omniseg.catalogue import GlomerulusSize, equivalent_diameter_um
from omniseg.errors import OmnisegError

DOWNSAMPLES = (2.0, 4.0)  # common export downsamples, tried beside 1 / (µm per px)
MISSED_AT_MOST = 0.5  # share of objects on tissue at scale 1 that counts as "missing the tissue"
FITS_AT_LEAST = 0.9  # ... and at another scale that counts as "fits"
FEW_OBJECTS = 3  # below this, only "none on tissue" against "all on tissue" decides


def on_tissue_share(points, on_tissue: Callable[[float, float], bool], factor: float) -> float:
    return sum(on_tissue(x * factor, y * factor) for x, y in points) / len(points)


def check_annotation_scale(
    path: Path,
    objects: Sequence[BaseGeometry],
    on_tissue: Callable[[float, float], bool],
    dimensions: tuple[int, int],
    mpp: float,
) -> None:
    """OmnisegError when the objects miss the tissue but fit it at a larger scale."""
    if not objects:
        return
    points = [(p.x, p.y) for p in (g.representative_point() for g in objects)]
    here = on_tissue_share(points, on_tissue, 1.0)
    few = len(points) < FEW_OBJECTS
    if here > (0.0 if few else MISSED_AT_MOST):
        return
    reach_x = max(g.bounds[2] for g in objects)
    reach_y = max(g.bounds[3] for g in objects)
    for factor in sorted({*DOWNSAMPLES, round(1.0 / mpp, 3)}):
        if factor <= 1.0 or reach_x * factor > dimensions[0] or reach_y * factor > dimensions[1]:
            continue
        scaled = on_tissue_share(points, on_tissue, factor)
        if scaled >= (1.0 if few else FITS_AT_LEAST):
            raise OmnisegError(
                f"{path}: {here:.0%} of its {len(points)} objects lie on tissue, but {scaled:.0%} "
                f"do with their coordinates multiplied by {factor:g}: the file was probably "
                f"exported at downsample {factor:g}, or in µm ({mpp:g} µm/px); export it in "
                "level-0 pixels of this slide"
            )


def glomerulus_size_warning(
    where: str, glomeruli: Sequence[BaseGeometry], mpp: float, size: GlomerulusSize
) -> str | None:
    """A warning (naming ``where``: the slide and its annotation file) when the annotated
    glomeruli's median diameter at ``mpp`` is one no glomerulus
    has in a section: the pixel size given or recorded is probably wrong, and a fine-tune on
    such patches learns glomeruli of the wrong size (measured: one BUPT trichrome image extracted
    at twice its pixel size took segment's glomerulus Dice 0.49 -> 0.12, docs/adapt.md)."""
    if not glomeruli:
        return None
    areas = [g.area for g in glomeruli]
    median = float(np.median(equivalent_diameter_um(np.asarray(areas), mpp * mpp)))
    if size.min_um <= median <= size.max_um:
        return None
    return (
        f"{where}: {_glomeruli(len(glomeruli))} a median diameter of {median:.0f} µm at "
        f"{mpp:g} µm/px, outside the {size.min_um:g}-{size.max_um:g} µm a glomerulus has in a "
        "section: check the pixel size (--mpp); patches cut at a wrong one teach the model "
        "glomeruli of the wrong size"
    )


def _glomeruli(count: int) -> str:
    return "its 1 glomerulus has" if count == 1 else f"its {count} glomeruli have"
