"""Which patches a model learned from, by content, so a score on them can be flagged.

A model folder records the SHA-256 of every training image's pixels (and one digest of them
all); ``evaluate`` hashes the images it scores and says how many the model was trained on.
Pixel hashes, not paths or file bytes: the same patch copied elsewhere, re-encoded or with its
alpha channel dropped (as label completion writes it) is still known.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from omniseg.data.patches import PatchRecord, read_image


def pixel_sha256(path: Path) -> str:
    """SHA-256 of the decoded RGB pixels and their shape."""
    image = read_image(path)
    return hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()


def training_data_record(records: Sequence[PatchRecord]) -> dict:
    """``{"rows", "images", "sha256", "image_sha256"}`` of the patches a run learns from."""
    images = sorted({pixel_sha256(r.image) for r in records})
    rows = sorted(f"{r.task_id},{r.scale_id},{r.stain},{pixel_sha256(r.image)}" for r in records)
    whole = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return {"rows": len(records), "images": len(images), "sha256": whole, "image_sha256": images}


def seen_in_training(records: Iterable[PatchRecord], training: Mapping | None) -> dict | None:
    """How many of ``records`` a model was trained on, from its config's ``training.data``
    (None when the model records nothing: an older or hand-made folder)."""
    known = set((training or {}).get("data", {}).get("image_sha256") or ())
    if not known:
        return None
    hashes = [pixel_sha256(r.image) for r in records]
    return {"seen": sum(h in known for h in hashes), "of": len(hashes)}
