"""Score a model on labelled patches: every image, its own task and scale, whole image at once."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from omniseg.atomic import atomic_path
from omniseg.catalogue import catalogue_of, moved_tasks
from omniseg.data import PatchRecord, discover_patches, select_split
from omniseg.data.patches import at_model_scales
from omniseg.data.provenance import seen_in_training
from omniseg.errors import OmnisegError
from omniseg.models import OmniSeg
from omniseg.runtime import Predictor, TorchPredictor
from omniseg.runtime.backends import make_predictor
from omniseg.runtime.memory import tune_allocator
from omniseg.runtime.options import RunOptions
from omniseg.scoring.records import ThresholdsLike, score_records

CSV_COLUMNS = (
    "image", "mask", "task", "task_id", "scale_id", "stain", "split", "height", "width",
    "threshold", "dice", "iou", "hd95", "hd95_um", "assd", "assd_um", "dice_bg_inclusive",
    "fg_pred", "fg_gt",
)  # fmt: skip


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
        text = json.dumps(json_safe(self.report(weights, sha)), indent=2) + "\n"
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


def json_safe(value):
    """NaN/inf would make invalid JSON; they become null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_atomic(path: Path, write: Callable) -> None:
    """Never a half-written report (omniseg.atomic: temp file, fsync, rename)."""
    if path.is_dir():
        raise OmnisegError(f"{path}: is a folder; pass a file path for the report")
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8", newline="") as fh:
        write(fh)


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
    predictor: Predictor | None = None,
) -> EvaluationResult:
    """Predict and score every record (``split`` selects and labels a subset; None = all).

    ``tta=None`` and ``thresholds=None`` use the model folder's settings. ``bootstrap`` > 0 adds
    95% intervals over images from that many resamples. Raises OmnisegError on an unreadable
    image rather than skipping it.
    """
    _check_bootstrap(bootstrap)
    per_image, summary = score_records(
        predictor or TorchPredictor(model, precision),
        model.inference,
        at_model_scales(list(records), moved_tasks(catalogue_of(model))),
        tta=tta,
        thresholds=thresholds,
        batch_size=batch_size,
        progress=progress,
        split=split,
    )
    if bootstrap:
        from omniseg.evaluation.bootstrap import with_intervals

        summary = with_intervals(summary, per_image, bootstrap)
    return EvaluationResult(per_image=per_image, summary=summary)


def _check_bootstrap(resamples: int) -> None:
    if resamples < 0:
        raise OmnisegError(f"--bootstrap {resamples}: must be 0 (off) or a number of resamples")


def evaluate_path(
    data: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    tta: bool | None = None,
    device: str = "auto",
    batch_size: int = 4,
    precision: str = "fp32",
    backend: str = "torch",
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
    from omniseg.models.pretrained import read_model_config
    from omniseg.runtime.loading import load_model

    found = discover_patches(data, allow_outside=allow_outside_paths)
    try:
        records = select_split(found, split)
    except OmnisegError as exc:
        raise OmnisegError(f"{data}: --split {split}: {exc}") from exc
    RunOptions(device, precision, backend, batch_size)  # checked before the model loads
    _check_bootstrap(bootstrap)
    for out, option in ((json_path, "--json"), (csv_path, "--csv")):
        if out is not None and Path(out).is_dir():
            raise OmnisegError(f"{option} {out}: is a folder; pass a file path")
    loaded = load_model(weights, device, verify=not allow_unverified, precision=precision)
    model, model_dir, sha256, label = loaded.model, loaded.folder, loaded.sha256, loaded.label
    predictor = make_predictor(model, backend, precision, model_dir=model_dir, sha256=sha256)
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
        predictor=predictor,
    )
    result = replace(result, weights=label, weights_sha256=sha256)
    result.summary["backend"] = predictor.backend
    training = read_model_config(model_dir).get("training")
    result.summary["seen_in_training"] = seen_in_training(records, training)
    if json_path is not None:
        result.to_json(json_path)
    if csv_path is not None:
        result.to_csv(csv_path)
    return result
