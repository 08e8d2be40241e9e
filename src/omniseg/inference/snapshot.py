"""``segment``'s label map of one small image (a camera snapshot, a region) as an array.

Evaluations compare what ``segment`` writes, after every merge, gate and object rule, with
reference masks; the result folder is temporary, so nothing derived from the image is kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tifffile

from omniseg.catalogue import catalogue_of
from omniseg.inference.merge import CAPSULE, PTC, TUFT
from omniseg.inference.outputs import LABELS_NAME
from omniseg.inference.pipeline import segment_slide
from omniseg.inference.settings import SegmentSettings


def segment_label_map(
    path: str | Path, settings: SegmentSettings, model, predictor=None
) -> np.ndarray:
    """The level-0 label map (H, W) of ``labels.ome.tif`` that ``segment`` writes for ``path``;
    the image must fit in memory (its result folder is deleted before returning)."""
    with tempfile.TemporaryDirectory(prefix="omniseg-snapshot-") as tmp:
        result = segment_slide(path, tmp, settings, model, predictor=predictor)
        labels = tifffile.imread(Path(result.out_dir) / LABELS_NAME, level=0)
    return labels.reshape(labels.shape[-2:])


def segment_glomeruli(path: str | Path, mpp: float, model, predictor, check: str) -> np.ndarray:
    """Glomerulus pixels (capsule or tuft label) of ``segment``'s label map of one image at
    ``mpp`` with ``--glomerulus-check check``; every task but PTC runs (the merge never gives a
    glomerulus pixel to PTC, so its 40x pass, the slowest, cannot change them)."""
    catalogue = catalogue_of(model)
    settings = SegmentSettings(
        tasks=tuple(t.id for t in catalogue.tissues if t.id != PTC), mpp=mpp, precision="fp32",
        reader_threads=0, progress=False, glomerulus_check=check,
    )  # fmt: skip
    labels = segment_label_map(path, settings, model, predictor)
    return np.isin(labels, [catalogue.tissue(t).label_value for t in (CAPSULE, TUFT)])
