"""Complete the missing labels: a teacher (one model or an ensemble) labels each patch for the
tasks it carries no label for, so every task also learns what it must NOT mark.

Each of our patches is labelled for one task and centred on that tissue; a task never sees the
other tasks' tissue as background. Here every patch is resampled to each other task's
magnification (when at most 2x coarser or the same: 10x patches feed the 5x glomerulus tasks,
never the reverse, and 40x PTC fields feed nothing) and the teacher's mean probability becomes
a hard label where it is confident (<= ``tau_lo`` background, >= ``tau_hi`` foreground) and
*unlabelled* in between. Pixels the patch's own label marks as a tissue that anatomy excludes
from the target task (``data.negatives``) are background whatever the teacher says.

The result is an ordinary patch folder with a manifest (``ignore_value`` marks the uncertain
pixels), so any recipe trains a student on it unchanged. The real rows are repeated so that,
per task, they are drawn about as often as the teacher's rows.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omniseg.atomic import atomic_path
from omniseg.catalogue import tissue, tissues
from omniseg.data import PatchRecord, load_pair
from omniseg.data.folds import source_group
from omniseg.data.negatives import NEGATIVE_SOURCES, to_negative, zoom_factor
from omniseg.data.patches import load_labelled
from omniseg.errors import OmnisegError
from omniseg.models import OmniSeg
from omniseg.runtime import Predictor, TorchPredictor

UNSURE = 128  # mask value of pixels the teacher is not confident about (manifest ignore_value)
FOREGROUND = 255
MANIFEST_COLUMNS = ("image", "mask", "task_id", "scale_id", "stain", "split", "group",
                    "ignore_value", "source")  # fmt: skip


@dataclass(frozen=True)
class CompletionSettings:
    """Confidence cut-offs of the teacher's probability, and the coarsest zoom fed."""

    tau_lo: float = 0.2
    tau_hi: float = 0.8
    min_zoom: float = 0.5  # 10x -> 5x
    # Finer targets (zoom > 1) see the patch's centre upsampled: blur, useless as new labels, but
    # what keeps a fine-tuned model's other tasks where they were (``omniseg finetune``).
    max_zoom: float = 1.0
    balance_real: bool = True  # repeat real rows to about the teacher rows' count per task
    tasks: tuple[int, ...] = ()  # complete only these task ids (empty: every task)

    def __post_init__(self) -> None:
        if not 0.0 < self.min_zoom <= 1.0 <= self.max_zoom:
            raise OmnisegError(
                f"min_zoom/max_zoom={self.min_zoom}/{self.max_zoom}: need 0 < lo <= 1 <= hi"
            )
        if not 0.0 <= self.tau_lo < 0.5 < self.tau_hi <= 1.0:
            raise OmnisegError(
                f"tau_lo/tau_hi={self.tau_lo}/{self.tau_hi}: need 0 <= lo < 0.5 < hi <= 1"
            )


def targets_for(record: PatchRecord, settings: CompletionSettings) -> list[int]:
    """Tasks a patch is resampled to and labelled for by the teacher."""
    out = []
    for t in tissues():
        zoom = zoom_factor(record.scale_id, t.scale_id)
        wanted = not settings.tasks or t.id in settings.tasks
        if wanted and t.id != record.task_id and settings.min_zoom <= zoom <= settings.max_zoom:
            out.append(t.id)
    return out


def target_view(
    image: np.ndarray, label: np.ndarray, source_scale: int, target_scale: int
) -> tuple[np.ndarray, np.ndarray]:
    """The patch at the target's scale; a finer target sees the centre, upsampled to the same size."""
    zoom = zoom_factor(source_scale, target_scale)
    if zoom > 1.0:
        h, w = label.shape
        ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
        top, left = (h - ch) // 2, (w - cw) // 2
        image, label = (
            image[top : top + ch, left : left + cw],
            label[top : top + ch, left : left + cw],
        )
    return to_negative(image, label, source_scale, target_scale)


