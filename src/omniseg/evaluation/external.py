"""Score a model folder on images from other labs: does it generalise beyond its own dataset?

Two small sets stand in for "another lab" (``../shared/data/other-labs``, see its README): BUPT
human biopsy snapshots with glomerulus polygons in three stains, and Bouteldja mouse PAS patches
with 8-class labels. Their licences allow evaluation only: the report holds counts and scores
(``segment``'s result for a BUPT image is written to a temporary folder, deleted once read). "Raw"
masks: each image resampled to the task's µm/px, predicted, probabilities resized back.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from omniseg.catalogue import Catalogue, Tissue, default_catalogue
from omniseg.data.resample import resample_image
from omniseg.errors import OmnisegError
from omniseg.inference.anatomy import GlomerulusSize
from omniseg.inference.snapshot import segment_glomeruli
from omniseg.models import load_pretrained
from omniseg.models.pretrained import read_model_config
from omniseg.runtime import TorchPredictor, image_to_tensor

BUPT_DIR = "bupt-glomeruli"
MOUSE_DIR = "bouteldja-mouse-pas"
BUPT_MPP_BY_MAGNIFICATION = {200: 0.5, 400: 0.22}  # estimates from glomerulus size (PROVENANCE)
BUPT_MPP_UNNAMED = 0.5  # names without 200/400: median glomerulus 420 px, like the 200x files
MOUSE_MPP = 0.337
MOUSE_TASKS = {"capsule": (2, 3), "tuft": (3,), "vessel": (5, 6)}  # our task <- label values
BUPT_STAINS = (("silver", "PASM"), ("trichrome", "Masson"), ("pas", "PAS"))  # PASM before PAS
MIN_IOU = 0.5
VARIANTS = {  # BUPT glomerulus masks scored, each against the same polygons
    "raw": "capsule task probability > threshold: no merge, no minimum area, no rule",
    "as_segment": "segment's label map, glomerulus = capsule ∪ tuft labels: merge with the other "
    "tasks, tissue/glass gates, components, minimum area (glomerulus: the capsule's)",
    "as_segment_glomerulus_check": "as_segment with --glomerulus-check on",
}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class PixelCounts:
    """Pooled pixel confusion counts: pooling weights images by size, unlike a mean of Dice."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    pixels: int = 0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> PixelCounts:
        p, t = np.asarray(pred, bool), np.asarray(truth, bool)
        if p.shape != t.shape:
            raise ValueError(f"masks differ in shape: {p.shape} vs {t.shape}")
        tp = int(np.count_nonzero(p & t))
        self.tp += tp
        self.fp += int(np.count_nonzero(p)) - tp
        self.fn += int(np.count_nonzero(t)) - tp
        self.pixels += p.size
        return self

    def report(self) -> dict:
        fg = 2 * self.tp + self.fp + self.fn
        return {
            "precision": _ratio(self.tp, self.tp + self.fp),
            "recall": _ratio(self.tp, self.tp + self.fn),
            "dice": 2 * self.tp / fg if fg else 1.0,
            "pred_fraction": _ratio(self.tp + self.fp, self.pixels),
            "true_fraction": _ratio(self.tp + self.fn, self.pixels),
            "counts": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "pixels": self.pixels},
        }


@dataclass
class ObjectCounts:
    """Object detection counts: one-to-one matches at IoU >= 0.5 over predicted and true objects."""

    matched: int = 0
    predicted: int = 0
    true: int = 0

    def add(self, other: ObjectCounts) -> None:
        self.matched += other.matched
        self.predicted += other.predicted
        self.true += other.true

    def report(self) -> dict:
        return {
            "precision": _ratio(self.matched, self.predicted),
            "recall": _ratio(self.matched, self.true),
            "f1": _ratio(2 * self.matched, self.predicted + self.true),
            "counts": {"matched": self.matched, "predicted": self.predicted, "true": self.true},
        }


