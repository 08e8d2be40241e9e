"""One labelled patch -> its foreground probability map, through the shared predictor
(:mod:`omniseg.runtime.predictor`), so ``evaluate`` scores what ``segment`` would predict."""

from __future__ import annotations

import numpy as np

from omniseg.data import PatchRecord, read_image
from omniseg.models import OmniSeg
from omniseg.runtime.predictor import image_to_tensor, predict_probability


def predict_record(
    model: OmniSeg, record: PatchRecord, *, tta: bool | None = None, precision: str = "fp32"
) -> np.ndarray:
    """(H, W) float32 foreground probability of one patch for its own task and scale.

    ``tta=None`` uses the model folder's default (``model.inference.tta``).
    """
    use_tta = model.inference.tta if tta is None else bool(tta)
    x = image_to_tensor(read_image(record.image))[None]
    prob = predict_probability(
        model, x, [record.task_id], [record.scale_id], tta=use_tta, precision=precision
    )
    return prob[0].cpu().numpy()
