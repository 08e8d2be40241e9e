"""Score a model on labelled patches: every image, its own task and scale, whole image at once."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from omniseg.allocator import tune_allocator
from omniseg.catalogue import scales, tissue, tissues
from omniseg.data import PatchRecord, discover_patches, load_pair, select_split
from omniseg.errors import OmnisegError
from omniseg.evaluation.aggregate import summarise_all
from omniseg.evaluation.metrics import score_pair
from omniseg.evaluation.predict import (
    bf16_supported,
    check_precision,
    image_to_tensor,
    predict_probability,
)
from omniseg.models import OmniSeg

CSV_COLUMNS = (
    "image", "mask", "task", "task_id", "scale_id", "stain", "split", "height", "width",
    "threshold", "dice", "iou", "hd95", "hd95_um", "assd", "assd_um", "dice_bg_inclusive",
    "fg_pred", "fg_gt",
)  # fmt: skip
ThresholdsLike = Sequence[float] | Mapping[int | str, float] | None


@dataclass(frozen=True)
class EvaluationResult:
    """Per-image rows (input order) and the summary (the JSON report without the weights fields)."""

    per_image: list[dict]
    summary: dict
    weights: str | None = None
    weights_sha256: str | None = None

    def report(self, weights: str | None = None, sha: str | None = None) -> dict:
        s = self.summary
        return {
            "tasks": s["tasks"],
            "stains": s["stains"],
            "mean": s["mean"],
            "weights": weights if weights is not None else self.weights,
            "weights_sha256": sha if sha is not None else self.weights_sha256,
            **{k: v for k, v in s.items() if k not in ("tasks", "stains", "mean")},
        }

    def to_json(self, path: str | os.PathLike, weights: str | None = None, sha: str | None = None):
        text = json.dumps(_json_safe(self.report(weights, sha)), indent=2) + "\n"
        _write_atomic(Path(path), lambda fh: fh.write(text))
        return Path(path)

    def to_csv(self, path: str | os.PathLike):
        def write(fh) -> None:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in self.per_image:
                writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})

        _write_atomic(Path(path), write)
        return Path(path)


def _json_safe(value):
    """NaN/inf would make invalid JSON; they become null."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_atomic(path: Path, write: Callable) -> None:
    """Temp file in the target folder, then os.replace: never a half-written report."""
    if path.is_dir():
        raise OmnisegError(f"{path}: is a folder; pass a file path for the report")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_thresholds(model: OmniSeg, thresholds: ThresholdsLike = None) -> tuple[float, ...]:
    """Per-task foreground-probability thresholds: the model's, optionally overridden.

    A sequence replaces all of them; a mapping {task id or name: value} replaces some.
    """
    values = list(model.inference.thresholds)
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
    mpp = scales()[record.scale_id].mpp
    return {
        "image": str(record.image),
        "mask": str(record.mask),
        "task": tissues()[record.task_id].name,
        "task_id": record.task_id,
        "scale_id": record.scale_id,
        "stain": record.stain,
        "split": record.split,
        "height": int(gt.shape[0]),
        "width": int(gt.shape[1]),
        "threshold": threshold,
        **scores,
        "hd95_um": None if scores["hd95"] is None else scores["hd95"] * mpp,
        "assd_um": None if scores["assd"] is None else scores["assd"] * mpp,
    }


def _size_batches(
    records: Iterable[tuple[int, PatchRecord]], batch_size: int
) -> Iterable[list[tuple[int, PatchRecord, np.ndarray, np.ndarray]]]:
    """Stream batches of same-size images (memory stays at one batch per distinct size)."""
    pending: dict[tuple[int, int], list] = {}
    for index, record in records:
        image, mask = load_pair(record)
        bucket = pending.setdefault(image.shape[:2], [])
        bucket.append((index, record, image, mask))
        if len(bucket) == batch_size:
            yield pending.pop(image.shape[:2])
    yield from pending.values()