def connected_objects(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(object count, label image, area per label incl. background 0); 8-connectivity."""
    m = np.asarray(mask, np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    return n - 1, labels, stats[:, cv2.CC_STAT_AREA].astype(np.int64)


def greedy_matches(iou: np.ndarray, min_iou: float = MIN_IOU) -> list[tuple[int, int]]:
    """One-to-one (pred, true) pairs, highest IoU first; ties broken by index for determinism."""
    rows, cols = np.nonzero(iou >= min_iou)
    order = sorted(zip(rows.tolist(), cols.tolist(), strict=True), key=lambda rc: -iou[rc])
    pairs: list[tuple[int, int]] = []
    for r, c in order:
        if all(r != p and c != t for p, t in pairs):
            pairs.append((r, c))
    return pairs


def match_objects(
    pred_mask: np.ndarray, true_instances: Sequence[np.ndarray], min_iou: float = MIN_IOU
) -> ObjectCounts:
    """Predicted connected components vs true instance masks (instances may touch or overlap,
    which is why truth is a list of masks rather than the components of their union)."""
    n_pred, labels, areas = connected_objects(pred_mask)
    iou = np.zeros((n_pred, len(true_instances)))
    for j, instance in enumerate(true_instances):
        inside = np.asarray(instance, bool)
        inter = np.bincount(labels[inside], minlength=n_pred + 1)[1:]
        union = areas[1:] + int(np.count_nonzero(inside)) - inter
        iou[:, j] = inter / np.maximum(union, 1)
    return ObjectCounts(len(greedy_matches(iou, min_iou)), n_pred, len(true_instances))


def resize_to_mpp(image: np.ndarray, mpp: float, target_mpp: float) -> np.ndarray:
    """Resample to the task's pixel size: area averaging when shrinking (no aliasing)."""
    return resample_image(image, mpp / target_mpp)


def predict_at_mpp(
    predictor, image: np.ndarray, mpp: float, tasks: Sequence[Tissue], catalogue: Catalogue
) -> dict[str, np.ndarray]:
    """Foreground probability per task name at the image's native size; tasks sharing a scale
    share one backbone pass. Probabilities are resized bilinearly, then thresholded by callers."""
    h, w = image.shape[:2]
    by_scale: dict[int, list[Tissue]] = {}
    for task in tasks:
        by_scale.setdefault(task.scale_id, []).append(task)
    out = {}
    for scale_id, group in by_scale.items():
        small = resize_to_mpp(image, mpp, catalogue.scales[scale_id].mpp)
        x = image_to_tensor(small)[None]
        prob = predictor.predict_tasks(x, [t.id for t in group], scale_id, tta=False)[0]
        for task, p in zip(group, prob.cpu().numpy(), strict=True):
            out[task.name] = cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def bupt_stain(name: str) -> str:
    """Stain from a BUPT file name: PASM = Jones silver, Masson = trichrome, else PAS."""
    for stain, token in BUPT_STAINS:
        if token in name:
            return stain
    raise OmnisegError(f"{name}: no stain (PASM, Masson or PAS) in the file name")


def bupt_mpp(name: str) -> tuple[float, str]:
    """(µm/px, why): a 200/0200 or 400/0400 token in the name, else the 200x-like estimate."""
    for token in re.split(r"[-_.\s]", Path(name).stem):
        if token.isdigit() and int(token) in BUPT_MPP_BY_MAGNIFICATION:
            return BUPT_MPP_BY_MAGNIFICATION[int(token)], f"name_{int(token)}x"
    return BUPT_MPP_UNNAMED, "estimate_no_magnification_in_name"


@dataclass
class BuptImage:
    path: Path
    height: int
    width: int
    instances: list[list[np.ndarray]]  # per glomerulus, its polygon parts (x, y) in pixels


def load_bupt(root: Path) -> tuple[list[BuptImage], int]:
    """(annotated images in COCO order, count of JPEGs with no entry): unlabelled images are
    not negatives, so they are skipped, and all glomerulus subtypes merge into one class."""
    coco = json.loads((root / "annotations.json").read_text(encoding="utf-8"))
    instances: dict[int, list[list[np.ndarray]]] = {}
    for ann in coco["annotations"]:
        if not isinstance(ann["segmentation"], list):
            raise OmnisegError(f"{root}: annotation {ann['id']} is not a polygon (RLE unsupported)")
        parts = [np.asarray(s, np.float64).reshape(-1, 2) for s in ann["segmentation"]]
        instances.setdefault(ann["image_id"], []).append(parts)
    folder = root / "JPEGImages"
    images = [
        BuptImage(
            folder / Path(im["file_name"]).name, im["height"], im["width"], instances[im["id"]]
        )
        for im in coco["images"]
        if im["id"] in instances
    ]
    names = {i.path.name for i in images}
    jpegs = [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")]
    return images, sum(p.name not in names for p in jpegs)


def rasterise(parts: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in parts], 1)
    return mask.astype(bool)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def bupt_masks(model, predictor, item: BuptImage, mpp: float) -> dict[str, np.ndarray]:
    """One predicted glomerulus mask per entry of :data:`VARIANTS`."""
    catalogue = getattr(model, "catalogue", None) or default_catalogue()
    capsule = catalogue.tissue("capsule")
    rgb = read_rgb(item.path)
    if rgb.shape[:2] != (item.height, item.width):
        raise OmnisegError(f"{item.path}: size {rgb.shape[:2]} differs from annotations.json")
    prob = predict_at_mpp(predictor, rgb, mpp, (capsule,), catalogue)["capsule"]
    return {
        "raw": prob > model.inference.thresholds[capsule.id],
        "as_segment": segment_glomeruli(item.path, mpp, model, predictor, "off"),
        "as_segment_glomerulus_check": segment_glomeruli(item.path, mpp, model, predictor, "on"),
    }


def evaluate_bupt(model, root: str | Path, *, limit: int | None = None) -> dict:
    """The glomerulus on BUPT, per stain and overall, in each of :data:`VARIANTS`."""
    root = Path(root)
    predictor = TorchPredictor(model, "fp32")
    images, unlabelled = load_bupt(root)
    images = images[:limit]  # None keeps all
    pixels, objects = defaultdict(PixelCounts), defaultdict(ObjectCounts)
    n_images, sources = Counter(), Counter()
    for item in images:
        mpp, source = bupt_mpp(item.path.name)
        sources[source] += 1
        masks = bupt_masks(model, predictor, item, mpp)
        truths = [rasterise(parts, (item.height, item.width)) for parts in item.instances]
        truth = np.logical_or.reduce(truths)
        for key in (bupt_stain(item.path.name), "all"):
            n_images[key] += 1
            for variant, pred in masks.items():
                pixels[key, variant].add(pred, truth)
                objects[key, variant].add(match_objects(pred, truths))
    scores = {k: {"pixel": p.report(), "object": objects[k].report()} for k, p in pixels.items()}
    stains = {
        key: {"images": n} | {v: scores[key, v] for v in VARIANTS}
        for key, n in sorted(n_images.items())
    }
    return {
        "inference": model.inference.to_dict(),  # thresholds and min_area_um2 per task
        "glomerulus_check_size_um": asdict(GlomerulusSize()),
        "images_scored": len(images),
        "images_unlabelled_skipped": unlabelled,
        "true_objects": sum(len(i.instances) for i in images),
        "pixel_size_source_counts": dict(sorted(sources.items())),
        "variants": VARIANTS,
        "stains": stains,
    }


def evaluate_mouse(model, root: str | Path) -> dict:
    """Capsule, tuft and vessel on the mouse pairs, scored only inside the labelled centre."""
    root = Path(root)
    catalogue = getattr(model, "catalogue", None) or default_catalogue()
    tasks = [catalogue.tissue(name) for name in MOUSE_TASKS]
    cut = model.inference.thresholds
    predictor = TorchPredictor(model, "fp32")
    pooled = {t.name: PixelCounts() for t in tasks}
    per_image = {}
    for label_path in sorted(root.glob("*-labels.png")):
        image_path = label_path.with_name(label_path.name.removesuffix("-labels.png") + ".png")
        rgb = read_rgb(image_path)
        with Image.open(label_path) as im:
            label = np.asarray(im)  # palette indices are the class values
        top, left = ((a - b) // 2 for a, b in zip(rgb.shape[:2], label.shape, strict=True))
        if top < 0 or left < 0 or label.ndim != 2:
            raise OmnisegError(f"{label_path}: not a 2-D label smaller than its image")
        centre = (slice(top, top + label.shape[0]), slice(left, left + label.shape[1]))
        prob = predict_at_mpp(predictor, rgb, MOUSE_MPP, tasks, catalogue)
        row = {"margin_px": [top, left]}
        for task in tasks:
            pred = prob[task.name][centre] > cut[task.id]
            truth = np.isin(label, MOUSE_TASKS[task.name])
            row[task.name] = PixelCounts().add(pred, truth).report()
            pooled[task.name].add(pred, truth)
        per_image[image_path.stem] = row
    if not per_image:
        raise OmnisegError(f"{root}: no *-labels.png pairs found")
    return {
        "images": len(per_image),
        "label_values": {k: list(v) for k, v in MOUSE_TASKS.items()},
        "pooled": {name: c.report() for name, c in pooled.items()},
        "per_image": per_image,
    }


def require_data(root: Path) -> None:
    """One clear message when the shared evaluation data are absent (they are never bundled)."""
    if not ((root / BUPT_DIR / "annotations.json").is_file() and (root / MOUSE_DIR).is_dir()):
        raise OmnisegError(
            f"{root}: other-labs evaluation data not found (need {BUPT_DIR}/annotations.json "
            f"and {MOUSE_DIR}/); pass the folder holding them with --data"
        )


def pixel_size_assumptions(catalogue: Catalogue) -> dict:
    """What the report assumed: BUPT sizes are estimates from glomerulus size, not metadata."""
    named = {f"name_{k}x": v for k, v in BUPT_MPP_BY_MAGNIFICATION.items()}
    return {
        "bupt_um_per_px": named | {"no_magnification_in_name": BUPT_MPP_UNNAMED},
        "bupt_um_per_px_is_estimate": True,
        "bupt_stain_from_name": dict(BUPT_STAINS),
        "mouse_um_per_px": MOUSE_MPP,
        "task_um_per_px": {t: catalogue.scale_of(catalogue.tissue(t)).mpp for t in MOUSE_TASKS},
        "resample": "INTER_AREA down / INTER_LINEAR up; probabilities back bilinear, then > threshold",
    }


def evaluate_other_labs(model_dir: str | Path, data_root: str | Path, *, bupt_limit=None) -> dict:
    """The whole report for one model folder: BUPT per stain, mouse per task, and provenance."""
    start = time.perf_counter()
    root = Path(data_root)
    require_data(root)
    model = load_pretrained(model_dir)
    report = {
        "model_dir": str(Path(model_dir).resolve()),
        "weights_sha256": read_model_config(model_dir).get("sha256"),
        "data_root": str(root.resolve()),
        "tta": False,
        "pixel_size_assumptions": pixel_size_assumptions(model.catalogue),
        "bupt": evaluate_bupt(model, root / BUPT_DIR, limit=bupt_limit),
        "mouse": evaluate_mouse(model, root / MOUSE_DIR),
    }
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report
