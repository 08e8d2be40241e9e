"""Tiny synthetic patch sets for the training tests: bright discs on a dark background."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Settings that make a training run take seconds: tiny model, 32 px patches, fp32, no augmentation.
FAST = {
    "run.model": "omniseg-tiny",
    "data.patch_size": 32,
    "data.batch_size": 2,
    "run.progress": False,
    "run.precision": "fp32",
    "run.channels_last": False,
    "augment.enabled": False,
}


@pytest.fixture
def one_thread():
    """Tiny tensors run fastest (and steadiest on a shared 2-core box) on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def disc_pair(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with a bright disc (pinkish) on a dark textured background, and its mask."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    radius = rng.uniform(size * 0.15, size * 0.3)
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    image = rng.integers(10, 60, (size, size, 3))
    image[mask] = rng.integers(190, 250, (int(mask.sum()), 3))
    return image.astype(np.uint8), mask


def make_patch_set(
    root: Path,
    *,
    size: int = 32,
    per_task: int = 2,
    tasks: tuple[tuple[int, int], ...] = ((0, 1), (2, 0)),
    stains: tuple[str, ...] = ("he", "pas"),
    with_split: bool = True,
    seed: int = 0,
) -> Path:
    """Write PNG pairs + manifest.csv; returns the manifest path. Split: last item per task = val."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for task_id, scale_id in tasks:
        for i in range(per_task):
            stain = stains[i % len(stains)]
            folder = root / f"{task_id}_{scale_id}_t" / stain
            folder.mkdir(parents=True, exist_ok=True)
            image, mask = disc_pair(size, rng)
            Image.fromarray(image).save(folder / f"im_{i}.png")
            Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"im_{i}_mask_x.png")
            split = "val" if i == per_task - 1 and per_task > 1 else "train"
            rel = folder.relative_to(root)
            rows.append([rel / f"im_{i}.png", rel / f"im_{i}_mask_x.png", task_id, scale_id, stain,
                         split if with_split else ""])  # fmt: skip
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mask", "task_id", "scale_id", "stain", "split"])
        writer.writerows(rows)
    return manifest


# `omniseg train` with the library defaults as one stage (bare `train` runs the shipped recipe).
ONE_STAGE = ["--config", str(Path(__file__).with_name("one_stage.yaml"))]
