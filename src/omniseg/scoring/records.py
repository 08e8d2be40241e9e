"""Predict and score labelled patches: each image whole, for its own task and scale."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from omniseg.catalogue import scales, tissue, tissues
from omniseg.data import PatchRecord, load_labelled, select_split
from omniseg.data.resample import resample_image
from omniseg.errors import OmnisegError
from omniseg.models import InferenceSettings
from omniseg.runtime import Predictor, image_to_tensor
from omniseg.scoring.aggregate import summarise_all
from omniseg.scoring.metrics import score_pair

ThresholdsLike = Sequence[float] | Mapping[int | str, float] | None


def resolve_thresholds(
    inference: InferenceSettings, thresholds: ThresholdsLike = None
) -> tuple[float, ...]:
    """Per-task foreground-probability thresholds: the model's, optionally overridden.

    A sequence replaces all of them; a mapping {task id or name: value} replaces some.
    """
    values = list(inference.thresholds)
    n = len(tissues())
    if isinstance(thresholds, Mapping):
        for key, value in thresholds.items():
            values[tissue(key).id] = float(value)
    elif thresholds is not None:
        values = [float(v) for v in thresholds]
    if len(values) != n:
        raise OmnisegError(f"thresholds: expected {n} values (one per task), got {len(values)}")
    for t, v in zip(tissues(), values, strict=True):
        if not 0.0 <= v <= 1.0:
            raise OmnisegError(f"threshold for {t.name} is {v}; must lie in [0, 1]")
    return tuple(values)


def _image_row(record: PatchRecord, pred: np.ndarray, gt: np.ndarray, threshold: float) -> dict:
    scores = score_pair(pred, gt)
    labelled_at = record.scale_id if record.source_scale_id is None else record.source_scale_id
    mpp = scales()[labelled_at].mpp
    return {
        "image": str(record.image),
        "mask": str(record.mask),
        "task": tissues()[record.task_id].name,
        "task_id": record.task_id,
        "scale_id": labelled_at,  # the grid the labels (and so the scores) are on
        "stain": record.stain,
        "split": record.split,
        "height": int(gt.shape[0]),
        "width": int(gt.shape[1]),
        "threshold": threshold,
        **scores,
        "hd95_um": None if scores["hd95"] is None else scores["hd95"] * mpp,
        "assd_um": None if scores["assd"] is None else scores["assd"] * mpp,
    }


def at_label_size(prob: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A probability map predicted at another scale than its labels, bilinear to their grid."""
    if prob.shape == shape[:2]:
        return prob
    import cv2  # here: training (which scores val) runs without the slide-reading packages

    return cv2.resize(prob.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _size_batches(
    records: Iterable[tuple[int, PatchRecord]], batch_size: int
) -> Iterable[list[tuple[int, PatchRecord, np.ndarray, np.ndarray]]]:
    """Stream batches of same-size images (memory stays at one batch per distinct size)."""
    pending: dict[tuple[int, int], list] = {}
    for index, record in records:
        # a record seen at another scale: the image resampled for the network, the labels
        # kept on their own grid for the score (one read of the pair)
        image, mask, known = load_labelled(record, as_labelled=True)
        if record.resample_factor != 1.0:
            image = resample_image(image, record.resample_factor)
        bucket = pending.setdefault(image.shape[:2], [])
        bucket.append((index, record, image, (mask, known)))
        if len(bucket) == batch_size:
            yield pending.pop(image.shape[:2])
    yield from pending.values()


def score_records(
    predictor: Predictor,
    inference: InferenceSettings,
    records: Sequence[PatchRecord],
    *,
    tta: bool | None = None,
    thresholds: ThresholdsLike = None,
    batch_size: int = 4,
    progress: bool = False,
    split: str | None = None,
) -> tuple[list[dict], dict]:
    """(per-image rows in input order, summary). ``tta``/``thresholds`` None = the model's."""
    if batch_size < 1:
        raise OmnisegError(f"--batch-size {batch_size}: must be at least 1")
    chosen = select_split(list(records), split)
    if not chosen:
        raise OmnisegError("no patches to evaluate; check DATA and --split")
    use_tta = inference.tta if tta is None else bool(tta)
    cutoffs = resolve_thresholds(inference, thresholds)
    rows: list[dict | None] = [None] * len(chosen)
    bar = tqdm(total=len(chosen), disable=not progress, desc="evaluate", unit="img", leave=False)
    with bar:
        for batch in _size_batches(enumerate(chosen), batch_size):
            x = torch.stack([image_to_tensor(image) for _, _, image, _ in batch])
            tasks = [r.task_id for _, r, _, _ in batch]
            scale_ids = [r.scale_id for _, r, _, _ in batch]
            prob = predictor.predict_probability(x, tasks, scale_ids, tta=use_tta).cpu().numpy()
            for (index, record, _, (mask, known)), p in zip(batch, prob, strict=True):
                cutoff = cutoffs[record.task_id]
                predicted = at_label_size(p, mask.shape) > cutoff
                if known is not None:  # partial labels: unlabelled pixels are not scored
                    predicted &= known
                rows[index] = _image_row(record, predicted, mask, cutoff)
            bar.update(len(batch))
    per_image = [r for r in rows if r is not None]
    if len(per_image) != len(chosen):
        raise RuntimeError("an image was not scored")
    summary = {
        **summarise_all(per_image),
        "tta": use_tta,
        "split": split,
        "n_images": len(per_image),
        "thresholds": {t.name: v for t, v in zip(tissues(), cutoffs, strict=True)},
        "precision": predictor.precision,
    }
    return per_image, summary
