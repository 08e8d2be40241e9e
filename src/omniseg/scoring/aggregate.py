"""Average per-image scores into per-task, per-stain and overall rows (pure Python)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from omniseg.catalogue import tissues

MEAN_METRICS = ("dice", "iou", "dice_bg_inclusive")  # defined for every image
DISTANCE_METRICS = ("hd95", "hd95_um", "assd", "assd_um")  # None when a mask is empty
UNKNOWN_STAIN = "unknown"


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def summarise(rows: list[dict]) -> dict:
    """One summary row: n, mean Dice/IoU/bg-inclusive Dice, distances over non-null images."""
    out: dict = {"n": len(rows)}
    for key in MEAN_METRICS:
        out[key] = _mean(r[key] for r in rows)
    for key in DISTANCE_METRICS:
        out[key] = _mean(r[key] for r in rows)
    out["hd_null"] = sum(1 for r in rows if r["hd95"] is None)
    return out


def stain_key(task: str, stain: str) -> str:
    return f"{task}/{stain or UNKNOWN_STAIN}"


def summarise_all(rows: list[dict]) -> dict:
    """``tasks`` and ``stains`` (catalogue order) and ``mean`` = unweighted mean over tasks.

    In ``mean``, ``n`` and ``hd_null`` are totals over all images and ``n_tasks`` counts the
    tasks averaged; a distance is averaged over the tasks where it is defined.
    """
    order = {t.name: t.id for t in tissues()}
    task_names = sorted({r["task"] for r in rows}, key=order.__getitem__)
    tasks = {name: summarise([r for r in rows if r["task"] == name]) for name in task_names}
    stains = {}
    for name in task_names:
        for stain in sorted({r["stain"] for r in rows if r["task"] == name}):
            key = stain_key(name, stain)
            stains[key] = summarise([r for r in rows if r["task"] == name and r["stain"] == stain])
    mean: dict = {"n": len(rows), "n_tasks": len(tasks)}
    for key in (*MEAN_METRICS, *DISTANCE_METRICS):
        mean[key] = _mean(t[key] for t in tasks.values())
    mean["hd_null"] = sum(t["hd_null"] for t in tasks.values())
    return {"tasks": tasks, "stains": stains, "mean": mean}