def ensemble_probability(teachers: Sequence[Predictor], image: np.ndarray, task: int) -> np.ndarray:
    """Mean foreground probability of the teachers for one task at its own scale."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    scale = tissue(task).scale_id
    total = np.zeros(image.shape[:2], dtype=np.float64)
    for teacher in teachers:
        prob = teacher.predict_probability(x, [task], [scale], tta=False)
        total += prob[0].cpu().numpy()
    return (total / len(teachers)).astype(np.float32)


def completed_mask(
    prob: np.ndarray, known_negative: np.ndarray, settings: CompletionSettings
) -> np.ndarray:
    """uint8 mask: 255 confident foreground, 0 confident or anatomical background, 128 unsure."""
    mask = np.full(prob.shape, UNSURE, dtype=np.uint8)
    mask[prob >= settings.tau_hi] = FOREGROUND  # tau_hi 1.0: (almost) never, negatives only
    mask[prob <= settings.tau_lo] = 0
    mask[known_negative] = 0
    return mask


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _row(image: Path, mask: Path, task: int, record: PatchRecord, source: str, root: Path) -> dict:
    return {
        "image": image.relative_to(root).as_posix(), "mask": mask.relative_to(root).as_posix(),
        "task_id": task, "scale_id": tissue(task).scale_id, "stain": record.stain, "split": "",
        "group": source_group(record), "ignore_value": UNSURE if source == "teacher" else "",
        "source": source,
    }  # fmt: skip


def _teacher_rows(
    record: PatchRecord, index: int, teachers: Sequence[Predictor], out: Path,
    settings: CompletionSettings,
) -> list[dict]:  # fmt: skip
    image, label = load_pair(record)
    base = image.astype(np.float32) / 255.0
    rows = []
    for task in targets_for(record, settings):
        resampled, own = target_view(base, label, record.scale_id, tissue(task).scale_id)
        excluded = record.task_id in NEGATIVE_SOURCES.get(task, ())
        known_negative = own if excluded else np.zeros_like(own)
        mask = completed_mask(
            ensemble_probability(teachers, resampled, task), known_negative, settings
        )
        if np.all(mask == UNSURE):
            continue  # nothing confident: the row would only take a batch and give no gradient
        stem = f"{index:04d}-{record.image.stem}-as-{tissue(task).name}"
        image_path, mask_path = (
            out / "teacher" / f"{stem}.png",
            out / "teacher" / f"{stem}_mask.png",
        )
        _save_png(image_path, (resampled * 255.0 + 0.5).clip(0, 255).astype(np.uint8))
        _save_png(mask_path, mask)
        rows.append(_row(image_path, mask_path, task, record, "teacher", out))
    return rows


def _real_rows(records: Sequence[PatchRecord], out: Path) -> list[dict]:
    """The labelled patches, copied; pixels their label leaves open (outside a checked region of
    ``omniseg extract``) stay unlabelled."""
    rows = []
    for index, record in enumerate(records):
        image, label, known = load_labelled(record)
        stem = f"{index:04d}-{record.image.stem}"
        image_path, mask_path = out / "real" / f"{stem}.png", out / "real" / f"{stem}_mask.png"
        mask = np.where(label, FOREGROUND, 0).astype(np.uint8)
        if known is not None:
            mask[~known] = UNSURE
        _save_png(image_path, image)
        _save_png(mask_path, mask)
        row = _row(image_path, mask_path, record.task_id, record, "label", out)
        row["ignore_value"] = UNSURE if known is not None else ""
        rows.append(row)
    return rows


def _repeats(real: list[dict], teacher: list[dict]) -> dict[int, int]:
    """Per task: how often each real row is listed so real and teacher rows draw about evenly."""
    out = {}
    for task in {r["task_id"] for r in real}:
        n_real = sum(1 for r in real if r["task_id"] == task)
        n_teacher = sum(1 for r in teacher if r["task_id"] == task)
        out[task] = max(1, round(n_teacher / n_real))
    return out


def complete_labels(
    records: Sequence[PatchRecord], teachers: Sequence[OmniSeg], out: Path,
    settings: CompletionSettings = CompletionSettings(),
) -> Path:  # fmt: skip
    """Write ``out/manifest.csv`` with the real patches and the teacher-labelled ones."""
    if not teachers:
        raise OmnisegError("no teacher model: pass at least one model folder")
    if not records:
        raise OmnisegError("no patches to complete")
    # one predictor per teacher: each folds its BatchNorms once, not once per image and task
    predictors = [TorchPredictor(model.eval(), "fp32") for model in teachers]
    real = _real_rows(records, out)
    teacher = [
        row for i, r in enumerate(records) for row in _teacher_rows(r, i, predictors, out, settings)
    ]
    repeats = _repeats(real, teacher) if settings.balance_real else {}
    rows = [row for row in real for _ in range(repeats.get(row["task_id"], 1))] + teacher
    manifest = out / "manifest.csv"
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return manifest
