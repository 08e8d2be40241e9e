"""int8 calibration on labelled patches (``omniseg calibrate``): the part of int8 that reads
data, kept here so that ``runtime/int8.py`` (the graph built from the table) stays below data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omniseg.catalogue import moved_tasks
from omniseg.data import discover_patches, load_pair
from omniseg.data.patches import at_model_scales
from omniseg.errors import OmnisegError
from omniseg.runtime.int8 import CALIBRATION_NAME, calibrate
from omniseg.runtime.loading import load_model

DEFAULT_CALIBRATION_PATCHES = 72


def pick_calibration_records(records: Sequence, limit: int) -> list:
    """Up to ``limit`` patches, round-robin over tasks so each task's ranges count, from the
    training split when there is one (validation stays unseen)."""
    train = [r for r in records if r.split == "train"] or list(records)
    by_task: dict[int, list] = {}
    for record in train:
        by_task.setdefault(record.task_id, []).append(record)
    picked: list = []
    queues = [by_task[t] for t in sorted(by_task)]
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


def calibrate_model_dir(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    *,
    max_patches: int = DEFAULT_CALIBRATION_PATCHES,
    verify: bool = True,
) -> tuple[Path, dict]:
    """Calibrate the model in ``model_dir`` on the labelled patches in ``data`` (a folder or
    manifest, as ``omniseg train`` reads it) and write ``model_dir/int8-calibration.json``.
    Each patch is seen at the scale the model runs its task at (PTC at 20x, say)."""
    if max_patches < 1:
        raise OmnisegError(f"--max-patches {max_patches}: must be at least 1")
    loaded = load_model(model_dir, "cpu", verify=verify)
    folder, model = loaded.folder, loaded.model
    found = at_model_scales(discover_patches(data), moved_tasks(model.catalogue))
    records = pick_calibration_records(found, max_patches)
    samples = [(load_pair(r)[0], r.task_id, r.scale_id) for r in records]
    out = folder / CALIBRATION_NAME
    table = calibrate(
        model, samples, out, weights_sha256=loaded.sha256,
        source=f"{len(samples)} patches of {Path(data).name}",
    )  # fmt: skip
    return out, table
