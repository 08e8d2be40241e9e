"""K-fold cross-validation splits of partially labelled patches.

With 88 patches a fixed 20-patch val split cannot steer a recipe (one PTC image); every patch
scored out-of-fold can. Folds are stratified by (task, stain), so each fold holds every task and
stain as evenly as the data allow, and never split a source: a slide or patient (the manifest's
``group``) or, in the original layout, one ROI (``im_<ROI>_<patch>`` names, per stain), whose
patches overlap or share tissue. The assignment is a pure function of the records and the seed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from omniseg.data.patches import PatchRecord
from omniseg.errors import OmnisegError

# The original dataset names patches im_<ROI>_<patch> (omniseg-reference.md, section 2.1).
_ROI_NAME = re.compile(r"^(im_\d+)_\d+$")


def source_group(record: PatchRecord) -> str:
    """The unit a fold may not split: the record's group, else its ROI, else the patch itself."""
    if record.group:
        return f"group:{record.group}"
    match = _ROI_NAME.match(record.image.stem)
    if match:
        return f"roi:{record.stain}/{match[1]}"
    return f"patch:{record.image}"


def _stratum(record: PatchRecord) -> tuple[int, str]:
    return (record.task_id, record.stain)


def assign_folds(records: Sequence[PatchRecord], folds: int, seed: int) -> list[int]:
    """Fold index (0..folds-1) of every record, in input order.

    Greedy stratified group assignment: groups are visited largest first (ties in a seeded
    order) and each goes to the fold where its strata are rarest so far, then the smallest fold.
    """
    if folds < 2:
        raise OmnisegError(f"--folds {folds}: cross-validation needs at least 2 folds")
    members: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        members[source_group(record)].append(i)
    names = sorted(members)
    if len(names) < folds:
        raise OmnisegError(
            f"--folds {folds}: the data hold only {len(names)} source group(s) (slides, ROIs "
            f"or patches), and a group never spans two folds; use --folds {max(2, len(names))} "
            "or fewer, or add data"
        )
    strata = sorted({_stratum(r) for r in records})
    column = {s: j for j, s in enumerate(strata)}
    same_task = np.array([[a[0] == b[0] for b in strata] for a in strata], dtype=np.int64)
    same_stain = np.array([[a[1] == b[1] for b in strata] for a in strata], dtype=np.int64)
    counts = np.zeros((folds, len(strata)), dtype=np.int64)
    sizes = np.zeros(folds, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(names))
    visit = sorted(order, key=lambda i: -len(members[names[i]]))  # stable: seeded ties
    fold_of = [0] * len(records)
    tie_break = np.random.default_rng(seed + 1).permutation(folds)
    for index in visit:
        rows = members[names[index]]
        need = np.zeros(len(strata), dtype=np.int64)
        for i in rows:
            need[column[_stratum(records[i])]] += 1
        # how many of this group's (task, stain) strata each fold holds, then of its tasks,
        # then of its stains: the fold where they are rarest takes it
        crowding = np.stack([counts @ need, counts @ same_task @ need, counts @ same_stain @ need])
        best = min(range(folds), key=lambda f: (*crowding[:, f], sizes[f], tie_break[f]))
        counts[best] += need
        sizes[best] += len(rows)
        for i in rows:
            fold_of[i] = best
    return fold_of


def fold_split(
    records: Sequence[PatchRecord], folds: int, fold: int, seed: int
) -> tuple[list[PatchRecord], list[PatchRecord]]:
    """(records to train fold ``fold`` on, its held-out records)."""
    if not 0 <= fold < folds:
        raise OmnisegError(f"--fold {fold}: must lie in 0..{folds - 1} for --folds {folds}")
    fold_of = assign_folds(records, folds, seed)
    train = [r for r, f in zip(records, fold_of, strict=True) if f != fold]
    held = [r for r, f in zip(records, fold_of, strict=True) if f == fold]
    return train, held


def untrained_tasks(train: Sequence[PatchRecord], held: Sequence[PatchRecord]) -> list[int]:
    """Tasks scored on a held-out fold that its training folds never label (a CV blind spot)."""
    return sorted({r.task_id for r in held} - {r.task_id for r in train})
