"""Find and read partially labelled patches (one tissue type annotated per image).

Two sources, same records: a manifest CSV (``image,mask,task_id,scale_id,stain,split``, paths
relative to the CSV) or the original layout ``<task>_<scale>_<name>/<stain>/<stem>.png`` with
``<stem>_mask_<anything>.png`` beside each image.

Optional manifest columns (written by ``omniseg extract``): ``slide`` (the source slide),
``group`` (patches that must stay on one side of a train/val split: one slide, one patient)
and ``ignore_value`` (the mask value of unlabelled pixels, which losses and metrics skip:
partial annotation, as nnU-Net's ignore label).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from omniseg.catalogue import scales, tissues
from omniseg.data.resample import resample_image, resample_labels
from omniseg.errors import OmnisegError

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("image", "mask", "task_id", "scale_id", "stain", "split")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_THRESHOLD = 128
_TASK_DIR = re.compile(r"^(\d+)_(\d+)(?:_.*)?$")


@dataclass(frozen=True)
class PatchRecord:
    image: Path
    mask: Path
    task_id: int
    scale_id: int
    stain: str
    split: str | None = None
    slide: str | None = None
    group: str | None = None
    ignore_value: int | None = None  # mask value of unlabelled pixels (None: every pixel labelled)
    # Scale the files were labelled at when the network sees them at ``scale_id`` instead (a
    # task a model runs at another magnification, e.g. PTC at 20x from 40x patches): the pair
    # is resampled on reading (:func:`load_labelled`). None = the files are at ``scale_id``.
    source_scale_id: int | None = None

    @property
    def resample_factor(self) -> float:
        """Output pixels per file pixel (0.5: a 40x patch seen at 20x)."""
        if self.source_scale_id is None:
            return 1.0
        return scales()[self.scale_id].magnification / scales()[self.source_scale_id].magnification

    @property
    def name(self) -> str:
        return self.image.stem


def _check_ids(task_id: int, scale_id: int, where: str) -> None:
    if not 0 <= task_id < len(tissues()):
        valid = ", ".join(f"{t.id}={t.name}" for t in tissues())
        raise OmnisegError(f"{where}: unknown task id {task_id}; valid: {valid}")
    if not 0 <= scale_id < len(scales()):
        raise OmnisegError(f"{where}: unknown scale id {scale_id}; valid: 0..{len(scales()) - 1}")


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def read_manifest(path: Path, *, allow_outside: bool = False) -> list[PatchRecord]:
    """Rows of a manifest CSV; image/mask paths are relative to its folder and must stay inside
    it (an absolute path or ``../`` out of it is refused unless ``allow_outside``)."""
    root = path.parent
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in MANIFEST_COLUMNS[:4] if c not in (reader.fieldnames or [])]
            if missing:
                raise OmnisegError(
                    f"{path}: manifest lacks column(s) {missing}; "
                    f"expected columns {','.join(MANIFEST_COLUMNS)}"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OmnisegError(f"{path}: unreadable manifest ({exc})") from exc
    records = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        try:
            task_id, scale_id = int(row["task_id"]), int(row["scale_id"])
        except (TypeError, ValueError) as exc:
            raise OmnisegError(f"{where}: task_id/scale_id must be integers") from exc
        _check_ids(task_id, scale_id, where)
        image, mask = root / row["image"], root / row["mask"]
        for p in (image, mask):
            if not allow_outside and not _inside(root, p):
                raise OmnisegError(
                    f"{where}: {p} lies outside the manifest's folder {root}; move the data "
                    "under it, or pass --allow-outside-paths if this is intended"
                )
            if not p.is_file():
                raise OmnisegError(f"{where}: file not found: {p}")
        split = (row.get("split") or "").strip() or None
        stain = (row.get("stain") or "").strip() or image.parent.name
        records.append(
            PatchRecord(
                image, mask, task_id, scale_id, stain, split,
                slide=(row.get("slide") or "").strip() or None,
                group=(row.get("group") or "").strip() or None,
                ignore_value=_ignore_value(row.get("ignore_value"), where),
            )
        )  # fmt: skip
    if not records:
        raise OmnisegError(f"{path}: manifest has no rows")
    return records


def _ignore_value(raw: str | None, where: str) -> int | None:
    text = (raw or "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError as exc:
        raise OmnisegError(
            f"{where}: ignore_value must be an integer 0..255, got {text!r}"
        ) from exc
    if not 0 <= value <= 255:
        raise OmnisegError(f"{where}: ignore_value must lie in 0..255, got {value}")
    return value


def walk_layout(root: Path, *, allow_outside: bool = False) -> list[PatchRecord]:
    """Records of the original folder layout; a file (or folder) that links out of ``root`` is
    refused, as a manifest row pointing out of its folder is."""
    records = []
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        match = _TASK_DIR.match(task_dir.name)
        if not match:
            continue
        task_id, scale_id = int(match[1]), int(match[2])
        _check_ids(task_id, scale_id, str(task_dir))
        for dirpath, _, filenames in sorted(os.walk(task_dir)):
            folder = Path(dirpath)
            files = sorted(f for f in filenames if f.lower().endswith(IMAGE_SUFFIXES))
            for name in files:
                if "_mask" in name:
                    continue
                stem = Path(name).stem
                masks = [f for f in files if f.startswith(f"{stem}_mask")]
                if not masks:
                    raise OmnisegError(
                        f"{folder / name}: no mask found; expected {stem}_mask_<anything>.png beside it"
                    )
                stain = folder.name if folder != task_dir else ""
                for path in (folder / name, folder / masks[0]):
                    if not allow_outside and not _inside(root, path):
                        raise OmnisegError(
                            f"{path}: links outside the patch folder {root}; copy the data in, "
                            "or pass --allow-outside-paths if this is intended"
                        )
                records.append(
                    PatchRecord(folder / name, folder / masks[0], task_id, scale_id, stain)
                )
    if not records:
        raise OmnisegError(
            f"{root}: no patches found; expected <task>_<scale>_<name>/<stain>/<image>.png "
            f"with <image>_mask_*.png beside it, or a {MANIFEST_NAME}"
        )
    return records


def discover_patches(path: str | os.PathLike, *, allow_outside: bool = False) -> list[PatchRecord]:
    """Records from a manifest CSV, a folder's manifest.csv, or by walking the folder layout."""
    p = Path(path)
    if p.is_file():
        return read_manifest(p, allow_outside=allow_outside)
    if not p.is_dir():
        raise OmnisegError(f"{p}: not found; pass a folder of patches or a manifest CSV")
    if (p / MANIFEST_NAME).is_file():
        return read_manifest(p / MANIFEST_NAME, allow_outside=allow_outside)
    return walk_layout(p, allow_outside=allow_outside)


