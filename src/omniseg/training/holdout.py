"""Rows held back from training to choose per-task thresholds on, so val never chooses them."""

from __future__ import annotations

import warnings

from omniseg.catalogue import tissues
from omniseg.data import PatchRecord, load_pair
from omniseg.data.dataset import stratified_split
from omniseg.errors import OmnisegError


def hold_back(
    records: list[PatchRecord], fraction: float, seed: int
) -> tuple[list[PatchRecord], list[PatchRecord]]:
    """(rows to learn on, rows held back to choose thresholds on), stratified by task and stain.

    Every (task, stain) group of two or more rows gives round(n * fraction) rows, at least one,
    and keeps at least one, so each task is tuned on every stain it has. With groups of ~3 rows
    the minimum dominates: a small ``fraction`` still holds back about a third. 0 = none.
    """
    if fraction <= 0:
        return list(records), []
    marked = stratified_split(records, fraction, seed)
    fit = [r for r, m in zip(records, marked, strict=True) if m.split == "train"]
    held = [r for r, m in zip(records, marked, strict=True) if m.split != "train"]
    return fit, held


def check_held_back(records: list[PatchRecord], held: list[PatchRecord], fraction: float) -> None:
    """Fail before training if nothing could be held back; warn for tasks that keep 0.5.

    Also reads every held-back pair now, so a bad file fails in seconds, not after the run.
    """
    if fraction <= 0:
        return
    if not held:
        raise OmnisegError(
            f"data.threshold_holdout={fraction}: no row could be held back (every task and stain "
            "has a single training patch); label more patches or set data.threshold_holdout: 0"
        )
    untuned = sorted({r.task_id for r in records} - {r.task_id for r in held})
    if untuned:
        names = ", ".join(tissues()[t].name for t in untuned)
        warnings.warn(
            f"data.threshold_holdout={fraction}: no held-back rows for {names} (one patch per "
            "stain); their thresholds stay at 0.5",
            stacklevel=2,
        )
    for record in held:
        load_pair(record)


def held_back_info(held: list[PatchRecord]) -> dict:
    """What goes into the model folder's ``training`` record: which rows chose the thresholds."""
    names = sorted("/".join(r.image.parts[-3:]) for r in held)  # <task folder>/<stain>/<file>
    return {"threshold_rows": len(held), "threshold_images": names}
