"""Training datasets: seeded train/val split, per-sample augmentation, task-balanced batches.

Every sample is addressed by a key ``(index, epoch, position)``; its augmentation generator is
seeded from ``(seed, epoch, position)``. Batches therefore do not depend on the number of loader
workers, on the process rank, or on where a run was resumed.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from omniseg.data.augment import AugmentConfig, augment_pair
from omniseg.data.negatives import IGNORE, negative_sources, negative_target, to_negative
from omniseg.data.patches import PatchRecord, load_labelled
from omniseg.errors import OmnisegError

SampleKey = tuple[int, int, int]  # (record index, epoch, global position in the epoch)


def stratified_split(
    records: Sequence[PatchRecord], val_fraction: float, seed: int
) -> list[PatchRecord]:
    """Give every record a split ("train"/"val"), stratified by (task, stain), seeded.

    Each group with at least two patches sends round(n * val_fraction) of them (at least one) to
    val, so every task and stain is validated when the data allow it.
    """
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[(r.task_id, r.stain)].append(i)
    rng = np.random.default_rng(seed)
    val: set[int] = set()
    for key in sorted(groups):
        members = groups[key]
        if len(members) < 2:
            continue
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
        val.update(members[j] for j in rng.permutation(len(members))[:n_val])
    return [
        dataclasses.replace(r, split="val" if i in val else "train") for i, r in enumerate(records)
    ]


def group_split(
    records: Sequence[PatchRecord], val_fraction: float, seed: int
) -> list[PatchRecord]:
    """Give every record a split by its ``group`` (one slide, one patient): a whole group goes
    to val or to train, never both, so validation never sees a slide it trained on.

    round(groups * val_fraction) groups (at least one, never all) go to val, seeded. Records
    without a group form one group each.
    """
    names = sorted({r.group or f"patch:{r.image}" for r in records})
    if len(names) < 2:
        raise OmnisegError(
            f"every patch comes from one group ({names[0]}); a validation split by slide needs "
            "patches from two slides or more: add slides, or train with --val-split none"
        )
    val = val_groups(names, val_fraction, seed)
    return [
        dataclasses.replace(r, split="val" if (r.group or f"patch:{r.image}") in val else "train")
        for r in records
    ]


def val_groups(names: Sequence[str], val_fraction: float, seed: int) -> set[str]:
    """round(len * val_fraction) of ``names`` (at least one unless the fraction is 0, never
    all), seeded."""
    if val_fraction <= 0:
        return set()
    ordered = sorted(names)
    n_val = min(len(ordered) - 1, max(1, round(len(ordered) * val_fraction)))
    order = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in order[:n_val]}


def check_group_split(records: Sequence[PatchRecord], train: str, val: str) -> None:
    """Refuse a split that puts one group (slide) in both train and val."""
    sides: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.group is not None and r.split in (train, val):
            sides[r.group].add(r.split)
    shared = sorted(g for g, found in sides.items() if len(found) == 2)
    if shared:
        raise OmnisegError(
            f"group(s) {', '.join(shared[:5])} have patches in both {train!r} and {val!r}: "
            "validation would score slides it trained on; give each group one split (or leave "
            "the split column empty to split by group)"
        )


class PatchDataset(Dataset):
    """Augmented training patches as dicts of tensors (image CHW float [0, 1], mask HW float).

    ``negative_rate``: share of the samples of a task that are replaced by a known-negative sample
    (``data/negatives.py``) drawn from another task's patch; its mask holds ``IGNORE``. Drawn from
    a generator of its own, so 0 reproduces the samples of runs made before it existed.
    """

    def __init__(
        self,
        records: Sequence[PatchRecord],
        patch_size: int,
        augment: AugmentConfig,
        seed: int,
        negative_rate: float = 0.0,
    ) -> None:
        self.records = list(records)
        self.patch_size = patch_size
        self.augment = augment
        self.seed = seed
        self.negative_rate = negative_rate
        # A negative crop always holds some of its known-negative pixels (else it teaches nothing).
        self.negative_augment = dataclasses.replace(augment, foreground_crop_prob=1.0)
        self.by_task: dict[int, list[int]] = defaultdict(list)
        for i, r in enumerate(self.records):
            self.by_task[r.task_id].append(i)

    def _negative_source(self, record: PatchRecord, epoch: int, position: int) -> int | None:
        """Index of the record to show ``record``'s task as a negative, or None (a positive)."""
        if self.negative_rate <= 0:
            return None
        rng = np.random.default_rng([self.seed, epoch, position, 0x4E6])
        if rng.random() >= self.negative_rate:
            return None
        sources = negative_sources(record.task_id, set(self.by_task))
        if not sources:
            return None
        members = self.by_task[sources[int(rng.integers(len(sources)))]]
        return members[int(rng.integers(len(members)))]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: SampleKey | int) -> dict:
        index, epoch, position = key if isinstance(key, tuple) else (key, 0, key)
        record = self.records[index]
        source = self._negative_source(record, epoch, position)
        image, mask, known = load_labelled(record if source is None else self.records[source])
        image = image.astype(np.float32) / 255.0
        if known is not None and source is None:  # unlabelled pixels travel as IGNORE
            mask = np.where(known, mask, IGNORE).astype(np.uint8)
        if source is not None:
            image, mask = to_negative(image, mask, self.records[source].scale_id, record.scale_id)
        rng = np.random.default_rng([self.seed, epoch, position])
        augment = self.augment if source is None else self.negative_augment
        img, msk = augment_pair(image, mask, self.patch_size, augment, rng)
        target = msk.astype(np.float32) if source is None else negative_target(msk)
        return {
            "image": torch.from_numpy(img).permute(2, 0, 1).contiguous(),
            "mask": torch.from_numpy(target),
            "task_id": record.task_id,
            "scale_id": record.scale_id,
        }


