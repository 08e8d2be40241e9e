"""Cross-task false positives: how much of other tasks' patches each task's head marks.

Every training patch of a task is centred on its own tissue, so a head can learn "tissue" instead
of "this tissue". This measures it: each patch is resampled to every other task's magnification
(when that is at most a factor of ``MAX_ZOOM`` away, as the slide pipeline would feed it) and
segmented with that task's head. Reported per task: the share of all pixels it marks, and the
share of the *known-negative* pixels it marks (pixels another task labelled where anatomy excludes
this one, ``data.negatives.NEGATIVE_SOURCES``): the latter are certain false positives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from omniseg.catalogue import tissue
from omniseg.data import PatchRecord, load_pair
from omniseg.data.negatives import NEGATIVE_SOURCES, to_negative, zoom_factor
from omniseg.evaluation.predict import predict_probability
from omniseg.models import OmniSeg

MAX_ZOOM = 2.0  # 5x <-> 10x pairs; 40x PTC fields are 4-8x away from every other task


def cross_task_rates(
    model: OmniSeg, records: Sequence[PatchRecord], *, precision: str = "fp32"
) -> dict[str, dict]:
    """Per target task: mean marked share of other tasks' patches and of their known negatives."""
    thresholds = model.inference.thresholds
    marked: dict[int, list[float]] = defaultdict(list)
    known: dict[int, list[float]] = defaultdict(list)
    for record in records:
        pair = load_pair(record)
        base_image, base_mask = pair[0].astype(np.float32) / 255.0, pair[1]
        for target in range(model.config.num_tasks):
            t_scale = tissue(target).scale_id
            zoom = zoom_factor(record.scale_id, t_scale)
            if target == record.task_id or not 1 / MAX_ZOOM <= zoom <= MAX_ZOOM:
                continue
            image, mask = to_negative(base_image, base_mask, record.scale_id, t_scale)
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
            prob = predict_probability(model, x, [target], [t_scale], tta=False,
                                       precision=precision)  # fmt: skip
            pred = prob[0].cpu().numpy() > thresholds[target]
            marked[target].append(float(pred.mean()))
            if record.task_id in NEGATIVE_SOURCES.get(target, ()) and mask.any():
                known[target].append(float(pred[mask].mean()))
    report = {}
    for target in sorted(marked):
        report[tissue(target).name] = {
            "patches": len(marked[target]),
            "marked_share": float(np.mean(marked[target])),
            "known_negative_patches": len(known[target]),
            "known_negative_marked": float(np.mean(known[target])) if known[target] else None,
        }
    return report