def evaluate_records(
    model: OmniSeg,
    records: Sequence[PatchRecord],
    *,
    tta: bool | None = None,
    thresholds: ThresholdsLike = None,
    batch_size: int = 4,
    precision: str = "fp32",
    progress: bool = False,
    split: str | None = None,
    bootstrap: int = 0,
) -> EvaluationResult:
    """Predict and score every record (``split`` selects and labels a subset; None = all).

    ``tta=None`` and ``thresholds=None`` use the model folder's settings. ``bootstrap`` > 0 adds
    95% intervals over images from that many resamples. Raises OmnisegError on an unreadable
    image rather than skipping it.
    """
    if batch_size < 1:
        raise OmnisegError(f"--batch-size {batch_size}: must be at least 1")
    _check_bootstrap(bootstrap)
    check_precision(precision)
    chosen = select_split(list(records), split)
    if not chosen:
        raise OmnisegError("no patches to evaluate; check DATA and --split")
    use_tta = model.inference.tta if tta is None else bool(tta)
    cutoffs = resolve_thresholds(model, thresholds)
    rows: list[dict | None] = [None] * len(chosen)
    bar = tqdm(total=len(chosen), disable=not progress, desc="evaluate", unit="img", leave=False)
    with bar:
        for batch in _size_batches(enumerate(chosen), batch_size):
            x = torch.stack([image_to_tensor(image) for _, _, image, _ in batch])
            tasks = [r.task_id for _, r, _, _ in batch]
            scale_ids = [r.scale_id for _, r, _, _ in batch]
            prob = predict_probability(model, x, tasks, scale_ids, tta=use_tta, precision=precision)
            prob = prob.cpu().numpy()
            for (index, record, _, mask), p in zip(batch, prob, strict=True):
                cutoff = cutoffs[record.task_id]
                rows[index] = _image_row(record, p > cutoff, mask, cutoff)
            bar.update(len(batch))
    per_image = [r for r in rows if r is not None]
    assert len(per_image) == len(chosen), "an image was not scored"
    summary = {
        **summarise_all(per_image),
        "tta": use_tta,
        "split": split,
        "n_images": len(per_image),
        "thresholds": {t.name: v for t, v in zip(tissues(), cutoffs, strict=True)},
        "precision": precision,
    }
    if bootstrap:
        from omniseg.evaluation.bootstrap import with_intervals

        summary = with_intervals(summary, per_image, bootstrap)
    return EvaluationResult(per_image=per_image, summary=summary)


def _check_bootstrap(resamples: int) -> None:
    if resamples < 0:
        raise OmnisegError(f"--bootstrap {resamples}: must be 0 (off) or a number of resamples")


def _model_source(weights: str | os.PathLike | None) -> tuple[Path, str]:
    """(model folder, label for the report): --weights, else the bundled default model."""
    if weights is not None:
        return Path(weights), str(weights)
    try:
        from omniseg.models import bundled
    except ImportError:
        bundled = None
    path = bundled.default_model_dir() if bundled is not None else None
    if path is None:
        raise OmnisegError(
            "no bundled default model in this build; pass --weights MODEL_DIR "
            "(a folder with config.json + model.safetensors, "
            "e.g. RUN_DIR/model from `omniseg train`)"
        )
    return Path(path), f"bundled:{Path(path).name}"


def evaluate_path(
    data: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    tta: bool | None = None,
    device: str = "auto",
    batch_size: int = 4,
    precision: str = "fp32",
    thresholds: ThresholdsLike = None,
    json_path: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
    progress: bool = False,
    bootstrap: int = 0,
    allow_unverified: bool = False,
    allow_outside_paths: bool = False,
) -> EvaluationResult:
    """Evaluate a model folder on DATA (manifest CSV or patch folder); optionally write reports.

    Inputs are checked (data, options, output paths) before the model is loaded so mistakes
    fail in seconds; reports are written only after every image has been scored.
    """
    tune_allocator()
    from omniseg.evaluation.devices import resolve_device
    from omniseg.models import load_pretrained
    from omniseg.models.pretrained import WEIGHTS_NAME, sha256_of

    found = discover_patches(data, allow_outside=allow_outside_paths)
    try:
        records = select_split(found, split)
    except OmnisegError as exc:
        raise OmnisegError(f"{data}: --split {split}: {exc}") from exc
    check_precision(precision)
    if batch_size < 1:
        raise OmnisegError(f"--batch-size {batch_size}: must be at least 1")
    _check_bootstrap(bootstrap)
    for out, option in ((json_path, "--json"), (csv_path, "--csv")):
        if out is not None and Path(out).is_dir():
            raise OmnisegError(f"{option} {out}: is a folder; pass a file path")
    torch_device = resolve_device(device)
    if precision == "bf16" and not bf16_supported(torch_device):
        raise OmnisegError(
            f"--precision bf16: {torch_device} has no native bf16 support; use --precision fp32"
        )
    model_dir, label = _model_source(weights)
    model = load_pretrained(model_dir, device=torch_device, verify=not allow_unverified)
    result = evaluate_records(
        model,
        records,
        tta=tta,
        thresholds=thresholds,
        batch_size=batch_size,
        precision=precision,
        progress=progress,
        split=split,
        bootstrap=bootstrap,
    )
    result = replace(
        result,
        weights=label,
        weights_sha256=sha256_of(model_dir / WEIGHTS_NAME),
    )
    if json_path is not None:
        result.to_json(json_path)
    if csv_path is not None:
        result.to_csv(csv_path)
    return result