def select_split(records: list[PatchRecord], split: str | None) -> list[PatchRecord]:
    """Rows of one split (None = all). An empty result is an error naming the splits present."""
    if split is None:
        return list(records)
    chosen = [r for r in records if r.split == split]
    if not chosen:
        present = sorted({str(r.split) for r in records})
        raise OmnisegError(f"no patches in split {split!r}; splits present: {present}")
    return chosen


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise OmnisegError(f"{path}: unreadable image ({exc})") from exc
    return img


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 or arr.max(initial=0) > 255:
        return (arr.astype(np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
    return arr.clip(0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB. Greyscale is replicated, alpha dropped, 16-bit scaled to 8-bit."""
    path = Path(path)
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _to_uint8(np.asarray(img))
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """HxW bool: the first colour channel >= 128 (never thresholded across channels).

    A mask holds two values (background and one foreground value, e.g. 0/255 or 0/1); more
    (a JPEG-compressed or resampled mask, a label image) is an error, not silently thresholded.
    """
    return read_labels(path)[0]


def read_labels(
    path: str | os.PathLike, ignore_value: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(foreground, known): HxW bool maps; ``known`` is None when every pixel is labelled.

    Pixels equal to ``ignore_value`` are unknown (never foreground); the others must hold two
    values at most, read as :func:`read_mask` reads them.
    """
    path = Path(path)
    arr = np.asarray(_open(path))
    if arr.ndim == 3:
        arr = arr[..., 0]
    known = None if ignore_value is None else arr != ignore_value
    values = np.unique(arr if known is None else arr[known])
    if len(values) > 2:
        raise OmnisegError(
            f"{path}: a mask must hold two values (0 and one foreground value such as 255)"
            f"{'' if known is None else f' besides the ignore value {ignore_value}'}, "
            f"found {len(values)} ({', '.join(str(v) for v in values[:6])}...); re-export it "
            "losslessly (PNG) without smoothing"
        )
    if len(values) == 2 and values[1] < MASK_THRESHOLD and values[0] == 0:
        foreground = arr > 0  # a 0/1 (or 0/k) mask
    else:
        foreground = _to_uint8(arr) >= MASK_THRESHOLD
    if known is not None:
        foreground &= known
        if known.all():
            known = None
    return foreground, known


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:  # reads the header only
            return img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise OmnisegError(f"{path}: unreadable image ({exc})") from exc


def check_pairs(records: list[PatchRecord]) -> None:
    """Every image and mask is readable and of the same size, from file headers (fast): a bad
    pair must fail before a run folder exists, not at the step that first draws it."""
    for record in records:
        image, mask = _header_size(record.image), _header_size(record.mask)
        if image != mask:
            raise OmnisegError(
                f"{record.mask}: mask size {mask[0]}x{mask[1]} does not match image "
                f"{record.image} ({image[0]}x{image[1]}); fix or remove the pair"
            )


def load_pair(record: PatchRecord) -> tuple[np.ndarray, np.ndarray]:
    """(image, foreground); unlabelled pixels count as not foreground (see :func:`load_labelled`)."""
    image, mask, _ = load_labelled(record)
    return image, mask


def load_labelled(
    record: PatchRecord, *, as_labelled: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(image, foreground, known or None): ``known`` marks the labelled pixels of a partially
    annotated patch; losses and metrics use only those.

    A record seen at another scale than its files (``source_scale_id``) comes resampled: the
    image by area, the labels by area share (a pixel is foreground, or known, when at least
    half of its area is). ``as_labelled``: the files as they are (scores use the labels at
    their own resolution)."""
    image = read_image(record.image)
    mask, known = read_labels(record.mask, record.ignore_value)
    if image.shape[:2] != mask.shape:
        raise OmnisegError(
            f"{record.mask}: mask size {mask.shape[1]}x{mask.shape[0]} does not match image "
            f"{record.image} ({image.shape[1]}x{image.shape[0]})"
        )
    factor = 1.0 if as_labelled else record.resample_factor
    if factor != 1.0:
        image = resample_image(image, factor)
        mask = resample_labels(mask, factor)
        if known is not None:
            known = resample_labels(known, factor)
            mask &= known
    return image, mask, known


def at_model_scales(records: list[PatchRecord], task_scales: dict[int, int]) -> list[PatchRecord]:
    """Records of the tasks in ``task_scales`` ({task id: scale id}) seen at that scale, resampled
    from the scale their files were labelled at; the others unchanged."""
    out = []
    for r in records:
        target = task_scales.get(r.task_id, r.scale_id)
        if target != r.scale_id:
            source = r.scale_id if r.source_scale_id is None else r.source_scale_id
            r = dataclasses.replace(r, scale_id=target, source_scale_id=source)
        out.append(r)
    return out