class TaskBalancedBatchSampler:
    """Mixed-task batches in which every task is drawn equally often, sharded across ranks.

    An epoch has ``ceil(len(records) / global_batch)`` global batches. Positions cycle through a
    shuffled order of the tasks present; within a task, patches are drawn from a reshuffled
    permutation. Rank r gets slice ``[r*B, (r+1)*B)`` of each global batch of ``world_size*B``
    (the DistributedSampler idea, applied to this sampler). ``set_epoch(e, start_batch)`` fixes the
    order and skips the batches already trained on, which makes resume exact.
    """

    def __init__(
        self,
        task_ids: Sequence[int],
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not task_ids:
            raise ValueError("no training records")
        self.task_ids = np.asarray(task_ids, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.task_ids) // self.global_batch)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start_batch": self.start_batch, "seed": self.seed}

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Record indices of every global position of one epoch (all ranks)."""
        rng = np.random.default_rng([self.seed, epoch, 0x5A3])
        tasks = np.unique(self.task_ids)
        total = self.batches_per_epoch * self.global_batch
        blocks = -(-total // len(tasks))
        task_seq = np.concatenate([rng.permutation(tasks) for _ in range(blocks)])[:total]
        members = {int(t): np.flatnonzero(self.task_ids == t) for t in tasks}
        queues: dict[int, list[int]] = {t: [] for t in members}
        order = np.empty(total, dtype=np.int64)
        for pos, task in enumerate(task_seq.tolist()):
            if not queues[task]:
                queues[task] = rng.permutation(members[task]).tolist()
            order[pos] = queues[task].pop()
        return order

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = self.epoch_order(self.epoch)
        for b in range(self.start_batch, self.batches_per_epoch):
            lo = b * self.global_batch + self.rank * self.batch_size
            yield [(int(order[p]), self.epoch, p) for p in range(lo, lo + self.batch_size)]


def collate(samples: list[dict]) -> dict:
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "task_id": torch.as_tensor([s["task_id"] for s in samples], dtype=torch.long),
        "scale_id": torch.as_tensor([s["scale_id"] for s in samples], dtype=torch.long),
    }
